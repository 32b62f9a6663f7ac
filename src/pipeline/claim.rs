//! The claim stage: pending jobs of running sessions, leased to this daemon, to the decoders.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::{Receiver, Sender};

use super::messages::DecodeTask;
use super::{PipelineConfig, Shared};
use crate::catalog::Catalog;

/// Takes pending jobs of running sessions from the catalog, leased to this daemon.
pub(super) struct Claimer {
    pub(super) out: Sender<DecodeTask>,
    pub(super) catalog: Catalog,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) shared: Arc<Shared>,
    pub(super) cfg: PipelineConfig,
    pub(super) wake: Receiver<()>,
}

impl Claimer {
    pub(super) fn run(self) {
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
                    tracing::error!(panic = %crate::fault::panic_message(p.as_ref()), "the claim stage panicked; restarting it");
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
