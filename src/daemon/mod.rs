//! The always-on daemon: opens the catalog, recovers interrupted work, reconciles the sessions
//! the config declares, serves the control socket (and TCP when configured), retries waiting
//! autoStart sessions, reloads sessions on SIGHUP, and shuts down by broadcast + drain.
//!
//! `run` is the composition root and reads top to bottom: each step is a function below (or
//! in `listen`, `models`, `background`), and names what it fails on.

mod background;
mod listen;
mod models;
mod vector_sync;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::broadcast;

use crate::api::{self, AppState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::decode::MemoryBudget;
use crate::library::Library;
use crate::pipeline::Pipeline;
use crate::search::Search;
use crate::sessions::Sessions;
use crate::switch::{ModelReload, Reloader, ReloaderParts, StartPipeline, StoresInUse};
use crate::vectors::{VectorStore, VectorsConfig};
use crate::watcher::Watcher;
use background::{STALE_BEATS, heartbeat_every};
use vector_sync::VectorSync;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("cannot install the signal handlers")?;
    let nofile = prepare_host(&cfg)?;
    let listeners = listen::claim(&cfg)?;
    let core = open_catalog(&cfg).await.context("opening the catalog")?;
    let (library, sessions) = open_sessions(&cfg, &core).await;
    let opened = open_models(&cfg, &core.catalog).await.context("opening the model and its vectors")?;
    let stores: StoresInUse = Arc::new(RwLock::new(opened.0.stores()));
    let watcher = start_watcher(&library, &core, &sessions, &stores);
    let (shutdown, _) = broadcast::channel::<()>(1);
    let work = start_work(&cfg, &core, &library, &sessions, opened, &stores, &shutdown).await;
    let state = app_state(&cfg, &sessions, &watcher, &work, &shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    listen::serve(&cfg, listeners, api::router(state), nofile, &shutdown, &mut tasks).await?;
    background::spawn_reaper(&mut tasks, &cfg, &core.catalog, &work.pipeline, &core.owner, core.started_at, &shutdown);
    background::spawn_admission(&mut tasks, &cfg, &sessions, &shutdown);
    announce_ready(&cfg, &work.pipeline, &shutdown, &mut tasks);
    signals.wait(&cfg, &sessions, &work).await;
    drain(&cfg, shutdown, tasks, &watcher, &work, &stores, &core.catalog).await;
    Ok(())
}

/// Signal handlers first: the socket answers before start-up is over, and a SIGHUP (or SIGTERM)
/// sent in that window must reach the loop in `wait`, not kill the process with the default
/// action. Signals that arrive meanwhile wait in these streams.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals { hup: signal(SignalKind::hangup())?, term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Serve until SIGTERM or SIGINT; each SIGHUP re-reads the config's sessions and loads the
    /// configured model again (its files may have appeared or changed).
    async fn wait(&mut self, cfg: &Config, sessions: &Sessions, work: &Work) {
        loop {
            tokio::select! {
                // SIGHUP: re-read the config file, reconcile its sessions, reload the model.
                _ = self.hup.recv() => {
                    crate::notify::reloading("reloading the config's sessions and the model");
                    reload(cfg, sessions).await;
                    match work.reload.now().await {
                        Ok(done) => tracing::info!(%done, "SIGHUP: model reloaded"),
                        Err(why) => tracing::warn!(%why, "SIGHUP: the configured model cannot load"),
                    }
                    crate::notify::ready(&status_line(cfg, &work.pipeline, "reloaded"));
                }
                // SIGTERM: leave the loop and shut down.
                _ = self.term.recv() => break,
                // SIGINT (Ctrl-C in a terminal): the same.
                _ = self.int.recv() => break,
            }
        }
    }
}

/// Before anything opens a file: raise the open-file limit (the stores, the catalog, the
/// watcher and the clients share one descriptor table; the connection caps are shares of it),
/// create `data_dir` private to the daemon, and warn about roots that cannot be indexed yet.
/// Returns the open-file limit in force.
fn prepare_host(cfg: &Config) -> anyhow::Result<u64> {
    let nofile = listen::raise_nofile_limit();
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("cannot create daemon.data_dir {}", cfg.data_dir.display()))?;
    // The catalog, vectors, token and thumbnails are the daemon's alone.
    if let Err(e) = std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(data_dir = %cfg.data_dir.display(), error = %e, "cannot set daemon.data_dir to mode 0700");
    }
    for root in &cfg.library.roots {
        if !root.is_dir() {
            tracing::warn!(root = %root.display(), "library root is missing or not a directory; sessions under it cannot start until it appears");
        }
    }
    if cfg.library.roots.is_empty() {
        tracing::warn!("library.roots is empty: no session can be created until a root is configured");
    }
    Ok(nofile)
}

/// The catalog and who this daemon is among the peers sharing it.
struct Core {
    catalog: Catalog,
    /// Lease owner and start owner.
    owner: String,
    started_at: i64,
}

