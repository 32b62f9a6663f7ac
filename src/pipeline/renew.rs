//! The lease renewer: jobs in hand are pushed a lease into the future every third of a lease.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use crate::catalog::Catalog;

/// Keeps the leases of the jobs in hand alive: every third of a lease, the leases of every
/// job between claim and completion are pushed a lease into the future, so a long batch or a
/// deep queue never loses its jobs to the reaper, while a daemon that dies (or stalls: this
/// thread stalls with it) loses them within one lease. A lease found lost (the job was
/// cancelled, or claimed again after a stall) is dropped; its completion will be ignored.
pub(super) struct Renewer {
    pub(super) catalog: Catalog,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) shared: Arc<Shared>,
    pub(super) owner: String,
    pub(super) lease: Duration,
}

impl Renewer {
    pub(super) fn run(self) {
        let every = (self.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut next = Instant::now() + every;
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100).min(every));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            let held: Vec<crate::catalog::Lease> = self.shared.in_flight.lock().unwrap().iter().copied().collect();
            if held.is_empty() {
                continue;
            }
            match self.rt.block_on(self.catalog.renew_leases(&self.owner, &held, self.lease)) {
                Ok(lost) if lost.is_empty() => tracing::trace!(leases = held.len(), "leases renewed"),
                Ok(lost) => {
                    // Those completed meanwhile left the set already: only the others were lost.
                    let gone = {
                        let mut f = self.shared.in_flight.lock().unwrap();
                        lost.iter().filter(|l| f.remove(l)).count()
                    };
                    if gone > 0 {
                        tracing::warn!(lost = gone, "leases lost (job cancelled, or claimed again after a stall); their results will be ignored");
                    }
                }
                Err(e) => tracing::warn!(error = %e, leases = held.len(), "renewing leases failed; retrying"),
            }
        }
    }
}
