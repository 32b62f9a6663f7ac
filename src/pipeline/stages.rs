//! The five stages. Each is a type that owns the sender to the next stage and updates its own
//! counters; `spawn` wires them with bounded channels and starts their threads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use super::messages::{DecodeTask, Decoded, FailCause, Outcome, Prepared};
use super::{PipelineConfig, Shared};
use crate::catalog::Catalog;
use crate::embed::{Embedder, IMAGE_FLOATS};
use crate::vectors::{LabelPayload, Payload, Point, VectorStore};

/// Receivers kept for queue-depth reporting.
pub(super) struct Queues {
    decode: Receiver<DecodeTask>,
    resize: Receiver<Decoded>,
    embed: Receiver<Prepared>,
    write: Receiver<Outcome>,
    caps: [usize; 5],
}

impl Queues {
    /// (depths, capacities) of the queue in front of each stage: claim has none.
    pub(super) fn depths(&self) -> ([usize; 5], [usize; 5]) {
        ([0, self.decode.len(), self.resize.len(), self.embed.len(), self.write.len()], self.caps)
    }
}

pub(super) fn spawn(
    cfg: &PipelineConfig,
    embedder: Embedder,
    store: VectorStore,
    catalog: Catalog,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    wake: Receiver<()>,
) -> (Queues, Vec<JoinHandle<()>>) {
    let bs = embedder.batch_size();
    let gpu = embedder.is_gpu();
    let cfg_model = embedder.model_name();
    // claim → decode: holds only job ids and paths; two per decoder keeps every decoder fed
    // while bounding how many leased jobs wait unstarted.
    let decode_cap = cfg.decode_workers * 2;
    // decode → resize: decoded images (DCT-scaled, ≤ ~1 MB each); two per resizer.
    let resize_cap = cfg.resize_workers.max(1) * 2;
    // resize → embed: two batches — one being filled while the model runs the other.
    let embed_cap = bs * 2;
    // → write: a few batches of vectors (5 KB each); a slow vector store then stalls the
    // pipeline instead of filling memory.
    let write_cap = bs * 4;
    let (decode_tx, decode_rx) = bounded::<DecodeTask>(decode_cap);
    let (resize_tx, resize_rx) = bounded::<Decoded>(resize_cap);
    let (embed_tx, embed_rx) = bounded::<Prepared>(embed_cap);
    let (write_tx, write_rx) = bounded::<Outcome>(write_cap);
    let queues = Queues {
        decode: decode_rx.clone(),
        resize: resize_rx.clone(),
        embed: embed_rx.clone(),
        write: write_rx.clone(),
        caps: [0, decode_cap, resize_cap, embed_cap, write_cap],
    };
    let mut threads = Vec::new();
    let named = |name: String, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name).spawn(f).expect("spawn pipeline thread");

    let claimer = Claimer { out: decode_tx, catalog: catalog.clone(), rt: rt.clone(), shared: shared.clone(), cfg: cfg.clone(), wake };
    threads.push(named("pixdex-claim".into(), Box::new(move || claimer.run())));
    for i in 0..cfg.decode_workers {
        let d = Decoder {
            input: decode_rx.clone(),
            out: resize_tx.clone(),
            fail: write_tx.clone(),
            shared: shared.clone(),
            limits: cfg.limits.clone(),
            library: cfg.library.clone(),
            twins: Some((catalog.clone(), store.clone(), rt.clone())),
        };
        threads.push(named(format!("pixdex-decode-{i}"), Box::new(move || d.run())));
    }
    drop(resize_tx);
    let resizers = if gpu { 1 } else { cfg.resize_workers.max(1) };
    for i in 0..resizers {
        let r = Resizer { input: resize_rx.clone(), out: embed_tx.clone(), fail: write_tx.clone(), shared: shared.clone(), gpu };
        threads.push(named(format!("pixdex-resize-{i}"), Box::new(move || r.run())));
    }
    drop(embed_tx);
    let e = EmbedStage { input: embed_rx, out: write_tx.clone(), shared: shared.clone(), embedder };
    threads.push(named("pixdex-embed".into(), Box::new(move || e.run())));
    drop(write_tx);
    let w = Writer {
        input: write_rx,
        catalog: catalog.clone(),
        store: store.clone(),
        rt: rt.clone(),
        shared: shared.clone(),
        owner: cfg.owner.clone(),
        model: cfg_model.clone(),
    };
    threads.push(named("pixdex-write".into(), Box::new(move || w.run())));
    let o = Optimizer { store, rt: rt.clone(), shared: shared.clone() };
    threads.push(named("pixdex-optimize".into(), Box::new(move || o.run())));
    let r = Renewer { catalog, rt, shared, owner: cfg.owner.clone(), lease: cfg.lease };
    threads.push(named("pixdex-lease".into(), Box::new(move || r.run())));
    (queues, threads)
}

