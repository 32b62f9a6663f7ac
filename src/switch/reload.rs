//! The configured model while the daemon runs: loaded when its files appear or change (they
//! are followed every second, and loaded once they have stayed the same for a second, so a
//! download in progress is not read half-written), on SIGHUP and on `pixdex ctl model reload`
//! — without a restart. Until it loads, the pipeline stays down with the reason, which every
//! running session shows as what it waits for, and health names the model as failed.
//!
//! One task (the `Reloader`) owns the lifecycle; requests reach it over a bounded channel and
//! are answered with what happened. A successful load records the model in the catalog, opens
//! its vectors, points search at what serves (the previous model while a new one re-embeds),
//! starts a pipeline with it and swaps it in for the old one, which drains and hands back its
//! leases.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use super::{ModelSwitch, open_models};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::embed::{EmbedError, Embedder, ModelSpec};
use crate::pipeline::Pipeline;
use crate::search::Search;
use crate::sessions::Sessions;
use crate::vectors::{VectorStore, VectorsConfig};

/// Every model's vectors in use (the watcher's removals and moves go to each); replaced when a
/// reload opens another model's.
pub type StoresInUse = Arc<RwLock<Vec<VectorStore>>>;

/// Starts a pipeline with a loaded model writing to a store (the daemon's settings).
pub type StartPipeline = Box<dyn Fn(Embedder, &VectorStore) -> Pipeline + Send + Sync>;

/// Asks the reloader to load the configured model now.
#[derive(Clone)]
pub struct ModelReload {
    tx: mpsc::Sender<oneshot::Sender<Result<String, String>>>,
}

impl ModelReload {
    /// Load the configured model now: what was done, or why it cannot load (with the fix).
    pub async fn now(&self) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(reply).await.map_err(|_| "the daemon is shutting down".to_string())?;
        answer.await.map_err(|_| "the daemon is shutting down".to_string())?
    }
}

/// What the reloader works with.
pub struct ReloaderParts {
    pub cfg: Config,
    pub vectors: VectorsConfig,
    pub catalog: Catalog,
    pub sessions: Sessions,
    pub search: Search,
    pub pipeline: Pipeline,
    pub stores: StoresInUse,
    pub start: StartPipeline,
    /// The model whose re-embed sessions a `ModelSwitch` already follows (started with the
    /// daemon), so a reload does not start a second one.
    pub switching: Option<String>,
    pub shutdown: broadcast::Sender<()>,
}

pub struct Reloader {
    parts: ReloaderParts,
    /// The model's files as last loaded (or tried).
    seen: Stamp,
    /// Files seen changed, and since when they have stayed so.
    changing: Option<(Stamp, Instant)>,
    requests: mpsc::Receiver<oneshot::Sender<Result<String, String>>>,
    /// Tells a load in progress that the daemon is stopping.
    stopping: broadcast::Receiver<()>,
}

/// Size and modification time of each of the model's files (`None`: absent).
type Stamp = Vec<Option<(u64, std::time::SystemTime)>>;

/// How long the files must stay the same before they are loaded.
const SETTLE: Duration = Duration::from_secs(1);

impl Reloader {
    /// The reloader and its handle. Four requests may wait (a SIGHUP and a few `ctl model
    /// reload`s); a fifth sender waits for room, and each is answered in turn.
    pub fn new(parts: ReloaderParts) -> (Reloader, ModelReload) {
        let (tx, requests) = mpsc::channel(4);
        let seen = stamp(&files(&parts.cfg.model.spec));
        let stopping = parts.shutdown.subscribe();
        (Reloader { parts, seen, changing: None, requests, stopping }, ModelReload { tx })
    }

