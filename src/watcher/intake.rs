//! Filesystem events in: one notify watcher per root (native, or polling for network mounts,
//! or native falling back to polling when the kernel refuses more watches). Events go into a
//! bounded channel; when it is full the event is dropped and the overflow flag set, which makes
//! the worker run a full reconcile — a missed event can never leave the catalog wrong for long.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::config::WatchMode;

pub type RawEvent = notify::Result<notify::Event>;

/// Counters shared between the notify callbacks and the worker.
#[derive(Default)]
pub struct Flags {
    pub overflow: AtomicBool,
    pub events: AtomicU64,
    pub overflows: AtomicU64,
}

/// A root's watcher, kept alive for as long as it should watch.
pub enum RootWatch {
    Native(#[allow(dead_code)] RecommendedWatcher),
    Poll(#[allow(dead_code)] PollWatcher),
    Off,
    Unavailable,
}

impl RootWatch {
    pub fn mode(&self) -> &'static str {
        match self {
            RootWatch::Native(_) => "native",
            RootWatch::Poll(_) => "poll",
            RootWatch::Off => "off",
            RootWatch::Unavailable => "unavailable",
        }
    }
}

fn handler(tx: Sender<RawEvent>, flags: Arc<Flags>) -> impl Fn(RawEvent) + Send + 'static {
    move |ev| {
        flags.events.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !flags.overflow.swap(true, Ordering::SeqCst) {
                    flags.overflows.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Start watching `root`; returns the watcher and, when it is not what was asked, why.
pub fn watch_root(root: &Path, mode: WatchMode, poll_interval: Duration, tx: &Sender<RawEvent>, flags: &Arc<Flags>) -> (RootWatch, Option<String>) {
    if mode == WatchMode::Off {
        return (RootWatch::Off, None);
    }
    if !root.is_dir() {
        return (RootWatch::Unavailable, Some(format!("{} is missing; retried at each reconcile", root.display())));
    }
    if mode == WatchMode::Native {
        match RecommendedWatcher::new(handler(tx.clone(), flags.clone()), notify::Config::default()) {
            Ok(mut w) => match w.watch(root, RecursiveMode::Recursive) {
                Ok(()) => return (RootWatch::Native(w), None),
                Err(e) => {
                    let why = match e.kind {
                        notify::ErrorKind::MaxFilesWatch => "the kernel refused more watches (raise fs.inotify.max_user_watches)".to_string(),
                        _ => format!("native watching failed: {e}"),
                    };
                    tracing::warn!(root = %root.display(), reason = %why, "falling back to polling for this root");
                    let (w, _) = poll(root, poll_interval, tx, flags);
                    return (w, Some(format!("{why}; polling instead")));
                }
            },
            Err(e) => {
                let why = format!("native watcher unavailable: {e}");
                tracing::warn!(root = %root.display(), reason = %why, "falling back to polling for this root");
                let (w, _) = poll(root, poll_interval, tx, flags);
                return (w, Some(format!("{why}; polling instead")));
            }
        }
    }
    poll(root, poll_interval, tx, flags)
}

fn poll(root: &Path, interval: Duration, tx: &Sender<RawEvent>, flags: &Arc<Flags>) -> (RootWatch, Option<String>) {
    let cfg = notify::Config::default().with_poll_interval(interval).with_compare_contents(false);
    match PollWatcher::new(handler(tx.clone(), flags.clone()), cfg) {
        Ok(mut w) => match w.watch(root, RecursiveMode::Recursive) {
            Ok(()) => (RootWatch::Poll(w), None),
            Err(e) => (RootWatch::Unavailable, Some(format!("polling failed: {e}"))),
        },
        Err(e) => (RootWatch::Unavailable, Some(format!("polling failed: {e}"))),
    }
}

/// The paths an event touches, and a rename pair when the watcher paired one.
pub fn paths_of(ev: &notify::Event) -> (Vec<PathBuf>, Option<(PathBuf, PathBuf)>) {
    use notify::EventKind;
    use notify::event::{ModifyKind, RenameMode};
    match ev.kind {
        EventKind::Access(_) => (vec![], None),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => (ev.paths.clone(), Some((ev.paths[0].clone(), ev.paths[1].clone()))),
        _ => (ev.paths.clone(), None),
    }
}