// ---------------------------------------------------------------------------------------------

/// Takes pending jobs of running sessions from the catalog, leased to this daemon.
struct Claimer {
    out: Sender<DecodeTask>,
    catalog: Catalog,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    cfg: PipelineConfig,
    wake: Receiver<()>,
}

impl Claimer {
    fn run(self) {
        match self.rt.block_on(self.catalog.requeue_owner(&self.cfg.owner)) {
            Ok(n) if n > 0 => tracing::info!(jobs = n, "requeued jobs this daemon held when it stopped"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "requeueing this daemon's old leases failed; they return when they expire"),
        }
        // A panic (a bug) restarts the loop after a pause instead of stopping all claiming.
        while !self.shared.stop.load(Ordering::SeqCst) {
            match catch_unwind(AssertUnwindSafe(|| self.claim_loop())) {
                Ok(()) => return,
                Err(p) => {
                    tracing::error!(panic = %crate::error::panic_message(p.as_ref()), "the claim stage panicked; restarting it");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn claim_loop(&self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            let jobs = match self.rt.block_on(self.catalog.claim_jobs_max(&self.cfg.owner, self.cfg.claim_batch as i64, self.cfg.lease, self.cfg.max_attempts))
            {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed; retrying");
                    let _ = self.wake.recv_timeout(Duration::from_secs(1));
                    continue;
                }
            };
            self.shared.claim.busy(t, jobs.len() as u64);
            if jobs.is_empty() {
                // Nothing to do: wait for a wake-up (session started) or poll again soon.
                let _ = self.wake.recv_timeout(Duration::from_millis(500));
                continue;
            }
            self.shared.in_flight.lock().unwrap().extend(jobs.iter().map(|j| j.lease()));
            for job in jobs {
                if self.shared.dropped(&job) {
                    continue;
                }
                if self.out.send(DecodeTask { job }).is_err() {
                    return;
                }
            }
        }
    }
}

/// A stage crashed on this job: the reason a user reads.
fn crashed(stage: &str, job: &crate::catalog::ClaimedJob, p: &(dyn std::any::Any + Send)) -> String {
    let msg = crate::error::panic_message(p);
    tracing::error!(stage, job = job.job_id, path = %job.path, panic = %msg, "a pipeline stage panicked on this job; it fails, the stage goes on");
    format!("{}: the {stage} stage crashed on this image (a pixdex bug; please report it): {msg}", job.path)
}

/// Reads files: DCT-scaled JPEG, PNG, WebP, EXIF orientation, bomb and size limits. A bad file
/// fails its own job.
struct Decoder {
    input: Receiver<DecodeTask>,
    out: Sender<Decoded>,
    fail: Sender<Outcome>,
    shared: Arc<Shared>,
    limits: crate::decode::DecodeLimits,
    library: Option<Arc<crate::library::Library>>,
    /// Where to look for an indexed asset with the same bytes and its vector (`None`: no
    /// duplicate check).
    twins: Option<(Catalog, VectorStore, tokio::runtime::Handle)>,
}

impl Decoder {
    /// An asset with the same bytes that is indexed or in flight, if any; otherwise this job
    /// becomes the first copy of its content.
    fn twin(&self, job: &crate::catalog::ClaimedJob, content: &str) -> Option<(i64, String)> {
        let (catalog, store, rt) = self.twins.as_ref()?;
        {
            let mut first = self.shared.first_copy.lock().unwrap();
            match first.get(content) {
                Some(&other) if other != job.asset_id => return Some((other, String::new())),
                Some(_) => return None,
                None => {}
            }
            // Claimed before the catalog is asked: a copy decoded meanwhile finds this one.
            first.insert(content.to_string(), job.asset_id);
        }
        // Indexed with this pipeline's model: its vector is in this store (during a model
        // switch the catalog's "indexed" may mean the previous model).
        let indexed = rt.block_on(async {
            match catalog.indexed_twin(content, job.asset_id).await {
                Ok(Some(t)) if matches!(store.get(t.0 as u64).await, Ok(Some(_))) => Some(t),
                _ => None,
            }
        });
        match indexed {
            Some(t) => {
                let mut first = self.shared.first_copy.lock().unwrap();
                if first.get(content) == Some(&job.asset_id) {
                    first.remove(content);
                }
                Some(t)
            }
            // Not indexed anywhere (or unavailable to ask: embedding it is always right).
            None => None,
        }
    }

    /// A transient fault reading the file (out of file descriptors…): the job goes back to
    /// pending through the writer, after a short pause so that this decoder does not spin on
    /// a process that has no descriptor to give. False when the pipeline is stopping.
    fn retry_later(&self, job: crate::catalog::ClaimedJob, reason: String) -> bool {
        tracing::warn!(path = %job.path, error = %reason, "transient fault reading the file; its job is handed back and retried");
        std::thread::sleep(Duration::from_millis(200));
        self.fail.send(Outcome::Retry { job, reason }).is_ok()
    }

    fn run(self) {
        while let Ok(DecodeTask { job }) = self.input.recv() {
            if self.shared.dropped(&job) {
                continue;
            }
            let t = Instant::now();
            let path = std::path::PathBuf::from(&job.path);
            // Opened now beneath its root, the check and the open one step, not trusted from
            // the catalog: the file (or a folder above it) may have become a symlink leading
            // out of the roots since it was catalogued, or become one while it is opened.
            let file = match &self.library {
                None => None,
                Some(lib) => match lib.open_file(&path) {
                    Ok(f) => Some(f),
                    Err(crate::library::LibraryError::NotFound { .. }) => {
                        // Deleted or moved away since it was claimed: nothing to index, no error.
                        let e = crate::decode::DecodeError::Vanished { path: path.clone() };
                        let reason = format!("{e}; nothing to index (if it moved, the watcher queues it under its new path)");
                        if self.fail.send(Outcome::Skipped { job, reason }).is_err() {
                            return;
                        }
                        continue;
                    }
                    // Out of file descriptors (EMFILE/ENFILE): not the file's fault; retried.
                    Err(e) if crate::error::Classify::is_transient(&e) => {
                        if !self.retry_later(job, e.to_string()) {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = format!("{e}; the file was not read");
                        if self.fail.send(Outcome::Failed { job, reason, cause: FailCause::File }).is_err() {
                            return;
                        }
                        continue;
                    }
                },
            };
            let limits = &self.limits;
            let r = std::panic::catch_unwind(move || match file {
                Some(f) => crate::decode::decode_file(f, &path, limits),
                // No library (benches, tests): the path as it is.
                None => crate::decode::decode_for_embedding(&path, limits),
            });
            self.shared.decode.busy(t, 1);
            let sent = match r {
                Ok(Ok(d)) => {
                    let original = (d.original_width, d.original_height);
                    let twin = d.content_hash.as_deref().and_then(|c| {
                        self.shared.hashes.lock().unwrap().insert(job.job_id, (c.to_string(), crate::duplicates::dhash(&d.image)));
                        self.twin(&job, c)
                    });
                    match twin {
                        Some((twin, twin_path)) => self.fail.send(Outcome::Duplicate { job, twin, twin_path, original }).is_ok(),
                        None => self.out.send(Decoded { job, image: d.image, original }).is_ok(),
                    }
                }
                Ok(Err(e @ crate::decode::DecodeError::Vanished { .. })) => {
                    // Deleted or moved away since it was claimed: nothing to index, no error.
                    let reason = format!("{e}; nothing to index (if it moved, the watcher queues it under its new path)");
                    self.fail.send(Outcome::Skipped { job, reason }).is_ok()
                }
                // Out of file descriptors (EMFILE/ENFILE) and the like: not the file's fault.
                Ok(Err(e)) if crate::error::Classify::is_transient(&e) => self.retry_later(job, e.to_string()),
                Ok(Err(e)) => {
                    self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                    self.fail.send(Outcome::Failed { job, reason: e.to_string(), cause: FailCause::File }).is_ok()
                }
                Err(_) => {
                    self.shared.decode.failures.fetch_add(1, Ordering::Relaxed);
                    let reason = format!("{}: the decoder crashed on this file (a pixdex bug; please report it)", job.path);
                    self.fail.send(Outcome::Failed { job, reason, cause: FailCause::Crash }).is_ok()
                }
            };
            if !sent {
                return;
            }
        }
    }
}

/// CPU: SIMD resize + crop + normalize into the model's input. GPU: passes the image on; the
/// WGSL kernel resizes on the device inside the embed stage's batch.
struct Resizer {
    input: Receiver<Decoded>,
    out: Sender<Prepared>,
    /// A panic while resizing fails that job alone (a pixdex bug, reported as such).
    fail: Sender<Outcome>,
    shared: Arc<Shared>,
    gpu: bool,
}

impl Resizer {
    fn run(self) {
        while let Ok(Decoded { job, image, original }) = self.input.recv() {
            if self.shared.dropped(&job) {
                continue;
            }
            let msg = if self.gpu {
                Prepared::Gpu { job, image, original }
            } else {
                let t = Instant::now();
                let resized = catch_unwind(AssertUnwindSafe(|| {
                    crate::failpoint::check("resize", &job.path);
                    let mut nchw = vec![0f32; IMAGE_FLOATS];
                    crate::embed::preprocess::cpu_resize_normalize(&image, &mut nchw);
                    nchw
                }));
                self.shared.resize.busy(t, 1);
                match resized {
                    Ok(nchw) => Prepared::Cpu { job, nchw, original },
                    Err(p) => {
                        self.shared.resize.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = crashed("resize", &job, p.as_ref());
                        if self.fail.send(Outcome::Failed { job, reason, cause: FailCause::Crash }).is_err() {
                            return;
                        }
                        continue;
                    }
                }
            };
            if self.out.send(msg).is_err() {
                return;
            }
        }
    }
}

/// Runs the model on batches of `batch_size` (the last one padded by the embedder).
struct EmbedStage {
    input: Receiver<Prepared>,
    out: Sender<Outcome>,
    shared: Arc<Shared>,
    embedder: Embedder,
}

impl EmbedStage {
    fn run(self) {
        let bs = self.embedder.batch_size();
        while let Ok(first) = self.input.recv() {
            let mut batch = vec![first];
            // Fill the batch, but do not hold a partial one long when the queue is dry.
            let deadline = Instant::now() + Duration::from_millis(25);
            while batch.len() < bs {
                match self.input.recv_deadline(deadline) {
                    Ok(p) => batch.push(p),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Batch boundary: drop what a cancel made moot.
            batch.retain(|p| !self.shared.dropped(p.job()));
            if batch.is_empty() {
                continue;
            }
            let t = Instant::now();
            let result = match catch_unwind(AssertUnwindSafe(|| self.embed(&batch))) {
                Ok(r) => r,
                Err(p) => {
                    // The model crashed on this batch: find the image(s) responsible by
                    // embedding each alone; only those fail, the others go on.
                    tracing::error!(panic = %crate::error::panic_message(p.as_ref()), images = batch.len(), "the embed stage panicked; retrying the batch image by image");
                    let outcomes = self.embed_one_by_one(batch);
                    self.shared.embed.busy(t, outcomes.len() as u64);
                    for o in outcomes {
                        if self.out.send(o).is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            self.shared.embed.busy(t, batch.len() as u64);
            let outcomes: Vec<Outcome> = match result {
                Ok(embs) => batch
                    .into_iter()
                    .zip(embs)
                    .map(|(p, embedding)| match p {
                        Prepared::Cpu { job, original, .. } | Prepared::Gpu { job, original, .. } => Outcome::Embedded { job, embedding, original },
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(error = %e, "embedding a batch failed");
                    self.shared.embed.failures.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch
                        .into_iter()
                        .map(|p| {
                            let job = match p {
                                Prepared::Cpu { job, .. } | Prepared::Gpu { job, .. } => job,
                            };
                            Outcome::Failed {
                                job,
                                reason: format!("the model failed on this batch (runtime error, not the file's): {e}"),
                                cause: FailCause::Model,
                            }
                        })
                        .collect()
                }
            };
            for o in outcomes {
                if self.out.send(o).is_err() {
                    return;
                }
            }
        }
    }

    /// After a panic: each image alone, so a crash fails only its own job.
    fn embed_one_by_one(&self, batch: Vec<Prepared>) -> Vec<Outcome> {
        batch
            .into_iter()
            .map(|p| {
                let r = catch_unwind(AssertUnwindSafe(|| self.embed(std::slice::from_ref(&p))));
                let (job, original) = match &p {
                    Prepared::Cpu { job, original, .. } | Prepared::Gpu { job, original, .. } => (job.clone(), *original),
                };
                match r {
                    Ok(Ok(mut e)) if e.len() == 1 => Outcome::Embedded { job, embedding: e.remove(0), original },
                    Ok(Ok(_)) => Outcome::Failed {
                        job,
                        reason: "the model returned no embedding for this image (a pixdex bug; please report it)".into(),
                        cause: FailCause::Crash,
                    },
                    Ok(Err(e)) => {
                        Outcome::Failed { job, reason: format!("the model failed on this image (runtime error, not the file's): {e}"), cause: FailCause::Model }
                    }
                    Err(panic) => {
                        self.shared.embed.failures.fetch_add(1, Ordering::Relaxed);
                        let reason = crashed("embed", &job, panic.as_ref());
                        Outcome::Failed { job, reason, cause: FailCause::Crash }
                    }
                }
            })
            .collect()
    }

    fn embed(&self, batch: &[Prepared]) -> Result<Vec<crate::embed::Embedding>, crate::embed::EmbedError> {
        for p in batch {
            crate::failpoint::check("embed", &p.job().path);
        }
        if batch.iter().all(|p| matches!(p, Prepared::Cpu { .. })) {
            let mut data = Vec::with_capacity(batch.len() * IMAGE_FLOATS);
            for p in batch {
                if let Prepared::Cpu { nchw, .. } = p {
                    data.extend_from_slice(nchw);
                }
            }
            self.embedder.embed_normalized(&data, batch.len())
        } else {
            let images: Vec<&crate::decode::RgbImage> = batch
                .iter()
                .filter_map(|p| match p {
                    Prepared::Gpu { image, .. } => Some(image),
                    Prepared::Cpu { .. } => None,
                })
                .collect();
            self.embedder.embed_images(&images)
        }
    }
}

/// Stores vectors, then marks their jobs completed in one catalog transaction: a job is
/// completed only after its vector is stored. A store that is down is retried with backoff.
struct Writer {
    input: Receiver<Outcome>,
    catalog: Catalog,
    store: VectorStore,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    owner: String,
    /// The model whose vectors these are (stored in each point's payload).
    model: String,
}

/// How long a copy waits for its first copy's vector before its job is handed back (to be
/// claimed again later: by then the first copy is indexed, or failed and this one embeds).
const TWIN_WAIT: Duration = Duration::from_secs(30);

impl Writer {
    fn run(self) {
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
                    tracing::error!(panic = %crate::error::panic_message(p.as_ref()), jobs = batch.len(), "the write stage panicked; writing the batch item by item");
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

    /// Borrows the batch, so that after a panic the caller can still write it item by item.
    fn write_embedded(&self, batch: &[Outcome]) {
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
        if embedded.is_empty() {
            return;
        }
        let asset_ids: Vec<i64> = embedded.iter().map(|e| e.0.asset_id).collect();
        let Some((sessions, categories)) = self.catalog_call("reading the sessions of assets", || self.catalog.asset_sessions(&asset_ids)) else {
            // Shutting down: the leases are returned at the next start.
            return;
        };
        let now = crate::model::now_ms();
        let mut points = Vec::with_capacity(embedded.len());
        for (job, emb, original) in &embedded {
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
        // Store the batch; a permanent refusal is narrowed down point by point, so one bad
        // point fails its own job and the others are stored.
        let embedded = match self.store_points(points.clone()) {
            Stored::Yes => embedded,
            Stored::Shutdown => return,
            Stored::Refused(e) if embedded.len() == 1 => {
                self.refuse(embedded[0].0, &e);
                return;
            }
            Stored::Refused(e) => {
                tracing::warn!(error = %e, points = points.len(), "the vector store refused a batch; storing its points one by one");
                let mut kept = Vec::with_capacity(embedded.len());
                for (item, point) in embedded.into_iter().zip(points) {
                    match self.store_points(vec![point]) {
                        Stored::Yes => kept.push(item),
                        Stored::Shutdown => return,
                        Stored::Refused(e) => self.refuse(item.0, &e),
                    }
                }
                kept
            }
        };
        if embedded.is_empty() {
            return;
        }
        let meta: Vec<crate::catalog::AssetMeta> = {
            let hashes = self.shared.hashes.lock().unwrap();
            embedded
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
        let leases: Vec<crate::catalog::Lease> = embedded.iter().map(|e| e.0.lease()).collect();
        if let Some(n) = self.catalog_call("marking jobs completed", || self.catalog.complete_embedded(&self.owner, &leases, &meta)) {
            self.shared.completed_now(n);
            self.shared.unoptimized.fetch_add(n, Ordering::Relaxed);
            *self.shared.last_write.write().unwrap() = Instant::now();
        }
        for (job, ..) in &embedded {
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
enum Stored {
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

/// Keeps the leases of the jobs in hand alive: every third of a lease, the leases of every
/// job between claim and completion are pushed a lease into the future, so a long batch or a
/// deep queue never loses its jobs to the reaper, while a daemon that dies (or stalls: this
/// thread stalls with it) loses them within one lease. A lease found lost (the job was
/// cancelled, or claimed again after a stall) is dropped; its completion will be ignored.
struct Renewer {
    catalog: Catalog,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    owner: String,
    lease: Duration,
}

impl Renewer {
    fn run(self) {
        let every = (self.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut next = Instant::now() + every;
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100).min(every));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            let held: Vec<crate::catalog::Lease> = self.shared.in_flight.lock().unwrap().iter().copied().collect();
            if held.is_empty() {
                continue;
            }
            match self.rt.block_on(self.catalog.renew_leases(&self.owner, &held, self.lease)) {
                Ok(lost) if lost.is_empty() => tracing::trace!(leases = held.len(), "leases renewed"),
                Ok(lost) => {
                    // Those completed meanwhile left the set already: only the others were lost.
                    let gone = {
                        let mut f = self.shared.in_flight.lock().unwrap();
                        lost.iter().filter(|l| f.remove(l)).count()
                    };
                    if gone > 0 {
                        tracing::warn!(lost = gone, "leases lost (job cancelled, or claimed again after a stall); their results will be ignored");
                    }
                }
                Err(e) => tracing::warn!(error = %e, leases = held.len(), "renewing leases failed; retrying"),
            }
        }
    }
}

/// Runs the vector store's `optimize()` off the hot path: when points were written and the
/// writer has been idle for a while.
struct Optimizer {
    store: VectorStore,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
}

impl Optimizer {
    fn run(self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            // Index building is slow (minutes at 100k points on 2 cores): only after a bulk of
            // new points, once the writer has been idle a while.
            let idle = self.shared.last_write.read().unwrap().elapsed() > Duration::from_secs(10);
            if idle && self.shared.unoptimized.load(Ordering::Relaxed) >= 1000 {
                let n = self.shared.unoptimized.swap(0, Ordering::Relaxed);
                let t = Instant::now();
                match self.rt.block_on(self.store.optimize()) {
                    Ok(()) => tracing::info!(points = n, elapsed_ms = t.elapsed().as_millis() as u64, "vector store optimized"),
                    Err(e) => tracing::warn!(error = %e, "vector store optimize failed"),
                }
            }
        }
        let _ = self.rt.block_on(self.store.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NewSession, NewSubdir};
    use crate::library::FileEntry;
    use crate::model::SessionStatus;
    use crate::vectors::VectorsConfig;

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

    /// A catalogued file that has become a symlink leading out of the roots is not read by the
    /// decoder: its job fails with the reason. An in-root file decodes as usual.
    #[test]
    fn decoder_does_not_follow_links_out_of_the_roots() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let png = |p: &std::path::Path| image::RgbImage::from_pixel(32, 32, image::Rgb([9, 9, 9])).save(p).unwrap();
        png(&root.join("ok.png"));
        png(&d.path().join("secret.png"));
        std::os::unix::fs::symlink(d.path().join("secret.png"), root.join("swapped.png")).unwrap();
        let library = crate::library::Library::new(crate::config::LibraryConfig {
            watch: crate::config::WatchMode::Off,
            poll_interval: Duration::from_secs(1),
            settle: Duration::from_millis(100),
            rescan_interval: Duration::from_secs(60),
            roots: vec![std::fs::canonicalize(&root).unwrap()],
            extensions: vec!["png".into()],
            ignored: vec![],
        });
        let (task_tx, task_rx) = bounded(4);
        let (out_tx, out_rx) = bounded(4);
        let (fail_tx, fail_rx) = bounded(4);
        let dec = Decoder {
            input: task_rx,
            out: out_tx,
            fail: fail_tx,
            shared: Arc::new(Shared::new()),
            limits: crate::decode::DecodeLimits::default(),
            library: Some(Arc::new(library)),
            twins: None,
        };
        let canon = std::fs::canonicalize(&root).unwrap();
        for (i, name) in ["ok.png", "swapped.png"].iter().enumerate() {
            let job =
                crate::catalog::ClaimedJob { job_id: i as i64, session_id: 1, asset_id: i as i64, path: canon.join(name).display().to_string(), token: 1 };
            task_tx.send(DecodeTask { job }).unwrap();
        }
        drop(task_tx);
        dec.run();
        assert_eq!(out_rx.try_iter().count(), 1, "the in-root file decodes");
        let failed: Vec<String> = fail_rx
            .try_iter()
            .map(|o| match o {
                Outcome::Failed { reason, .. } => reason,
                _ => String::new(),
            })
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("swapped.png") && failed[0].contains("outside the library roots"), "{failed:?}");
    }
}
