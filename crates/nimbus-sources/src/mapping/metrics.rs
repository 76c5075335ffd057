//! A queue mapping's counters and the snapshot of them it reports.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nimbus_core::util::{Padded, Striped};

/// A snapshot of a queue mapping's metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueMappingMetrics {
    /// Messages received.
    pub received: u64,
    /// Messages deleted after successful handling.
    pub deleted: u64,
    /// Messages deleted without invoking because no filter matched.
    pub filtered: u64,
    /// Messages left to become visible again after a failure.
    pub failed: u64,
    /// Messages made visible again at once, their receive uncounted: throttled past their
    /// visibility, stopping, or at batch size 1 handed back by a poller that would hold them
    /// too long or behind a failure in their FIFO group.
    pub released: u64,
    /// Invocations of the function.
    pub invocations: u64,
    /// Invocations that failed (function error, timeout, panic, init failure).
    pub function_errors: u64,
    /// Invocations throttled.
    pub throttles: u64,
    /// Batches split to isolate failures.
    pub bisections: u64,
    /// Messages not handed to the function because their work had passed through the
    /// recursion limit of invocations (a recursive loop); counted in `failed` too.
    pub recursive_loops: u64,
    /// Errors from the source (receive or delete), panics in it included.
    pub source_errors: u64,
    /// Receipts the source refused in an acknowledgement or a release because they were no
    /// longer current (their visibility timeout had passed: the machine or the broker
    /// stalled). Those messages come back; they are not counted as deleted or released.
    pub refused_receipts: u64,
    /// Permanent source errors: the mapping stopped on the first (see `status`).
    pub permanent_source_errors: u64,
    /// Pollers running now.
    pub pollers: usize,
    /// Batches being handled now.
    pub concurrent_batches: usize,
    /// The pollers the scaler aims for.
    pub target_concurrency: usize,
    /// The largest number of batches handled at once.
    pub peak_concurrent_batches: usize,
    /// Messages the queue holds (visible, in flight, delayed), if it reports it.
    pub backlog: Option<u64>,
    /// Messages the queue has moved to its dead-letter queue, if it reports it.
    pub dead_lettered: Option<u64>,
}

/// A mapping's counters. Those every batch bumps are striped per thread group and summed when
/// read, so that pollers on different threads do not write one cache line; the rare ones are
/// plain atomics.
#[derive(Debug, Default)]
pub(super) struct Counters {
    per_batch: Striped<PerBatch>,
    pub(super) filtered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) released: AtomicU64,
    pub(super) function_errors: AtomicU64,
    pub(super) throttles: AtomicU64,
    pub(super) bisections: AtomicU64,
    pub(super) recursive_loops: AtomicU64,
    pub(super) source_errors: AtomicU64,
    pub(super) refused_receipts: AtomicU64,
    pub(super) permanent_source_errors: AtomicU64,
    /// Batches in hand: one count, as `drained` needs an exact zero (a sum over stripes read
    /// one after another could pass through zero while batches are held).
    pub(super) batches: Padded<AtomicUsize>,
    pub(super) peak_batches: AtomicUsize,
}

/// One stripe of the counters every batch bumps.
#[derive(Debug, Default)]
struct PerBatch {
    received: AtomicU64,
    deleted: AtomicU64,
    invocations: AtomicU64,
}

pub(super) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Counters {
    /// Counts `n` messages received.
    pub(super) fn received(&self, n: usize) {
        add(&self.per_batch.local().received, n);
    }

    /// Counts `n` messages deleted after successful handling.
    pub(super) fn deleted(&self, n: usize) {
        add(&self.per_batch.local().deleted, n);
    }

    /// Counts an invocation of the function.
    pub(super) fn invoked(&self) {
        add(&self.per_batch.local().invocations, 1);
    }

    /// Counts a batch in hand; returns how many are in hand now.
    pub(super) fn batch_taken(&self) -> usize {
        self.batches.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Notes `now` batches handled at once.
    pub(super) fn note_peak(&self, now: usize) {
        // Read first: the peak rarely moves, and a load leaves the line shared.
        if now > self.peak_batches.load(Ordering::Relaxed) {
            self.peak_batches.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// A snapshot, with the scaler's numbers and the queue's counts.
    pub(super) fn snapshot(
        &self,
        pollers: usize,
        target: usize,
        stats: Option<crate::queue::QueueStats>,
    ) -> QueueMappingMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QueueMappingMetrics {
            received: self.per_batch.sum(|c| &c.received),
            deleted: self.per_batch.sum(|c| &c.deleted),
            filtered: load(&self.filtered),
            failed: load(&self.failed),
            released: load(&self.released),
            invocations: self.per_batch.sum(|c| &c.invocations),
            function_errors: load(&self.function_errors),
            throttles: load(&self.throttles),
            bisections: load(&self.bisections),
            recursive_loops: load(&self.recursive_loops),
            source_errors: load(&self.source_errors),
            refused_receipts: load(&self.refused_receipts),
            permanent_source_errors: load(&self.permanent_source_errors),
            pollers,
            concurrent_batches: self.batches.load(Ordering::Relaxed),
            target_concurrency: target,
            peak_concurrent_batches: self.peak_batches.load(Ordering::Relaxed),
            backlog: stats.map(|s| s.backlog()),
            dead_lettered: stats.map(|s| s.dead_lettered),
        }
    }
}
