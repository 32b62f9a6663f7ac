//! How pixdex's CPU kernels use the cores, written once for every model: `fan_out` splits work
//! over scoped threads (the caller's thread takes the first share; every thread flushes
//! denormals, as the kernels expect), and `Pool` keeps scratch buffers between forward passes
//! so no forward allocates. EfficientNet (one image per thread), CLIP's image tower (groups of
//! images) and the GEMMs (column panels) all go through these two.

use std::ops::Range;
use std::sync::Mutex;

use super::kernels::FlushDenormals;

/// Run `work` over `0..n` split into at most `threads` contiguous ranges, sizes differing by at
/// most one; the calling thread runs the first range. Returns when every range is done.
pub(crate) fn fan_out(threads: usize, n: usize, work: impl Fn(Range<usize>) + Sync) {
    let ranges = split(n, threads);
    if ranges.len() <= 1 {
        let _ftz = FlushDenormals::new();
        if let Some(r) = ranges.into_iter().next() {
            work(r);
        }
        return;
    }
    let work = &work;
    std::thread::scope(|s| {
        for r in ranges[1..].iter().cloned() {
            s.spawn(move || {
                let _ftz = FlushDenormals::new();
                work(r)
            });
        }
        let _ftz = FlushDenormals::new();
        work(ranges[0].clone());
    });
}

/// `0..n` in at most `parts` contiguous, non-empty ranges whose sizes differ by at most one.
pub(crate) fn split(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let (base, extra) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = base + usize::from(p < extra);
        if len > 0 {
            out.push(start..start + len);
        }
        start += len;
    }
    out
}

/// Buffers handed out to one forward pass at a time and taken back (at most `keep` kept).
pub(crate) struct Pool<T> {
    items: Mutex<Vec<T>>,
    keep: usize,
}

impl<T> Pool<T> {
    pub(crate) const fn new(keep: usize) -> Pool<T> {
        Pool { items: Mutex::new(Vec::new()), keep: if keep == 0 { 1 } else { keep } }
    }

    /// A pooled buffer, or a new one from `make`.
    pub(crate) fn take_or(&self, make: impl FnOnce() -> T) -> T {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_else(make)
    }

    pub(crate) fn give(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() < self.keep {
            items.push(item);
        }
    }
}

impl<T: Default> Pool<T> {
    pub(crate) fn take(&self) -> T {
        self.take_or(T::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn split_covers_everything_once() {
        for n in 0..40 {
            for parts in 1..9 {
                let r = split(n, parts);
                assert!(r.len() <= parts.max(1));
                assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), n, "{n} {parts}");
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
                let (min, max) = (r.iter().map(|r| r.len()).min().unwrap_or(0), r.iter().map(|r| r.len()).max().unwrap_or(0));
                assert!(max - min <= 1, "{r:?}");
            }
        }
    }

    #[test]
    fn fan_out_runs_each_index_once() {
        for threads in [1, 2, 3, 8] {
            let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
            fan_out(threads, hits.len(), |r| {
                for i in r {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "threads {threads}");
        }
    }

    #[test]
    fn pool_keeps_at_most_keep() {
        let p: Pool<Vec<u8>> = Pool::new(1);
        p.give(vec![1]);
        p.give(vec![2]);
        assert_eq!(p.take(), vec![1]);
        assert_eq!(p.take(), Vec::<u8>::new());
    }
}
