//! The watcher's worker thread: settles events, reconciles, answers control messages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::intake::{self, Flags, RawEvent, RootWatch};
use super::{AssetObserver, Control, ScanReport, WatcherError, WatcherStatus};
use crate::catalog::{Catalog, JobTarget, MountRecord};
use crate::library::Library;
use crate::library::mounts::{dir_identity, looks_unmounted, mount_points, mounts_under};
use crate::model::now_ms;

/// Which sessions get jobs for new or changed images.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JobsFor {
    /// `live` sessions that are running or completed (watcher events, reconciles).
    Live,
    /// Every running, completed or paused session selecting the image (scan with auto_train).
    Any,
    Nothing,
}

struct Outcome {
    report: ScanReport,
    dirs: u64,
}

pub(super) struct Worker {
    library: Arc<Library>,
    catalog: Catalog,
    observer: Arc<dyn AssetObserver>,
    rt: tokio::runtime::Handle,
    on_new_images: Box<dyn Fn() + Send>,
    status: Arc<Mutex<WatcherStatus>>,
    control_rx: Receiver<Control>,
    flags: Arc<Flags>,
    events_tx: Sender<RawEvent>,
    events_rx: Receiver<RawEvent>,
    /// Per root: its watch, a note, directories under watch, and the identity (device,
    /// inode) of the directory the watch was set on.
    watches: Vec<Watched>,
    /// Paths with events, and when the last one arrived.
    dirty: HashMap<PathBuf, Instant>,
    /// Renames the watcher paired (from, to), applied with the next batch that covers them.
    hints: Vec<(PathBuf, PathBuf)>,
    next_rescan: Instant,
    /// Consecutive failed catalog applies (backoff for the retries of a kept dirty set).
    failed_applies: u32,
    /// Directories that exist but could not be read at their last look: error, since when (ms).
    unreadable: BTreeMap<PathBuf, (String, i64)>,
    /// Directories that are away (a mount that is not mounted, a missing root): reason, since.
    away: BTreeMap<PathBuf, (String, i64)>,
    /// The catalog's remembered mount points (loaded at first use, kept in step).
    mounts: Option<Vec<MountRecord>>,
    /// When the roots' identities are looked at next (a root replaced or remounted).
    next_identity_check: Instant,
}

/// A root's watch: root, watch, note, directories under watch, identity (device, inode) of
/// the directory the watch was set on.
type Watched = (PathBuf, RootWatch, Option<String>, u64, Option<(u64, u64)>);

/// How often the roots' identities are compared with the directories their watches were set on.
const IDENTITY_CHECK: Duration = Duration::from_secs(2);

impl Worker {
    pub(super) fn new(
        library: Arc<Library>,
        catalog: Catalog,
        observer: Arc<dyn AssetObserver>,
        rt: tokio::runtime::Handle,
        on_new_images: Box<dyn Fn() + Send>,
        status: Arc<Mutex<WatcherStatus>>,
        control_rx: Receiver<Control>,
    ) -> Worker {
        // Events: a copy of a big folder produces tens of thousands at once, arriving faster
        // than the worker settles them while it is busy reconciling. 65 536 (a few MB) absorbs
        // such bursts; past that, events are dropped and a full reconcile catches up.
        let (events_tx, events_rx) = crossbeam_channel::bounded(65_536);
        Worker {
            library,
            catalog,
            observer,
            rt,
            on_new_images,
            status,
            control_rx,
            flags: Arc::new(Flags::default()),
            events_tx,
            events_rx,
            watches: Vec::new(),
            dirty: HashMap::new(),
            hints: Vec::new(),
            next_rescan: Instant::now(),
            unreadable: BTreeMap::new(),
            away: BTreeMap::new(),
            mounts: None,
            next_identity_check: Instant::now() + IDENTITY_CHECK,
            failed_applies: 0,
        }
    }

