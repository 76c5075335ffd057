//! A lock-free log-linear histogram of durations: one atomic add per record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two: 8, so a percentile is within 12.5 % of the true value.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB;
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Counts of nanosecond values in buckets whose width is 1/8 of their magnitude.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS + 1
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) & (SUB - 1);
    (LINEAR + u64::from(exponent - SUB_BITS - 1) * SUB + sub) as usize
}

/// The largest value that falls into `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return bucket;
    }
    let exponent = (bucket - LINEAR) / SUB + u64::from(SUB_BITS) + 1;
    let sub = (bucket - LINEAR) % SUB;
    let shift = exponent - u64::from(SUB_BITS);
    let low = (1u64 << exponent) | (sub << shift);
    low.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    pub(crate) fn record(&self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `other`'s counts to this histogram.
    pub(crate) fn merge(&self, other: &Self) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            let n = theirs.load(Ordering::Relaxed);
            if n > 0 {
                mine.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The values at the given quantiles (each in 0.0..=1.0), or zeros when empty.
    pub(crate) fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Duration; N] {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let mut out = [Duration::ZERO; N];
        if total == 0 {
            return out;
        }
        for (slot, q) in out.iter_mut().zip(qs) {
            // The rank of the q-quantile, 1-based: the smallest value with at least q of the mass.
            let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (bucket, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    *slot = Duration::from_nanos(upper_bound(bucket));
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let [p50, p90, p99] = h.quantiles([0.5, 0.9, 0.99]);
        let close = |got: Duration, want_ms: f64| {
            let got = got.as_secs_f64() * 1e3;
            assert!(
                got >= want_ms && got <= want_ms * 1.125,
                "{got} ms vs {want_ms} ms"
            );
        };
        close(p50, 50.0);
        close(p90, 90.0);
        close(p99, 99.0);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        assert_eq!(Histogram::default().quantiles([0.5]), [Duration::ZERO]);
    }

    proptest! {
        #[test]
        fn every_value_lands_in_a_bucket_that_bounds_it(value in any::<u64>()) {
            let bucket = bucket_of(value);
            prop_assert!(bucket < BUCKETS);
            prop_assert!(upper_bound(bucket) >= value);
            // The bucket is at most 1/8 of the value wide.
            let width = upper_bound(bucket) - value;
            prop_assert!(width <= value / SUB + 1, "value {} bucket {} width {}", value, bucket, width);
            if bucket > 0 {
                prop_assert!(upper_bound(bucket - 1) < value);
            }
        }
    }
}
