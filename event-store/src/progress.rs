//! Counters of a long pass over the log (a verification, a rebuild, a replay), shared with
//! whatever displays its progress. The pass only adds to them; a display reads them on its own
//! schedule, so reporting never slows the pass down.

use std::sync::atomic::{AtomicU64, Ordering};

/// Events done so far out of an expected total (0 while the total is not known yet).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// A fresh counter at zero of an unknown total.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of events the pass expects to go through.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Counts `n` more events done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Events done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The expected total (0: not known).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}
