//! The catalog: every image asset, every session with its subdirectories and jobs. The only
//! module that speaks SQL.
//!
//! One set of queries serves both dialects through sqlx's `Any` driver: placeholders are `$N`
//! (which SQLite accepts too), times are Unix milliseconds, booleans are 0/1 integers, and every
//! aggregate is cast to an integer. Each dialect has its own migrations folder, embedded in the
//! binary and applied at connect.
//!
//! SQLite has one writer: writes go through a single-connection pool and start with
//! `BEGIN IMMEDIATE`, so a read-then-write transaction never dies on a lock upgrade; readers use
//! their own pool (WAL lets them run beside the writer). PostgreSQL uses one pool for both.

mod assets;
mod dirs;
mod discovery;
mod duplicates;
mod models;
mod mounts;
mod pipeline;
mod rows;
mod transitions;
mod web;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

pub use assets::{Applied, AssetFile, ChangeSet, JobTarget};
pub use dirs::DirCount;
pub use discovery::{Discovery, QueuedBatch};
pub use duplicates::AssetHashes;
pub use models::{ModelRow, ModelState};
pub use mounts::MountRecord;
pub use pipeline::AssetMeta;
pub use rows::{Asset, Job, JobsSummary, Session, Subdirectory};
pub use transitions::StartOutcome;
pub use web::{AssetRow, Category, CategoryPatch, DirTraining, IgnoredDir, LibraryVersion};

/// A Unix-millisecond time as the API shows it (RFC 3339, UTC).
pub fn rows_ts(ms: i64) -> String {
    rows::ts::to_rfc3339(ms)
}

use crate::library::FileEntry;
use crate::model::{JobStatus, SessionStatus, now_ms};

/// Running jobs whose lease ran out (or that hold none) go back to pending: shared by the
/// recovery at start and the periodic reaper.
const REQUEUE_EXPIRED: &str = "UPDATE training_jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
     WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $1)";

/// Sessions left discovering by this daemon ($3) or by a daemon whose heartbeat is older than
/// $2 (or that never had one) go back to pending.
const ORPHANED_STARTS: &str = "UPDATE training_sessions SET status = 'pending', owner = NULL, updated_at = $1 \
     WHERE status = 'discovering' AND discovery IS NULL AND (owner IS NULL OR owner = $3 OR owner NOT IN (SELECT owner FROM daemons WHERE heartbeat_at >= $2))";

/// Jobs this process gave up on after `pipeline.max_attempts` claims (`/metrics`:
/// `pixdex_jobs_failed_total{cause="attempts"}`).
pub static JOBS_GIVEN_UP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Claims of one job before it is given up (`pipeline.max_attempts`).
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot open the catalog at {url}: {source} (check `catalog.url`; for PostgreSQL, that the server is running and the database exists)")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "the catalog file {path} is not a SQLite database (a botched restore or copy, or the wrong file): restore it from a backup, or point catalog.url at the right file"
    )]
    NotADatabase { path: String },
    #[error("cannot apply catalog migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("catalog query failed: {0}")]
    Db(#[from] sqlx::Error),
}

impl CatalogError {
    /// The catalog is unavailable for now (connection refused or lost, pool exhausted, SQLite
    /// busy or locked, PostgreSQL shutting down, out of resources, a serialization conflict):
    /// waiting and retrying is the answer. Anything else is a bug or bad input.
    pub fn is_transient(&self) -> bool {
        match self {
            CatalogError::Connect { .. } => true,
            CatalogError::Db(e) => sqlx_transient(e),
            CatalogError::Migrate(_) | CatalogError::Conflict(_) | CatalogError::NotFound(_) | CatalogError::NotADatabase { .. } => false,
        }
    }
}

fn sqlx_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: BUSY (5), LOCKED (6), IOERR (10) and their extended codes; FULL (13).
            // PostgreSQL: class 08 (connection), 53 (resources: disk full, out of memory,
            // too many connections), 57P0x (shutting down), 40001/40P01 (retry the transaction).
            // SQLite CANTOPEN (14) on a catalog that is already open means a journal or temp
            // file could not be opened: out of file descriptors (EMFILE/ENFILE), transient.
            let sqlite = code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
            let sqlite = sqlite || crate::error::mentions_fd_exhaustion(d.message());
            sqlite || code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Catalog {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    /// The last heartbeat write failed: the error and since when (Unix ms). Reads may still
    /// work (a full disk, a read-only mount), so health asks this instead of only reading.
    write_fault: std::sync::Arc<std::sync::Mutex<Option<(String, i64)>>>,
}

