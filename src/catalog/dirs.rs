//! Per-directory counts (`library_dirs`, kept exact by triggers on `image_assets`; and
//! `library_other_files`, written by the watcher's walks): what listings, admission and the
//! library tree read instead of walking the disk or reading every asset.

use sqlx::Row;

use super::{Backend, Catalog, Result};
use crate::catalog::LibraryVersion;

/// One directory that directly holds catalogued images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirCount {
    pub path: String,
    /// Images directly in it (not below).
    pub images: i64,
    /// Of those, indexed.
    pub indexed: i64,
    /// The latest time one of its images was indexed (Unix ms; not lowered when that image is
    /// deleted).
    pub last_indexed_at: Option<i64>,
}

/// `dir` and everything below it: `path = $1 OR $2 <= path < $3` in byte order.
fn under_bounds(dir: &str) -> (String, String, String) {
    let d = dir.trim_end_matches('/');
    (d.to_string(), format!("{d}/"), format!("{d}0"))
}

impl Catalog {
    /// A path comparison in byte order: PostgreSQL's collation may not sort '/' first.
    pub(super) fn byte_order(&self, col: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("{col} COLLATE \"C\""),
            Backend::Sqlite => col.to_string(),
        }
    }

    /// Every directory at or below `dir` that directly holds catalogued images, sorted by path.
    pub async fn dir_counts(&self, dir: &str) -> Result<Vec<DirCount>> {
        let (eq, lo, hi) = under_bounds(dir);
        let p = self.byte_order("path");
        let q = format!(
            "SELECT path, CAST(images AS BIGINT), CAST(indexed AS BIGINT), last_indexed_at FROM library_dirs \
             WHERE path = $1 OR ({p} >= $2 AND {p} < $3) ORDER BY {p}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(eq).bind(lo).bind(hi).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(DirCount { path: r.try_get(0)?, images: r.try_get(1)?, indexed: r.try_get(2)?, last_indexed_at: r.try_get(3)? })).collect()
    }

    /// Non-image files per directory at or below `dir`, as the watcher's last walk found them.
    pub async fn other_files(&self, dir: &str) -> Result<Vec<(String, i64)>> {
        let (eq, lo, hi) = under_bounds(dir);
        let p = self.byte_order("path");
        let q = format!("SELECT path, CAST(files AS BIGINT) FROM library_other_files WHERE path = $1 OR ({p} >= $2 AND {p} < $3) ORDER BY {p}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(eq).bind(lo).bind(hi).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// The watcher walked `scopes` (directories) and found these non-image files: replace what
    /// was recorded under them — one transaction.
    pub async fn set_other_files(&self, scopes: &[String], found: &[(String, i64)]) -> Result<()> {
        let p = self.byte_order("path");
        let del = format!("DELETE FROM library_other_files WHERE path = $1 OR ({p} >= $2 AND {p} < $3)");
        let mut tx = self.begin_write().await?;
        for s in scopes {
            let (eq, lo, hi) = under_bounds(s);
            sqlx::query(sqlx::AssertSqlSafe(del.clone())).bind(eq).bind(lo).bind(hi).execute(&mut *tx).await?;
        }
        for (path, n) in found {
            sqlx::query("INSERT INTO library_other_files (path, files) VALUES ($1, $2) ON CONFLICT (path) DO UPDATE SET files = excluded.files")
                .bind(path)
                .bind(*n)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What changes whenever an asset is added, removed, moved or indexed: read from the
    /// per-directory counts (O(directories), not O(images)).
    pub async fn library_version(&self) -> Result<LibraryVersion> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(images), 0) AS BIGINT), CAST(COALESCE(SUM(indexed), 0) AS BIGINT), \
             CAST(COALESCE(MAX(changed_at), 0) AS BIGINT) FROM library_dirs",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(LibraryVersion { assets: r.try_get(0)?, indexed: r.try_get(1)?, last_change_ms: r.try_get(2)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_the_folder_and_below_only() {
        let (eq, lo, hi) = under_bounds("/p/a/");
        assert_eq!((eq.as_str(), lo.as_str(), hi.as_str()), ("/p/a", "/p/a/", "/p/a0"));
        for (path, inside) in [("/p/a", true), ("/p/a/b", true), ("/p/a/b/c", true), ("/p/ab", false), ("/p/a-b", false), ("/p/a0", false), ("/p", false)] {
            let hit = path == eq || (path >= lo.as_str() && path < hi.as_str());
            assert_eq!(hit, inside, "{path}");
        }
    }

    #[tokio::test]
    async fn counts_follow_every_write_to_the_assets() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let c = Catalog::connect(&url, 2).await.unwrap();
        let now = crate::model::now_ms();
        let files: Vec<crate::library::FileEntry> = ["/p/a/1.jpg", "/p/a/2.jpg", "/p/a/b/3.jpg", "/p/top.jpg"]
            .iter()
            .map(|p| crate::library::FileEntry { path: p.into(), size: 1, modified_ms: now })
            .collect();
        let ids = c.upsert_assets(&files).await.unwrap();
        let got = c.dir_counts("/p").await.unwrap();
        let simple: Vec<(&str, i64, i64)> = got.iter().map(|d| (d.path.as_str(), d.images, d.indexed)).collect();
        assert_eq!(simple, vec![("/p", 1, 0), ("/p/a", 2, 0), ("/p/a/b", 1, 0)]);
        assert_eq!(c.dir_counts("/p/a").await.unwrap().len(), 2);
        assert_eq!(c.library_version().await.unwrap().assets, 4);
        // Indexed, moved, deleted: the counts follow in the same transaction.
        let v0 = c.library_version().await.unwrap();
        sqlx::query("UPDATE image_assets SET indexed_at = $1 WHERE id = $2").bind(now).bind(ids[0]).execute(&c.write).await.unwrap();
        sqlx::query("UPDATE image_assets SET path = '/p/c/2.jpg' WHERE id = $1").bind(ids[1]).execute(&c.write).await.unwrap();
        sqlx::query("DELETE FROM image_assets WHERE id = $1").bind(ids[2]).execute(&c.write).await.unwrap();
        let got = c.dir_counts("/p").await.unwrap();
        let simple: Vec<(&str, i64, i64)> = got.iter().map(|d| (d.path.as_str(), d.images, d.indexed)).collect();
        assert_eq!(simple, vec![("/p", 1, 0), ("/p/a", 1, 1), ("/p/c", 1, 0)], "an emptied folder has no row");
        let v1 = c.library_version().await.unwrap();
        assert_eq!((v1.assets, v1.indexed), (3, 1));
        assert_ne!(v0, v1);
        c.close().await;
    }
}
