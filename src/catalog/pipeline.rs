//! What the embedding pipeline needs from the catalog beyond claims and completion.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;

use super::{Catalog, Lease, Result, finish_if_done};
use crate::model::now_ms;

impl Catalog {
    /// Jobs leased by `owner` go back to pending: called when a daemon starts, since whatever
    /// it held in its previous life died with it.
    pub async fn requeue_owner(&self, owner: &str) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE training_jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
             WHERE status = 'running' AND lease_owner = $1",
        )
        .bind(owner)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(r.rows_affected())
    }

    /// For each asset, the sessions whose jobs completed it (its vector's `session_ids`), and
    /// the category of every session involved.
    pub async fn asset_sessions(&self, asset_ids: &[i64]) -> Result<(HashMap<i64, BTreeSet<i64>>, HashMap<i64, Option<i64>>)> {
        let mut sessions: HashMap<i64, BTreeSet<i64>> = HashMap::new();
        let mut categories = HashMap::new();
        for &a in asset_ids {
            let rows = sqlx::query(
                "SELECT j.session_id, s.category_id FROM training_jobs j JOIN training_sessions s ON s.id = j.session_id \
                 WHERE j.asset_id = $1 AND j.status IN ('completed', 'running')",
            )
            .bind(a)
            .fetch_all(&self.read)
            .await?;
            for r in rows {
                let sid: i64 = r.try_get(0)?;
                let cat: Option<i64> = r.try_get(1)?;
                sessions.entry(a).or_default().insert(sid);
                categories.insert(sid, cat);
            }
        }
        Ok((sessions, categories))
    }

    /// Complete leased jobs (their vectors are stored), stamp their assets' `indexed_at` and
    /// record dimensions and labels from `meta`, add the batch to its sessions' and
    /// subdirectories' counts and complete sessions with nothing left — one transaction. The
    /// counts move by what this batch completed (running → completed changes nothing else), so
    /// a batch costs O(batch), not O(library): recounting every job per batch made indexing
    /// slow down as the library grew. Jobs no longer running under `owner` with
    /// that lease token (cancelled meanwhile, lease taken over) are left as they are.
    pub async fn complete_embedded(&self, owner: &str, leases: &[Lease], meta: &[AssetMeta]) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // Width/height/labels only for jobs still leased to us: a job sent back to pending
        // (its file changed while in flight) keeps nothing from the old bytes.
        let meta: HashMap<i64, &AssetMeta> = meta.iter().map(|m| (m.asset_id, m)).collect();
        let mut sessions: BTreeMap<i64, i64> = BTreeMap::new();
        let mut subdirs: BTreeMap<i64, i64> = BTreeMap::new();
        let mut done = 0;
        // Locks in one order everywhere (PostgreSQL, many daemons): the jobs by id first, then
        // their assets by id (whose folder-count trigger takes the shared `library_dirs` row
        // last, briefly), then subdirectories and sessions. A batch that took a folder's row
        // between two of its job rows deadlocked with its own lease renewer.
        let mut leases: Vec<Lease> = leases.to_vec();
        leases.sort_by_key(|l| l.job_id);
        let mut stamped: Vec<i64> = Vec::with_capacity(leases.len());
        for l in &leases {
            let row = sqlx::query(
                "UPDATE training_jobs SET status = 'completed', completed_at = $1, updated_at = $1, lease_owner = NULL, \
                 lease_expires_at = NULL, error_message = NULL WHERE id = $2 AND status = 'running' AND lease_owner = $3 \
                 AND lease_token = $4 RETURNING session_id, asset_id, subdirectory_id",
            )
            .bind(now)
            .bind(l.job_id)
            .bind(owner)
            .bind(l.token)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                *sessions.entry(row.try_get::<i64, _>(0)?).or_default() += 1;
                if let Some(sub) = row.try_get::<Option<i64>, _>(2)? {
                    *subdirs.entry(sub).or_default() += 1;
                }
                if let Some(asset) = row.try_get::<Option<i64>, _>(1)? {
                    stamped.push(asset);
                }
                done += 1;
            }
        }
        stamped.sort_unstable();
        for asset in stamped {
            stamp_asset(&mut tx, asset, meta.get(&asset).copied(), now).await?;
        }
        for (sub, n) in subdirs {
            sqlx::query("UPDATE training_subdirectories SET trained_count = trained_count + $1 WHERE id = $2").bind(n).bind(sub).execute(&mut *tx).await?;
        }
        for (sid, n) in sessions {
            sqlx::query("UPDATE training_sessions SET processed_images = processed_images + $1, updated_at = $2 WHERE id = $3")
                .bind(n)
                .bind(now)
                .bind(sid)
                .execute(&mut *tx)
                .await?;
            finish_if_done(&mut tx, sid, now).await?;
        }
        tx.commit().await?;
        Ok(done)
    }
}

/// What the pipeline learnt of an asset it indexed.
#[derive(Debug, Clone)]
pub struct AssetMeta {
    pub asset_id: i64,
    pub width: u32,
    pub height: u32,
    /// The labels as JSON.
    pub labels: String,
    /// SHA-256 of the bytes and the dHash, when read from disk.
    pub hashes: Option<(String, u64)>,
}

impl Catalog {
    /// Current paths of assets that still exist (search results are re-pathed through it).
    pub async fn asset_paths(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        for &id in ids {
            if let Some(p) = sqlx::query_scalar::<_, String>("SELECT path FROM image_assets WHERE id = $1").bind(id).fetch_optional(&self.read).await? {
                out.insert(id, p);
            }
        }
        Ok(out)
    }
}

/// An asset is indexed: its stamp, plus what the embedding learnt (size, labels, hashes) when
/// known — one statement (a completed job and a copy completed as skipped both end here).
pub(super) async fn stamp_asset(tx: &mut sqlx::Transaction<'static, sqlx::Any>, asset: i64, meta: Option<&AssetMeta>, now: i64) -> Result<()> {
    let q = match meta {
        Some(m) => sqlx::query(
            "UPDATE image_assets SET indexed_at = $1, width = $2, height = $3, labels = $4, \
             content_hash = COALESCE($5, content_hash), dhash = COALESCE($6, dhash) WHERE id = $7",
        )
        .bind(now)
        .bind(m.width as i64)
        .bind(m.height as i64)
        .bind(m.labels.as_str())
        .bind(m.hashes.as_ref().map(|h| h.0.clone()))
        .bind(m.hashes.as_ref().map(|h| h.1 as i64)),
        None => sqlx::query("UPDATE image_assets SET indexed_at = $1 WHERE id = $2").bind(now),
    };
    q.bind(asset).execute(&mut **tx).await?;
    Ok(())
}
