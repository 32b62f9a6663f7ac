//! Daemons sharing the catalog: heartbeats, and recovery of what a restarted or dead daemon
//! left in flight (expired leases, starts left discovering).

use super::*;

impl Catalog {
    /// At daemon start (`owner` is the daemon starting): starts interrupted while discovering go
    /// back to pending (their start is redone) — this daemon's own, and those of daemons whose
    /// heartbeat is older than `stale`; a live peer's start in progress is left alone. Jobs
    /// whose lease expired go back to pending.
    pub async fn recover(&self, owner: &str, stale: Duration) -> Result<Recovered> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let s = sqlx::query(ORPHANED_STARTS).bind(now).bind(now - stale.as_millis() as i64).bind(owner).execute(&mut *tx).await?;
        let j = sqlx::query(REQUEUE_EXPIRED).bind(now).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Recovered { sessions_rediscover: s.rows_affected(), jobs_requeued: j.rows_affected() })
    }

    /// Periodically: starts left discovering by daemons whose heartbeat is older than `stale`
    /// (killed mid-start) go back to pending, so a start is never stranded by a dead peer.
    pub async fn recover_orphaned_starts(&self, stale: Duration) -> Result<u64> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE training_sessions SET status = 'pending', owner = NULL, updated_at = $1 \
             WHERE status = 'discovering' AND discovery IS NULL AND owner IS NOT NULL AND owner NOT IN (SELECT owner FROM daemons WHERE heartbeat_at >= $2)",
        )
        .bind(now)
        .bind(now - stale.as_millis() as i64)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn heartbeat(&self, owner: &str, started_at: i64, version: &str, fresh: Duration) -> Result<Vec<String>> {
        let now = now_ms();
        let written = self.heartbeat_write(owner, started_at, version, now).await;
        {
            let mut fault = self.write_fault.lock().unwrap_or_else(|p| p.into_inner());
            match &written {
                Ok(()) => *fault = None,
                Err(e) => {
                    let since = fault.as_ref().map(|f| f.1).unwrap_or(now);
                    *fault = Some((e.to_string(), since));
                }
            }
        }
        written?;
        Ok(sqlx::query_scalar("SELECT owner FROM daemons WHERE heartbeat_at >= $1 ORDER BY owner")
            .bind(now - fresh.as_millis() as i64)
            .fetch_all(&self.read)
            .await?)
    }

    async fn heartbeat_write(&self, owner: &str, started_at: i64, version: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO daemons (owner, started_at, heartbeat_at, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, version = excluded.version",
        )
        .bind(owner)
        .bind(started_at)
        .bind(now)
        .bind(version)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