    fn settle(&self) -> Duration {
        self.library.config().settle
    }

    pub(super) fn run(mut self) {
        self.ensure_watches();
        self.full_reconcile();
        let tick = (self.settle() / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        loop {
            crossbeam_channel::select! {
                // Control has its own channel: a scan request never waits behind events.
                recv(self.control_rx) -> msg => match msg {
                    Ok(Control::Scan { dir, auto_train, emptied, reply }) => {
                        let r = self.scan(dir, auto_train, emptied);
                        let _ = reply.send(r);
                    }
                    Ok(Control::Shutdown) | Err(_) => break,
                },
                // An event: mark its paths dirty (cheap); work happens once they settle.
                recv(self.events_rx) -> ev => if let Ok(ev) = ev { self.on_event(ev) },
                // Nothing for a tick: time to check what has settled.
                default(tick) => {}
            }
            // Take what else is queued, boundedly, so a flood cannot starve settling.
            for _ in 0..10_000 {
                match self.events_rx.try_recv() {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                }
            }
            if self.flags.overflow.swap(false, Ordering::SeqCst) {
                tracing::warn!("watcher event queue overflowed; reconciling every root");
                self.dirty.clear();
                self.hints.clear();
                self.full_reconcile();
            } else if Instant::now() >= self.next_rescan {
                self.full_reconcile();
            }
            self.settle_ready();
            if Instant::now() >= self.next_identity_check {
                self.check_roots();
                self.next_identity_check = Instant::now() + IDENTITY_CHECK;
            }
            self.publish_unsettled();
            let mut st = self.status.lock().unwrap();
            st.pending_paths = self.dirty.len();
            st.events_seen = self.flags.events.load(Ordering::Relaxed);
            st.overflows = self.flags.overflows.load(Ordering::Relaxed);
        }
        tracing::info!("watcher stopped");
    }

    fn on_event(&mut self, ev: RawEvent) {
        match ev {
            Err(e) => {
                tracing::warn!(error = %e, "watcher error; a reconcile will follow");
                self.flags.overflow.store(true, Ordering::SeqCst);
            }
            Ok(ev) => {
                if ev.need_rescan() {
                    self.flags.overflow.store(true, Ordering::SeqCst);
                }
                let (paths, hint) = intake::paths_of(&ev);
                let now = Instant::now();
                for p in paths {
                    self.dirty.insert(p, now);
                }
                if let Some(h) = hint {
                    self.hints.push(h);
                }
            }
        }
    }

    /// (Re)establish watchers for roots that have none (missing at start, say).
    fn ensure_watches(&mut self) {
        let cfg = self.library.config().clone();
        for root in self.library.roots() {
            let have = self.watches.iter().any(|w| w.0 == root && !matches!(w.1, RootWatch::Unavailable));
            if have {
                continue;
            }
            let identity = dir_identity(&root);
            let (w, note) = intake::watch_root(&root, cfg.watch, cfg.poll_interval, &self.events_tx, &self.flags);
            tracing::info!(root = %root.display(), mode = w.mode(), note = ?note, "watching");
            self.watches.retain(|x| x.0 != root);
            self.watches.push((root, w, note, 0, identity));
        }
    }

    /// A root replaced (renamed away and made anew, deleted and re-created, restored from a
    /// backup) or remounted is another directory than the one its watch follows: watch it anew
    /// and reconcile it now, instead of following the old directory forever.
    fn check_roots(&mut self) {
        let changed: Vec<PathBuf> = self.watches.iter().filter(|w| dir_identity(&w.0) != w.4).map(|w| w.0.clone()).collect();
        if changed.is_empty() {
            return;
        }
        for root in &changed {
            tracing::warn!(root = %root.display(), "library root replaced, remounted or gone: watching it anew and reconciling it");
            self.watches.retain(|w| &w.0 != root);
        }
        self.ensure_watches();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for root in changed {
            if !root.is_dir() {
                self.root_missing(&root);
                continue;
            }
            match self.process(vec![root.clone()], vec![], JobsFor::Live, threads) {
                Ok(o) => {
                    self.root_reconciled(&root, o.dirs);
                }
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e, "reconciling a replaced root failed; retrying it as a change");
                    self.dirty.insert(root, Instant::now());
                }
            }
        }
        self.publish_roots();
    }

    /// A root that does not exist (a mount that is away, a folder renamed): its assets are kept.
    fn root_missing(&mut self, root: &Path) {
        let reason = "the library root is missing (a mount that is away, or a folder renamed or deleted); its assets and vectors are kept until it returns";
        tracing::warn!(root = %root.display(), "library root unavailable; its assets are kept until it returns");
        self.note_away(&[root.to_path_buf()], &[(root.to_path_buf(), reason.to_owned())]);
    }

    fn publish_roots(&mut self) {
        let mut s = self.status.lock().unwrap();
        s.roots = self
            .watches
            .iter()
            .map(|w| super::RootStatus {
                path: w.0.display().to_string(),
                mode: w.1.mode().into(),
                watched_directories: if matches!(w.1, RootWatch::Native(_) | RootWatch::Poll(_)) { w.3 } else { 0 },
                note: w.2.clone(),
            })
            .collect();
    }

    /// Remembered mount points relevant to `scopes` that are away now (not mounted, and empty
    /// or missing), with the reason. Mount points under the scopes that are mounted now are
    /// remembered (or refreshed); a remembered one where a plain folder with content now stands
    /// is forgotten (that folder is the truth).
    fn away_under(&mut self, scopes: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, WatcherError> {
        let mounted = mount_points();
        if self.mounts.is_none() {
            self.mounts = Some(self.rt.block_on(self.catalog.mounts())?);
        }
        let records = self.mounts.clone().unwrap_or_default();
        let relevant = |p: &Path| scopes.iter().any(|s| p.starts_with(s) || s.starts_with(p));
        let mut away = Vec::new();
        let mut gone = Vec::new();
        for r in records.iter().filter(|r| relevant(Path::new(&r.path))) {
            let p = PathBuf::from(&r.path);
            if mounted.contains(&p) {
                continue;
            }
            if looks_unmounted(&p) {
                away.push((
                    p,
                    format!(
                        "a mount that is away: this folder was a mount point (device {}) when its images were catalogued and is now unmounted and empty; \
                         its assets and vectors are kept until it is mounted again (if it really was emptied: `pixdex ctl library emptied {}`)",
                        r.dev, r.path
                    ),
                ));
            } else {
                gone.push(r.path.clone());
            }
        }
        let mut fresh = Vec::new();
        for s in scopes {
            for m in mounts_under(&mounted, s) {
                if let Some((dev, ino)) = dir_identity(m) {
                    let rec = MountRecord { path: m.to_string_lossy().into_owned(), dev: dev as i64, ino: ino as i64 };
                    if !records.contains(&rec) && !fresh.contains(&rec) {
                        fresh.push(rec);
                    }
                }
            }
        }
        for p in &gone {
            tracing::info!(path = %p, "a plain folder with content stands where a mount was: forgetting the mount");
            self.rt.block_on(self.catalog.forget_mounts(p))?;
        }
        if !fresh.is_empty() {
            self.rt.block_on(self.catalog.record_mounts(&fresh))?;
        }
        if !gone.is_empty() || !fresh.is_empty() {
            self.mounts = Some(self.rt.block_on(self.catalog.mounts())?);
        }
        Ok(away)
    }

    /// Record which directories under `scopes` are away (see `away_under`); the watcher status
    /// (and health) shows them.
    fn note_away(&mut self, scopes: &[PathBuf], found: &[(PathBuf, String)]) {
        // A scope inside an away mount settles it too (a scan of a folder below the mount).
        let list = note_dirs(&mut self.away, found, |p| scopes.iter().any(|s| p.starts_with(s) || s.starts_with(p)), "unavailable", "available again");
        self.status.lock().unwrap().unavailable = list;
    }

    fn settle_ready(&mut self) {
        let settle = self.settle();
        let now = Instant::now();
        let ready: Vec<PathBuf> = self.dirty.iter().filter(|(_, t)| now.duration_since(**t) >= settle).map(|(p, _)| p.clone()).collect();
        if ready.is_empty() {
            return;
        }
        for p in &ready {
            self.dirty.remove(p);
        }
        // A rename is used once both of its ends have settled.
        let (hints, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.hints).into_iter().partition(|(a, b)| !self.dirty.contains_key(a) && !self.dirty.contains_key(b));
        self.hints = keep;
        if let Err(e) = self.process(ready.clone(), hints.clone(), JobsFor::Live, 2) {
            // The catalog refused (down, locked): keep the changes and try them again, backing
            // off, instead of waiting for the next full reconcile.
            self.failed_applies += 1;
            let wait = Duration::from_millis(250 * (1 << self.failed_applies.min(7)));
            tracing::warn!(error = %e, paths = ready.len(), retry_in_ms = wait.as_millis() as u64, "applying filesystem changes failed; keeping them to retry");
            // Marked dirty as of now + wait − settle, so they are ready again after `wait`.
            let again = Instant::now() + wait;
            let at = again.checked_sub(settle).unwrap_or_else(Instant::now);
            for p in ready {
                self.dirty.entry(p).or_insert(at);
            }
            self.hints.extend(hints);
        } else {
            self.failed_applies = 0;
        }
    }

    /// Tell listings which roots have changes not yet in the catalog (they walk those).
    fn publish_unsettled(&mut self) {
        let mut roots = HashSet::new();
        if !self.dirty.is_empty() || !self.events_rx.is_empty() {
            for root in self.watches.iter().map(|w| &w.0) {
                if !self.events_rx.is_empty() || self.dirty.keys().any(|p| p.starts_with(root)) {
                    roots.insert(root.clone());
                }
            }
        }
        self.library.set_unsettled(roots);
    }

    /// `root` was reconciled: its watch notes the folders, and where a live watch keeps the
    /// catalog current, listings and session starts read the catalog's counts, not the disk.
    fn root_reconciled(&mut self, root: &Path, dirs: u64) {
        // Files the reconcile left settling are not in the catalog yet: say so first.
        self.publish_unsettled();
        if let Some(w) = self.watches.iter_mut().find(|w| w.0 == root) {
            w.3 = dirs;
            if matches!(w.1, RootWatch::Native(_) | RootWatch::Poll(_)) {
                self.library.mark_catalogued(root);
            } else {
                self.library.unmark_catalogued(root);
            }
        }
    }

    fn full_reconcile(&mut self) {
        let t = Instant::now();
        self.ensure_watches();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let mut total = ScanReport::default();
        for root in self.library.roots() {
            if !root.is_dir() {
                // A mount that is away is not a library that was deleted: keep its assets.
                self.root_missing(&root);
                continue;
            }
            match self.process(vec![root.clone()], vec![], JobsFor::Live, threads) {
                Ok(o) => {
                    self.root_reconciled(&root, o.dirs);
                    total.discovered += o.report.discovered;
                    total.created += o.report.created;
                    total.updated += o.report.updated;
                    total.renamed += o.report.renamed;
                    total.removed += o.report.removed;
                }
                Err(e) => tracing::error!(root = %root.display(), error = %e, "reconcile failed"),
            }
        }
        let ms = t.elapsed().as_millis() as u64;
        tracing::info!(
            files = total.discovered,
            created = total.created,
            updated = total.updated,
            renamed = total.renamed,
            removed = total.removed,
            elapsed_ms = ms,
            "reconcile done"
        );
        self.next_rescan = Instant::now() + self.library.config().rescan_interval;
        // The walk and the diff held every path of the library: give that memory back.
        crate::heap::release_freed();
        let mut s = self.status.lock().unwrap();
        s.reconciles += 1;
        s.last_reconcile_at = Some(crate::catalog::rows_ts(now_ms()));
        s.last_reconcile_ms = Some(ms);
        s.events_seen = self.flags.events.load(Ordering::Relaxed);
        s.overflows = self.flags.overflows.load(Ordering::Relaxed);
        drop(s);
        self.publish_roots();
    }

    /// Record which directories under `scopes` could not be read this time: new ones are
    /// logged, ones readable again are dropped, and the watcher status (and health) shows them.
    fn note_unreadable(&mut self, scopes: &[PathBuf], found: &[(PathBuf, String)]) {
        let list = note_dirs(&mut self.unreadable, found, |p| scopes.iter().any(|s| p.starts_with(s)), "unreadable", "readable again");
        self.status.lock().unwrap().unreadable = list;
    }

    /// An on-demand scan. Without `auto_train`, live sessions still get jobs for what it finds
    /// (as the watcher would give them): an image catalogued by a scan is never left without
    /// the job the watcher would have queued. `emptied`: the operator says the folder really
    /// was emptied, so a mount remembered there is forgotten first.
    fn scan(&mut self, dir: PathBuf, auto_train: bool, emptied: bool) -> Result<ScanReport, WatcherError> {
        if emptied {
            let n = self.rt.block_on(self.catalog.forget_mounts(&dir.to_string_lossy()))?;
            self.mounts = None;
            tracing::info!(dir = %dir.display(), mounts_forgotten = n, "the operator says this folder was emptied");
        }
        let mut o = self.process(vec![dir.clone()], vec![], if auto_train { JobsFor::Any } else { JobsFor::Live }, 2)?;
        o.report.directory = dir.display().to_string();
        Ok(o.report)
    }

    /// Bring the catalog to the truth under `scopes` (files or directories): read the disk
    /// there, compare with what the catalog holds, apply the difference.
    fn process(&mut self, scopes: Vec<PathBuf>, hints: Vec<(PathBuf, PathBuf)>, jobs: JobsFor, threads: usize) -> Result<Outcome, WatcherError> {
        let mut out = Outcome { report: ScanReport::default(), dirs: 0 };
        let kept = self.outermost_scopes(scopes);
        if kept.is_empty() {
            return Ok(out);
        }
        // Mounts that are away: not walked, their assets kept (an unmounted mount point is an
        // empty folder, not a folder whose images were deleted).
        let away = self.away_under(&kept)?;
        self.note_away(&kept, &away);
        let is_away = |p: &Path| away.iter().any(|(a, _)| p.starts_with(a));
        let read = self.read_disk(&kept, &is_away, threads);
        out.dirs = read.dirs;
        let (disk, fresh) = self.split_settling(read.found);
        self.note_unreadable(&kept, &read.unreadable);
        if !read.walked.is_empty() {
            self.rt.block_on(self.catalog.set_other_files(&read.walked, &read.other))?;
        }
        let mut known = Vec::new();
        for s in &kept {
            known.extend(self.rt.block_on(self.catalog.assets_under(&s.to_string_lossy()))?);
        }
        // Files still being written are left alone (neither read nor deleted) and looked at
        // again; nor is anything under an unreadable directory or a mount that is away deleted.
        known.retain(|a| !fresh.contains(&a.path));
        known.retain(|a| !read.unreadable.iter().any(|(u, _)| Path::new(&a.path).starts_with(u)));
        known.retain(|a| !is_away(Path::new(&a.path)));
        let hint_strs: Vec<(String, String)> = hints.iter().map(|(a, b)| (a.to_string_lossy().into_owned(), b.to_string_lossy().into_owned())).collect();
        let cs = super::diff(&disk, &known, &hint_strs);
        out.report.discovered = disk.len() as u64;
        out.report.settling = fresh.len() as u64;
        if !cs.is_empty() {
            self.apply(&cs, &hint_strs, &kept, jobs, &mut out.report)?;
        }
        out.report.skipped = out.report.discovered.saturating_sub(out.report.created + out.report.updated + out.report.renamed);
        Ok(out)
    }

    /// Scopes inside the roots, no hidden component, none nested in another.
    fn outermost_scopes(&self, scopes: Vec<PathBuf>) -> Vec<PathBuf> {
        let mut scopes: Vec<PathBuf> = scopes.into_iter().filter(|p| self.library.visible_dir_path(p)).collect();
        scopes.sort();
        scopes.dedup();
        let mut kept: Vec<PathBuf> = Vec::new();
        for s in scopes {
            if !kept.iter().any(|k| s.starts_with(k)) {
                kept.push(s);
            }
        }
        kept
    }

    /// Walk the scopes that are not away (a file scope is looked at alone).
    fn read_disk(&self, kept: &[PathBuf], is_away: &dyn Fn(&Path) -> bool, threads: usize) -> DiskRead {
        let mut read = DiskRead::default();
        for s in kept.iter().filter(|s| !is_away(s.as_path())) {
            match std::fs::metadata(s) {
                Ok(m) if m.is_dir() => {
                    let tree = self.library.walk_parallel(s, threads);
                    read.dirs += tree.dirs;
                    read.unreadable.extend(tree.unreadable);
                    read.found.extend(tree.files);
                    read.walked.push(s.to_string_lossy().into_owned());
                    read.other.extend(tree.other.into_iter().map(|(p, n)| (p.to_string_lossy().into_owned(), n as i64)));
                }
                // A file event: catalogued only if it resolves inside the roots (a symlink
                // leading out is not followed, as in the walks).
                Ok(m) if m.is_file() && self.library.wants_file(s) && std::fs::canonicalize(s).is_ok_and(|c| self.library.is_inside_roots(&c)) => {
                    read.found.push(crate::library::FileEntry { path: s.clone(), size: m.len(), modified_ms: crate::library::mtime_ms(&m) });
                }
                Ok(_) => {}
                // Gone: nothing of it is left to count either.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => read.walked.push(s.to_string_lossy().into_owned()),
                Err(e) => read.unreadable.push((s.clone(), e.to_string())),
            }
        }
        read
    }

    /// Files modified within `settle_ms` are still being written: set aside (and remembered
    /// to be looked at again), the rest are what the disk holds. "Within" is judged by the
    /// clock *after* the walk: a file written while the walk ran has an mtime later than any
    /// time taken before it, and would otherwise look settled (a negative age) and be read
    /// half-written.
    fn split_settling(&mut self, found: Vec<crate::library::FileEntry>) -> (Vec<crate::library::FileEntry>, HashSet<String>) {
        let settle_ms = self.settle().as_millis() as i64;
        let now = now_ms();
        let (mut disk, mut fresh) = (Vec::new(), HashSet::new());
        for f in found {
            if (0..settle_ms).contains(&(now - f.modified_ms)) {
                fresh.insert(f.path.to_string_lossy().into_owned());
            } else {
                disk.push(f);
            }
        }
        let t = Instant::now();
        for p in &fresh {
            self.dirty.insert(PathBuf::from(p), t);
        }
        (disk, fresh)
    }

    /// Apply a change set: the catalog, the vectors (removals and moves), renamed selections,
    /// subdirectory counts, jobs for sessions that follow new images; wake waiting sessions.
    fn apply(
        &mut self,
        cs: &crate::catalog::ChangeSet,
        hints: &[(String, String)],
        kept: &[PathBuf],
        jobs: JobsFor,
        report: &mut ScanReport,
    ) -> Result<(), WatcherError> {
        let applied = self.rt.block_on(self.catalog.apply_changes(cs))?;
        if !cs.deletes.is_empty() {
            self.observer.removed(&cs.deletes);
        }
        if !cs.renames.is_empty() {
            self.observer.moved(&cs.renames);
        }
        // A renamed folder stays what sessions selected.
        for (from, to) in hints {
            self.rt.block_on(self.catalog.rename_subdirectories(from, to))?;
        }
        let scope_strs: Vec<String> = kept.iter().map(|k| k.to_string_lossy().into_owned()).collect();
        self.rt.block_on(self.catalog.recount_subdirectories(&scope_strs))?;
        report.created = applied.created;
        report.updated = applied.updated;
        report.renamed = applied.renamed;
        report.removed = applied.removed;
        if jobs != JobsFor::Nothing && !applied.touched.is_empty() {
            let targets = self.rt.block_on(self.catalog.job_targets(jobs == JobsFor::Any))?;
            let items = match_targets(&targets, &applied.touched);
            report.jobs_queued = self.rt.block_on(self.catalog.queue_jobs(&items))?;
        }
        tracing::debug!(
            created = applied.created,
            updated = applied.updated,
            renamed = applied.renamed,
            removed = applied.removed,
            jobs = report.jobs_queued,
            "catalog follows the filesystem"
        );
        if applied.created > 0 {
            (self.on_new_images)();
        }
        Ok(())
    }
}

