//! The live view the web app follows over Server-Sent Events (`GET /api/v1/events`).
//!
//! One producer task builds a snapshot (sessions with progress, pipeline stages and queue
//! depths, watcher, a library version, and the health report the Health page shows — the
//! vector store's point count in it refreshed every [`STORE_COUNT_BUSY`] while images are
//! completed, every [`STORE_COUNT_PERIOD`] otherwise) once a second while anyone listens, and
//! publishes it only when it changed. Subscribers read a `tokio::sync::watch` channel: it holds just the
//! latest snapshot (capacity one), so a slow browser skips intermediate states instead of
//! queueing them, and the producer never waits for a reader.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::catalog::LibraryVersion;
use crate::pipeline::{Pipeline, PipelineStatus};
use crate::sessions::{Progress, Sessions};
use crate::watcher::{Watcher, WatcherStatus};

/// How often the snapshot is rebuilt while someone listens.
pub const PERIOD: Duration = Duration::from_secs(1);

/// How often the snapshot's health report counts the vector store's points (an exact count:
/// not once a second at a million points): every [`STORE_COUNT_BUSY`] while the pipeline
/// completes images, every `STORE_COUNT_PERIOD` otherwise.
pub const STORE_COUNT_PERIOD: Duration = Duration::from_secs(30);
pub const STORE_COUNT_BUSY: Duration = Duration::from_secs(5);

/// The vector store's point count, or why counting failed; `None` without a pipeline.
pub type StoreCount = Option<Result<u64, String>>;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLive {
    pub id: i64,
    pub name: String,
    pub status: crate::model::SessionStatus,
    pub root_path: String,
    pub category_id: Option<i64>,
    pub progress: Progress,
    pub last_error: Option<String>,
    pub pending_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub sessions: Vec<SessionLive>,
    pub pipeline: PipelineStatus,
    pub watcher: WatcherStatus,
    pub library: LibraryVersion,
    /// What `GET /api/v1/health` answers (its vector count as of the last count: at most
    /// [`STORE_COUNT_BUSY`] old while images are completed, [`STORE_COUNT_PERIOD`] otherwise).
    pub health: serde_json::Value,
}

#[derive(Clone)]
pub struct Events {
    rx: watch::Receiver<Arc<String>>,
}

impl Events {
    /// Start the producer; it stops on `shutdown`.
    pub fn start(sessions: Sessions, pipeline: Pipeline, watcher: Watcher, mut shutdown: broadcast::Receiver<()>) -> Events {
        let (tx, rx) = watch::channel(Arc::new(String::new()));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            // The last count: when, at which pipeline `completed`, and what it said.
            let mut store: Option<(std::time::Instant, u64, StoreCount)> = None;
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    // Shutdown: stop producing; open streams end when the server drains.
                    _ = shutdown.recv() => break,
                    // Rebuild the snapshot, but only while somebody listens (the handle we
                    // keep in `Events` counts as one receiver).
                    _ = tick.tick() => {
                        if tx.receiver_count() <= 1 {
                            // Nobody listens: drop the last snapshot, so the next subscriber
                            // never starts from one taken long ago (it gets the next tick's).
                            if !tx.borrow().is_empty() {
                                tx.send_replace(Arc::new(String::new()));
                            }
                            store = None;
                            continue;
                        }
                        let completed = pipeline.status().completed;
                        let stale = store.as_ref().is_none_or(|(at, done, _)| {
                            at.elapsed() >= STORE_COUNT_PERIOD || (*done != completed && at.elapsed() >= STORE_COUNT_BUSY)
                        });
                        if stale {
                            let points = pipeline.store_points().await.map(|r| r.map_err(|e| e.to_string()));
                            store = Some((std::time::Instant::now(), completed, points));
                        }
                        let points = store.as_ref().and_then(|(_, _, p)| p.clone());
                        match snapshot(&sessions, &pipeline, &watcher, points).await {
                            Ok(s) => {
                                let json = serde_json::to_string(&s).unwrap_or_default();
                                tx.send_if_modified(|cur| {
                                    if **cur == json {
                                        false
                                    } else {
                                        *cur = Arc::new(json);
                                        true
                                    }
                                });
                            }
                            Err(e) => tracing::warn!(error = %e, "building the live snapshot failed; retrying next tick"),
                        }
                    }
                }
            }
        });
        Events { rx }
    }

    /// A receiver marked changed, so the first read yields the current snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<String>> {
        let mut rx = self.rx.clone();
        rx.mark_changed();
        rx
    }
}

