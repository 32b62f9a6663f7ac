//! Mount points under the library roots, as last seen mounted (see `library::mounts`).

use sqlx::Row;

use super::{Catalog, Result};
use crate::model::now_ms;

/// A directory that was a mount point: its path and the identity of the mounted directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    pub path: String,
    pub dev: i64,
    pub ino: i64,
}

impl Catalog {
    /// Every remembered mount point.
    pub async fn mounts(&self) -> Result<Vec<MountRecord>> {
        let rows = sqlx::query("SELECT path, dev, ino FROM library_mounts ORDER BY path").fetch_all(&self.read).await?;
        Ok(rows.into_iter().map(|r| MountRecord { path: r.get(0), dev: r.get(1), ino: r.get(2) }).collect())
    }

    /// Remember these mount points as mounted now (insert or refresh).
    pub async fn record_mounts(&self, mounts: &[MountRecord]) -> Result<()> {
        if mounts.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for m in mounts {
            sqlx::query(
                "INSERT INTO library_mounts (path, dev, ino, seen_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (path) DO UPDATE SET dev = excluded.dev, ino = excluded.ino, seen_at = excluded.seen_at",
            )
            .bind(&m.path)
            .bind(m.dev)
            .bind(m.ino)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forget the mount points at or under `path` (the operator says the folder really was
    /// emptied, or a plain folder now stands where a mount was). Returns how many.
    pub async fn forget_mounts(&self, path: &str) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM library_mounts WHERE path = $1 OR (path >= $2 AND path < $3)")
            .bind(path)
            .bind(format!("{path}/"))
            .bind(format!("{path}0"))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
