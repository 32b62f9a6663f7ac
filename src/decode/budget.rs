//! The memory budget for decoded pixels (`pipeline.memory_mb`): every decode reserves what its
//! output will take (from the header, before any pixel is decoded) and waits while the
//! decodes already in flight hold the rest; one that could never fit is refused with the
//! reason. Shared by the pipeline's decoders, search by image and thumbnails, so N decoders
//! meeting N huge PNGs at once cannot take N × the memory of one.

use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    peak: u64,
    waits: u64,
}

/// Bytes reserved for one decode, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            let mut s = b.state.lock().unwrap();
            s.used -= self.bytes;
            b.freed.notify_all();
        }
    }
}

impl MemoryBudget {
    pub fn new(total_bytes: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { total: total_bytes, state: Mutex::new(State::default()), freed: Condvar::new() })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.state.lock().unwrap().peak
    }

    /// Decodes that had to wait for room.
    pub fn waits(&self) -> u64 {
        self.state.lock().unwrap().waits
    }

    /// Reserve `bytes`, waiting while others hold the room; `Err(total)` when it can never fit.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, u64> {
        if bytes > self.total {
            return Err(self.total);
        }
        let mut s = self.state.lock().unwrap();
        if s.used + bytes > self.total {
            s.waits += 1;
            while s.used + bytes > self.total {
                s = self.freed.wait(s).unwrap();
            }
        }
        s.used += bytes;
        s.peak = s.peak.max(s.used);
        Ok(Reservation { budget: Some(self.clone()), bytes })
    }
}

impl Reservation {
    /// Give back what is held beyond `bytes` (an upper bound reserved first, the exact need
    /// known later); never grows.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            return;
        }
        if let Some(b) = &self.budget {
            let mut s = b.state.lock().unwrap();
            s.used -= self.bytes - bytes;
            b.freed.notify_all();
        }
        self.bytes = bytes;
    }

    /// No budget configured: nothing reserved.
    pub fn none() -> Reservation {
        Reservation { budget: None, bytes: 0 }
    }
}

/// The budget as a field of `DecodeLimits`: compared by identity.
#[derive(Debug, Clone, Default)]
pub struct Budget(pub Option<Arc<MemoryBudget>>);

impl PartialEq for Budget {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_wait_for_room_and_never_exceed_it() {
        let b = MemoryBudget::new(100);
        assert_eq!(b.reserve(101).unwrap_err(), 100, "can never fit");
        let held = b.reserve(70).unwrap();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || {
            let _r = b2.reserve(50).unwrap();
            b2.state.lock().unwrap().used
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "50 more does not fit beside 70");
        drop(held);
        assert_eq!(waiter.join().unwrap(), 50);
        assert_eq!((b.peak(), b.waits(), b.state.lock().unwrap().used), (70, 1, 0));
    }
}
