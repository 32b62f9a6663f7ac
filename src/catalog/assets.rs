//! Keeping `image_assets` equal to the files on disk: what the watcher and the reconcile scan
//! need. A directory's files are selected by the byte range `[dir/, dir0)` ('0' follows '/'),
//! which an index serves and which needs no LIKE escaping.

use std::collections::BTreeSet;

use sqlx::{Any, Row, Transaction};

use super::{Catalog, Result, finish_if_done, refresh_counts};
use crate::library::FileEntry;
use crate::model::now_ms;

/// What the catalog knows of one asset's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetFile {
    pub id: i64,
    pub path: String,
    pub size: i64,
    pub modified_ms: i64,
}

/// Changes that bring the catalog to the truth on disk, applied in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// (asset id, new path): same asset, no re-embedding.
    pub renames: Vec<(i64, String)>,
    pub creates: Vec<FileEntry>,
    /// (asset id, new size/mtime): content changed, its vector is stale.
    pub changes: Vec<(i64, FileEntry)>,
    pub deletes: Vec<i64>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.renames.is_empty() && self.creates.is_empty() && self.changes.is_empty() && self.deletes.is_empty()
    }
}

/// What applying a change set did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Assets created or changed: (id, path). These may need jobs.
    pub touched: Vec<(i64, String)>,
    pub created: u64,
    pub updated: u64,
    pub renamed: u64,
    pub removed: u64,
    /// Jobs cancelled because their file went away.
    pub jobs_cancelled: u64,
    /// Jobs in flight for a changed file, sent back to pending (embedded again from the new bytes).
    pub jobs_requeued: u64,
}

/// A session that may receive jobs for new or changed images.
#[derive(Debug, Clone)]
pub struct JobTarget {
    pub session_id: i64,
    pub subdirectory_id: i64,
    pub path: String,
    pub is_root: bool,
}

/// Run `sql` (binds: $1 asset id, $2 now; returns session_id per job) over one asset's jobs;
/// records the sessions touched (their counts are refreshed) and returns how many jobs changed.
async fn release_jobs(tx: &mut Transaction<'static, Any>, sql: &'static str, asset_id: i64, now: i64, sessions: &mut BTreeSet<i64>) -> Result<u64> {
    let rows = sqlx::query(sql).bind(asset_id).bind(now).fetch_all(&mut **tx).await?;
    for r in &rows {
        sessions.insert(r.try_get::<i64, _>(0)?);
    }
    Ok(rows.len() as u64)
}

fn upper(prefix: &str) -> String {
    format!("{prefix}0")
}

fn lower(prefix: &str) -> String {
    format!("{prefix}/")
}

