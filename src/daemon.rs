//! The always-on daemon: opens the catalog, recovers interrupted work, reconciles the sessions
//! the config declares, serves the control socket (and TCP when configured), retries waiting
//! autoStart sessions, reloads sessions on SIGHUP, and shuts down by broadcast + drain.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast;

use crate::api::{self, AppState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::library::Library;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::search::Search;
use crate::sessions::Sessions;
use crate::vectors::{VectorStore, VectorsConfig};
use crate::watcher::{AssetObserver, Watcher};

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Signal handlers first: the socket answers before start-up is over, and a SIGHUP (or
    // SIGTERM) sent in that window must reach the loop below, not kill the process with the
    // default action. Signals that arrive meanwhile wait in these streams.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Before anything opens a file: the stores, the catalog, the watcher and the clients share
    // one descriptor table; the connection caps below are shares of this limit.
    let nofile = raise_nofile_limit();
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

    // Claim the control socket first: a second daemon on the same config stops here, before it
    // touches the catalog or the vector store.
    // The TCP listener's token is read (or generated into data_dir) before anything answers:
    // once the daemon is up, the token file exists, and a bad token_file stops it here.
    let guard = match cfg.listen {
        Some(_) => Some(Arc::new(api::guard::Guard::new(&cfg.web).context("cannot set up the TCP listener's token")?)),
        None => None,
    };
    let unix = bind_unix(&cfg.socket, cfg.socket_group.as_deref())?;
    tracing::info!(socket = %cfg.socket.display(), group = cfg.socket_group.as_deref().unwrap_or("-"), "control socket bound");

    let catalog = Catalog::connect(&cfg.catalog_url, cfg.catalog_max_connections).await?;
    // Who this daemon is among the peers sharing the catalog: lease owner, start owner.
    let owner = crate::pipeline::daemon_id(&cfg.data_dir).with_context(|| format!("cannot keep the daemon id under {}", cfg.data_dir.display()))?;
    let started_at = crate::model::now_ms();
    let beat = heartbeat_every(&cfg);
    let recovered = catalog.recover(&owner, beat * STALE_BEATS).await?;
    catalog.heartbeat(&owner, started_at, env!("CARGO_PKG_VERSION"), beat * STALE_BEATS).await?;
    tracing::info!(
        catalog = %crate::config::mask_url(&cfg.catalog_url),
        %owner,
        sessions_rediscover = recovered.sessions_rediscover,
        jobs_requeued = recovered.jobs_requeued,
        "catalog open"
    );

    // One library for every user of it: the watcher marks the roots it follows, so listings
    // and session starts read the catalog's counts there instead of walking the disk.
    let library = Library::new(cfg.library.clone());
    let sessions = Sessions::new(catalog.clone(), library.clone(), owner.clone()).with_queue_batch(cfg.pipeline.queue_batch as i64);
    for r in sessions.reconcile(&cfg.sessions).await {
        tracing::info!(session = %r.name, id = ?r.session_id, outcome = %r.outcome, "config session reconciled");
    }

    // The model first: its name and dimension name its vectors (one collection per model).
    // Without its weights the daemon still catalogues, watches and serves the vectors of the
    // model that served before, and says what to run.
    let loaded = load_model(&cfg.model.spec, &cfg.model.device, cfg.pipeline.batch_size).await;
    let models = crate::switch::open_models(&cfg, &catalog, &paired_vectors_config(&cfg, &catalog).await?, loaded).await?;
    forget_unknown_vectors(&catalog, &models.stores()).await?;
    let store = models.pipeline_store.clone();
    tracing::info!(store = %store.describe(), serving = %models.serving.model, "vector store open");

    // The watcher reconciles every root on its own thread, then follows events. New images
    // wake autoStart sessions that wait for them.
    let watcher = {
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
            catalog.clone(),
            Arc::new(VectorSync::start(models.stores(), &tokio::runtime::Handle::current())),
            tokio::runtime::Handle::current(),
            Box::new(wake),
        )
    };

    // One broadcast tells every task to stop; each drains and returns.
    let (shutdown, _) = broadcast::channel::<()>(1);
    // The pipeline needs the model; without its weights the daemon still catalogues and
    // watches, and says what to run.
    // One memory budget for every decoder: pipeline, search by image, thumbnails.
    let budget = crate::decode::MemoryBudget::new(cfg.pipeline.memory_mb * 1024 * 1024);
    let pipeline_failure = models.pipeline_embedder.as_ref().err().cloned();
    let pipeline = start_pipeline(&cfg, &catalog, models.pipeline_embedder, &store, &owner, &budget);
    let mut search = Search::new(models.serving.clone(), catalog.clone(), Arc::new(library.clone()), decode_limits(&cfg, &budget));
    // A configured CLIP that cannot run: word searches say so (and why), not "configure one".
    if let (Some(why), true) = (pipeline_failure, matches!(cfg.model.spec.kind, crate::embed::ModelKind::Clip(_))) {
        search = search.with_configured_failure(cfg.model.spec.kind.to_string(), why);
    }
    sessions.attach_pipeline(pipeline.clone());
    // Starts and restarts interrupted by this daemon's previous run (or a dead peer) go on.
    match sessions.resume_discoveries(beat * STALE_BEATS).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "interrupted session discoveries resumed"),
        Err(e) => tracing::warn!(error = %e, "resuming interrupted session discoveries failed; retrying with the waiting sessions"),
    }
    // A newly configured model re-embeds the library in sessions of its own; search keeps
    // reading the previous model's vectors until they complete.
    if let Some(target) = models.building {
        let switch = crate::switch::ModelSwitch::new(sessions.clone(), search.clone(), cfg.library.roots.clone(), target);
        let rx = shutdown.subscribe();
        tokio::spawn(switch.run(rx));
    }
    let events = crate::events::Events::start(sessions.clone(), pipeline.clone(), watcher.clone(), shutdown.subscribe());
    let state = Arc::new(AppState {
        sessions: sessions.clone(),
        watcher: watcher.clone(),
        pipeline: pipeline.clone(),
        search,
        thumbs: crate::thumbs::Thumbs::new(&cfg.data_dir, &decode_limits(&cfg, &budget)),
        events,
        version: env!("CARGO_PKG_VERSION"),
        max_upload_bytes: cfg.web.max_upload_bytes,
        search_slots: Arc::new(tokio::sync::Semaphore::new(cfg.web.max_concurrent_searches)),
        requests: Arc::new(tokio::sync::Semaphore::new(cfg.web.max_in_flight_requests)),
        request_timeout: cfg.web.request_timeout,
    });
    let app = api::router(state);

    let (tcp_limits, unix_limits) = connection_limits(&cfg.web, nofile);
    tracing::info!(
        nofile,
        tcp_max_connections = tcp_limits.max_connections,
        socket_max_connections = unix_limits.max_connections,
        header_read_timeout_s = tcp_limits.header_read_timeout.as_secs(),
        shutdown_grace_s = tcp_limits.grace.as_secs(),
        "connection limits"
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(api::serve::serve(unix, app.clone(), unix_limits, "socket", shutdown.subscribe()));
    if let (Some(addr), Some(guard)) = (cfg.listen, guard) {
        // The TCP listener sits behind the guard: Host check, CORS, token.
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on daemon.listen = {addr}"))?;
        let shown = if addr.ip().is_unspecified() { format!("localhost:{}", addr.port()) } else { addr.to_string() };
        match guard.token() {
            Some(t) => {
                tracing::info!(%addr, "TCP listener serving the API and the web app (token required)");
                // A JSON log stays all JSON: the link is an event there.
                match cfg.log_format {
                    crate::config::LogFormat::Json => tracing::info!(link = %format!("http://{shown}/?token={t}"), "pixdex web app: open the login link"),
                    crate::config::LogFormat::Text => eprintln!("pixdex web app: open http://{shown}/?token={t}"),
                }
            }
            None => tracing::warn!(%addr, "TCP listener serving the API and the web app WITHOUT authentication (daemon.tcp_auth = \"none\"; loopback only)"),
        }
        let app = app.clone().layer(axum::middleware::from_fn_with_state(guard, api::guard::tcp_guard));
        tasks.spawn(api::serve::serve(tcp, app, tcp_limits, "tcp", shutdown.subscribe()));
    }
    {
        // The reaper: this daemon's heartbeat, then a peer that died (or stalled) holding
        // leases gets its jobs taken back within a quarter lease, and its starts in progress
        // within a few heartbeats, without any daemon restarting.
        let mut rx = shutdown.subscribe();
        let catalog = catalog.clone();
        let pipeline = pipeline.clone();
        let owner = owner.clone();
        tasks.spawn(async move {
            // One tick per heartbeat (a quarter lease, 1–5 s).
            let mut tick = tokio::time::interval(beat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // Shutdown: stop reaping.
                    _ = rx.recv() => break,
                    // Heartbeat, return expired leases and orphaned starts, wake the pipeline.
                    _ = tick.tick() => reap(&catalog, &pipeline, &owner, started_at, beat * STALE_BEATS).await,
                }
            }
        });
    }
    {
        let mut rx = shutdown.subscribe();
        let sessions = sessions.clone();
        let every = cfg.admission_retry;
        let stale = beat * STALE_BEATS;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // Shutdown: stop retrying.
                    _ = rx.recv() => break,
                    // Periodically start autoStart sessions whose images have appeared, and take
                    // over the discoveries of peers that stopped beating.
                    _ = tick.tick() => {
                        if let Err(e) = sessions.retry_waiting().await {
                            tracing::warn!(error = %e, "retrying waiting sessions failed");
                        }
                        if let Err(e) = sessions.resume_discoveries(stale).await {
                            tracing::warn!(error = %e, "resuming interrupted session discoveries failed");
                        }
                    }
                }
            }
        });
    }

    // The service manager (systemd `Type=notify`): ready now that the catalog is open and the
    // listeners are bound; watchdog pings from this runtime while it runs tasks.
    let status = |what: &str| {
        format!(
            "{what}: control socket {}, pipeline {}",
            cfg.socket.display(),
            if pipeline.status().running { "running" } else { "not running (see `pixdex ctl health`)" }
        )
    };
    crate::notify::ready(&status("ready"));
    if let Some(every) = crate::notify::watchdog_interval() {
        tasks.spawn(crate::notify::watchdog(every, shutdown.subscribe()));
    }
    loop {
        tokio::select! {
            // SIGHUP: re-read the config file and reconcile its sessions.
            _ = hup.recv() => {
                crate::notify::reloading("reloading the config's sessions");
                reload(&cfg, &sessions).await;
                crate::notify::ready(&status("reloaded"));
            }
            // SIGTERM / SIGINT: leave the loop and shut down.
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    crate::notify::stopping("shutting down: finishing requests, handing back leases");
    let _ = shutdown.send(());
    // The listeners stop accepting and give their connections `daemon.shutdown_grace_secs`
    // before dropping them, so this wait is bounded whatever clients do.
    while tasks.join_next().await.is_some() {}
    let w = watcher.clone();
    let _ = tokio::task::spawn_blocking(move || w.shutdown()).await;
    let p = pipeline.clone();
    let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    let _ = store.flush().await;
    let _ = std::fs::remove_file(&cfg.socket);
    catalog.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Raise the soft open-file limit (RLIMIT_NOFILE) to the hard one: the default soft limit
/// (1024) is easily reached by the vector store's segments, the catalog and clients together.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit (RLIMIT_NOFILE); assuming 1024");
        return 1024;
    }
    let before = r.rlim_cur;
    // An unlimited hard limit is not a valid soft one for descriptors (the kernel caps it at
    // fs.nr_open): take 2^20, Linux's default nr_open.
    let target = if r.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { r.rlim_max };
    if r.rlim_cur < target {
        let want = libc::rlimit { rlim_cur: target, rlim_max: r.rlim_max };
        // SAFETY: `want` is a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = target;
        } else {
            tracing::warn!(error = %std::io::Error::last_os_error(), soft = before, hard = r.rlim_max, "cannot raise the soft open-file limit");
        }
    }
    tracing::info!(soft_before = before, soft = r.rlim_cur, hard = r.rlim_max, "open-file limit (RLIMIT_NOFILE)");
    r.rlim_cur
}