/// A new session row.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub name: String,
    pub root_path: String,
    pub category_id: Option<i64>,
    pub config: serde_json::Value,
    /// "api" or "config" (declared in the config file).
    pub source: String,
    pub auto_start: bool,
    pub live: bool,
}

/// A subdirectory row to insert or refresh.
#[derive(Debug, Clone)]
pub struct NewSubdir {
    pub path: String,
    pub name: String,
    pub selected: bool,
    pub is_root: bool,
    pub image_count: i64,
}

/// Fields a PATCH may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SessionPatch {
    pub name: Option<String>,
    /// `Some(None)` clears the category.
    pub category_id: Option<Option<i64>>,
    pub config: Option<serde_json::Value>,
    pub live: Option<bool>,
    pub auto_start: Option<bool>,
}

/// How a status change touches the session's timestamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamps {
    pub started: bool,
    pub paused: Stamp,
    pub completed: Stamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Stamp {
    #[default]
    Keep,
    Now,
    Clear,
}

impl Stamp {
    fn code(self) -> i64 {
        match self {
            Stamp::Keep => 0,
            Stamp::Now => 1,
            Stamp::Clear => 2,
        }
    }
}

/// What recovery at start found and fixed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovered {
    pub sessions_rediscover: u64,
    pub jobs_requeued: u64,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub session_id: i64,
    pub asset_id: i64,
    pub path: String,
    /// The fencing token of this claim (see `Lease`).
    pub token: i64,
}

impl ClaimedJob {
    pub fn lease(&self) -> Lease {
        Lease { job_id: self.job_id, token: self.token }
    }
}

/// One claim of one job. Every claim bumps the job's token; completing, failing or renewing
/// needs the token of the current claim, so a worker that stalled past its lease (and whose job
/// was claimed again, by a peer or by its own daemon) cannot complete or fail it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub job_id: i64,
    pub token: i64,
}

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