/// What a walk of the scopes found.
#[derive(Default)]
struct DiskRead {
    /// Image files found.
    found: Vec<crate::library::FileEntry>,
    /// Directories visited.
    dirs: u64,
    /// Directories (or entries) that exist but could not be read: what they hold is unknown,
    /// so their assets are kept as they are (an unreadable folder is not an empty one: deleting
    /// would drop its vectors and re-embed everything when it comes back).
    unreadable: Vec<(PathBuf, String)>,
    /// Folders walked, and the non-image files found in them (listings show the counts).
    walked: Vec<String>,
    other: Vec<(String, i64)>,
}

/// Directories with a problem (unreadable, away), each with its reason and since when: the
/// entries `in_scope` are replaced by `found` (a new one logged, one gone logged as `ended`),
/// the others kept. Returns the list the watcher status shows.
fn note_dirs(
    dirs: &mut BTreeMap<PathBuf, (String, i64)>,
    found: &[(PathBuf, String)],
    in_scope: impl Fn(&Path) -> bool,
    what: &str,
    ended: &str,
) -> Vec<super::Unreadable> {
    let (old, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(dirs).into_iter().partition(|(p, _)| in_scope(p));
    *dirs = kept;
    for (p, reason) in found {
        let since = match old.get(p) {
            Some((_, t)) => *t,
            None => {
                tracing::warn!(path = %p.display(), %reason, "directory {what}; its assets and vectors are kept");
                now_ms()
            }
        };
        dirs.insert(p.clone(), (reason.clone(), since));
    }
    for p in old.keys().filter(|p| !dirs.contains_key(*p)) {
        tracing::info!(path = %p.display(), "directory {ended}");
    }
    dirs.iter().map(|(p, (e, t))| super::Unreadable { path: p.display().to_string(), error: e.clone(), since: crate::catalog::rows_ts(*t) }).collect()
}

/// (session, subdirectory, asset) for every selected subdirectory holding a touched asset;
/// one job per session and asset.
fn match_targets(targets: &[JobTarget], touched: &[(i64, String)]) -> Vec<(i64, i64, i64)> {
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    for (asset_id, path) in touched {
        for t in targets {
            let inside = if t.is_root { path.rsplit_once('/').is_some_and(|(parent, _)| parent == t.path) } else { path.starts_with(&format!("{}/", t.path)) };
            if inside && seen.insert((t.session_id, *asset_id)) {
                items.push((t.session_id, t.subdirectory_id, *asset_id));
            }
        }
    }
    items
}
