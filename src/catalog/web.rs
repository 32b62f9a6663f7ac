//! What the web apps read and edit beyond sessions: categories, the library overview (per
//! directory counts), asset listings and the last failure of an asset.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::rows::{self, ts};
use super::{Asset, Catalog, CatalogError, Result, is_unique_violation};
use crate::model::now_ms;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub color: Option<String>,
    pub is_default: bool,
    #[serde(serialize_with = "ts::ms")]
    pub created_at: i64,
    #[serde(serialize_with = "ts::ms")]
    pub updated_at: i64,
    /// Sessions filed under it.
    pub session_count: i64,
}

/// Fields a category PATCH may change; `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CategoryPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub color: Option<Option<String>>,
}

/// An asset with the category of the session that last indexed it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetRow {
    #[serde(flatten)]
    pub asset: Asset,
    pub category_id: Option<i64>,
    #[serde(serialize_with = "ts::ms")]
    pub created_at: i64,
    /// The classifier's labels (JSON as stored), when indexed.
    pub labels: serde_json::Value,
}

/// A directory the user asked never to offer for training.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredDir {
    pub path: String,
    pub reason: Option<String>,
    #[serde(serialize_with = "ts::ms")]
    pub ignored_at: i64,
}

/// Training state of a directory across every session that lists it.
#[derive(Debug, Clone, Default)]
pub struct DirTraining {
    pub trained: i64,
    pub last_ms: Option<i64>,
    pub in_progress: bool,
}

/// Cheap numbers that change whenever the library does (the event stream sends them; clients
/// reload the overview when they change).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LibraryVersion {
    pub assets: i64,
    pub indexed: i64,
    pub last_change_ms: i64,
}

const CATEGORY_SELECT: &str = "SELECT c.id, c.name, c.description, c.color, c.is_default, c.created_at, c.updated_at, \
     CAST((SELECT COUNT(*) FROM training_sessions s WHERE s.category_id = c.id) AS BIGINT) AS session_count FROM categories c";

fn category(r: &sqlx::any::AnyRow) -> std::result::Result<Category, sqlx::Error> {
    Ok(Category {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        color: r.try_get("color")?,
        is_default: r.try_get::<i64, _>("is_default")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        session_count: r.try_get("session_count")?,
    })
}

fn asset_row(r: &sqlx::any::AnyRow) -> std::result::Result<AssetRow, sqlx::Error> {
    let labels: Option<String> = r.try_get("labels")?;
    let labels = labels.and_then(|l| serde_json::from_str(&l).ok()).unwrap_or(serde_json::Value::Array(vec![]));
    Ok(AssetRow { asset: rows::asset(r)?, category_id: r.try_get("category_id")?, created_at: r.try_get("created_at")?, labels })
}

/// The category of the session whose job last completed the asset.
const ASSET_SELECT: &str = "SELECT a.id, a.path, a.file_size, a.file_modified_at, a.width, a.height, a.content_hash, a.indexed_at, a.created_at, a.labels, \
     (SELECT s.category_id FROM training_jobs j JOIN training_sessions s ON s.id = j.session_id \
      WHERE j.asset_id = a.id AND j.status = 'completed' ORDER BY j.completed_at DESC LIMIT 1) AS category_id \
     FROM image_assets a";

impl Catalog {
    pub async fn list_categories(&self, limit: i64, offset: i64) -> Result<(Vec<Category>, i64)> {
        let items = sqlx::query(sqlx::AssertSqlSafe(format!("{CATEGORY_SELECT} ORDER BY c.id LIMIT $1 OFFSET $2")))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(category)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM categories").fetch_one(&self.read).await?;
        Ok((items, total))
    }