/// The listeners' limits: TCP gets at most a quarter of the open-file limit, the control socket
/// its own slots (at most an eighth), so together they leave well over half of the descriptors
/// to the vector store, the catalog, the watcher and decoding.
fn connection_limits(web: &crate::config::WebSettings, nofile: u64) -> (api::serve::Limits, api::serve::Limits) {
    let share = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(1);
    let tcp = api::serve::Limits {
        max_connections: web.max_connections.min(share(nofile / 4)),
        setting: "daemon.max_connections",
        header_read_timeout: web.header_read_timeout,
        grace: web.shutdown_grace,
    };
    let unix =
        api::serve::Limits { max_connections: web.max_socket_connections.min(share(nofile / 8)), setting: "daemon.max_socket_connections", ..tcp.clone() };
    (tcp, unix)
}

/// A daemon whose heartbeat is this many beats old is taken for dead (its starts in progress
/// are redone by the others).
const STALE_BEATS: u32 = 4;

/// How often the daemon beats: often enough that a dead peer's start is redone within
/// seconds, rarely enough to cost nothing (one upsert).
fn heartbeat_every(cfg: &Config) -> std::time::Duration {
    (cfg.pipeline.lease / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(5))
}

/// One reaper tick. A catalog that is unavailable is retried at the next tick.
async fn reap(catalog: &Catalog, pipeline: &Pipeline, owner: &str, started_at: i64, stale: std::time::Duration) {
    if let Err(e) = catalog.heartbeat(owner, started_at, env!("CARGO_PKG_VERSION"), stale).await {
        tracing::warn!(error = %e, "heartbeat: catalog unavailable; retrying next tick");
        return;
    }
    match catalog.requeue_expired().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(jobs = n, "expired leases returned to pending (a worker died or stalled)");
            pipeline.wake();
        }
        Err(e) => tracing::warn!(error = %e, "lease reaper: catalog unavailable; retrying next tick"),
    }
    match catalog.recover_orphaned_starts(stale).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(sessions = n, "starts left discovering by a daemon that stopped beating went back to pending"),
        Err(e) => tracing::warn!(error = %e, "start recovery: catalog unavailable; retrying next tick"),
    }
}

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

