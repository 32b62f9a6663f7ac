//! The live view the web app follows over Server-Sent Events (`GET /api/v1/events`).
//!
//! One producer task builds a snapshot (sessions with progress, pipeline stages and queue
//! depths, watcher, a library version) once a second while anyone listens, and publishes it
//! only when it changed. Subscribers read a `tokio::sync::watch` channel: it holds just the
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
                            continue;
                        }
                        match snapshot(&sessions, &pipeline, &watcher).await {
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
pub async fn snapshot(sessions: &Sessions, pipeline: &Pipeline, watcher: &Watcher) -> Result<Snapshot, crate::sessions::SessionError> {
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
    Ok(Snapshot { sessions: out, pipeline: pipeline.status(), watcher: watcher.status().await, library: cat.library_version().await? })
}