    pub async fn category(&self, id: i64) -> Result<Option<Category>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{CATEGORY_SELECT} WHERE c.id = $1"))).bind(id).fetch_optional(&self.read).await?;
        row.map(|r| category(&r)).transpose().map_err(Into::into)
    }

    pub async fn default_category(&self) -> Result<Option<Category>> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("{CATEGORY_SELECT} WHERE c.is_default = 1 ORDER BY c.id LIMIT 1"))).fetch_optional(&self.read).await?;
        row.map(|r| category(&r)).transpose().map_err(Into::into)
    }

    pub async fn create_category(&self, name: &str, description: Option<&str>, color: Option<&str>) -> Result<Category> {
        let now = now_ms();
        let r =
            sqlx::query("INSERT INTO categories (name, description, color, is_default, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $4) RETURNING id")
                .bind(name)
                .bind(description)
                .bind(color)
                .bind(now)
                .fetch_one(&self.write)
                .await;
        let id: i64 = match r {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => return Err(CatalogError::Conflict(format!("a category named {name:?} already exists; choose another name"))),
            Err(e) => return Err(e.into()),
        };
        self.category(id).await?.ok_or_else(|| CatalogError::NotFound(format!("category {id} vanished")))
    }

    pub async fn update_category(&self, id: i64, p: &CategoryPatch) -> Result<Option<Category>> {
        let r = sqlx::query(
            "UPDATE categories SET name = COALESCE($2, name), \
             description = CASE WHEN $3 = 1 THEN $4 ELSE description END, \
             color = CASE WHEN $5 = 1 THEN $6 ELSE color END, updated_at = $7 WHERE id = $1",
        )
        .bind(id)
        .bind(p.name.as_deref())
        .bind(p.description.is_some() as i64)
        .bind(p.description.clone().flatten())
        .bind(p.color.is_some() as i64)
        .bind(p.color.clone().flatten())
        .bind(now_ms())
        .execute(&self.write)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::Conflict(format!("a category named {:?} already exists; choose another name", p.name.clone().unwrap_or_default())));
            }
            Err(e) => return Err(e.into()),
        }
        self.category(id).await
    }

    /// Delete a category no session uses; the default one stays. `Ok(false)`: no such category.
    pub async fn delete_category(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT name, is_default FROM categories WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
        let Some(row) = row else { return Ok(false) };
        let name: String = row.try_get(0)?;
        if row.try_get::<i64, _>(1)? != 0 {
            return Err(CatalogError::Conflict(format!("category {id} ({name}) is the default category and cannot be deleted")));
        }
        let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_sessions WHERE category_id = $1").bind(id).fetch_one(&mut *tx).await?;
        if used > 0 {
            return Err(CatalogError::Conflict(format!(
                "category {id} ({name}) is used by {used} training session(s); move or delete them first (PATCH their categoryId)"
            )));
        }
        sqlx::query("DELETE FROM categories WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One page of assets (by id), optionally under a directory, and the total. `after` (an
    /// asset id, the last of the previous page) reads the next page by keyset — as cheap deep in
    /// the list as at its start; without it, `offset` rows are skipped (the replaced API's
    /// pages). The total comes from the per-folder counts, not a count of the assets.
    pub async fn list_assets(&self, under: Option<&str>, limit: i64, offset: i64, after: Option<i64>) -> Result<(Vec<AssetRow>, i64)> {
        let (lo, hi) = match under {
            Some(d) => {
                let d = d.trim_end_matches('/');
                (format!("{d}/"), format!("{d}0"))
            }
            None => (String::new(), String::from("\u{10FFFF}")),
        };
        // The whole library: no path range at all (the id index alone serves the page).
        let p = self.byte_order("a.path");
        let range =
            if under.is_some() { format!("{p} >= $1 AND {p} < $2") } else { "CAST($1 AS TEXT) IS NOT NULL AND CAST($2 AS TEXT) IS NOT NULL".to_string() };
        let rows = match after {
            Some(after) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{ASSET_SELECT} WHERE {range} AND a.id > $4 ORDER BY a.id LIMIT $3")))
                    .bind(&lo)
                    .bind(&hi)
                    .bind(limit)
                    .bind(after)
                    .fetch_all(&self.read)
                    .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{ASSET_SELECT} WHERE {range} ORDER BY a.id LIMIT $3 OFFSET $4")))
                    .bind(&lo)
                    .bind(&hi)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        let items = rows.iter().map(asset_row).collect::<std::result::Result<Vec<_>, _>>()?;
        let total = match under {
            Some(d) => self.dir_counts(d).await?.iter().map(|c| c.images).sum(),
            None => self.library_version().await?.assets,
        };
        Ok((items, total))
    }

    pub async fn asset(&self, id: i64) -> Result<Option<AssetRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{ASSET_SELECT} WHERE a.id = $1"))).bind(id).fetch_optional(&self.read).await?;
        row.map(|r| asset_row(&r)).transpose().map_err(Into::into)
    }

    /// Assets by id (search results are translated with them).
    pub async fn assets_by_id(&self, ids: &[i64]) -> Result<HashMap<i64, AssetRow>> {
        let mut out = HashMap::new();
        for &id in ids {
            if let Some(a) = self.asset(id).await? {
                out.insert(id, a);
            }
        }
        Ok(out)
    }

    /// Why the asset's last job failed, if it did (thumbnails of broken files show it).
    pub async fn asset_failure(&self, id: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT error_message FROM training_jobs WHERE asset_id = $1 AND status = 'failed' ORDER BY updated_at DESC LIMIT 1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .flatten())
    }

    pub async fn ignored_dirs(&self) -> Result<Vec<IgnoredDir>> {
        let rows = sqlx::query("SELECT path, reason, created_at FROM ignored_directories ORDER BY path").fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(IgnoredDir { path: r.try_get(0)?, reason: r.try_get(1)?, ignored_at: r.try_get(2)? })).collect()
    }

    /// `Err(Conflict)` when already ignored.
    pub async fn ignore_dir(&self, path: &str, reason: Option<&str>) -> Result<IgnoredDir> {
        let now = now_ms();
        let r = sqlx::query("INSERT INTO ignored_directories (path, reason, created_at) VALUES ($1, $2, $3)")
            .bind(path)
            .bind(reason)
            .bind(now)
            .execute(&self.write)
            .await;
        match r {
            Ok(_) => Ok(IgnoredDir { path: path.to_string(), reason: reason.map(str::to_string), ignored_at: now }),
            Err(e) if is_unique_violation(&e) => Err(CatalogError::Conflict(format!("Directory already ignored: {path}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// `Ok(false)` when it was not ignored.
    pub async fn unignore_dir(&self, path: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM ignored_directories WHERE path = $1").bind(path).execute(&self.write).await?.rows_affected() > 0)
    }

    /// For each path, training state summed over every session's subdirectory row for it.
    pub async fn dir_training(&self, paths: &[String]) -> Result<HashMap<String, DirTraining>> {
        let mut out = HashMap::new();
        for p in paths {
            let r = sqlx::query(
                "SELECT CAST(COALESCE(SUM(d.trained_count), 0) AS BIGINT), MAX(d.updated_at), \
                 CAST(COALESCE(SUM(CASE WHEN s.status IN ('running', 'discovering') THEN 1 ELSE 0 END), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT) \
                 FROM training_subdirectories d JOIN training_sessions s ON s.id = d.session_id WHERE d.path = $1",
            )
            .bind(p)
            .fetch_one(&self.read)
            .await?;
            let n: i64 = r.try_get(3)?;
            if n > 0 {
                out.insert(p.clone(), DirTraining { trained: r.try_get(0)?, last_ms: r.try_get(1)?, in_progress: r.try_get::<i64, _>(2)? > 0 });
            }
        }
        Ok(out)
    }
}
