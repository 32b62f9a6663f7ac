//! The daemon's periodic work: the reaper (heartbeat, expired leases, orphaned starts) and the
//! admission loop (autoStart sessions whose images appeared, discoveries of dead peers). Each
//! is a task on the runtime that stops at the shutdown broadcast.

use std::time::Duration;

use tokio::sync::broadcast;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::sessions::Sessions;

/// A daemon whose heartbeat is this many beats old is taken for dead (its starts in progress
/// are redone by the others).
pub(super) const STALE_BEATS: u32 = 4;

/// How often the daemon beats: often enough that a dead peer's start is redone within
/// seconds, rarely enough to cost nothing (one upsert).
pub(super) fn heartbeat_every(cfg: &Config) -> Duration {
    (cfg.pipeline.lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// One reaper tick. A catalog that is unavailable is retried at the next tick.
async fn reap(catalog: &Catalog, pipeline: &Pipeline, owner: &str, started_at: i64, stale: Duration) {
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

/// The reaper: this daemon's heartbeat, then a peer that died (or stalled) holding leases gets
/// its jobs taken back within a quarter lease, and its starts in progress within a few
/// heartbeats, without any daemon restarting.
pub(super) fn spawn_reaper(
    tasks: &mut tokio::task::JoinSet<()>,
    cfg: &Config,
    catalog: &Catalog,
    pipeline: &Pipeline,
    owner: &str,
    started_at: i64,
    shutdown: &broadcast::Sender<()>,
) {
    let mut rx = shutdown.subscribe();
    let (catalog, pipeline, owner) = (catalog.clone(), pipeline.clone(), owner.to_string());
    let beat = heartbeat_every(cfg);
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

/// Every `daemon.admission_retry`: start autoStart sessions whose images have appeared, and
/// take over the discoveries of peers that stopped beating.
pub(super) fn spawn_admission(tasks: &mut tokio::task::JoinSet<()>, cfg: &Config, sessions: &Sessions, shutdown: &broadcast::Sender<()>) {
    let mut rx = shutdown.subscribe();
    let sessions = sessions.clone();
    let every = cfg.admission_retry;
    let stale = heartbeat_every(cfg) * STALE_BEATS;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Shutdown: stop retrying.
                _ = rx.recv() => break,
                // Waiting sessions and interrupted discoveries.
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
