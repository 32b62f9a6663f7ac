//! The write stage: vectors to the store (upsert → flush), then the jobs completed in one
//! catalog transaction; refusals narrowed to the points concerned, outages waited out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Shared;
use super::messages::{FailCause, Outcome};
use crate::catalog::Catalog;
use crate::vectors::{LabelPayload, Payload, Point, VectorStore};

use super::stages::crashed;

/// Stores vectors, then marks their jobs completed in one catalog transaction: a job is
/// completed only after its vector is stored. A store that is down is retried with backoff.
pub(super) struct Writer {
    pub(super) input: Receiver<Outcome>,
    pub(super) catalog: Catalog,
    pub(super) store: VectorStore,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) shared: Arc<Shared>,
    pub(super) owner: String,
    /// The model whose vectors these are (stored in each point's payload).
    pub(super) model: String,
}

/// An embedded job on its way to the store: the job, its embedding, the original size.
type Embedded<'a> = (&'a crate::catalog::ClaimedJob, &'a crate::embed::Embedding, (u32, u32));

/// How long a copy waits for its first copy's vector before its job is handed back (to be
/// claimed again later: by then the first copy is indexed, or failed and this one embeds).
const TWIN_WAIT: Duration = Duration::from_secs(30);

impl Writer {
    pub(super) fn run(self) {
        // Copies waiting for their first copy's vector, with when they started waiting.
        let mut waiting: Vec<(Outcome, Instant)> = Vec::new();
        loop {
            let first = if waiting.is_empty() {
                match self.input.recv() {
                    Ok(o) => Some(o),
                    Err(_) => return,
                }
            } else {
                match self.input.recv_timeout(Duration::from_millis(200)) {
                    Ok(o) => Some(o),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut batch = Vec::new();
            if let Some(first) = first {
                batch.push(first);
                let deadline = Instant::now() + Duration::from_millis(50);
                while batch.len() < 128 {
                    match self.input.recv_deadline(deadline) {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
            }
            let mut since: Vec<Instant> = vec![Instant::now(); batch.len()];
            for (o, t) in waiting.drain(..) {
                batch.push(o);
                since.push(t);
            }
            let t = Instant::now();
            let n = batch.len() as u64;
            let deferred = match catch_unwind(AssertUnwindSafe(|| self.write(&batch))) {
                Ok(d) => d,
                Err(p) => {
                    // A bug while writing: write the batch's items one by one; the one that crashes
                    // again fails alone (fencing makes a second completion or failure a no-op).
                    tracing::error!(panic = %crate::fault::panic_message(p.as_ref()), jobs = batch.len(), "the write stage panicked; writing the batch item by item");
                    let mut deferred = Vec::new();
                    for (i, o) in batch.iter().enumerate() {
                        match catch_unwind(AssertUnwindSafe(|| self.write(std::slice::from_ref(o)))) {
                            Ok(d) if !d.is_empty() => deferred.push(i),
                            Ok(_) => {}
                            Err(p) => {
                                self.shared.write.failures.fetch_add(1, Ordering::Relaxed);
                                let reason = crashed("write", o.job(), p.as_ref());
                                self.fail(o.job(), &reason, FailCause::Crash);
                            }
                        }
                    }
                    deferred
                }
            };
            for (i, (o, since)) in batch.into_iter().zip(since).enumerate() {
                if !deferred.contains(&i) {
                    continue;
                }
                if since.elapsed() < TWIN_WAIT {
                    waiting.push((o, since));
                } else {
                    // The first copy never got a vector (failed, or stuck): hand the job back,
                    // not counted as an attempt; claimed again, it embeds on its own.
                    let job = o.job();
                    tracing::info!(path = %job.path, "a copy waited too long for its first copy's vector; handing its job back");
                    let leases = [job.lease()];
                    self.catalog_call("handing back a copy's job", || self.catalog.return_leases(&self.owner, &leases));
                    self.shared.release(job);
                }
            }
            self.shared.write.busy(t, n);
        }
    }

    /// Write a batch: vectors first, then the copies of identical content (whose first copy
    /// may be in this very batch). Returns the indices of copies whose first copy has no vector
    /// yet (to try again shortly).
    fn write(&self, batch: &[Outcome]) -> Vec<usize> {
        self.write_embedded(batch);
        self.write_duplicates(batch)
    }

    fn write_duplicates(&self, batch: &[Outcome]) -> Vec<usize> {
        let mut deferred = Vec::new();
        for (i, o) in batch.iter().enumerate() {
            let Outcome::Duplicate { job, twin, twin_path, original } = o else { continue };
            if self.shared.dropped(job) {
                continue;
            }
            let twin_point = match self.rt.block_on(self.store.get(*twin as u64)) {
                Ok(Some(p)) => p,
                // Not stored yet (in flight) or the store is unavailable: try again shortly.
                Ok(None) | Err(_) => {
                    deferred.push(i);
                    continue;
                }
            };
            let (vector, twin_payload) = twin_point;
            let ids = [job.asset_id];
            let Some((sessions, categories)) = self.catalog_call("reading the sessions of assets", || self.catalog.asset_sessions(&ids)) else {
                return deferred;
            };
            let mut sids: BTreeSet<i64> = sessions.get(&job.asset_id).cloned().unwrap_or_default();
            sids.insert(job.session_id);
            let point = Point {
                id: job.asset_id as u64,
                vector,
                payload: Payload {
                    asset_id: job.asset_id,
                    path: job.path.clone(),
                    session_ids: sids.into_iter().collect(),
                    category_id: categories.get(&job.session_id).copied().flatten(),
                    labels: twin_payload.labels.clone(),
                    indexed_at: crate::model::now_ms(),
                    model: self.model.clone(),
                    width: Some(original.0),
                    height: Some(original.1),
                },
            };
            match self.store_points(vec![point]) {
                Stored::Yes => {}
                Stored::Shutdown => return deferred,
                Stored::Refused(e) => {
                    self.refuse(job, &e);
                    continue;
                }
            }
            let path = if twin_path.is_empty() { twin_payload.path.clone() } else { twin_path.clone() };
            let reason = format!("identical to {path} (asset {twin}): the same bytes are embedded once, this file shares that vector");
            let meta = crate::catalog::AssetMeta {
                asset_id: job.asset_id,
                width: original.0,
                height: original.1,
                labels: serde_json::to_string(&twin_payload.labels).unwrap_or_default(),
                hashes: self.shared.hashes.lock().unwrap().get(&job.job_id).cloned(),
            };
            if self.catalog_call("completing a copy", || self.catalog.complete_duplicate(&self.owner, job.lease(), &meta, &reason)) == Some(true) {
                self.shared.completed_now(1);
            }
            self.shared.release(job);
        }
        deferred
    }

    /// Borrows the batch, so that after a panic the caller can still write it item by item:
    /// the outcomes that need no vector are settled, the vectors stored (a refusal narrowed to
    /// its points), then their jobs completed in one catalog transaction.
    fn write_embedded(&self, batch: &[Outcome]) {
        let embedded = self.settle_others(batch);
        if embedded.is_empty() {
            return;
        }
        let Some(points) = self.points(&embedded) else {
            // Shutting down: the leases are returned at the next start.
            return;
        };
        let Some(stored) = self.store_narrowing(embedded, points) else { return };
        if !stored.is_empty() {
            self.complete(&stored);
        }
    }

    /// Failed, skipped, handed-back and non-finite outcomes go to the catalog now; the
    /// embedded ones (of sessions not cancelled) are returned to be stored.
    fn settle_others<'a>(&self, batch: &'a [Outcome]) -> Vec<Embedded<'a>> {
        let mut embedded = Vec::new();
        for o in batch {
            match o {
                Outcome::Failed { job, reason, cause } => {
                    self.shared.write.failures.fetch_add(1, Ordering::Relaxed);
                    self.fail(job, reason, *cause);
                }
                Outcome::Skipped { job, reason } => {
                    self.catalog_call("recording a skipped job", || self.catalog.skip_job(&self.owner, job.lease(), reason));
                    self.shared.release(job);
                }
                Outcome::Retry { job, reason } => {
                    // Handed back, not failed: pending again, the claim not counted.
                    tracing::info!(path = %job.path, %reason, "handing a job back after a transient fault");
                    let leases = [job.lease()];
                    self.catalog_call("handing back a job", || self.catalog.return_leases(&self.owner, &leases));
                    self.shared.release(job);
                }
                Outcome::Embedded { job, embedding, .. } if !embedding.vector.iter().all(|x| x.is_finite()) => {
                    // This image's fault, not its batch's: fail its job alone.
                    self.shared.write.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("{}: the model produced a non-finite embedding (NaN or infinity) for this image", job.path);
                    self.fail(job, &reason, FailCause::Model);
                }
                Outcome::Duplicate { .. } => {}
                Outcome::Embedded { job, embedding, original } => {
                    crate::failpoint::check("write", &job.path);
                    if !self.shared.dropped(job) {
                        embedded.push((job, embedding, *original));
                    }
                }
            }
        }
        embedded
    }

    /// One point per embedded job, its payload naming every session that selects the asset.
    /// `None` when the catalog cannot be read because the daemon is shutting down.
    fn points(&self, embedded: &[Embedded<'_>]) -> Option<Vec<Point>> {
        let asset_ids: Vec<i64> = embedded.iter().map(|e| e.0.asset_id).collect();
        let (sessions, categories) = self.catalog_call("reading the sessions of assets", || self.catalog.asset_sessions(&asset_ids))?;
        let now = crate::model::now_ms();
        let mut points = Vec::with_capacity(embedded.len());
        for (job, emb, original) in embedded {
            let mut sids: BTreeSet<i64> = sessions.get(&job.asset_id).cloned().unwrap_or_default();
            sids.insert(job.session_id);
            points.push(Point {
                id: job.asset_id as u64,
                vector: emb.vector.clone(),
                payload: Payload {
                    asset_id: job.asset_id,
                    path: job.path.clone(),
                    session_ids: sids.into_iter().collect(),
                    category_id: categories.get(&job.session_id).copied().flatten(),
                    labels: emb.labels.iter().map(|l| LabelPayload { class_id: l.class_id, label: l.label.clone(), probability: l.probability }).collect(),
                    indexed_at: now,
                    model: self.model.clone(),
                    width: Some(original.0),
                    height: Some(original.1),
                },
            });
        }
        Some(points)
    }

    /// Store the batch; a permanent refusal is narrowed down point by point, so one bad point
    /// fails its own job and the others are stored. The items stored, or `None` at shutdown.
    fn store_narrowing<'a>(&self, embedded: Vec<Embedded<'a>>, points: Vec<Point>) -> Option<Vec<Embedded<'a>>> {
        match self.store_points(points.clone()) {
            Stored::Yes => Some(embedded),
            Stored::Shutdown => None,
            Stored::Refused(e) if embedded.len() == 1 => {
                self.refuse(embedded[0].0, &e);
                Some(Vec::new())
            }
            Stored::Refused(e) => {
                tracing::warn!(error = %e, points = points.len(), "the vector store refused a batch; storing its points one by one");
                let mut kept = Vec::with_capacity(embedded.len());
                for (item, point) in embedded.into_iter().zip(points) {
                    match self.store_points(vec![point]) {
                        Stored::Yes => kept.push(item),
                        Stored::Shutdown => return None,
                        Stored::Refused(e) => self.refuse(item.0, &e),
                    }
                }
                Some(kept)
            }
        }
    }

    /// The stored items' jobs completed (with their assets' size, labels and hashes) in one
    /// catalog transaction; their leases released.
    fn complete(&self, stored: &[Embedded<'_>]) {
        let meta: Vec<crate::catalog::AssetMeta> = {
            let hashes = self.shared.hashes.lock().unwrap();
            stored
                .iter()
                .map(|(job, emb, o)| crate::catalog::AssetMeta {
                    asset_id: job.asset_id,
                    width: o.0,
                    height: o.1,
                    labels: serde_json::to_string(&emb.labels).unwrap_or_default(),
                    hashes: hashes.get(&job.job_id).cloned(),
                })
                .collect()
        };
        let leases: Vec<crate::catalog::Lease> = stored.iter().map(|e| e.0.lease()).collect();
        if let Some(n) = self.catalog_call("marking jobs completed", || self.catalog.complete_embedded(&self.owner, &leases, &meta)) {
            self.shared.completed_now(n);
            self.shared.unoptimized.fetch_add(n, Ordering::Relaxed);
            *self.shared.last_write.write().unwrap() = Instant::now();
        }
        for (job, ..) in stored {
            self.shared.release(job);
        }
    }

    /// Fail one job (its own fault) in the catalog; a stale lease changes nothing.
    fn fail(&self, job: &crate::catalog::ClaimedJob, reason: &str, cause: FailCause) {
        if self.catalog_call("recording a failed job", || self.catalog.fail_job(&self.owner, job.lease(), reason)).is_some() {
            self.shared.failed_by_cause[cause as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.shared.release(job);
    }

    /// A catalog call that waits out a catalog that is unavailable (connection lost, database
    /// locked: transient) with backoff, so no job fails for it. A permanent error is logged and
    /// the jobs concerned are redone when their leases expire (completion is idempotent).
    /// `None` when it did not happen (permanent error, or shutdown while waiting).
    fn catalog_call<T, F, Fut>(&self, what: &str, f: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::catalog::Result<T>>,
    {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.rt.block_on(f()) {
                Ok(v) => {
                    *self.shared.waiting_for.lock().unwrap() = None;
                    return Some(v);
                }
                Err(e) if e.is_transient() && !self.shared.stop.load(Ordering::SeqCst) => {
                    *self.shared.waiting_for.lock().unwrap() =
                        Some(format!("catalog unavailable ({e}); indexing resumes when it is back, nothing fails meanwhile"));
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{what}: catalog unavailable; retrying");
                    self.shared.catalog_waits.waited(backoff);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(error = %e, "{what} failed; the jobs' leases expire and they are redone");
                    return None;
                }
            }
        }
    }
}

/// What became of a write to the vector store.
pub(super) enum Stored {
    Yes,
    /// The daemon stops while the store is down: the jobs stay leased and are redone.
    Shutdown,
    /// A permanent refusal (not an outage).
    Refused(crate::vectors::VectorError),
}

impl Writer {
    /// Upsert and flush, waiting out a store that is down (backoff up to 30 s): an outage
    /// fails no job. Stored means durable: flushed before the catalog calls the jobs
    /// completed, so a kill -9 right after cannot leave a completed job without its vector.
    fn store_points(&self, points: Vec<Point>) -> Stored {
        let mut backoff = Duration::from_millis(250);
        loop {
            let stored = self.rt.block_on(async {
                self.store.upsert(points.clone()).await?;
                self.store.flush().await
            });
            match stored {
                Ok(()) => {
                    *self.shared.waiting_for.lock().unwrap() = None;
                    return Stored::Yes;
                }
                Err(e) if e.is_retryable() => {
                    *self.shared.waiting_for.lock().unwrap() =
                        Some(format!("vector store unavailable ({e}); indexing resumes when it is back, nothing fails meanwhile"));
                    if self.shared.stop.load(Ordering::SeqCst) {
                        tracing::warn!(error = %e, "vector store down at shutdown; jobs stay leased and are redone after restart");
                        return Stored::Shutdown;
                    }
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "vector store unavailable; retrying");
                    self.shared.store_waits.waited(backoff);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Stored::Refused(e),
            }
        }
    }

    fn refuse(&self, job: &crate::catalog::ClaimedJob, e: &crate::vectors::VectorError) {
        tracing::error!(job = job.job_id, error = %e, "the vector store refused the point");
        self.shared.write.failures.fetch_add(1, Ordering::Relaxed);
        self.fail(job, &format!("the vector store refused the vector: {e}"), FailCause::VectorStore);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NewSession, NewSubdir};
    use crate::library::FileEntry;
    use crate::model::SessionStatus;
    use crate::vectors::VectorsConfig;
    use crossbeam_channel::bounded;

    /// A batch holding a NaN embedding and a vector the store refuses (wrong dimension): only
    /// those two jobs fail, each with its reason; the others are stored and completed. Real
    /// SQLite catalog, real embedded store.
    #[test]
    fn a_bad_point_fails_only_its_own_job() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let catalog = rt.block_on(Catalog::connect(&format!("sqlite://{}", dir.path().join("c.db").display()), 2)).unwrap();
        let store = rt.block_on(VectorStore::open(&VectorsConfig::embedded(dir.path()), "test", 4)).unwrap();
        let new = NewSession {
            name: "s".into(),
            root_path: "/lib".into(),
            category_id: None,
            config: serde_json::json!({}),
            source: "api".into(),
            auto_start: false,
            live: true,
        };
        let sub = NewSubdir { path: "/lib/a".into(), name: "a".into(), selected: true, is_root: false, image_count: 4 };
        let s = rt.block_on(catalog.create_session(&new, &[sub])).unwrap();
        let sd = rt.block_on(catalog.subdirectories(s.id)).unwrap()[0].id;
        let files: Vec<FileEntry> = (0..4).map(|i| FileEntry { path: format!("/lib/a/{i}.jpg").into(), size: 1, modified_ms: 1 }).collect();
        rt.block_on(catalog.add_discovered(s.id, &[(sd, files)])).unwrap();
        assert!(rt.block_on(catalog.transition(s.id, SessionStatus::Pending, SessionStatus::Running, Default::default())).unwrap());
        let mut jobs = rt.block_on(catalog.claim_jobs("w", 10, Duration::from_secs(600))).unwrap();
        jobs.sort_by_key(|j| j.job_id);
        assert_eq!(jobs.len(), 4);
        let (_tx, rx) = bounded(1);
        let w = Writer {
            input: rx,
            catalog: catalog.clone(),
            store,
            rt: rt.handle().clone(),
            shared: Arc::new(Shared::new()),
            owner: "w".into(),
            model: "m".into(),
        };
        let vectors = [vec![1.0, 0.0, 0.0, 0.0], vec![f32::NAN, 0.0, 0.0, 1.0], vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0, 0.0]];
        let batch: Vec<Outcome> = jobs
            .iter()
            .cloned()
            .zip(vectors)
            .map(|(job, vector)| Outcome::Embedded { job, embedding: crate::embed::Embedding { vector, labels: vec![] }, original: (8, 8) })
            .collect();
        w.write(&batch);
        let (failed, _) = rt.block_on(catalog.jobs(s.id, Some(crate::model::JobStatus::Failed), 10, 0)).unwrap();
        let mut reasons: Vec<String> = failed.iter().map(|j| j.error_message.clone().unwrap_or_default()).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("1.jpg") && reasons[0].contains("non-finite"), "{reasons:?}");
        assert!(reasons[1].contains("refused") && reasons[1].contains("dimension"), "{reasons:?}");
        let sum = rt.block_on(catalog.jobs_summary(s.id)).unwrap();
        assert_eq!((sum.completed, sum.failed), (2, 2));
        assert_eq!(rt.block_on(w.store.count()).unwrap(), 2);
    }
}
