//! Models and their vectors at daemon start, and switching from one model to another.
//!
//! Every model has its own vectors (one collection, named by the model's name and dimension);
//! the catalog's `models` table says which one search reads ('serving'). When the configured
//! model is not the serving one, it is 'building': the pipeline embeds with it into its own
//! vectors, in one re-embed session per library root (`model <name> · <root>`), while search
//! keeps reading the previous model's vectors with the previous model for queries. When every
//! re-embed session has completed, the new model is promoted (one catalog transaction) and
//! search switches to it; the old vectors are left in place (retired), never mixed in.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::broadcast;

use crate::catalog::{Catalog, ModelRow, ModelState};
use crate::config::Config;
use crate::embed::{Embedder, ModelSpec};
use crate::model::SessionStatus;
use crate::search::{Search, Serving};
use crate::sessions::{CreateSession, Sessions};
use crate::vectors::{VectorStore, VectorsConfig};

mod reload;
pub use reload::{ModelReload, Reloader, ReloaderParts, StartPipeline, StoresInUse, load_model};

/// The models a daemon runs with.
pub struct Models {
    /// The configured model for the pipeline, or why it is not running.
    pub pipeline_embedder: Result<Embedder, String>,
    /// Where the pipeline writes (the configured model's vectors).
    pub pipeline_store: VectorStore,
    /// What search reads now.
    pub serving: Serving,
    /// The configured model while it re-embeds (search switches to it when done).
    pub building: Option<Serving>,
}

impl Models {
    /// Every store in use (the watcher's removals and moves go to each).
    pub fn stores(&self) -> Vec<VectorStore> {
        let mut v = vec![self.serving.store.clone()];
        if let Some(b) = &self.building {
            v.push(b.store.clone());
        }
        v
    }
}

/// Record the configured model, open its vectors, and those of the serving model when another
/// one serves. `loaded`: the configured model (pipeline instance, query instance), or why not.
/// `open_now`: stores this process already holds (a reload): a model's vectors are opened once
/// per process (an embedded shard refuses a second opener), so those are reused.
pub async fn open_models(
    cfg: &Config,
    catalog: &Catalog,
    vcfg: &VectorsConfig,
    loaded: Result<(Embedder, Embedder), String>,
    open_now: &[VectorStore],
) -> anyhow::Result<Models> {
    let served = catalog.serving_model().await.context("reading the serving model from the catalog")?;
    let open = |name: String, dim: usize| async move {
        if let Some(s) = held(open_now, &name, dim) {
            return Ok(s);
        }
        VectorStore::open(vcfg, &name, dim).await.with_context(|| "cannot open the vector store (check [vectors] in the config)")
    };
    let (main, query) = match loaded {
        Ok(v) => v,
        Err(reason) => {
            // The configured model cannot run: serve what served before (or the default
            // model's vectors on a fresh catalog) and say why the pipeline is off.
            let serving = match served {
                Some(s) => previous(cfg, vcfg, &s, open_now).await?,
                None => Serving {
                    model: crate::embed::MODEL_NAME.into(),
                    store: open(crate::embed::MODEL_NAME.into(), crate::embed::DIM).await?,
                    embedder: Err(reason.clone()),
                },
            };
            return Ok(Models { pipeline_embedder: Err(reason), pipeline_store: serving.store.clone(), serving, building: None });
        }
    };
    let spec = &cfg.model.spec;
    let row = ModelRow {
        name: main.model_name(),
        kind: spec.kind.to_string(),
        dim: main.dim() as i64,
        weights: spec.weights.to_string_lossy().into_owned(),
        vocab: spec.vocab.to_string_lossy().into_owned(),
        state: ModelState::Serving,
        updated_at: 0,
    };
    let state = catalog.register_model(&row).await.context("recording the configured model in the catalog")?;
    let store = open(row.name.clone(), main.dim()).await?;
    let mine = Serving { model: row.name.clone(), store: store.clone(), embedder: Ok(Arc::new(Mutex::new(query))) };
    match (state, served) {
        (ModelState::Building, Some(s)) => {
            tracing::warn!(from = %s.name, to = %row.name, "the configured model changed: re-embedding the library with it; search keeps using the previous model until that completes");
            let serving = previous(cfg, vcfg, &s, open_now).await?;
            Ok(Models { pipeline_embedder: Ok(main), pipeline_store: store, serving, building: Some(mine) })
        }
        _ => Ok(Models { pipeline_embedder: Ok(main), pipeline_store: store, serving: mine, building: None }),
    }
}

