//! A session's start or full restart as background work (status `discovering`): jobs are
//! created in batches, one short transaction each, so the only catalog writer is never held for
//! long and no request waits for a million rows. Every batch first checks that the session is
//! still discovering under this daemon (a cancel, or a peer that adopted it, stops the work at
//! the next batch boundary); the jobs of a session that is discovering are never claimed, and
//! job creation is idempotent (one job per session and asset), so work interrupted by a crash
//! or SIGTERM is resumed by doing it again — a session is never left half-started.

use std::time::Duration;

use sqlx::{Any, Row, Transaction};

use super::{Catalog, Result, Stamp, Stamps, finish_if_done, refresh_counts, set_image_counts_tx, transition_tx, upsert_asset};
use crate::library::FileEntry;
use crate::model::{SessionStatus, now_ms};

/// What a session in `discovering` is doing (persisted, so whoever resumes it knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// A first start: queue a job for every image of the selected subdirectories.
    Start,
    /// A full restart: every job back to pending, and jobs for images added since.
    Restart,
}

impl Discovery {
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Start => "start",
            Discovery::Restart => "restart",
        }
    }

    pub fn parse(s: &str) -> Option<Discovery> {
        match s {
            "start" => Some(Discovery::Start),
            "restart" => Some(Discovery::Restart),
            _ => None,
        }
    }
}

/// One batch of jobs queued from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBatch {
    /// Jobs created (images that already had a job in this session are not counted).
    pub created: u64,
    /// Images looked at.
    pub seen: u64,
    /// Where the next batch starts (the last path of this one); `None`: the folder is done.
    pub next: Option<String>,
}

/// `LIKE` pattern for "a path with another '/' after `prefix`" (a file in a folder below).
fn deeper_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 4);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str("%/%");
    p
}

