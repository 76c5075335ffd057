//! Counts of a function's async workers in one state (parked, in a slow handler), kept right
//! however the worker's wait ends: a guard counts it out when dropped; and the threads of the
//! runtime a caller's workers run on.

use std::cell::Cell;
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

thread_local! {
    /// The worker threads of the Tokio runtime this thread runs in, once read.
    static RUNTIME_THREADS: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker threads of the Tokio runtime the calling thread runs in (where its spawns go),
/// or `None` outside any. Read once per thread: a thread serves one runtime in practice.
pub(super) fn runtime_threads() -> Option<usize> {
    RUNTIME_THREADS.with(|cached| {
        cached.get().or_else(|| {
            let threads = tokio::runtime::Handle::try_current()
                .ok()?
                .metrics()
                .num_workers();
            cached.set(Some(threads));
            Some(threads)
        })
    })
}
