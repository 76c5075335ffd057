//! [`Successes`]: successful runs a worker has counted and not yet added to its function's
//! counters, so that a worker running events back to back pays the counters' atomic adds once
//! per batch rather than once per event.

/// Histogram buckets kept apart before they are added: a fast handler's durations spread over
/// a few (each is an eighth of its power of two wide, 8 ns around 64 ns).
const SLOTS: usize = 8;

/// Successful runs not yet added to a function's counters (`FunctionCounters::flush`).
#[derive(Debug, Default)]
pub(crate) struct Successes {
    pub(super) runs: u64,
    pub(super) billed_nanos: u64,
    /// Durations counted per histogram bucket: the first `used` slots, as (bucket, count).
    slots: [(usize, u64); SLOTS],
    used: usize,
}

impl Successes {
    /// Counts a duration in `bucket`; when every slot holds another bucket, hands the counted
    /// ones to `spill` first.
    pub(super) fn count_in(&mut self, bucket: usize, spill: impl FnOnce(&mut Self)) {
        if let Some(slot) = self.slots[..self.used]
            .iter_mut()
            .find(|(b, _)| *b == bucket)
        {
            slot.1 += 1;
            return;
        }
        if self.used == SLOTS {
            spill(self);
        }
        self.slots[self.used] = (bucket, 1);
        self.used += 1;
    }

    /// Takes the counted buckets, as (bucket, count).
    pub(super) fn take_buckets(&mut self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let used = std::mem::take(&mut self.used);
        self.slots[..used].iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Successes, SLOTS};

    /// Whatever the buckets, every count comes out once: through the spills or the last take.
    #[test]
    fn every_duration_is_counted_once_across_spills() {
        let mut batch = Successes::default();
        let mut counted = BTreeMap::new();
        let mut spills = 0;
        let buckets: Vec<usize> = (0..500).map(|i| (i * 7 + i / 3) % (3 * SLOTS)).collect();
        for &bucket in &buckets {
            batch.count_in(bucket, |full| {
                spills += 1;
                for (b, n) in full.take_buckets() {
                    *counted.entry(b).or_insert(0) += n;
                }
            });
        }
        for (b, n) in batch.take_buckets() {
            *counted.entry(b).or_insert(0) += n;
        }
        let mut want = BTreeMap::new();
        for bucket in buckets {
            *want.entry(bucket).or_insert(0u64) += 1;
        }
        assert_eq!(counted, want);
        assert!(spills > 0, "more buckets than slots spill");
        assert_eq!(batch.take_buckets().count(), 0, "taken once");
    }
}