/// The serving model as recorded: its vectors, and the model itself for queries if its files
/// still load.
async fn previous(cfg: &Config, vcfg: &VectorsConfig, s: &ModelRow, open_now: &[VectorStore]) -> anyhow::Result<Serving> {
    let store = match held(open_now, &s.name, s.dim as usize) {
        Some(store) => store,
        None => VectorStore::open(vcfg, &s.name, s.dim as usize).await.with_context(|| format!("cannot open the vectors of model {}", s.name))?,
    };
    let embedder = match s.kind.parse::<crate::embed::ModelKind>() {
        Err(e) => Err(e),
        Ok(kind) => {
            let precision = crate::embed::Precision::of_model_name(&s.name);
            let spec = ModelSpec { kind, weights: PathBuf::from(&s.weights), vocab: PathBuf::from(&s.vocab), precision };
            let device: crate::embed::DeviceChoice = cfg.model.device.parse().unwrap_or_default();
            match tokio::task::spawn_blocking(move || Embedder::load_spec(&spec, device, 1)).await {
                Ok(Ok(e)) if e.model_name() == s.name => Ok(Arc::new(Mutex::new(e))),
                Ok(Ok(e)) => Err(format!("the files of model {} now hold {}", s.name, e.model_name())),
                Ok(Err(e)) => Err(format!("model {} cannot embed queries: {e}", s.name)),
                Err(e) => Err(format!("loading model {} panicked: {e}", s.name)),
            }
        }
    };
    if let Err(reason) = &embedder {
        tracing::warn!(model = %s.name, %reason, "serving model's vectors without the model (search by stored asset still works)");
    }
    Ok(Serving { model: s.name.clone(), store, embedder })
}

/// A store of `model` with `dim` this process already holds.
fn held(open_now: &[VectorStore], model: &str, dim: usize) -> Option<VectorStore> {
    open_now.iter().find(|s| s.model() == model && s.dim() == dim).cloned()
}

/// Watches a building model's re-embed sessions and promotes it when they are done.
pub struct ModelSwitch {
    sessions: Sessions,
    search: Search,
    roots: Vec<PathBuf>,
    target: Serving,
}

/// The re-embed session of `model` for `root`.
pub fn session_name(model: &str, root: &std::path::Path) -> String {
    let name = format!("model {model} · {}", root.display());
    name.chars().take(200).collect()
}

impl ModelSwitch {
    pub fn new(sessions: Sessions, search: Search, roots: Vec<PathBuf>, target: Serving) -> ModelSwitch {
        ModelSwitch { sessions, search, roots, target }
    }

    pub async fn run(self, mut shutdown: broadcast::Receiver<()>) {
        loop {
            match self.step().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, model = %self.target.model, "model switch: checking the re-embed sessions failed; retrying"),
            }
            tokio::select! {
                // Shutdown: stop watching; the next start resumes the switch where it is.
                _ = shutdown.recv() => return,
                // Look again shortly (the sessions' progress is in the catalog).
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Create or start the re-embed sessions; promote once all are done. `Ok(true)`: switched.
    async fn step(&self) -> anyhow::Result<bool> {
        let catalog = self.sessions.catalog().clone();
        let mut all_done = true;
        for root in &self.roots {
            let name = session_name(&self.target.model, root);
            let s = match catalog.session_by_name(&name).await? {
                Some(s) => s,
                None => {
                    if !root.is_dir() {
                        continue; // a missing root has nothing to re-embed
                    }
                    let req = CreateSession {
                        name: name.clone(),
                        root_path: root.to_string_lossy().into_owned(),
                        auto_start: true,
                        live: true,
                        ..Default::default()
                    };
                    match self.sessions.create(req, "model").await {
                        Ok(s) => s,
                        // Another daemon created it meanwhile.
                        Err(crate::sessions::SessionError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            match s.status {
                SessionStatus::Completed => {}
                // Refused because there is nothing to index under this root: nothing to re-embed.
                SessionStatus::Pending if s.pending_reason.is_some() && s.total_images == 0 => {}
                SessionStatus::Pending => {
                    all_done = false;
                    if let Err(e) = self.sessions.start(s.id).await {
                        tracing::debug!(session = s.id, error = %e, "re-embed session not started yet");
                    }
                }
                _ => all_done = false,
            }
        }
        if !all_done {
            return Ok(false);
        }
        if catalog.promote_model(&self.target.model).await? {
            tracing::info!(model = %self.target.model, "re-embed complete: the new model serves");
        }
        self.search.set_serving(self.target.clone());
        Ok(true)
    }
}

/// The vector store's settings from the config.
fn vectors_config(cfg: &Config) -> VectorsConfig {
    let mut v = VectorsConfig::embedded(&cfg.data_dir);
    v.path = cfg.vectors.path.clone();
    v.collection_prefix = cfg.vectors.collection_prefix.clone();
    v.min_free_bytes = cfg.vectors.min_free_mb * 1024 * 1024;
    if !cfg.vectors.embedded {
        v.backend = crate::vectors::Backend::Qdrant;
        v.url = cfg.vectors.url.clone();
        v.api_key = cfg.vectors.api_key.clone();
        v.replication_factor = Some(cfg.vectors.replication_factor);
        v.shard_number = cfg.vectors.shard_number;
    }
    v
}

/// The vector store's settings, paired with this catalog: a store written with another catalog
/// is refused (its point ids name other assets), an unmarked one is adopted only by a catalog
/// that already holds assets (see `vectors::Pairing`).
pub async fn paired_vectors_config(cfg: &Config, catalog: &Catalog) -> anyhow::Result<VectorsConfig> {
    let mut v = vectors_config(cfg);
    let catalog_id = catalog.identity().await.context("reading the catalog's id")?;
    let adopt_unmarked = catalog.count_assets().await.context("counting the catalog's assets")? > 0;
    v.pairing = Some(crate::vectors::Pairing { catalog_id, adopt_unmarked });
    Ok(v)
}