/// Bind the control socket, refusing to steal it from a live daemon and replacing a stale one
/// (never anything that is not a socket). Mode 0600 (0660 and `group`'s, with
/// `daemon.socket_group`) from the first instant: the socket is bound inside a fresh 0700
/// directory, given its group and mode, then renamed into place, so no one else can connect in
/// between whatever the umask.
fn bind_unix(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    let gid = group.map(group_id).transpose()?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let restrict = |p: &Path| -> anyhow::Result<()> {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(p, None, Some(gid)).with_context(|| {
                format!("cannot give {} to group {:?} (daemon.socket_group; the daemon's user must be a member)", path.display(), group.unwrap_or(""))
            })?;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))
    };
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket; pixdex does not delete it (remove it yourself, or set daemon.socket to another path)", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another pixdex daemon is already listening on {} (stop it, or set daemon.socket to another path)", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let private = parent.join(format!(".pxs{}", std::process::id()));
    let staged = private.join("s");
    // sun_path holds ~107 bytes: a socket path near the limit is bound in place instead.
    if staged.as_os_str().len() < 100 && std::fs::DirBuilder::new().mode(0o700).create(&private).is_ok() {
        let bound = (|| -> anyhow::Result<tokio::net::UnixListener> {
            let l = tokio::net::UnixListener::bind(&staged).with_context(|| format!("cannot bind daemon.socket {}", path.display()))?;
            restrict(&staged)?;
            std::fs::rename(&staged, path).with_context(|| format!("cannot move the socket into place at {}", path.display()))?;
            Ok(l)
        })();
        let _ = std::fs::remove_file(&staged);
        let _ = std::fs::remove_dir(&private);
        return bound;
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot bind daemon.socket {}", path.display()))?;
    restrict(path)?;
    Ok(l)
}

