//! A start or full restart runs in the background (status `discovering`): the request that
//! asked for it returns at once — with the outcome when the work finished within
//! `ANSWER_WITHIN`, which is the case for all but large libraries — and never depends on
//! `request_timeout_secs`. Jobs are created in batches of `queue_batch`, one short catalog
//! transaction each (see `catalog::discovery`), from the catalog's own rows where the watcher
//! follows the folder, from a walk where it does not. A daemon that finds such work interrupted
//! (its own crash or SIGTERM, a dead peer's) resumes it: creating jobs is idempotent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::counts::CatalogCounts;
use super::{ActionResult, Admission, Result, SessionError, Sessions};
use crate::catalog::{CatalogError, Discovery, StartOutcome};
use crate::library::FileEntry;
use crate::model::SessionStatus;

/// How long a start or restart request waits for its background work before answering with
/// the session still discovering (the work goes on; progress shows how far it is).
pub const ANSWER_WITHIN: Duration = Duration::from_millis(500);

/// A transient catalog fault (busy, full disk, lost connection) in the middle of discovery is
/// waited out, this often and this many times, before the discovery counts as failed.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const RETRIES: u32 = 120;

/// One selected subdirectory to queue: its row id, folder, and whether only the files directly
/// in it count (the session root's own row).
struct Target {
    subdir_id: i64,
    path: PathBuf,
    direct_only: bool,
}

/// Selected rows, nested ones dropped (a folder selected with its parent is covered by it).
fn targets(rows: &[(i64, PathBuf)], root: &Path) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut sorted: Vec<&(i64, PathBuf)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    for (id, p) in sorted {
        let direct_only = p == root;
        if !direct_only && out.iter().any(|t| !t.direct_only && p.starts_with(&t.path)) {
            continue;
        }
        out.push(Target { subdir_id: *id, path: p.clone(), direct_only });
    }
    out
}

impl Sessions {
    /// Start the background discovery of session `id` (already moved to discovering under this
    /// daemon) and wait up to `ANSWER_WITHIN` for its outcome.
    pub(super) async fn discover_in_background(&self, id: i64, kind: Discovery, expected: i64) -> Result<ActionResult> {
        let rx = self.spawn_discovery(id, kind);
        match tokio::time::timeout(ANSWER_WITHIN, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(SessionError::Internal(format!("the discovery of session {id} stopped without an outcome (see the daemon log)"))),
            Err(_) => {
                let what = match kind {
                    Discovery::Start => "started",
                    Discovery::Restart => "restarting",
                };
                self.result(
                    id,
                    format!(
                        "session {id} {what}: discovering {expected} images and queueing their jobs in the background; \
                         GET /api/v1/training/sessions/{id}/progress (or `pixdex ctl sessions watch {id}`) shows how far it is"
                    ),
                )
                .await
            }
        }
    }