impl Catalog {
    /// Assets at `path` or anywhere under it.
    pub async fn assets_under(&self, path: &str) -> Result<Vec<AssetFile>> {
        let rows = sqlx::query(
            "SELECT id, path, file_size, file_modified_at FROM image_assets \
             WHERE path = $1 OR (path >= $2 AND path < $3) ORDER BY path",
        )
        .bind(path)
        .bind(lower(path))
        .bind(upper(path))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(AssetFile { id: r.try_get(0)?, path: r.try_get(1)?, size: r.try_get(2)?, modified_ms: r.try_get(3)? })).collect()
    }

    /// Apply a change set: renames keep ids, creates insert, changes clear `indexed_at`, deletes
    /// cancel the asset's unfinished jobs and remove it. Returns what changed.
    pub async fn apply_changes(&self, cs: &ChangeSet) -> Result<Applied> {
        let now = now_ms();
        let mut out = Applied::default();
        let mut tx = self.begin_write().await?;
        // Deletes first: a rename or create may reuse a path a deleted asset had.
        let mut sessions = BTreeSet::new();
        for &id in &cs.deletes {
            out.jobs_cancelled += release_jobs(
                &mut tx,
                "UPDATE training_jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = $2, \
                 error_message = 'file deleted' WHERE asset_id = $1 AND status IN ('pending', 'running') RETURNING session_id",
                id,
                now,
                &mut sessions,
            )
            .await?;
            let r = sqlx::query("DELETE FROM image_assets WHERE id = $1").bind(id).execute(&mut *tx).await?;
            out.removed += r.rows_affected();
        }
        // Renames go through a temporary path so swaps (a→b, b→a) cannot collide.
        for (id, _) in &cs.renames {
            sqlx::query("UPDATE image_assets SET path = $1 WHERE id = $2").bind(format!("\u{1}pixdex-rename-{id}")).bind(id).execute(&mut *tx).await?;
        }
        for (id, path) in &cs.renames {
            sqlx::query("UPDATE image_assets SET path = $1, updated_at = $2 WHERE id = $3").bind(path).bind(now).bind(id).execute(&mut *tx).await?;
            out.renamed += 1;
        }
        for (id, f) in &cs.changes {
            sqlx::query("UPDATE image_assets SET file_size = $1, file_modified_at = $2, indexed_at = NULL, content_hash = NULL, dhash = NULL, updated_at = $3 WHERE id = $4")
                .bind(f.size as i64)
                .bind(f.modified_ms)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // A job in flight for it has read (or may read) the old bytes: it goes back to
            // pending, so the in-flight completion (lease-checked) no longer matches and the
            // asset is embedded again from its new content.
            out.jobs_requeued += release_jobs(
                &mut tx,
                "UPDATE training_jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
                 WHERE asset_id = $1 AND status = 'running' RETURNING session_id",
                *id,
                now,
                &mut sessions,
            )
            .await?;
            out.updated += 1;
            out.touched.push((*id, f.path.to_string_lossy().into_owned()));
        }
        for f in &cs.creates {
            let id = super::upsert_asset(&mut tx, f, now).await?;
            out.created += 1;
            out.touched.push((id, f.path.to_string_lossy().into_owned()));
        }
        for sid in sessions {
            refresh_counts(&mut tx, sid, now).await?;
            finish_if_done(&mut tx, sid, now).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Recompute `image_count` of every subdirectory row at or above one of `paths`, from the
    /// catalog (a row for a session root counts only the files directly in it).
    pub async fn recount_subdirectories(&self, paths: &[String]) -> Result<u64> {
        let rows = sqlx::query("SELECT id, path, is_root FROM training_subdirectories").fetch_all(&self.read).await?;
        let mut n = 0;
        let mut tx = self.begin_write().await?;
        for r in rows {
            let id: i64 = r.try_get(0)?;
            let dir: String = r.try_get(1)?;
            let is_root = r.try_get::<i64, _>(2)? != 0;
            let affected = paths.iter().any(|p| p == &dir || p.starts_with(&lower(&dir)) || dir.starts_with(&lower(p)));
            if !affected {
                continue;
            }
            // From the per-directory counts (O(folders), not O(images)).
            let count: i64 = if is_root {
                sqlx::query_scalar("SELECT CAST(COALESCE(SUM(images), 0) AS BIGINT) FROM library_dirs WHERE path = $1").bind(&dir).fetch_one(&mut *tx).await?
            } else {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(COALESCE(SUM(images), 0) AS BIGINT) FROM library_dirs WHERE path = $1 OR ({p} >= $2 AND {p} < $3)",
                    p = self.byte_order("path")
                )))
                .bind(&dir)
                .bind(lower(&dir))
                .bind(upper(&dir))
                .fetch_one(&mut *tx)
                .await?
            };
            let r = sqlx::query("UPDATE training_subdirectories SET image_count = $1, updated_at = $2 WHERE id = $3 AND image_count <> $1")
                .bind(count)
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            n += r.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Selected subdirectories of sessions that take new work: `live` ones that are running or
    /// completed, or (`any_session`) every running, completed or paused session selecting them.
    pub async fn job_targets(&self, any_session: bool) -> Result<Vec<JobTarget>> {
        let q = if any_session {
            "SELECT d.session_id, d.id, d.path, d.is_root FROM training_subdirectories d JOIN training_sessions s ON s.id = d.session_id \
             WHERE d.selected = 1 AND s.status IN ('running', 'completed', 'paused')"
        } else {
            "SELECT d.session_id, d.id, d.path, d.is_root FROM training_subdirectories d JOIN training_sessions s ON s.id = d.session_id \
             WHERE d.selected = 1 AND s.live = 1 AND s.status IN ('running', 'completed')"
        };
        let rows = sqlx::query(q).fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| Ok(JobTarget { session_id: r.try_get(0)?, subdirectory_id: r.try_get(1)?, path: r.try_get(2)?, is_root: r.try_get::<i64, _>(3)? != 0 }))
            .collect()
    }

    /// Queue (or re-queue) a job per (session, subdirectory, asset); completed sessions that
    /// get work go back to running. Returns the number of jobs queued.
    pub async fn queue_jobs(&self, items: &[(i64, i64, i64)]) -> Result<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut sessions = BTreeSet::new();
        let mut n = 0;
        for &(session_id, subdir_id, asset_id) in items {
            let r = sqlx::query(
                "INSERT INTO training_jobs (session_id, asset_id, subdirectory_id, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'pending', $4, $4) \
                 ON CONFLICT (session_id, asset_id) DO UPDATE SET status = 'pending', error_message = NULL, \
                   lease_owner = NULL, lease_expires_at = NULL, completed_at = NULL, updated_at = excluded.updated_at \
                 WHERE training_jobs.status <> 'running'",
            )
            .bind(session_id)
            .bind(asset_id)
            .bind(subdir_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            n += r.rows_affected();
            sessions.insert(session_id);
        }
        for sid in sessions {
            sqlx::query(
                "UPDATE training_sessions SET status = 'running', completed_at = NULL, updated_at = $2 WHERE id = $1 AND status = 'completed' \
                 AND EXISTS (SELECT 1 FROM training_jobs WHERE session_id = $1 AND status = 'pending')",
            )
            .bind(sid)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            refresh_counts(&mut tx, sid, now).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// A directory was renamed: session subdirectory rows at or under `from` follow it.
    pub async fn rename_subdirectories(&self, from: &str, to: &str) -> Result<u64> {
        let rows = sqlx::query("SELECT id, path FROM training_subdirectories WHERE path = $1 OR (path >= $2 AND path < $3)")
            .bind(from)
            .bind(lower(from))
            .bind(upper(from))
            .fetch_all(&self.read)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        for r in &rows {
            let id: i64 = r.try_get(0)?;
            let path: String = r.try_get(1)?;
            let new_path = format!("{to}{}", &path[from.len()..]);
            let name = if path == from { to.rsplit('/').next().unwrap_or(to).to_string() } else { String::new() };
            sqlx::query("UPDATE training_subdirectories SET path = $1, name = CASE WHEN $2 = '' THEN name ELSE $2 END, updated_at = $3 WHERE id = $4")
                .bind(&new_path)
                .bind(&name)
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Every asset (tests and small tools; a big library should page).
    pub async fn all_assets(&self) -> Result<Vec<AssetFile>> {
        let rows = sqlx::query("SELECT id, path, file_size, file_modified_at FROM image_assets ORDER BY path").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(AssetFile { id: r.try_get(0)?, path: r.try_get(1)?, size: r.try_get(2)?, modified_ms: r.try_get(3)? })).collect()
    }
}
