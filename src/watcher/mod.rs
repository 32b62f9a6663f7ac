//! The watcher: keeps `image_assets` and every subdirectory's `image_count` equal to the files
//! on disk, and feeds new work to sessions.
//!
//! - `intake`: notify watchers per root → a bounded event channel (overflow → full reconcile).
//! - `worker`: one OS thread (never the async runtime) that settles events (a file is read only
//!   after `library.settle_ms` without change), reconciles scopes, runs the periodic full
//!   reconcile, and answers control messages, which have their own channel so they never queue
//!   behind events.
//! - `diff`: disk truth vs catalog → change set, renames kept as renames.

mod diff;
mod intake;
mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::library::Library;

pub use diff::diff;

/// Told when assets leave the catalog or move, so their vectors follow (the vector store
/// implements it; until then, `NoVectors`).
pub trait AssetObserver: Send + Sync {
    fn removed(&self, ids: &[i64]);
    fn moved(&self, moves: &[(i64, String)]);
}

pub struct NoVectors;

impl AssetObserver for NoVectors {
    fn removed(&self, _: &[i64]) {}
    fn moved(&self, _: &[(i64, String)]) {}
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RootStatus {
    pub path: String,
    pub mode: String,
    /// Directories under watch (a native watcher holds one kernel watch per directory).
    pub watched_directories: u64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WatcherStatus {
    pub roots: Vec<RootStatus>,
    pub events_seen: u64,
    pub overflows: u64,
    pub pending_paths: usize,
    pub reconciles: u64,
    pub last_reconcile_at: Option<String>,
    pub last_reconcile_ms: Option<u64>,
    pub assets_known: i64,
    pub settle_ms: u64,
    /// Directories that exist but could not be read (EACCES, EIO, ESTALE…) at their last look:
    /// their assets and vectors are kept, nothing is deleted or re-embedded for them.
    pub unreadable: Vec<Unreadable>,
    /// Directories that are away: a mount point found unmounted and empty, a missing root.
    /// Their assets and vectors are kept; nothing is re-embedded when they return.
    pub unavailable: Vec<Unreadable>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    pub path: String,
    pub error: String,
    pub since: String,
}

/// Why the watcher could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("the watcher is busy with other scans; try again shortly")]
    Busy,
    #[error("the watcher stopped (the daemon is shutting down)")]
    Stopped,
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl crate::error::Classify for WatcherError {
    fn cause(&self) -> crate::error::Cause {
        match self {
            WatcherError::Busy | WatcherError::Stopped => crate::error::Cause::Transient,
            WatcherError::Catalog(e) => e.cause(),
        }
    }
}

/// What an on-demand scan of one directory did.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    pub directory: String,
    pub discovered: u64,
    pub created: u64,
    pub updated: u64,
    pub renamed: u64,
    pub removed: u64,
    pub skipped: u64,
    /// Files modified within `library.settle_ms`: left alone now, catalogued once they settle.
    pub settling: u64,
    pub jobs_queued: u64,
}

pub(crate) enum Control {
    /// Reconcile one directory now; `auto_train` queues jobs in every session selecting it.
    Scan {
        dir: PathBuf,
        auto_train: bool,
        /// The operator says the folder really was emptied: forget a mount remembered there.
        emptied: bool,
        reply: tokio::sync::oneshot::Sender<Result<ScanReport, WatcherError>>,
    },
    Shutdown,
}

#[derive(Clone)]
pub struct Watcher {
    control: Sender<Control>,
    status: Arc<Mutex<WatcherStatus>>,
    catalog: Catalog,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Watcher {
    /// Start the worker thread. It reconciles every root first, then follows events.
    /// `on_new_images` runs (on the worker thread) whenever images were added, so waiting
    /// autoStart sessions can start.
    pub fn start(
        library: Arc<Library>,
        catalog: Catalog,
        observer: Arc<dyn AssetObserver>,
        rt: tokio::runtime::Handle,
        on_new_images: Box<dyn Fn() + Send>,
    ) -> Watcher {
        // Control messages are rare (an on-demand scan, shutdown): 64 waiting is plenty, and a
        // full channel makes the API answer "busy" instead of piling up.
        let (control, control_rx) = crossbeam_channel::bounded(64);
        let status = Arc::new(Mutex::new(WatcherStatus { settle_ms: library.config().settle.as_millis() as u64, ..Default::default() }));
        let w = worker::Worker::new(library, catalog.clone(), observer, rt, on_new_images, status.clone(), control_rx);
        let handle = std::thread::Builder::new().name("pixdex-watcher".into()).spawn(move || w.run()).expect("spawn watcher thread");
        Watcher { control, status, catalog, thread: Arc::new(Mutex::new(Some(handle))) }
    }

    pub async fn status(&self) -> WatcherStatus {
        let mut s = self.status.lock().unwrap().clone();
        // From the per-folder counts: O(folders), not a count of every asset (the live view
        // asks for this every second).
        s.assets_known = self.catalog.library_version().await.map(|v| v.assets).unwrap_or(-1);
        s
    }

    /// Reconcile one directory (inside the roots; the caller checks) right now.
    pub async fn scan(&self, dir: PathBuf, auto_train: bool) -> Result<ScanReport, WatcherError> {
        self.control_scan(dir, auto_train, false).await
    }

    /// The operator says `dir` really was emptied (a mount remembered there is not coming
    /// back): forget it and reconcile `dir`, deleting what is no longer there.
    pub async fn confirm_emptied(&self, dir: PathBuf) -> Result<ScanReport, WatcherError> {
        self.control_scan(dir, false, true).await
    }

    async fn control_scan(&self, dir: PathBuf, auto_train: bool, emptied: bool) -> Result<ScanReport, WatcherError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control.try_send(Control::Scan { dir, auto_train, emptied, reply }).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => WatcherError::Busy,
            crossbeam_channel::TrySendError::Disconnected(_) => WatcherError::Stopped,
        })?;
        rx.await.map_err(|_| WatcherError::Stopped)?
    }

    /// Stop the worker and wait for it (call from a blocking context or spawn_blocking).
    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(h) = self.thread.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}
