//! Assets as the catalog knows them outside the watcher's change sets: upserts from a walk,
//! lookups, counts, and the catalog's identity (paired with the vectors).

use super::*;

impl Catalog {
    /// Catalogue files without creating jobs; returns their asset ids in order.
    pub async fn upsert_assets(&self, files: &[FileEntry]) -> Result<Vec<i64>> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::with_capacity(files.len());
        for f in files {
            ids.push(upsert_asset(&mut tx, f, now).await?);
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn asset_by_path(&self, path: &str) -> Result<Option<Asset>> {
        let row = sqlx::query("SELECT id, path, file_size, file_modified_at, width, height, content_hash, indexed_at FROM image_assets WHERE path = $1")
            .bind(path)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| rows::asset(&r)).transpose().map_err(Into::into)
    }

    /// This catalog's id: made once (the first time a daemon opens the catalog) and kept; the
    /// vector store keeps it too (`vectors::Pairing`), so a catalog never reads another
    /// catalog's vectors.
    pub async fn identity(&self) -> Result<String> {
        let fresh = random_id();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO catalog_meta (key, value) VALUES ('catalog_id', $1) ON CONFLICT (key) DO NOTHING").bind(&fresh).execute(&mut *tx).await?;
        let id: String = sqlx::query_scalar("SELECT value FROM catalog_meta WHERE key = 'catalog_id'").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The highest asset id this catalog ever gave out (SQLite: AUTOINCREMENT's high-water
    /// mark, so deleted ids count too). `None` on PostgreSQL, where peers give out ids at the
    /// same time and no daemon can tell alone which ids are unknown to all of them.
    pub async fn asset_id_high_water(&self) -> Result<Option<i64>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let seq: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM sqlite_sequence WHERE name = 'image_assets'").fetch_one(&self.read).await?;
        let max: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM image_assets").fetch_one(&self.read).await?;
        Ok(Some(seq.max(max)))
    }

    pub async fn count_assets(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM image_assets").fetch_one(&self.read).await?)
    }
}

pub(super) async fn upsert_asset(tx: &mut Transaction<'static, Any>, f: &FileEntry, now: i64) -> Result<i64> {
    // A changed file (size or mtime) loses its `indexed_at`: its vector is stale.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO image_assets (path, file_size, file_modified_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (path) DO UPDATE SET \
           indexed_at = CASE WHEN image_assets.file_size <> excluded.file_size OR image_assets.file_modified_at <> excluded.file_modified_at \
                        THEN NULL ELSE image_assets.indexed_at END, \
           file_size = excluded.file_size, file_modified_at = excluded.file_modified_at, updated_at = excluded.updated_at \
         RETURNING id",
    )
    .bind(f.path.to_string_lossy().as_ref())
    .bind(f.size as i64)
    .bind(f.modified_ms)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}
