//! The embedding pipeline: claim → decode → resize → embed → write, one type per stage, each
//! owning the sender to the next stage and its own counters, joined by bounded crossbeam
//! channels (so memory stays flat and the slowest stage sets the pace). Every stage runs on its
//! own OS threads; the async catalog and vector store are reached through a runtime handle.
//!
//! Control never queues behind data: pause is the catalog's session status (the claimer only
//! claims for running sessions); cancel is a shared set of session ids that every stage checks
//! at its batch boundary, dropping that session's jobs (the catalog has already cancelled them).

mod claim;
mod decode;
mod embed;
mod messages;
mod optimize;
mod renew;
mod resize;
mod stages;
mod write;

pub use messages::FailCause;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::Catalog;
use crate::decode::DecodeLimits;
use crate::embed::Embedder;
use crate::vectors::VectorStore;

/// Pipeline settings (validated config).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub decode_workers: usize,
    pub resize_workers: usize,
    pub claim_batch: usize,
    pub lease: Duration,
    pub limits: DecodeLimits,
    /// Who holds the leases: this daemon's persistent id.
    pub owner: String,
    /// Claims of one job before it is given up (`pipeline.max_attempts`).
    pub max_attempts: i64,
    /// The library, to re-resolve each file just before it is read: a symlink swapped in since
    /// cataloguing that now leads out of the roots is not followed. `None`: no check (benches).
    pub library: Option<Arc<crate::library::Library>>,
}

/// Per-stage counters, read by `GET /api/v1/training/pipeline`.
#[derive(Default)]
pub struct Counters {
    pub items: AtomicU64,
    pub failures: AtomicU64,
    pub busy_ns: AtomicU64,
}

impl Counters {
    pub fn busy(&self, since: Instant, items: u64) {
        self.busy_ns.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.items.fetch_add(items, Ordering::Relaxed);
    }
}

/// Waits of the writer for a store that is unavailable (each retry after a transient fault).
#[derive(Default)]
pub struct Waits {
    pub count: AtomicU64,
    pub ms: AtomicU64,
}

impl Waits {
    pub fn waited(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ms.fetch_add(d.as_millis() as u64, Ordering::Relaxed);
    }
}

