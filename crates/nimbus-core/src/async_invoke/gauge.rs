//! Counts of a function's async workers in one state (parked, in a slow handler), kept right
//! however the worker's wait ends: a guard counts it out when dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts a worker out of the slow (or the parked) ones however its wait ends.
pub(super) struct CountGuard<'a>(&'a AtomicUsize);

impl<'a> CountGuard<'a> {
    /// Counts the worker in.
    pub(super) fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