    pub async fn run(mut self) {
        let mut shutdown = self.parts.shutdown.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Shutdown: stop following the model's files.
                _ = shutdown.recv() => return,
                // Asked (SIGHUP, `ctl model reload`): load now and answer.
                Some(reply) = self.requests.recv() => {
                    self.seen = stamp(&files(&self.parts.cfg.model.spec));
                    self.changing = None;
                    let _ = reply.send(self.load().await);
                }
                // The model's files: appeared or changed, and settled.
                _ = tick.tick() => self.follow_files().await,
            }
        }
    }

    async fn follow_files(&mut self) {
        let now = stamp(&files(&self.parts.cfg.model.spec));
        if now == self.seen {
            self.changing = None;
            return;
        }
        match &self.changing {
            Some((s, since)) if *s == now && since.elapsed() >= SETTLE => {
                tracing::info!(weights = %self.parts.cfg.model.spec.weights.display(), "the model's files changed: loading it");
                self.seen = now;
                self.changing = None;
                let _ = self.load().await;
            }
            Some((s, _)) if *s == now => {}
            _ => self.changing = Some((now, Instant::now())),
        }
    }

    /// Load the configured model and swap it in; on failure a pipeline that runs keeps running
    /// (with the model it has), one that does not says the new reason.
    async fn load(&mut self) -> Result<String, String> {
        let p = &self.parts;
        let loaded = load_model(&p.cfg.model.spec, &p.cfg.model.device, p.cfg.pipeline.batch_size).await;
        let loaded = match loaded {
            Ok(l) => l,
            Err(reason) => {
                tracing::warn!(%reason, "the configured model cannot load");
                if p.pipeline.status().running {
                    p.pipeline
                        .set_model_problem(Some(format!("its files changed and cannot be loaded ({reason}); the pipeline keeps the model it loaded before")));
                } else {
                    // Nothing runs in the pipeline replaced: only its reason changes.
                    p.pipeline.replace(Pipeline::disabled(p.cfg.model.spec.kind.to_string(), reason.clone()));
                    if matches!(p.cfg.model.spec.kind, crate::model::ModelKind::Clip(_)) {
                        p.search.set_configured_failure(Some((p.cfg.model.spec.kind.to_string(), reason.clone())));
                    }
                }
                return Err(reason);
            }
        };
        let open_now = p.stores.read().unwrap_or_else(|e| e.into_inner()).clone();
        let models = open_models(&p.cfg, &p.catalog, &p.vectors, Ok(loaded), &open_now)
            .await
            .map_err(|e| format!("the model loaded but its vectors cannot be opened: {e:#}"))?;
        let name = models.pipeline_embedder.as_ref().map(|e| e.model_name()).unwrap_or_default();
        *p.stores.write().unwrap_or_else(|e| e.into_inner()) = models.stores();
        p.search.set_configured_failure(None);
        p.search.set_serving(models.serving.clone());
        if let Some(target) = models.building.clone()
            && p.switching.as_deref() != Some(target.model.as_str())
        {
            let switch = ModelSwitch::new(p.sessions.clone(), p.search.clone(), p.cfg.library.roots.clone(), target.clone());
            tokio::spawn(switch.run(p.shutdown.subscribe()));
            self.parts.switching = Some(target.model);
        }
        let p = &self.parts;
        let embedder = models.pipeline_embedder.map_err(|e| e.to_string())?;
        // The daemon began to stop while the model loaded: start nothing new.
        if !matches!(self.stopping.try_recv(), Err(broadcast::error::TryRecvError::Empty)) {
            return Err("the daemon is shutting down".into());
        }
        let new = (p.start)(embedder, &models.pipeline_store);
        let old = p.pipeline.replace(new);
        p.pipeline.set_model_problem(None);
        // The old pipeline drains and hands back its leases off the runtime.
        let _ = tokio::task::spawn_blocking(move || old.shutdown()).await;
        p.pipeline.wake();
        tracing::info!(model = %name, "model loaded: the pipeline runs");
        Ok(format!("model {name} loaded; the pipeline runs"))
    }
}

/// The files a model reads.
fn files(spec: &ModelSpec) -> Vec<PathBuf> {
    match spec.kind {
        crate::model::ModelKind::EfficientNetLite0 => vec![spec.weights.clone()],
        crate::model::ModelKind::Clip(_) => vec![spec.weights.clone(), spec.vocab.clone()],
    }
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.len(), m.modified().ok()?)))).collect()
}

/// Load the configured model twice (the pipeline's batched instance and a batch-1 one for
/// queries), on blocking threads; or say why not.
pub async fn load_model(spec: &ModelSpec, device: &str, bs: usize) -> Result<(Embedder, Embedder), String> {
    let device: crate::embed::DeviceChoice = device.parse().unwrap_or_default();
    let spec = spec.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let main = Embedder::load_spec_images(&spec, device, bs)?;
        let search = Embedder::load_spec(&spec, device, 1)?;
        Ok::<_, EmbedError>((main, search))
    })
    .await;
    match loaded {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("the embedding pipeline is not running: {e}")),
        Err(e) => Err(format!("loading the model panicked: {e}")),
    }
}
