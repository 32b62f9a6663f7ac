//! Content and perceptual hashes of assets: identical content is embedded once (a copy shares
//! the first one's vector), near-duplicates are found by their dHash.

use std::collections::HashMap;

use sqlx::Row;

use super::{AssetMeta, Catalog, Lease, Result, count_ended, finish_if_done};
use crate::model::now_ms;

/// An asset's hashes, for grouping duplicates.
#[derive(Debug, Clone)]
pub struct AssetHashes {
    pub id: i64,
    pub path: String,
    pub content_hash: Option<String>,
    pub dhash: Option<u64>,
}

impl Catalog {
    /// Another indexed asset with exactly this content (the oldest), if any.
    pub async fn indexed_twin(&self, content_hash: &str, not: i64) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT id, path FROM image_assets WHERE content_hash = $1 AND id <> $2 AND indexed_at IS NOT NULL ORDER BY id LIMIT 1")
            .bind(content_hash)
            .bind(not)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| (r.get("id"), r.get("path"))))
    }

    /// Finish a duplicate's job: skipped with `reason` (its vector is the twin's, already
    /// stored under its own id), its asset stamped indexed with its size, the twin's labels and
    /// its own hashes — one transaction, fenced by the lease like every completion.
    pub async fn complete_duplicate(&self, owner: &str, lease: Lease, meta: &AssetMeta, reason: &str) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE training_jobs SET status = 'skipped', error_message = $1, completed_at = $2, updated_at = $2, lease_owner = NULL, \
             lease_expires_at = NULL WHERE id = $3 AND status = 'running' AND lease_owner = $4 AND lease_token = $5 RETURNING session_id, asset_id",
        )
        .bind(reason)
        .bind(now)
        .bind(lease.job_id)
        .bind(owner)
        .bind(lease.token)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let sid: i64 = row.try_get(0)?;
        if let Some(asset) = row.try_get::<Option<i64>, _>(1)? {
            super::pipeline::stamp_asset(&mut tx, asset, Some(meta), now).await?;
        }
        count_ended(&mut tx, sid, crate::model::JobStatus::Skipped, now).await?;
        finish_if_done(&mut tx, sid, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Hashes of these assets (search groups its hits with them).
    pub async fn asset_hashes(&self, ids: &[i64]) -> Result<HashMap<i64, AssetHashes>> {
        // One indexed lookup per hit (a page of search results: at most 100).
        let mut out = HashMap::new();
        for &id in ids {
            if let Some(r) = sqlx::query("SELECT id, path, content_hash, dhash FROM image_assets WHERE id = $1").bind(id).fetch_optional(&self.read).await? {
                out.insert(id, hashes_row(&r));
            }
        }
        Ok(out)
    }

    /// Every hashed asset under a directory (or everywhere): the duplicate listing's input.
    pub async fn hashed_assets(&self, dir: Option<&str>) -> Result<Vec<AssetHashes>> {
        let rows = sqlx::query("SELECT id, path, content_hash, dhash FROM image_assets WHERE dhash IS NOT NULL ORDER BY id").fetch_all(&self.read).await?;
        let prefix = dir.map(|d| format!("{}/", d.trim_end_matches('/')));
        Ok(rows.iter().map(hashes_row).filter(|h| prefix.as_ref().is_none_or(|p| h.path.starts_with(p.as_str()))).collect())
    }
}

fn hashes_row(r: &sqlx::any::AnyRow) -> AssetHashes {
    AssetHashes { id: r.get("id"), path: r.get("path"), content_hash: r.get("content_hash"), dhash: r.get::<Option<i64>, _>("dhash").map(|v| v as u64) }
}
