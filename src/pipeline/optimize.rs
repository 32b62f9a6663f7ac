//! The optimizer: the vector store's `optimize()` off the hot path, after a bulk of writes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use crate::vectors::VectorStore;

/// Runs the vector store's `optimize()` off the hot path: when points were written and the
/// writer has been idle for a while.
pub(super) struct Optimizer {
    pub(super) store: VectorStore,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) shared: Arc<Shared>,
}

impl Optimizer {
    pub(super) fn run(self) {
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
