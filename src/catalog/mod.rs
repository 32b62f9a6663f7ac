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
mod daemons;
mod dirs;
mod discovery;
mod duplicates;
mod inventory;
mod jobs;
mod models;
mod mounts;
mod pipeline;
mod rows;
mod sessions;
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
use inventory::upsert_asset;
use jobs::{cancel_unfinished_tx, count_ended, finish_if_done, refresh_counts, reset_jobs_tx};
use sessions::{add_discovered_tx, set_image_counts_tx, transition_tx};

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
            let sqlite = sqlite || crate::fault::mentions_fd_exhaustion(d.message());
            sqlite || code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

impl crate::error::Classify for CatalogError {
    fn cause(&self) -> crate::error::Cause {
        use crate::error::Cause;
        match self {
            CatalogError::Conflict(_) => Cause::Conflict,
            CatalogError::NotFound(_) => Cause::NotFound,
            e if e.is_transient() => Cause::Transient,
            _ => Cause::Bug,
        }
    }
}

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

    // -----------------------------------------------------------------------------------------
    // Subdirectories
    // -----------------------------------------------------------------------------------------

    // -----------------------------------------------------------------------------------------
    // Assets and jobs
    // -----------------------------------------------------------------------------------------

    /// This daemon is alive: one row per daemon sharing the catalog, its heartbeat refreshed by
    /// the reaper every tick. Returns the daemons whose heartbeat is within `fresh`.
    /// Why writes fail now (the last heartbeat's error) and since when (Unix ms), if they do.
    pub fn write_fault(&self) -> Option<(String, i64)> {
        self.write_fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod classify_tests {
    use super::CatalogError;
    use crate::error::{Cause, Classify};

    /// Out of file descriptors (EMFILE 24, ENFILE 23) is transient: the job or request is
    /// retried, never failed.
    #[test]
    fn causes() {
        assert_eq!(CatalogError::Db(sqlx::Error::PoolTimedOut).cause(), Cause::Transient);
        assert_eq!(CatalogError::Db(sqlx::Error::RowNotFound).cause(), Cause::Bug);
        assert_eq!(CatalogError::NotFound("x".into()).cause(), Cause::NotFound);
        assert_eq!(CatalogError::Conflict("x".into()).cause(), Cause::Conflict);
        for code in [libc::EMFILE, libc::ENFILE] {
            assert_eq!(CatalogError::Db(sqlx::Error::Io(std::io::Error::from_raw_os_error(code))).cause(), Cause::Transient);
        }
    }
}