/// What operators alert on (`GET /metrics`): failed jobs by cause, waits for the catalog and
/// the vector store. Counted since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct FaultCounters {
    /// (cause label, jobs failed), every cause listed.
    pub failed: Vec<(&'static str, u64)>,
    /// (what was waited for: "catalog" | "vector_store", waits, seconds waited).
    pub waits: Vec<(&'static str, u64, f64)>,
}

/// State the stages share: counters, the cancel set, the stop flag.
pub struct Shared {
    pub claim: Counters,
    pub decode: Counters,
    pub resize: Counters,
    pub embed: Counters,
    pub write: Counters,
    pub cancelled: RwLock<HashSet<i64>>,
    /// Leases of the jobs this pipeline holds (claimed, not yet completed or failed): the
    /// renewer keeps them alive while they wait in queues or in a long batch.
    pub in_flight: std::sync::Mutex<HashSet<crate::catalog::Lease>>,
    pub stop: AtomicBool,
    pub started: Instant,
    pub completed: AtomicU64,
    /// Points written since the last optimize of the vector store.
    pub unoptimized: AtomicU64,
    pub last_write: RwLock<Instant>,
    /// Set while the writer waits out an unavailable vector store or catalog: what and why.
    pub waiting_for: std::sync::Mutex<Option<String>>,
    /// Jobs failed by this pipeline, by `FailCause` (its discriminant is the index).
    pub failed_by_cause: [AtomicU64; FailCause::ALL.len()],
    pub catalog_waits: Waits,
    pub store_waits: Waits,
    /// Completions of the last minute, for a current images/s.
    pub recent: std::sync::Mutex<std::collections::VecDeque<(Instant, u64)>>,
    /// Hashes the decoder computed, by job id, until the writer records them with the job.
    pub hashes: std::sync::Mutex<std::collections::HashMap<i64, (String, u64)>>,
    /// Content hash → asset of a job in flight with that content: a second file with the same
    /// bytes waits for its vector instead of being embedded again.
    pub first_copy: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            claim: Counters::default(),
            decode: Counters::default(),
            resize: Counters::default(),
            embed: Counters::default(),
            write: Counters::default(),
            cancelled: RwLock::new(HashSet::new()),
            in_flight: std::sync::Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            completed: AtomicU64::new(0),
            unoptimized: AtomicU64::new(0),
            last_write: RwLock::new(Instant::now()),
            waiting_for: std::sync::Mutex::new(None),
            failed_by_cause: Default::default(),
            catalog_waits: Waits::default(),
            store_waits: Waits::default(),
            recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            hashes: std::sync::Mutex::new(std::collections::HashMap::new()),
            first_copy: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Record `n` completed jobs now.
    pub fn completed_now(&self, n: u64) {
        self.completed.fetch_add(n, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap();
        r.push_back((Instant::now(), n));
        while r.front().is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(60)) {
            r.pop_front();
        }
    }

    /// Images per second over the last minute of work (0 when idle for a minute).
    pub fn recent_rate(&self) -> f64 {
        let r = self.recent.lock().unwrap();
        let n: u64 = r.iter().filter(|(t, _)| t.elapsed() <= Duration::from_secs(60)).map(|(_, n)| n).sum();
        let Some((first, _)) = r.iter().find(|(t, _)| t.elapsed() <= Duration::from_secs(60)) else { return 0.0 };
        let span = first.elapsed().as_secs_f64().max(1.0);
        n as f64 / span
    }

    pub fn is_cancelled(&self, session_id: i64) -> bool {
        self.cancelled.read().unwrap().contains(&session_id)
    }

    /// A job left this pipeline (completed, failed, dropped): its lease is no longer renewed.
    pub fn release(&self, job: &crate::catalog::ClaimedJob) {
        self.in_flight.lock().unwrap().remove(&job.lease());
        if let Some((content, _)) = self.hashes.lock().unwrap().remove(&job.job_id) {
            let mut first = self.first_copy.lock().unwrap();
            if first.get(&content) == Some(&job.asset_id) {
                first.remove(&content);
            }
        }
    }

    /// Drop a job whose session was cancelled (the catalog has already cancelled it).
    pub fn dropped(&self, job: &crate::catalog::ClaimedJob) -> bool {
        if self.is_cancelled(job.session_id) {
            self.release(job);
            return true;
        }
        false
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub name: &'static str,
    pub items: u64,
    pub failures: u64,
    pub busy_ms: u64,
    /// Busy time over wall time since start, divided by the stage's workers (1.0 = saturated).
    pub busy_share: f64,
    pub workers: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    pub running: bool,
    pub reason: Option<String>,
    /// The model's files changed but cannot be loaded: the pipeline keeps the model it loaded
    /// before (the reason and the fix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_problem: Option<String>,
    pub device: Option<String>,
    pub model: String,
    pub batch_size: usize,
    /// Which library decodes JPEGs: "libjpeg-turbo", or "jpeg-decoder" when it is not installed.
    pub jpeg_decoder: &'static str,
    pub vector_store: Option<String>,
    /// Over the last minute of work.
    pub images_per_second: f64,
    /// Set while writing waits for the vector store or the catalog to come back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    pub completed: u64,
    pub stages: Vec<StageStatus>,
}

/// The pipeline: a handle shared by the session service, the API, the live view and the
/// reaper. What it runs can be replaced while they hold it (`replace`: a model that loaded
/// after the daemon started), so each call reads the current state.
#[derive(Clone)]
pub struct Pipeline {
    slot: Arc<RwLock<Slot>>,
}

/// A running pipeline (or the reason it is not running).
#[derive(Clone)]
struct Slot {
    inner: Option<Arc<Running>>,
    /// The model it runs or should run (for a pipeline that does not run: the configured one).
    model: String,
    reason: Option<String>,
    /// See `PipelineStatus::model_problem`.
    model_problem: Option<String>,
    wake: Option<crossbeam_channel::Sender<()>>,
}

struct Running {
    shared: Arc<Shared>,
    device: String,
    /// The model the pipeline embeds with (it writes that model's vectors).
    model: String,
    batch_size: usize,
    store: VectorStore,
    queues: stages::Queues,
    workers: [usize; 5],
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// To hand back, at shutdown, the leases of jobs that were claimed but not finished.
    catalog: Catalog,
    rt: tokio::runtime::Handle,
    owner: String,
}

impl Pipeline {
    /// A pipeline that does not run, and says why (e.g. the model weights are missing).
    /// `model`: the configured model it would run.
    pub fn disabled(model: String, reason: String) -> Pipeline {
        Pipeline::from_slot(Slot { inner: None, model, reason: Some(reason), model_problem: None, wake: None })
    }

    fn from_slot(slot: Slot) -> Pipeline {
        Pipeline { slot: Arc::new(RwLock::new(slot)) }
    }

    /// What runs now.
    fn now(&self) -> Slot {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The model's files changed but cannot be loaded (`None`: they load again).
    pub fn set_model_problem(&self, problem: Option<String>) {
        self.slot.write().unwrap_or_else(|e| e.into_inner()).model_problem = problem;
    }

    /// Run `other`'s pipeline from now on, everywhere this handle is held. Returns a handle
    /// to the one that ran before: shut it down (it drains and hands back its leases).
    pub fn replace(&self, other: Pipeline) -> Pipeline {
        let next = other.now();
        let before = std::mem::replace(&mut *self.slot.write().unwrap_or_else(|e| e.into_inner()), next);
        Pipeline::from_slot(before)
    }

    pub fn start(cfg: PipelineConfig, embedder: Embedder, store: VectorStore, catalog: Catalog, rt: tokio::runtime::Handle) -> Pipeline {
        let shared = Arc::new(Shared::new());
        let device = embedder.device_name();
        let model = embedder.model_name();
        let gpu = embedder.is_gpu();
        let batch_size = embedder.batch_size();
        // Wake-ups (a session started): one pending is enough, more would say nothing new.
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let (queues, threads) = stages::spawn(&cfg, embedder, store.clone(), catalog.clone(), rt.clone(), shared.clone(), wake_rx);
        let workers = [1, cfg.decode_workers, if gpu { 1 } else { cfg.resize_workers }, 1, 1];
        tracing::info!(%device, batch_size, jpeg = crate::decode::jpeg_backend(), decode_workers = cfg.decode_workers, resize_workers = workers[2], "pipeline started");
        Pipeline::from_slot(Slot {
            inner: Some(Arc::new(Running {
                shared,
                device,
                model,
                batch_size,
                store,
                queues,
                workers,
                threads: std::sync::Mutex::new(threads),
                catalog,
                rt,
                owner: cfg.owner.clone(),
            })),
            model: String::new(),
            reason: None,
            model_problem: None,
            wake: Some(wake_tx),
        })
    }

    /// Failed jobs by cause and waits for the stores (all zero when the pipeline does not run).
    /// Jobs given up after `pipeline.max_attempts` claims are counted as cause "attempts".
    pub fn fault_counters(&self) -> FaultCounters {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let now = self.now();
        let mut failed: Vec<(&'static str, u64)> =
            FailCause::ALL.iter().map(|&c| (c.label(), now.inner.as_ref().map_or(0, |r| load(&r.shared.failed_by_cause[c as usize])))).collect();
        failed.push(("attempts", load(&crate::catalog::JOBS_GIVEN_UP)));
        let waits = |name, w: Option<&Waits>| (name, w.map_or(0, |w| load(&w.count)), w.map_or(0.0, |w| load(&w.ms) as f64 / 1000.0));
        let shared = now.inner.as_ref().map(|r| &r.shared);
        FaultCounters { failed, waits: vec![waits("catalog", shared.map(|s| &s.catalog_waits)), waits("vector_store", shared.map(|s| &s.store_waits))] }
    }

    /// Claim now rather than at the next poll (a session was started or resumed).
    pub fn wake(&self) {
        if let Some(w) = &self.now().wake {
            let _ = w.try_send(());
        }
    }

    /// A session was cancelled: drop its jobs at every stage's next batch boundary.
    pub fn cancel_session(&self, id: i64) {
        if let Some(r) = &self.now().inner {
            r.shared.cancelled.write().unwrap().insert(id);
        }
    }

    /// A session runs (again): its jobs are welcome.
    pub fn resume_session(&self, id: i64) {
        if let Some(r) = &self.now().inner {
            r.shared.cancelled.write().unwrap().remove(&id);
        }
        self.wake();
    }

    pub fn status(&self) -> PipelineStatus {
        let now = self.now();
        let Some(r) = &now.inner else {
            return PipelineStatus {
                running: false,
                reason: now.reason.clone(),
                model_problem: None,
                device: None,
                model: now.model.clone(),
                batch_size: 0,
                jpeg_decoder: crate::decode::jpeg_backend(),
                vector_store: None,
                images_per_second: 0.0,
                waiting_for: None,
                completed: 0,
                stages: vec![],
            };
        };
        let s = &r.shared;
        let wall = s.started.elapsed().as_secs_f64().max(1e-9);
        let (depths, caps) = r.queues.depths();
        let stage = |name, c: &Counters, i: usize| {
            let busy = c.busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
            StageStatus {
                name,
                items: c.items.load(Ordering::Relaxed),
                failures: c.failures.load(Ordering::Relaxed),
                busy_ms: (busy * 1000.0) as u64,
                busy_share: if r.workers[i] > 0 { ((busy / wall / r.workers[i] as f64) * 1000.0).round() / 1000.0 } else { 0.0 },
                workers: r.workers[i],
                queue_depth: depths[i],
                queue_capacity: caps[i],
            }
        };
        let completed = s.completed.load(Ordering::Relaxed);
        PipelineStatus {
            running: !s.stop.load(Ordering::Relaxed),
            reason: None,
            model_problem: now.model_problem.clone(),
            device: Some(r.device.clone()),
            model: r.model.clone(),
            batch_size: r.batch_size,
            jpeg_decoder: crate::decode::jpeg_backend(),
            vector_store: Some(r.store.describe()),
            images_per_second: (s.recent_rate() * 100.0).round() / 100.0,
            waiting_for: s.waiting_for.lock().unwrap().clone(),
            completed,
            stages: vec![
                stage("claim", &s.claim, 0),
                stage("decode", &s.decode, 1),
                stage("resize", &s.resize, 2),
                stage("embed", &s.embed, 3),
                stage("write", &s.write, 4),
            ],
        }
    }

    /// Points in the vector store (None when the pipeline does not run).
    pub async fn points(&self) -> Option<u64> {
        self.store_points().await.and_then(|r| r.ok())
    }

    /// Points in the vector store, or why it cannot be reached (None when the pipeline does
    /// not run).
    pub async fn store_points(&self) -> Option<Result<u64, crate::vectors::VectorError>> {
        let inner = self.now().inner;
        match &inner {
            Some(r) => Some(r.store.count().await),
            None => None,
        }
    }

    /// Stop claiming, let every stage drain what it holds, join the threads, then hand back
    /// the leases of jobs claimed but not finished (to pending, the claim not counted as an
    /// attempt), so peers take them at once instead of after the lease. Call from a blocking
    /// context.
    pub fn shutdown(&self) {
        if let Some(r) = &self.now().inner {
            r.shared.stop.store(true, Ordering::SeqCst);
            self.wake();
            let threads: Vec<_> = r.threads.lock().unwrap().drain(..).collect();
            for t in threads {
                let _ = t.join();
            }
            let left: Vec<crate::catalog::Lease> = r.shared.in_flight.lock().unwrap().drain().collect();
            if !left.is_empty() {
                match r.rt.block_on(r.catalog.return_leases(&r.owner, &left)) {
                    Ok(n) => tracing::info!(jobs = n, "unfinished jobs handed back to pending"),
                    Err(e) => tracing::warn!(error = %e, jobs = left.len(), "handing back unfinished jobs failed; they return when their leases expire"),
                }
            }
        }
    }
}

/// This daemon's lease owner id, kept in `<data_dir>/daemon-id` so a restart recognizes (and
/// requeues at once) the jobs it held when it died.
pub fn daemon_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let p: PathBuf = data_dir.join("daemon-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let id = format!("{}-{:x}", if host.is_empty() { "pixdex" } else { &host }, crate::model::now_ms() ^ (std::process::id() as i64) << 20);
    std::fs::write(&p, &id)?;
    Ok(id)
}