    /// Run the discovery of `id` on its own task (one at a time per daemon); the receiver gets
    /// its outcome. A task already running for `id` is not doubled (the receiver is dropped).
    fn spawn_discovery(&self, id: i64, kind: Discovery) -> tokio::sync::oneshot::Receiver<Result<ActionResult>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.discovering.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            return rx;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = {
                let _slot = me.discovery_slot.acquire().await;
                me.discover_now(id, kind).await
            };
            me.discovering.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            crate::heap::release_freed();
            match &outcome {
                Ok(r) if r.status == SessionStatus::Running || r.status == SessionStatus::Completed => me.wake_pipeline(id),
                Ok(_) => {}
                Err(SessionError::NotAdmissible(_)) => {}
                Err(e) => tracing::warn!(session = id, error = %e, "session discovery failed"),
            }
            let _ = tx.send(outcome);
        });
        rx
    }

    /// Resume the discoveries this daemon finds interrupted (its previous run's, or those of a
    /// peer whose heartbeat is older than `stale`). Returns how many were resumed.
    pub async fn resume_discoveries(&self, stale: Duration) -> Result<usize> {
        let found = self.catalog.adopt_discoveries(&self.owner, stale).await?;
        let mut n = 0;
        for (id, kind) in found {
            if self.discovering.lock().unwrap_or_else(|p| p.into_inner()).contains(&id) {
                continue;
            }
            tracing::info!(session = id, discovery = kind.as_str(), "resuming an interrupted session discovery");
            drop(self.spawn_discovery(id, kind));
            n += 1;
        }
        Ok(n)
    }

    async fn discover_now(&self, id: i64, kind: Discovery) -> Result<ActionResult> {
        let s = self.get(id).await?;
        if s.status != SessionStatus::Discovering {
            return self.result(id, format!("session {id} changed to {} meanwhile", s.status)).await;
        }
        match self.discover_batches(&s, kind).await {
            Ok(Some(jobs)) => {
                let now = self.get(id).await?;
                let verb = if kind == Discovery::Start { "started" } else { "restarted" };
                self.result(
                    id,
                    format!(
                        "session {id} {verb}: {jobs} jobs queued{}",
                        if now.status == SessionStatus::Completed { "; nothing left to do: completed" } else { "" }
                    ),
                )
                .await
            }
            Ok(None) => self.result(id, format!("session {id} changed while discovering")).await,
            Err(SessionError::NotAdmissible(adm)) => {
                self.catalog.finish_start(id, &adm.counts, StartOutcome::Refused { reason: &adm.detail }).await?;
                Err(SessionError::NotAdmissible(adm))
            }
            Err(e) => {
                let _ = self.catalog.finish_start(id, &[], StartOutcome::Failed { error: &e.to_string() }).await;
                Err(e)
            }
        }
    }

    /// The work itself. `Ok(None)`: the session left discovering (cancelled, adopted by a peer).
    async fn discover_batches(&self, s: &crate::catalog::Session, kind: Discovery) -> Result<Option<i64>> {
        let id = s.id;
        let root = PathBuf::from(&s.root_path);
        if self.catalog.subdirectories(id).await?.is_empty() && root.is_dir() {
            // Rediscovered from the disk, not the catalog's counts: background work, and the
            // folders that just appeared (the reason for a start to rediscover) may not be
            // in the catalog yet.
            let r2 = root.clone();
            let scan = self.blocking(move |lib| lib.list_subdirectories(&r2, true, None)).await?;
            let mut rows = Vec::new();
            self.rows_with_images(&scan, &mut rows);
            self.catalog.upsert_subdirectories(id, &rows, true).await?;
        }
        let adm: Admission = self.admission(s).await?;
        if !adm.can_start && (kind == Discovery::Start || self.catalog.jobs_summary(id).await?.total() == 0) {
            return Err(SessionError::NotAdmissible(Box::new(adm)));
        }
        let batch = self.queue_batch.max(1);
        if kind == Discovery::Restart {
            let mut after = 0;
            loop {
                let Some((_, next)) = self.retrying(|| self.catalog.reset_jobs_batch(id, &self.owner, after, batch)).await? else { return Ok(None) };
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
        }
        let subdirs = self.catalog.subdirectories(id).await?;
        let selected: Vec<(i64, PathBuf)> = subdirs.iter().filter(|d| d.selected).map(|d| (d.id, PathBuf::from(&d.path))).collect();
        let counts: Option<CatalogCounts> = self.catalog_counts(&root).await?;
        for t in targets(&selected, &root) {
            let known = counts.as_ref().map(|c| c.images(&t.path, !t.direct_only)).unwrap_or(0);
            if known > 0 {
                let dir = t.path.to_string_lossy().into_owned();
                let mut after: Option<String> = None;
                loop {
                    let r =
                        self.retrying(|| self.catalog.queue_from_catalog(id, &self.owner, t.subdir_id, &dir, t.direct_only, after.as_deref(), batch)).await?;
                    let Some(b) = r else { return Ok(None) };
                    crate::failpoint::abort_if("discovery", &dir);
                    match b.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
            } else {
                // The catalog does not hold this folder's images (yet): walk it.
                let files: Vec<FileEntry> = match adm.found.iter().find(|(sid, _)| *sid == t.subdir_id) {
                    Some((_, f)) => f.clone(),
                    None => {
                        let (r2, p2) = (root.clone(), t.path.clone());
                        self.blocking(move |lib| lib.subdirectory_images(&r2, &p2).images).await?
                    }
                };
                for chunk in files.chunks(batch as usize) {
                    let r = self.retrying(|| self.catalog.queue_found(id, &self.owner, t.subdir_id, chunk)).await?;
                    if r.is_none() {
                        return Ok(None);
                    }
                    crate::failpoint::abort_if("discovery", &t.path.to_string_lossy());
                }
            }
        }
        let counts = adm.counts.clone();
        self.retrying(|| self.catalog.finish_discovery(id, &self.owner, &counts)).await
    }

    /// Run a catalog step, waiting out transient faults (`RETRIES` × `RETRY_EVERY`).
    async fn retrying<T, F, Fut>(&self, mut step: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, CatalogError>>,
    {
        let mut tries = 0;
        loop {
            match step().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && tries < RETRIES => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "session discovery: catalog busy or unavailable; retrying");
                    tokio::time::sleep(RETRY_EVERY).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_selections_are_covered_once() {
        let root = PathBuf::from("/p");
        let rows = vec![(1, PathBuf::from("/p/a/b")), (2, PathBuf::from("/p")), (3, PathBuf::from("/p/a")), (4, PathBuf::from("/p/ab"))];
        let t: Vec<(i64, bool)> = targets(&rows, &root).iter().map(|t| (t.subdir_id, t.direct_only)).collect();
        assert_eq!(t, vec![(2, true), (3, false), (4, false)]);
    }
}
