//! Sessions and their subdirectories: create, read, list, patch, delete, compare-and-set
//! transitions, selections and image counts.

use super::*;

macro_rules! session_cols {
    () => {
        "id, name, status, root_path, category_id, config, source, auto_start, live, total_images, \
         processed_images, failed_images, skipped_images, pending_reason, last_error, created_at, \
         updated_at, started_at, paused_at, completed_at"
    };
}
macro_rules! subdir_cols {
    () => {
        "id, session_id, path, name, selected, is_root, image_count, trained_count, created_at"
    };
}

impl Catalog {
    pub async fn create_session(&self, s: &NewSession, subdirs: &[NewSubdir]) -> Result<Session> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let res = sqlx::query(
            "INSERT INTO training_sessions (name, status, root_path, category_id, config, source, auto_start, live, created_at, updated_at) \
             VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
        )
        .bind(&s.name)
        .bind(&s.root_path)
        .bind(s.category_id)
        .bind(s.config.to_string())
        .bind(&s.source)
        .bind(b(s.auto_start))
        .bind(b(s.live))
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match res {
            Ok(row) => row.try_get(0)?,
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::Conflict(format!("a session named {:?} already exists; choose another name or update that session", s.name)));
            }
            Err(e) => return Err(e.into()),
        };
        upsert_subdirs(&mut tx, id, subdirs, true, now).await?;
        tx.commit().await?;
        self.session(id).await?.ok_or_else(|| CatalogError::NotFound(format!("session {id} vanished")))
    }

    pub async fn session(&self, id: i64) -> Result<Option<Session>> {
        let row = sqlx::query(concat!("SELECT ", session_cols!(), " FROM training_sessions WHERE id = $1")).bind(id).fetch_optional(&self.read).await?;
        row.map(|r| rows::session(&r)).transpose().map_err(Into::into)
    }

    pub async fn session_by_name(&self, name: &str) -> Result<Option<Session>> {
        let row = sqlx::query(concat!("SELECT ", session_cols!(), " FROM training_sessions WHERE name = $1")).bind(name).fetch_optional(&self.read).await?;
        row.map(|r| rows::session(&r)).transpose().map_err(Into::into)
    }

    /// One page of sessions (by id), optionally of one status, and the total matching.
    pub async fn list_sessions(&self, status: Option<SessionStatus>, limit: i64, offset: i64) -> Result<(Vec<Session>, i64)> {
        let st = status.map(|s| s.as_str());
        let items =
            sqlx::query(concat!("SELECT ", session_cols!(), " FROM training_sessions WHERE ($1 IS NULL OR status = $1) ORDER BY id LIMIT $2 OFFSET $3"))
                .bind(st)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.read)
                .await?
                .iter()
                .map(rows::session)
                .collect::<std::result::Result<Vec<_>, _>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_sessions WHERE ($1 IS NULL OR status = $1)").bind(st).fetch_one(&self.read).await?;
        Ok((items, total))
    }

    /// Sessions declared autoStart that still wait in `pending` for images.
    pub async fn sessions_waiting(&self) -> Result<Vec<Session>> {
        Ok(sqlx::query(concat!("SELECT ", session_cols!(), " FROM training_sessions WHERE status = 'pending' AND auto_start = 1 ORDER BY id"))
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::session)
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    pub async fn update_session(&self, id: i64, p: &SessionPatch) -> Result<()> {
        let (set_cat, cat) = match p.category_id {
            Some(c) => (1i64, c),
            None => (0, None),
        };
        let res = sqlx::query(
            "UPDATE training_sessions SET name = COALESCE($2, name), \
             category_id = CASE WHEN $3 = 1 THEN $4 ELSE category_id END, \
             config = COALESCE($5, config), live = COALESCE($6, live), auto_start = COALESCE($7, auto_start), \
             updated_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(p.name.as_deref())
        .bind(set_cat)
        .bind(cat)
        .bind(p.config.as_ref().map(|c| c.to_string()))
        .bind(p.live.map(b))
        .bind(p.auto_start.map(b))
        .bind(now_ms())
        .execute(&self.write)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => Err(CatalogError::NotFound(format!("session {id} does not exist"))),
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(CatalogError::Conflict(format!("a session named {:?} already exists; choose another name", p.name.as_deref().unwrap_or_default())))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_session(&self, id: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM training_sessions WHERE id = $1").bind(id).execute(&self.write).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Compare-and-set status change: succeeds only while the session is still in `from`.
    pub async fn transition(&self, id: i64, from: SessionStatus, to: SessionStatus, stamps: Stamps) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let ok = transition_tx(&mut tx, id, from, to, stamps).await?;
        tx.commit().await?;
        Ok(ok)
    }

    pub async fn set_pending_reason(&self, id: i64, reason: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE training_sessions SET pending_reason = $2 WHERE id = $1").bind(id).bind(reason).execute(&self.write).await?;
        Ok(())
    }

    pub async fn set_last_error(&self, id: i64, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE training_sessions SET last_error = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(error)
            .bind(now_ms())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn subdirectories(&self, session_id: i64) -> Result<Vec<Subdirectory>> {
        Ok(sqlx::query(concat!("SELECT ", subdir_cols!(), " FROM training_subdirectories WHERE session_id = $1 ORDER BY is_root DESC, path"))
            .bind(session_id)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(rows::subdirectory)
            .collect::<std::result::Result<Vec<_>, _>>()?)
    }

    /// Insert missing subdirectories and refresh names and counts of known ones. With
    /// `set_selection`, the given `selected` flags overwrite the stored ones.
    pub async fn upsert_subdirectories(&self, session_id: i64, subdirs: &[NewSubdir], set_selection: bool) -> Result<()> {
        let mut tx = self.begin_write().await?;
        upsert_subdirs(&mut tx, session_id, subdirs, set_selection, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Apply `[(subdirectory id, selected)]` atomically; an id not of this session changes nothing.
    pub async fn set_selection(&self, session_id: i64, changes: &[(i64, bool)]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        for &(id, selected) in changes {
            let r = sqlx::query("UPDATE training_subdirectories SET selected = $1, updated_at = $2 WHERE id = $3 AND session_id = $4")
                .bind(b(selected))
                .bind(now)
                .bind(id)
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() == 0 {
                return Err(CatalogError::NotFound(format!(
                    "subdirectory {id} does not belong to session {session_id} (GET /api/v1/training/sessions/{session_id}/subdirectories lists its ids)"
                )));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_image_counts(&self, counts: &[(i64, i64)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        set_image_counts_tx(&mut tx, counts).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Catalogue the files found under each subdirectory and give `session_id` one pending job
    /// per image it does not have a job for yet, all in one transaction. Returns the number of
    /// jobs created.
    pub async fn add_discovered(&self, session_id: i64, found: &[(i64, Vec<FileEntry>)]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let created = add_discovered_tx(&mut tx, session_id, found).await?;
        tx.commit().await?;
        Ok(created)
    }
}

/// The compare-and-set status change inside a transaction.
pub(super) async fn transition_tx(tx: &mut Transaction<'static, Any>, id: i64, from: SessionStatus, to: SessionStatus, stamps: Stamps) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE training_sessions SET status = $1, updated_at = $2, \
         started_at = CASE WHEN $3 = 1 THEN $2 ELSE started_at END, \
         paused_at = CASE WHEN $4 = 1 THEN $2 WHEN $4 = 2 THEN NULL ELSE paused_at END, \
         completed_at = CASE WHEN $5 = 1 THEN $2 WHEN $5 = 2 THEN NULL ELSE completed_at END \
         WHERE id = $6 AND status = $7",
    )
    .bind(to.as_str())
    .bind(now_ms())
    .bind(b(stamps.started))
    .bind(stamps.paused.code())
    .bind(stamps.completed.code())
    .bind(id)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub(super) async fn set_image_counts_tx(tx: &mut Transaction<'static, Any>, counts: &[(i64, i64)]) -> Result<()> {
    let now = now_ms();
    for &(id, count) in counts {
        sqlx::query("UPDATE training_subdirectories SET image_count = $1, updated_at = $2 WHERE id = $3 AND image_count <> $1")
            .bind(count)
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// `add_discovered` inside a transaction.
pub(super) async fn add_discovered_tx(tx: &mut Transaction<'static, Any>, session_id: i64, found: &[(i64, Vec<FileEntry>)]) -> Result<u64> {
    let now = now_ms();
    let mut created = 0;
    for (subdir_id, files) in found {
        for f in files {
            let asset_id = upsert_asset(tx, f, now).await?;
            let r = sqlx::query(
                "INSERT INTO training_jobs (session_id, asset_id, subdirectory_id, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT (session_id, asset_id) DO NOTHING",
            )
            .bind(session_id)
            .bind(asset_id)
            .bind(*subdir_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            created += r.rows_affected();
        }
    }
    refresh_counts(tx, session_id, now).await?;
    Ok(created)
}

pub(super) async fn upsert_subdirs(tx: &mut Transaction<'static, Any>, session_id: i64, subdirs: &[NewSubdir], set_selection: bool, now: i64) -> Result<()> {
    let q = if set_selection {
        "INSERT INTO training_subdirectories (session_id, path, name, selected, is_root, image_count, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (session_id, path) DO UPDATE SET name = excluded.name, \
         selected = excluded.selected, is_root = excluded.is_root, image_count = excluded.image_count, updated_at = excluded.updated_at"
    } else {
        "INSERT INTO training_subdirectories (session_id, path, name, selected, is_root, image_count, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (session_id, path) DO UPDATE SET name = excluded.name, \
         is_root = excluded.is_root, image_count = excluded.image_count, updated_at = excluded.updated_at"
    };
    for s in subdirs {
        sqlx::query(q)
            .bind(session_id)
            .bind(&s.path)
            .bind(&s.name)
            .bind(b(s.selected))
            .bind(b(s.is_root))
            .bind(s.image_count)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