impl Catalog {
    /// → discovering (from `from`), recording which daemon does the work and what it is.
    /// `expected`: the images admission counted (progress shows the jobs queued against it).
    pub async fn begin_discovery(&self, id: i64, from: SessionStatus, owner: &str, kind: Discovery, expected: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE training_sessions SET status = 'discovering', owner = $1, discovery = $5, total_images = $6, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(owner)
        .bind(now_ms())
        .bind(id)
        .bind(from.as_str())
        .bind(kind.as_str())
        .bind(expected)
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The batch fence: the session is still discovering under `owner` (else the transaction
    /// is dropped and the caller stops).
    async fn still_discovering(tx: &mut Transaction<'static, Any>, id: i64, owner: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE training_sessions SET updated_at = $3 WHERE id = $1 AND status = 'discovering' AND owner = $2")
            .bind(id)
            .bind(owner)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Queue up to `limit` jobs for the catalogued images of one subdirectory `dir` (all below
    /// it, or only those directly in it), in path order after `after` — one transaction.
    /// `None`: the session is no longer discovering under `owner`.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_from_catalog(
        &self,
        id: i64,
        owner: &str,
        subdir_id: i64,
        dir: &str,
        direct_only: bool,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Option<QueuedBatch>> {
        let d = dir.trim_end_matches('/');
        let lo = after.map(str::to_string).unwrap_or_else(|| format!("{d}/"));
        let hi_end = format!("{d}0");
        let p = self.byte_order("path");
        let deeper =
            if direct_only { format!(" AND path NOT LIKE '{}' ESCAPE '\\'", deeper_pattern(&format!("{d}/")).replace('\'', "''")) } else { String::new() };
        let mut tx = self.begin_write().await?;
        if !Self::still_discovering(&mut tx, id, owner).await? {
            return Ok(None);
        }
        // The batch's last path (an index range read of `limit` rows), then one INSERT … SELECT.
        let last: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT path FROM image_assets WHERE {p} > $1 AND {p} < $2{deeper} ORDER BY {p} LIMIT 1 OFFSET $3"
        )))
        .bind(&lo)
        .bind(&hi_end)
        .bind(limit.max(1) - 1)
        .fetch_optional(&mut *tx)
        .await?;
        let (cmp_hi, hi) = match &last {
            Some(l) => ("<=", l.clone()),
            None => ("<", hi_end.clone()),
        };
        let now = now_ms();
        let seen: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM image_assets WHERE {p} > $1 AND {p} {cmp_hi} $2{deeper}")))
                .bind(&lo)
                .bind(&hi)
                .fetch_one(&mut *tx)
                .await?;
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO training_jobs (session_id, asset_id, subdirectory_id, status, created_at, updated_at) \
             SELECT $1, id, $2, 'pending', $3, $3 FROM image_assets WHERE {p} > $4 AND {p} {cmp_hi} $5{deeper} \
             ON CONFLICT (session_id, asset_id) DO NOTHING"
        )))
        .bind(id)
        .bind(subdir_id)
        .bind(now)
        .bind(&lo)
        .bind(&hi)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(QueuedBatch { created: r.rows_affected(), seen: seen as u64, next: last }))
    }

    /// Files a walk found (where the catalog did not know the folder yet): catalogue them and
    /// queue their jobs — one transaction. `None`: no longer discovering under `owner`.
    pub async fn queue_found(&self, id: i64, owner: &str, subdir_id: i64, files: &[FileEntry]) -> Result<Option<u64>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if !Self::still_discovering(&mut tx, id, owner).await? {
            return Ok(None);
        }
        let mut created = 0;
        for f in files {
            let asset_id = upsert_asset(&mut tx, f, now).await?;
            let r = sqlx::query(
                "INSERT INTO training_jobs (session_id, asset_id, subdirectory_id, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (session_id, asset_id) DO NOTHING",
            )
            .bind(id)
            .bind(asset_id)
            .bind(subdir_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            created += r.rows_affected();
        }
        tx.commit().await?;
        Ok(Some(created))
    }

    /// A full restart: up to `limit` of the session's jobs (by id, after `after`) back to
    /// pending — one transaction. Returns the jobs reset and where the next batch starts
    /// (`None` inside: done); outer `None`: no longer discovering under `owner`.
    pub async fn reset_jobs_batch(&self, id: i64, owner: &str, after: i64, limit: i64) -> Result<Option<(u64, Option<i64>)>> {
        let mut tx = self.begin_write().await?;
        if !Self::still_discovering(&mut tx, id, owner).await? {
            return Ok(None);
        }
        let last: Option<i64> = sqlx::query_scalar("SELECT id FROM training_jobs WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT 1 OFFSET $3")
            .bind(id)
            .bind(after)
            .bind(limit.max(1) - 1)
            .fetch_optional(&mut *tx)
            .await?;
        let r = sqlx::query(
            "UPDATE training_jobs SET status = 'pending', error_message = NULL, lease_owner = NULL, lease_expires_at = NULL, attempts = 0, \
             started_at = NULL, completed_at = NULL, updated_at = $2 WHERE session_id = $1 AND id > $3 AND id <= $4 \
             AND (status <> 'pending' OR attempts <> 0 OR error_message IS NOT NULL)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(after)
        .bind(last.unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((r.rows_affected(), last)))
    }

    /// Discovery done: subdirectory counts, jobs of deleted files skipped with the reason, the
    /// session's counts, and discovering → running (completed at once if nothing is left) —
    /// one transaction. Returns the session's jobs; `None`: no longer discovering under `owner`.
    pub async fn finish_discovery(&self, id: i64, owner: &str, counts: &[(i64, i64)]) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if !Self::still_discovering(&mut tx, id, owner).await? {
            return Ok(None);
        }
        let moved = transition_tx(
            &mut tx,
            id,
            SessionStatus::Discovering,
            SessionStatus::Running,
            Stamps { started: true, paused: Stamp::Clear, completed: Stamp::Clear },
        )
        .await?;
        if !moved {
            return Ok(None);
        }
        set_image_counts_tx(&mut tx, counts).await?;
        // A job whose file was deleted has no asset: no claimer would ever take it, so it ends
        // here as skipped, with the reason (the session can then complete).
        sqlx::query(
            "UPDATE training_jobs SET status = 'skipped', error_message = 'the file was deleted before it could be indexed', \
                 completed_at = $2, updated_at = $2 WHERE session_id = $1 AND status = 'pending' AND asset_id IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        refresh_counts(&mut tx, id, now).await?;
        sqlx::query("UPDATE training_sessions SET pending_reason = NULL, last_error = NULL, owner = NULL, discovery = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        finish_if_done(&mut tx, id, now).await?;
        let total: i64 = sqlx::query_scalar("SELECT CAST(total_images AS BIGINT) FROM training_sessions WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(total))
    }

    /// Sessions left discovering (with their work recorded) by this daemon's previous run or by
    /// a daemon whose heartbeat is older than `stale`: this daemon takes them over. Returns each
    /// with what it was doing.
    pub async fn adopt_discoveries(&self, owner: &str, stale: Duration) -> Result<Vec<(i64, Discovery)>> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE training_sessions SET owner = $1, updated_at = $2 \
             WHERE status = 'discovering' AND discovery IS NOT NULL \
               AND (owner IS NULL OR owner = $1 OR owner NOT IN (SELECT owner FROM daemons WHERE heartbeat_at >= $3)) \
             RETURNING id, discovery",
        )
        .bind(owner)
        .bind(now)
        .bind(now - stale.as_millis() as i64)
        .fetch_all(&self.write)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let kind: String = r.try_get(1)?;
            out.push((r.try_get(0)?, Discovery::parse(&kind).unwrap_or(Discovery::Start)));
        }
        Ok(out)
    }

    /// The jobs a session in discovery has so far (its progress while queueing).
    pub async fn jobs_queued(&self, id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM training_jobs WHERE session_id = $1").bind(id).fetch_one(&self.read).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeper_pattern_escapes_like_wildcards() {
        assert_eq!(deeper_pattern("/p/a_b%/"), "/p/a\\_b\\%/%/%");
    }
}
