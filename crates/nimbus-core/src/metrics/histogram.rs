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
        self.add(Self::bucket(value), 1);
    }

    /// The bucket `value` is counted in.
    pub(crate) fn bucket(value: Duration) -> usize {
        bucket_of(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Counts `n` values in `bucket` (from [`Histogram::bucket`]).
    pub(crate) fn add(&self, bucket: usize, n: u64) {
        self.counts[bucket].fetch_add(n, Ordering::Relaxed);
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

    /// The non-empty buckets: lowest value, highest value and count, lowest first.
    fn non_empty(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(bucket, count)| {
                let count = count.load(Ordering::Relaxed);
                let low = if bucket == 0 {
                    0
                } else {
                    upper_bound(bucket - 1) + 1
                };
                (count > 0).then(|| (low, upper_bound(bucket), count))
            })
    }

    /// A snapshot of the counts, for exporters.
    pub(crate) fn snapshot(&self) -> DurationHistogram {
        DurationHistogram {
            buckets: self.non_empty().collect(),
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

/// A snapshot of a function's invocation durations, for exporters (Prometheus, CloudWatch-like
/// dashboards): the counts of the runtime's log-linear histogram, whose buckets are at most
/// 1/8 of their magnitude wide.
///
/// The runtime counts durations but does not add them up: [`DurationHistogram::estimated_sum`]
/// estimates the total from the middle of each bucket, within 12.5 %.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Non-empty buckets: lowest and highest nanoseconds, count; lowest first.
    buckets: Vec<(u64, u64, u64)>,
}

impl DurationHistogram {
    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.2).sum()
    }

    /// The non-empty buckets, shortest first: the longest duration each holds, and its count.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.buckets
            .iter()
            .map(|&(_, high, count)| (Duration::from_nanos(high), count))
    }

    /// For each of `bounds` (ascending), how many durations were at most that long: a
    /// Prometheus histogram's cumulative buckets. A bucket counts towards a bound when all of
    /// it lies at or below the bound, so a duration within 12.5 % below a bound may count
    /// towards the next one only.
    pub fn cumulative(&self, bounds: &[Duration]) -> Vec<u64> {
        bounds
            .iter()
            .map(|bound| {
                let bound = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
                self.buckets
                    .iter()
                    .take_while(|b| b.1 <= bound)
                    .map(|b| b.2)
                    .sum()
            })
            .collect()
    }

    /// The total of the durations, estimated from the middle of each bucket (within 12.5 %:
    /// the runtime does not add durations up on the hot path).
    pub fn estimated_sum(&self) -> Duration {
        let nanos: u128 = self
            .buckets
            .iter()
            .map(|&(low, high, count)| (u128::from(low) + u128::from(high)) / 2 * u128::from(count))
            .sum();
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
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
    fn snapshot_counts_buckets_cumulatively_and_estimates_the_sum() {
        let h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count(), 100);
        assert!(snapshot.buckets().all(|(_, count)| count > 0));
        let bounds = [10, 50, 200].map(Duration::from_millis);
        let [at_10, at_50, at_200] = snapshot.cumulative(&bounds)[..] else {
            panic!("one count per bound");
        };
        // A duration within 1/8 below a bound may count towards the next bound only.
        assert!((9..=10).contains(&at_10), "{at_10}");
        assert!((45..=50).contains(&at_50), "{at_50}");
        assert_eq!(at_200, 100);
        let sum = snapshot.estimated_sum().as_secs_f64();
        let exact = 5.050;
        assert!((sum - exact).abs() <= exact * 0.125, "{sum} s vs {exact} s");
    }

    #[test]
    fn empty_snapshot_has_no_buckets() {
        let snapshot = Histogram::default().snapshot();
        assert_eq!(snapshot.count(), 0);
        assert_eq!(snapshot.cumulative(&[Duration::MAX]), [0]);
        assert_eq!(snapshot.estimated_sum(), Duration::ZERO);
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
