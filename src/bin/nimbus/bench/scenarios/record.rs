//! Per-event latencies recorded by the handler, by event index, then folded into a histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::bench::peers::Countdown;

/// Latencies (ns) recorded by index, then folded into a histogram.
pub(super) struct Latencies {
    base: Instant,
    slots: Vec<AtomicU64>,
    pub(super) countdown: Arc<Countdown>,
}

impl Latencies {
    pub(super) fn new(base: Instant, count: u64) -> Arc<Self> {
        Arc::new(Self {
            base,
            slots: (0..count).map(|_| AtomicU64::new(0)).collect(),
            countdown: Countdown::new(count),
        })
    }

    /// Nanoseconds since the base, the clock events carry their send or due time on.
    pub(super) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The handler started the event sent (or due) `sent_ns` after the base. An index out of
    /// range is ignored.
    pub(super) fn started(&self, index: u64, sent_ns: u64) {
        let now = self.now_ns();
        if let Some(slot) = self.slots.get(index as usize) {
            slot.store(now.saturating_sub(sent_ns).max(1), Ordering::Relaxed);
            self.countdown.tick();
        }
    }

    /// The latencies of the events from index `skip` on.
    pub(super) fn histogram(&self, skip: usize) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        for slot in self.slots.iter().skip(skip) {
            let _ = h.record(slot.load(Ordering::Relaxed).max(1));
        }
        h
    }
}