/// A group's id by name (through NSS, as `ls` and `chgrp` see it).
fn group_id(name: &str) -> anyhow::Result<u32> {
    let cname = std::ffi::CString::new(name).map_err(|_| anyhow::anyhow!("daemon.socket_group {name:?} is not a group name"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: all-zero is a valid `group` (null pointers, zero gid) for getgrnam_r to fill.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `grp` (only gr_gid is read).
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        bail!("daemon.socket_group {name:?}: no such group (create it, or leave the key unset for a socket only the daemon's user may use)");
    }
    Ok(grp.gr_gid)
}

pub(crate) fn vectors_config(cfg: &Config) -> VectorsConfig {
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
async fn paired_vectors_config(cfg: &Config, catalog: &Catalog) -> anyhow::Result<VectorsConfig> {
    let mut v = vectors_config(cfg);
    let catalog_id = catalog.identity().await.context("reading the catalog's id")?;
    let adopt_unmarked = catalog.count_assets().await.context("counting the catalog's assets")? > 0;
    v.pairing = Some(crate::vectors::Pairing { catalog_id, adopt_unmarked });
    Ok(v)
}

/// A catalog restored from an older backup gives ids it never knew to new files: vectors
/// stored under those ids (images catalogued after the backup) would answer for other images.
/// They are deleted before the watcher catalogues anything (SQLite catalogs; see
/// `Catalog::asset_id_high_water`). A store that cannot be reached now is left for later.
async fn forget_unknown_vectors(catalog: &Catalog, stores: &[VectorStore]) -> anyhow::Result<()> {
    let Some(high) = catalog.asset_id_high_water().await.context("reading the catalog's highest asset id")? else { return Ok(()) };
    for s in stores {
        match s.delete_above(high.max(0) as u64).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                store = %s.describe(),
                deleted = n,
                catalog_high_water = high,
                "deleted vectors of assets this catalog never knew (a catalog restored from an older backup?); their files are catalogued anew and embedded by the sessions that select them"
            ),
            Err(e) if e.is_retryable() => tracing::warn!(store = %s.describe(), error = %e, "cannot check for vectors unknown to the catalog now"),
            Err(e) => return Err(e).context("deleting vectors unknown to the catalog"),
        }
    }
    Ok(())
}