/// The sessions shown live: every session not finished, the 100 most recent ones.
/// `store_points`: the vector store's count (or why it failed), `None` without a pipeline.
pub async fn snapshot(
    sessions: &Sessions,
    pipeline: &Pipeline,
    watcher: &Watcher,
    store_points: StoreCount,
) -> Result<Snapshot, crate::sessions::SessionError> {
    let cat = sessions.catalog();
    let (_, total) = cat.list_sessions(None, 1, 0).await?;
    let (list, _) = cat.list_sessions(None, 100, (total - 100).max(0)).await?;
    let mut out = Vec::with_capacity(list.len());
    for s in list.into_iter().rev() {
        let progress = sessions.progress_of(&s).await?;
        out.push(SessionLive {
            id: s.id,
            name: s.name,
            status: progress.status,
            root_path: s.root_path,
            category_id: s.category_id,
            progress,
            last_error: s.last_error,
            pending_reason: s.pending_reason,
        });
    }
    let (p, w, library) = (pipeline.status(), watcher.status().await, cat.library_version().await?);
    let models = models_report(cat, &p).await;
    let health = health(cat, Ok(library.assets), &p, store_points, &w, models);
    Ok(Snapshot { sessions: out, pipeline: p, watcher: w, library, health })
}

/// The health report: liveness and what serves (catalog, vector store, model/adapter,
/// watcher). `status` is "ok" whenever the daemon answers (the replaced UI's header dot reads
/// exactly that); `state` is "healthy", or "degraded" with the `problems`. Served by
/// `GET /api/v1/health` and carried by every live snapshot.
pub fn health(
    catalog: &crate::catalog::Catalog,
    assets: Result<i64, String>,
    p: &PipelineStatus,
    store: StoreCount,
    w: &WatcherStatus,
    models: serde_json::Value,
) -> serde_json::Value {
    let backend = match catalog.backend() {
        crate::catalog::Backend::Sqlite => "sqlite",
        crate::catalog::Backend::Postgres => "postgres",
    };
    let mut problems = Vec::new();
    if let Err(e) = &assets {
        problems.push(format!("catalog: {e}"));
    }
    if let Some((e, since)) = catalog.write_fault() {
        problems.push(format!(
            "catalog: writes fail since {} ({e}); nothing is lost — changes wait and are retried (a full disk? free space where the catalog lives)",
            crate::catalog::rows_ts(since)
        ));
    }
    if !p.running {
        problems.push(format!("pipeline: {}", p.reason.clone().unwrap_or_default()));
    }
    if let Some(m) = &p.model_problem {
        problems.push(format!("model: {m}"));
    }
    if let Some(Err(e)) = &store {
        problems.push(format!("vector store: {e}; waiting for it (indexing pauses, nothing fails; search answers 503 until it is back)"));
    }
    if let Some(wf) = &p.waiting_for {
        problems.push(format!("pipeline waiting: {wf}"));
    }
    let points = store.and_then(|r| r.ok());
    for u in &w.unreadable {
        problems.push(format!(
            "watcher: {} cannot be read ({}) since {}; its assets and vectors are kept (fix its permissions or mount)",
            u.path, u.error, u.since
        ));
    }
    for u in &w.unavailable {
        problems.push(format!("watcher: {} is unavailable since {}: {}", u.path, u.since, u.error));
    }
    let state = if problems.is_empty() { "healthy" } else { "degraded" };
    serde_json::json!({
        "status": "ok",
        "state": state,
        "version": env!("CARGO_PKG_VERSION"),
        "catalog": backend,
        "catalogOk": assets.is_ok(),
        "assets": assets.ok(),
        "vectorStore": {"backend": p.vector_store, "points": points},
        "model": {"name": p.model, "device": p.device, "running": p.running, "reason": p.reason},
        "models": models,
        "jpegDecoder": p.jpeg_decoder,
        "watcher": {"roots": w.roots, "pendingPaths": w.pending_paths, "overflows": w.overflows, "unreadable": w.unreadable, "unavailable": w.unavailable},
        "queues": p.stages.iter().map(|s| serde_json::json!({"stage": s.name, "depth": s.queue_depth, "capacity": s.queue_capacity})).collect::<Vec<_>>(),
        "problems": problems,
    })
}

/// Every model and its state: those with vectors in the catalog (`serving` answers search,
/// `building` re-embeds the library, `retired`), whether the pipeline runs it, and the
/// configured model when it cannot run (`failed`, with why and the fix).
pub async fn models_report(catalog: &crate::catalog::Catalog, p: &PipelineStatus) -> serde_json::Value {
    let mut out: Vec<serde_json::Value> = match catalog.models().await {
        Ok(rows) => rows
            .into_iter()
            .map(|m| serde_json::json!({"name": m.name, "kind": m.kind, "dim": m.dim, "state": m.state, "embedding": p.running && m.name == p.model}))
            .collect(),
        Err(e) => vec![serde_json::json!({"error": format!("the catalog's models cannot be read: {e}")})],
    };
    if !p.running {
        out.push(serde_json::json!({"name": p.model, "state": "failed", "error": p.reason}));
    }
    serde_json::Value::Array(out)
}