/// Connect, recover what this daemon's previous run (or a dead peer) left in flight, and beat
/// once so peers see this daemon alive.
async fn open_catalog(cfg: &Config) -> anyhow::Result<Core> {
    let catalog = Catalog::connect(&cfg.catalog_url, cfg.catalog_max_connections).await?;
    let owner = crate::pipeline::daemon_id(&cfg.data_dir).with_context(|| format!("cannot keep the daemon id under {}", cfg.data_dir.display()))?;
    let started_at = crate::model::now_ms();
    let stale = heartbeat_every(cfg) * STALE_BEATS;
    let recovered = catalog.recover(&owner, stale).await?;
    catalog.heartbeat(&owner, started_at, env!("CARGO_PKG_VERSION"), stale).await?;
    tracing::info!(
        catalog = %crate::config::mask_url(&cfg.catalog_url),
        %owner,
        sessions_rediscover = recovered.sessions_rediscover,
        jobs_requeued = recovered.jobs_requeued,
        "catalog open"
    );
    Ok(Core { catalog, owner, started_at })
}

/// One library for every user of it (the watcher marks the roots it follows, so listings and
/// session starts read the catalog's counts there), and the session service with the config's
/// sessions reconciled.
async fn open_sessions(cfg: &Config, core: &Core) -> (Library, Sessions) {
    let library = Library::new(cfg.library.clone());
    let sessions = Sessions::new(core.catalog.clone(), library.clone(), core.owner.clone()).with_queue_batch(cfg.pipeline.queue_batch as i64);
    for r in sessions.reconcile(&cfg.sessions).await {
        tracing::info!(session = %r.name, id = ?r.session_id, outcome = %r.outcome, "config session reconciled");
    }
    (library, sessions)
}

/// The model first: its name and dimension name its vectors (one collection per model).
/// Without its weights the daemon still catalogues, watches and serves the vectors of the model
/// that served before, and says what to run.
/// Returns the models and the vector store's settings paired with this catalog (a reload opens
/// stores with the same).
async fn open_models(cfg: &Config, catalog: &Catalog) -> anyhow::Result<(crate::switch::Models, VectorsConfig)> {
    let loaded = crate::switch::load_model(&cfg.model.spec, &cfg.model.device, cfg.pipeline.batch_size).await;
    let vectors = crate::switch::paired_vectors_config(cfg, catalog).await?;
    let models = crate::switch::open_models(cfg, catalog, &vectors, loaded, &[]).await?;
    models::forget_unknown_vectors(catalog, &models.stores()).await?;
    tracing::info!(store = %models.pipeline_store.describe(), serving = %models.serving.model, "vector store open");
    Ok((models, vectors))
}

/// The watcher reconciles every root on its own thread, then follows events. New images wake
/// autoStart sessions that wait for them; removals and moves reach every store in use.
fn start_watcher(library: &Library, core: &Core, sessions: &Sessions, stores: &StoresInUse) -> Watcher {
    let s = sessions.clone();
    let rt = tokio::runtime::Handle::current();
    let wake = move || {
        let s = s.clone();
        rt.spawn(async move {
            if let Err(e) = s.retry_waiting().await {
                tracing::warn!(error = %e, "starting waiting sessions failed");
            }
        });
    };
    Watcher::start(
        Arc::new(library.clone()),
        core.catalog.clone(),
        Arc::new(VectorSync::start(stores.clone(), &tokio::runtime::Handle::current())),
        tokio::runtime::Handle::current(),
        Box::new(wake),
    )
}

/// What indexes and what answers: the pipeline and search, sharing one decode budget; and the
/// model's lifecycle (`reload`).
struct Work {
    pipeline: Pipeline,
    search: Search,
    budget: Arc<MemoryBudget>,
    reload: ModelReload,
}