/// Load the configured model twice (the pipeline's batched instance and a batch-1 one for
/// queries), on blocking threads; or say why not.
async fn load_model(spec: &crate::embed::ModelSpec, device: &str, bs: usize) -> Result<(crate::embed::Embedder, crate::embed::Embedder), String> {
    let device: crate::embed::DeviceChoice = device.parse().unwrap_or_default();
    let spec = spec.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let main = crate::embed::Embedder::load_spec_images(&spec, device, bs)?;
        let search = crate::embed::Embedder::load_spec(&spec, device, 1)?;
        Ok::<_, crate::embed::EmbedError>((main, search))
    })
    .await;
    match loaded {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("the embedding pipeline is not running: {e}")),
        Err(e) => Err(format!("loading the model panicked: {e}")),
    }
}

/// Start the pipeline with the loaded model, or a disabled one that says why not.
fn start_pipeline(
    cfg: &Config,
    catalog: &Catalog,
    embedder: Result<crate::embed::Embedder, String>,
    store: &VectorStore,
    owner: &str,
    budget: &Arc<crate::decode::MemoryBudget>,
) -> Pipeline {
    let embedder = match embedder {
        Ok(e) => e,
        Err(reason) => {
            tracing::error!("{reason}");
            return Pipeline::disabled(reason);
        }
    };
    let pcfg = PipelineConfig {
        decode_workers: cfg.pipeline.decode_workers,
        resize_workers: cfg.pipeline.resize_workers,
        claim_batch: cfg.pipeline.batch_size * 2,
        lease: cfg.pipeline.lease,
        max_attempts: cfg.pipeline.max_attempts as i64,
        limits: decode_limits(cfg, budget),
        library: Some(Arc::new(Library::new(cfg.library.clone()))),
        owner: owner.to_string(),
    };
    Pipeline::start(pcfg, embedder, store.clone(), catalog.clone(), tokio::runtime::Handle::current())
}

/// The decode limits from the config, sharing the daemon's one memory budget.
fn decode_limits(cfg: &Config, budget: &Arc<crate::decode::MemoryBudget>) -> crate::decode::DecodeLimits {
    crate::decode::DecodeLimits {
        max_megapixels: cfg.pipeline.max_megapixels,
        max_file_bytes: cfg.pipeline.max_file_bytes,
        target: 224,
        memory: crate::decode::Budget(Some(budget.clone())),
    }
}

/// Keeps vectors in step with the catalog when the watcher removes or moves assets — off the
/// watcher's thread: the watcher hands each batch to one task (in order, so a move then a
/// delete of the same asset stays in that order) and goes on with the next events.
struct VectorSync {
    tx: tokio::sync::mpsc::Sender<VectorChange>,
}

enum VectorChange {
    Removed(Vec<u64>),
    Moved(Vec<(u64, String)>),
}

impl VectorSync {
    /// Up to 256 batches wait (a batch is a whole apply: a folder of 10k renames is one);
    /// beyond that the watcher waits, so a store that is down cannot fill memory.
    /// `stores`: every model's vectors in use (during a model switch, the serving and the
    /// building one).
    fn start(stores: Vec<VectorStore>, rt: &tokio::runtime::Handle) -> VectorSync {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<VectorChange>(256);
        rt.spawn(async move {
            while let Some(change) = rx.recv().await {
                for store in &stores {
                    let mut backoff = std::time::Duration::from_millis(200);
                    // A store that is down is waited out; any other error is logged and dropped
                    // (search re-paths through the catalog and skips removed assets anyway).
                    for attempt in 0..8 {
                        let r = match &change {
                            VectorChange::Removed(ids) => store.delete(ids).await,
                            VectorChange::Moved(moves) => store.set_paths(moves).await,
                        };
                        match r {
                            Ok(()) => break,
                            Err(e) if e.is_retryable() && attempt < 7 => {
                                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "vector store unavailable for a watcher change; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "updating vectors after a filesystem change failed; search follows the catalog anyway");
                                break;
                            }
                        }
                    }
                }
            }
        });
        VectorSync { tx }
    }
}

impl AssetObserver for VectorSync {
    fn removed(&self, ids: &[i64]) {
        let _ = self.tx.blocking_send(VectorChange::Removed(ids.iter().map(|&i| i as u64).collect()));
    }

    fn moved(&self, moves: &[(i64, String)]) {
        let _ = self.tx.blocking_send(VectorChange::Moved(moves.iter().map(|(i, p)| (*i as u64, p.clone())).collect()));
    }
}