/// 128 random bits as hex (the kernel's generator; the time and pid if it cannot be read).
fn random_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = (t ^ ((std::process::id() as u128) << 96)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn b(v: bool) -> i64 {
    v as i64
}

impl Catalog {
    /// Open (creating a SQLite file if needed) and migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Catalog> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            let path = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default().to_string();
            if let Some(parent) = Path::new(&path).parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let opts = AnyConnectOptions::from_str(&url).map_err(|e| CatalogError::Connect { url: crate::config::mask_url(&url), source: e })?;
        let pool_opts = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                // Our own health check (below) replaces the pool's ping.
                .test_before_acquire(false)
                .before_acquire(|conn, _meta| {
                    Box::pin(async move {
                        // A transaction whose COMMIT or ROLLBACK failed leaves the connection
                        // inside it: SQLite rolls back by itself on SQLITE_FULL / IOERR, so
                        // sqlx's own ROLLBACK then fails and its depth stays above zero, and
                        // every later `BEGIN IMMEDIATE` on this (only) writer would fail with
                        // "non-zero transaction depth" until a restart. The ping flushes any
                        // rollback a dropped transaction queued; a connection still inside a
                        // transaction after it is closed, and the pool opens a fresh one.
                        conn.ping().await?;
                        if conn.is_in_transaction() {
                            tracing::warn!("catalog connection left inside a failed transaction: closed, a fresh one is opened");
                            return Ok(false);
                        }
                        Ok(true)
                    })
                })
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            for pragma in
                                ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL", "PRAGMA busy_timeout = 10000", "PRAGMA foreign_keys = ON"]
                            {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                        }
                        Ok(())
                    })
                })
        };
        let connect_err = |e| CatalogError::Connect { url: crate::config::mask_url(&url), source: e };
        if backend == Backend::Sqlite {
            // One plain connection first: a file that is not a SQLite database (a botched
            // restore, the wrong path) is named as such, not left to a pool time-out.
            let mut probe = sqlx::AnyConnection::connect_with(&opts).await.map_err(connect_err)?;
            if let Err(e) = sqlx::query("PRAGMA schema_version").execute(&mut probe).await {
                let path = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default().to_string();
                return Err(match &e {
                    sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "26") => CatalogError::NotADatabase { path },
                    _ => connect_err(e),
                });
            }
            probe.close().await.ok();
        }
        let (read, write) = match backend {
            Backend::Sqlite => {
                let write = pool_opts(1).connect_with(opts.clone()).await.map_err(connect_err)?;
                let read = pool_opts(max_connections.max(2)).connect_with(opts).await.map_err(connect_err)?;
                (read, write)
            }
            Backend::Postgres => {
                let pool = pool_opts(max_connections).connect_with(opts).await.map_err(connect_err)?;
                (pool.clone(), pool)
            }
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&write).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&write).await?,
        }
        Ok(Catalog { read, write, backend, write_fault: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Sessions
    // -----------------------------------------------------------------------------------------

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

    // -----------------------------------------------------------------------------------------
    // Subdirectories
    // -----------------------------------------------------------------------------------------

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

    // -----------------------------------------------------------------------------------------
    // Assets and jobs
    // -----------------------------------------------------------------------------------------

    /// Catalogue the files found under each subdirectory and give `session_id` one pending job
    /// per image it does not have a job for yet, all in one transaction. Returns the number of
    /// jobs created.
    pub async fn add_discovered(&self, session_id: i64, found: &[(i64, Vec<FileEntry>)]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let created = add_discovered_tx(&mut tx, session_id, found).await?;
        tx.commit().await?;
        Ok(created)
    }

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

    /// Put jobs back to pending for a restart: every job, or only the failed ones.
    pub async fn reset_jobs(&self, session_id: i64, failed_only: bool) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = reset_jobs_tx(&mut tx, session_id, failed_only).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Running jobs whose lease expired go back to pending (their worker died or stalled): the
    /// daemon's reaper calls this periodically, so a dead peer's work returns without a restart.
    pub async fn requeue_expired(&self) -> Result<u64> {
        let now = now_ms();
        Ok(sqlx::query(REQUEUE_EXPIRED).bind(now).execute(&self.write).await?.rows_affected())
    }

    /// Cancel every unfinished (pending or running) job of a session.
    pub async fn cancel_unfinished_jobs(&self, session_id: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = cancel_unfinished_tx(&mut tx, session_id).await?;
        tx.commit().await?;
        Ok(n)
    }

    pub async fn jobs_summary(&self, session_id: i64) -> Result<JobsSummary> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) FROM training_jobs WHERE session_id = $1 GROUP BY status").bind(session_id).fetch_all(&self.read).await?;
        let mut s = JobsSummary::default();
        for r in rows {
            let status: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match JobStatus::parse(&status) {
                Some(JobStatus::Pending) => s.pending = n,
                Some(JobStatus::Running) => s.running = n,
                Some(JobStatus::Completed) => s.completed = n,
                Some(JobStatus::Failed) => s.failed = n,
                Some(JobStatus::Cancelled) => s.cancelled = n,
                Some(JobStatus::Skipped) => s.skipped = n,
                None => {}
            }
        }
        Ok(s)
    }

    pub async fn jobs(&self, session_id: i64, status: Option<JobStatus>, limit: i64, offset: i64) -> Result<(Vec<Job>, i64)> {
        let st = status.map(|s| s.as_str());
        let items = sqlx::query(
            "SELECT j.id, j.session_id, j.asset_id, a.path, j.subdirectory_id, j.status, j.error_message, j.attempts, \
             j.created_at, j.updated_at, j.started_at, j.completed_at \
             FROM training_jobs j LEFT JOIN image_assets a ON a.id = j.asset_id \
             WHERE j.session_id = $1 AND ($2 IS NULL OR j.status = $2) ORDER BY j.id LIMIT $3 OFFSET $4",
        )
        .bind(session_id)
        .bind(st)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(rows::job)
        .collect::<std::result::Result<Vec<_>, _>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND ($2 IS NULL OR status = $2)")
            .bind(session_id)
            .bind(st)
            .fetch_one(&self.read)
            .await?;
        Ok((items, total))
    }

    /// Claim up to `limit` pending jobs of running sessions for `owner`, leased for `lease`.
    /// Sessions take turns: jobs are ordered by their rank within their session, so one big
    /// session cannot starve the others.
    pub async fn claim_jobs(&self, owner: &str, limit: i64, lease: Duration) -> Result<Vec<ClaimedJob>> {
        self.claim_jobs_max(owner, limit, lease, DEFAULT_MAX_ATTEMPTS).await
    }

    /// `claim_jobs`, giving up first on pending jobs already claimed `max_attempts` times: each
    /// of those claims ended with its worker dead or stalled (an image that kills the process,
    /// say), so the job ends failed with the reason instead of crash-looping the daemons.
    pub async fn claim_jobs_max(&self, owner: &str, limit: i64, lease: Duration, max_attempts: i64) -> Result<Vec<ClaimedJob>> {
        let now = now_ms();
        let expires = now + lease.as_millis() as i64;
        let mut tx = self.begin_write().await?;
        let gave_up: Vec<i64> = sqlx::query_scalar(
            "UPDATE training_jobs SET status = 'failed', error_message = 'gave up after ' || CAST(attempts AS TEXT) || \
             ' attempts: each time, the worker processing this image died or stalled before finishing it (an image that crashes the decoder or exhausts memory?)', \
             lease_owner = NULL, lease_expires_at = NULL, completed_at = $2, updated_at = $2 \
             WHERE status = 'pending' AND attempts >= $1 RETURNING session_id",
        )
        .bind(max_attempts.max(1))
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let given_up = gave_up.len() as u64;
        let mut sessions: Vec<i64> = gave_up;
        sessions.sort_unstable();
        sessions.dedup();
        for sid in sessions {
            tracing::warn!(session = sid, max_attempts, "jobs failed after too many attempts");
            refresh_counts(&mut tx, sid, now).await?;
            finish_if_done(&mut tx, sid, now).await?;
        }
        let q = match self.backend {
            // Fair across running sessions: every session gets its next job before any gets a
            // second. Candidates are each running session's first `$5` pending jobs, ranked by
            // position within their session; rows are then locked in rank order with SKIP
            // LOCKED, so a claimer racing another (many daemons, one PostgreSQL) passes over
            // the other's rows and still fills its batch, and locks only what it takes.
            Backend::Postgres => {
                "UPDATE training_jobs SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
                 lease_token = lease_token + 1, started_at = $3, updated_at = $3 WHERE id IN ( \
                   SELECT j.id FROM training_jobs j JOIN ( \
                     SELECT c.id, ROW_NUMBER() OVER (PARTITION BY s.id ORDER BY c.id) AS rn \
                     FROM training_sessions s CROSS JOIN LATERAL ( \
                       SELECT t.id FROM training_jobs t \
                       WHERE t.session_id = s.id AND t.status = 'pending' AND t.asset_id IS NOT NULL \
                       ORDER BY t.id LIMIT $5) c \
                     WHERE s.status = 'running') r ON r.id = j.id \
                   WHERE j.status = 'pending' \
                   ORDER BY r.rn, r.id LIMIT $4 \
                   FOR UPDATE OF j SKIP LOCKED) \
                 RETURNING id"
            }
            // The same fairness; candidates are each running session's first `$4` pending
            // jobs read through the (session_id, status) index, so a claim costs O(sessions ×
            // batch), not O(pending jobs) (1M pending: 0.9 s per claim when every pending job
            // was ranked). One writer: no locking needed beyond the transaction.
            Backend::Sqlite => {
                "UPDATE training_jobs SET status = 'running', lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
                 lease_token = lease_token + 1, started_at = $3, updated_at = $3 WHERE id IN ( \
                   SELECT id FROM (SELECT c.id, ROW_NUMBER() OVER (PARTITION BY c.session_id ORDER BY c.id) AS rn \
                     FROM training_sessions s JOIN training_jobs c ON c.id IN ( \
                       SELECT t.id FROM training_jobs t \
                       WHERE t.session_id = s.id AND t.status = 'pending' AND t.asset_id IS NOT NULL \
                       ORDER BY t.id LIMIT $4) \
                     WHERE s.status = 'running') ranked \
                   ORDER BY rn, id LIMIT $4) \
                 RETURNING id"
            }
        };
        let query = sqlx::query_scalar(q).bind(owner).bind(expires).bind(now).bind(limit);
        // Candidate window per session: room for several claimers of this size at once.
        let ids: Vec<i64> = match self.backend {
            Backend::Postgres => query.bind(limit.saturating_mul(8)),
            Backend::Sqlite => query,
        }
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let r = sqlx::query(
                "SELECT j.id, j.session_id, j.asset_id, a.path, j.lease_token FROM training_jobs j JOIN image_assets a ON a.id = j.asset_id WHERE j.id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            out.push(ClaimedJob { job_id: r.try_get(0)?, session_id: r.try_get(1)?, asset_id: r.try_get(2)?, path: r.try_get(3)?, token: r.try_get(4)? });
        }
        tx.commit().await?;
        JOBS_GIVEN_UP.fetch_add(given_up, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Mark leased jobs completed (their vectors are stored), stamp their assets, refresh the
    /// sessions' counts and complete sessions with nothing left to do. Jobs no longer running
    /// under `owner` with that lease (cancelled meanwhile, lease taken over) are left as they are.
    pub async fn complete_jobs(&self, owner: &str, leases: &[Lease]) -> Result<u64> {
        self.complete_embedded(owner, leases, &[]).await
    }

    /// Fail one leased job with a reason; the session goes on. A stale lease changes nothing.
    pub async fn fail_job(&self, owner: &str, lease: Lease, reason: &str) -> Result<()> {
        self.end_job(owner, lease, JobStatus::Failed, reason).await
    }

    /// Skip one leased job with the reason (its file vanished before it could be read: not an
    /// error of the image, nothing to retry).
    pub async fn skip_job(&self, owner: &str, lease: Lease, reason: &str) -> Result<()> {
        self.end_job(owner, lease, JobStatus::Skipped, reason).await
    }

    async fn end_job(&self, owner: &str, lease: Lease, status: JobStatus, reason: &str) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE training_jobs SET status = $6, error_message = $1, completed_at = $2, updated_at = $2, \
             lease_owner = NULL, lease_expires_at = NULL WHERE id = $3 AND status = 'running' AND lease_owner = $4 AND lease_token = $5 \
             RETURNING session_id",
        )
        .bind(reason)
        .bind(now)
        .bind(lease.job_id)
        .bind(owner)
        .bind(lease.token)
        .bind(status.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let sid: i64 = row.try_get(0)?;
            // running → failed/skipped: one counter moves (O(1), not a recount of the session).
            count_ended(&mut tx, sid, status, now).await?;
            finish_if_done(&mut tx, sid, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Complete a running session whose jobs are all finished (e.g. after a resume found
    /// nothing left). Returns whether it completed.
    pub async fn finish_session_if_done(&self, session_id: i64) -> Result<bool> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let done = finish_if_done(&mut tx, session_id, now).await?;
        tx.commit().await?;
        Ok(done)
    }

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

    /// This daemon is alive: one row per daemon sharing the catalog, its heartbeat refreshed by
    /// the reaper every tick. Returns the daemons whose heartbeat is within `fresh`.
    /// Why writes fail now (the last heartbeat's error) and since when (Unix ms), if they do.
    pub fn write_fault(&self) -> Option<(String, i64)> {
        self.write_fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// A daemon stopping hands back jobs it claimed but did not finish: pending again at once
    /// (for peers, without waiting out the lease), the claim not counted as an attempt.
    pub async fn return_leases(&self, owner: &str, leases: &[Lease]) -> Result<u64> {
        let now = now_ms();
        let mut n = 0;
        let mut tx = self.begin_write().await?;
        for l in leases {
            let r = sqlx::query(
                "UPDATE training_jobs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, attempts = attempts - 1, updated_at = $1 \
                 WHERE id = $2 AND status = 'running' AND lease_owner = $3 AND lease_token = $4",
            )
            .bind(now)
            .bind(l.job_id)
            .bind(owner)
            .bind(l.token)
            .execute(&mut *tx)
            .await?;
            n += r.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Push the leases of jobs still in hand `lease` into the future. Returns the leases that
    /// were not renewed: no longer this worker's (cancelled, completed, taken over).
    pub async fn renew_leases(&self, owner: &str, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>> {
        let now = now_ms();
        let mut lost = Vec::new();
        // By job id: the order every writer of job rows takes them in (no lock cycles).
        let mut sorted: Vec<Lease> = leases.to_vec();
        sorted.sort_by_key(|l| l.job_id);
        let mut tx = self.begin_write().await?;
        for l in &sorted {
            let r =
                sqlx::query("UPDATE training_jobs SET lease_expires_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3 AND lease_token = $4")
                    .bind(now + lease.as_millis() as i64)
                    .bind(l.job_id)
                    .bind(owner)
                    .bind(l.token)
                    .execute(&mut *tx)
                    .await?;
            if r.rows_affected() == 0 {
                lost.push(*l);
            }
        }
        tx.commit().await?;
        Ok(lost)
    }
}

/// The compare-and-set status change inside a transaction.
async fn transition_tx(tx: &mut Transaction<'static, Any>, id: i64, from: SessionStatus, to: SessionStatus, stamps: Stamps) -> Result<bool> {
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

async fn set_image_counts_tx(tx: &mut Transaction<'static, Any>, counts: &[(i64, i64)]) -> Result<()> {
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

async fn reset_jobs_tx(tx: &mut Transaction<'static, Any>, session_id: i64, failed_only: bool) -> Result<u64> {
    let now = now_ms();
    let q = if failed_only {
        "UPDATE training_jobs SET status = 'pending', error_message = NULL, lease_owner = NULL, lease_expires_at = NULL, attempts = 0, \
             started_at = NULL, completed_at = NULL, updated_at = $2 WHERE session_id = $1 AND status = 'failed'"
    } else {
        "UPDATE training_jobs SET status = 'pending', error_message = NULL, lease_owner = NULL, lease_expires_at = NULL, attempts = 0, \
             started_at = NULL, completed_at = NULL, updated_at = $2 WHERE session_id = $1"
    };
    let r = sqlx::query(q).bind(session_id).bind(now).execute(&mut **tx).await?;
    // A job whose file was deleted has no asset: no claimer would ever take it, so it ends
    // here as skipped, with the reason (the session can then complete).
    sqlx::query(
        "UPDATE training_jobs SET status = 'skipped', error_message = 'the file was deleted before it could be indexed', \
             completed_at = $2, updated_at = $2 WHERE session_id = $1 AND status = 'pending' AND asset_id IS NULL",
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    refresh_counts(tx, session_id, now).await?;
    Ok(r.rows_affected())
}

/// Every unfinished (pending or running) job of a session cancelled, leases dropped, counts
/// refreshed; returns how many.
async fn cancel_unfinished_tx(tx: &mut Transaction<'static, Any>, session_id: i64) -> Result<u64> {
    let now = now_ms();
    let r = sqlx::query(
        "UPDATE training_jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
         WHERE session_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    refresh_counts(tx, session_id, now).await?;
    Ok(r.rows_affected())
}

/// `add_discovered` inside a transaction.
async fn add_discovered_tx(tx: &mut Transaction<'static, Any>, session_id: i64, found: &[(i64, Vec<FileEntry>)]) -> Result<u64> {
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

async fn upsert_subdirs(tx: &mut Transaction<'static, Any>, session_id: i64, subdirs: &[NewSubdir], set_selection: bool, now: i64) -> Result<()> {
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

async fn upsert_asset(tx: &mut Transaction<'static, Any>, f: &FileEntry, now: i64) -> Result<i64> {
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

/// Recompute a session's image counts and its subdirectories' trained counts from its jobs.
async fn refresh_counts(tx: &mut Transaction<'static, Any>, session_id: i64, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE training_sessions SET \
           total_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1), \
           processed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'completed'), \
           failed_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'failed'), \
           skipped_images = (SELECT COUNT(*) FROM training_jobs WHERE session_id = $1 AND status = 'skipped'), \
           updated_at = $2 WHERE id = $1",
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE training_subdirectories SET trained_count = (SELECT COUNT(*) FROM training_jobs j \
           WHERE j.subdirectory_id = training_subdirectories.id AND j.status = 'completed') WHERE session_id = $1",
    )
    .bind(session_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A running job of `session_id` ended failed or skipped: add it to the session's counter.
async fn count_ended(tx: &mut Transaction<'static, Any>, session_id: i64, status: JobStatus, now: i64) -> Result<()> {
    let q = match status {
        JobStatus::Failed => "UPDATE training_sessions SET failed_images = failed_images + 1, updated_at = $2 WHERE id = $1",
        JobStatus::Skipped => "UPDATE training_sessions SET skipped_images = skipped_images + 1, updated_at = $2 WHERE id = $1",
        _ => return refresh_counts(tx, session_id, now).await,
    };
    sqlx::query(q).bind(session_id).bind(now).execute(&mut **tx).await?;
    Ok(())
}

async fn finish_if_done(tx: &mut Transaction<'static, Any>, session_id: i64, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE training_sessions SET status = 'completed', completed_at = $2, updated_at = $2 \
         WHERE id = $1 AND status = 'running' AND NOT EXISTS \
           (SELECT 1 FROM training_jobs WHERE session_id = $1 AND status IN ('pending', 'running'))",
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}