/// Start the pipeline with the configured model (or a disabled one that says why), search on
/// the serving model, resume interrupted discoveries, the model switch when a new model
/// re-embeds the library, and the reloader that loads the model when its files appear or
/// change.
async fn start_work(
    cfg: &Config,
    core: &Core,
    library: &Library,
    sessions: &Sessions,
    (models, vectors): (crate::switch::Models, VectorsConfig),
    stores: &StoresInUse,
    shutdown: &broadcast::Sender<()>,
) -> Work {
    // One memory budget for every decoder: pipeline, search by image, thumbnails.
    let budget = MemoryBudget::new(cfg.pipeline.memory_mb * 1024 * 1024);
    let start = {
        let (cfg, catalog, owner, budget) = (cfg.clone(), core.catalog.clone(), core.owner.clone(), budget.clone());
        Box::new(move |embedder, store: &VectorStore| models::start_pipeline(&cfg, &catalog, embedder, store, &owner, &budget)) as StartPipeline
    };
    let pipeline_failure = models.pipeline_embedder.as_ref().err().cloned();
    let pipeline = match models.pipeline_embedder {
        Ok(embedder) => start(embedder, &models.pipeline_store),
        Err(reason) => {
            tracing::error!("{reason}");
            Pipeline::disabled(cfg.model.spec.kind.to_string(), reason)
        }
    };
    let search = Search::new(models.serving.clone(), core.catalog.clone(), Arc::new(library.clone()), models::decode_limits(cfg, &budget));
    // A configured CLIP that cannot run: word searches say so (and why), not "configure one".
    if let (Some(why), true) = (pipeline_failure, matches!(cfg.model.spec.kind, crate::model::ModelKind::Clip(_))) {
        search.set_configured_failure(Some((cfg.model.spec.kind.to_string(), why)));
    }
    sessions.attach_pipeline(pipeline.clone());
    // Starts and restarts interrupted by this daemon's previous run (or a dead peer) go on.
    match sessions.resume_discoveries(heartbeat_every(cfg) * STALE_BEATS).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "interrupted session discoveries resumed"),
        Err(e) => tracing::warn!(error = %e, "resuming interrupted session discoveries failed; retrying with the waiting sessions"),
    }
    // A newly configured model re-embeds the library in sessions of its own; search keeps
    // reading the previous model's vectors until they complete.
    let switching = models.building.as_ref().map(|b| b.model.clone());
    if let Some(target) = models.building {
        let switch = crate::switch::ModelSwitch::new(sessions.clone(), search.clone(), cfg.library.roots.clone(), target);
        tokio::spawn(switch.run(shutdown.subscribe()));
    }
    let (reloader, reload) = Reloader::new(ReloaderParts {
        cfg: cfg.clone(),
        vectors,
        catalog: core.catalog.clone(),
        sessions: sessions.clone(),
        search: search.clone(),
        pipeline: pipeline.clone(),
        stores: stores.clone(),
        start,
        switching,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(reloader.run());
    Work { pipeline, search, budget, reload }
}

/// What every request handler shares.
fn app_state(cfg: &Config, sessions: &Sessions, watcher: &Watcher, work: &Work, shutdown: &broadcast::Sender<()>) -> Arc<AppState> {
    let events = crate::events::Events::start(sessions.clone(), work.pipeline.clone(), watcher.clone(), shutdown.subscribe());
    Arc::new(AppState {
        sessions: sessions.clone(),
        watcher: watcher.clone(),
        pipeline: work.pipeline.clone(),
        search: work.search.clone(),
        model_reload: work.reload.clone(),
        thumbs: crate::thumbs::Thumbs::new(&cfg.data_dir, &models::decode_limits(cfg, &work.budget)),
        events,
        version: env!("CARGO_PKG_VERSION"),
        max_upload_bytes: cfg.web.max_upload_bytes,
        search_slots: Arc::new(tokio::sync::Semaphore::new(cfg.web.max_concurrent_searches)),
        requests: Arc::new(tokio::sync::Semaphore::new(cfg.web.max_in_flight_requests)),
        request_timeout: cfg.web.request_timeout,
    })
}

/// The service manager (systemd `Type=notify`): ready now that the catalog is open and the
/// listeners are bound; watchdog pings from this runtime while it runs tasks.
fn announce_ready(cfg: &Config, pipeline: &Pipeline, shutdown: &broadcast::Sender<()>, tasks: &mut tokio::task::JoinSet<()>) {
    crate::notify::ready(&status_line(cfg, pipeline, "ready"));
    if let Some(every) = crate::notify::watchdog_interval() {
        tasks.spawn(crate::notify::watchdog(every, shutdown.subscribe()));
    }
}

/// The one-line status the service manager shows.
fn status_line(cfg: &Config, pipeline: &Pipeline, what: &str) -> String {
    format!(
        "{what}: control socket {}, pipeline {}",
        cfg.socket.display(),
        if pipeline.status().running { "running" } else { "not running (see `pixdex ctl health`)" }
    )
}

/// SIGHUP: the config's sessions are reconciled; other settings take effect at restart.
async fn reload(cfg: &Config, sessions: &Sessions) {
    match Config::load(cfg.source.as_deref()) {
        Ok(new) => {
            tracing::info!("SIGHUP: reconciling config sessions (other settings take effect at restart)");
            for r in sessions.reconcile(&new.sessions).await {
                tracing::info!(session = %r.name, id = ?r.session_id, outcome = %r.outcome, "config session reconciled");
            }
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded; keeping the current sessions"),
    }
}

/// Shutdown by broadcast + drain: the listeners stop accepting and give their connections
/// `daemon.shutdown_grace_secs` before dropping them (so this wait is bounded whatever clients
/// do); then the watcher and the pipeline stop (unfinished leases handed back), the vectors are
/// flushed, the socket removed and the catalog closed.
async fn drain(
    cfg: &Config,
    shutdown: broadcast::Sender<()>,
    mut tasks: tokio::task::JoinSet<()>,
    watcher: &Watcher,
    work: &Work,
    stores: &StoresInUse,
    catalog: &Catalog,
) {
    tracing::info!("shutting down");
    crate::notify::stopping("shutting down: finishing requests, handing back leases");
    let _ = shutdown.send(());
    while tasks.join_next().await.is_some() {}
    let w = watcher.clone();
    let _ = tokio::task::spawn_blocking(move || w.shutdown()).await;
    let p = work.pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    let stores = stores.read().unwrap_or_else(|e| e.into_inner()).clone();
    for store in stores {
        let _ = store.flush().await;
    }
    let _ = std::fs::remove_file(&cfg.socket);
    catalog.close().await;
    tracing::info!("stopped");
}
