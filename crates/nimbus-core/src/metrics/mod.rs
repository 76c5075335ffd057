//! Per-function metrics: atomic counters on the hot path, read as a [`FunctionMetrics`] snapshot.

mod histogram;
mod successes;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use histogram::DurationHistogram;
pub(crate) use histogram::Histogram;
pub(crate) use successes::Successes;

use crate::config::Prices;
use crate::error::{OutcomeKind, ThrottleReason};
use crate::metering::{Provisioned, Usage};
use crate::util::{Padded, Striped};

/// Counters of one function, updated by every invocation.
///
/// Busy counts are global (limits and the peak need one view); everything else is striped
/// per thread group and summed when read.
#[derive(Debug, Default)]
pub(crate) struct FunctionCounters {
    busy: Padded<AtomicUsize>,
    peak_busy: AtomicUsize,
    /// Invocations stopped at the hop limit (rare: not striped).
    recursive_loops: AtomicU64,
    /// Invocations refused by the permission model (not striped: a refusal is off the hot
    /// path of allowed calls).
    access_denied: AtomicU64,
    tallies: Striped<Tally>,
}

/// One stripe of a function's counters and usage totals.
#[derive(Debug, Default)]
struct Tally {
    successes: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    panics: AtomicU64,
    init_failures: AtomicU64,
    cancelled: AtomicU64,
    throttled_function: AtomicU64,
    throttled_runtime: AtomicU64,
    throttled_scale: AtomicU64,
    cold_starts: AtomicU64,
    billed_nanos: AtomicU64,
    init_nanos: AtomicU64,
    provisioned_requests: AtomicU64,
    provisioned_billed_nanos: AtomicU64,
    durations: Histogram,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Set in the busy word once the function refuses new invocations (unregister has begun).
pub(crate) const CLOSED: usize = 1 << (usize::BITS - 1);
/// Set in the busy word once the function is retired: its async workers stop too.
pub(crate) const RETIRED: usize = 1 << (usize::BITS - 2);
/// The count of the busy word.
const COUNT: usize = RETIRED - 1;

impl FunctionCounters {
    /// Counts an invocation in; returns the function's flags ([`CLOSED`], [`RETIRED`]) as the
    /// count found them. The caller that finds a flag it must obey leaves at once. One atomic
    /// operation serves the busy gauge and the retirement check.
    pub(crate) fn busy_enter(&self) -> usize {
        let before = self.busy.fetch_add(1, Ordering::AcqRel);
        let now = (before & COUNT) + 1;
        if now > self.peak_busy.load(Ordering::Relaxed) {
            self.peak_busy.fetch_max(now, Ordering::Relaxed);
        }
        before & !COUNT
    }

    /// Counts an invocation out; returns the flags when it was the last one out of a closed
    /// function (and 0 otherwise).
    pub(crate) fn busy_leave(&self) -> usize {
        let before = self.busy.fetch_sub(1, Ordering::AcqRel);
        if before & COUNT == 1 {
            before & !COUNT
        } else {
            0
        }
    }

    /// Sets `flag` in the busy word; returns the count of invocations in at that moment.
    pub(crate) fn busy_flag(&self, flag: usize) -> usize {
        self.busy.fetch_or(flag, Ordering::AcqRel) & COUNT
    }

    /// Invocations counted in now.
    pub(crate) fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire) & COUNT
    }

    pub(crate) fn throttled(&self, reason: ThrottleReason) {
        let tally = self.tallies.local();
        let counter = match reason {
            ThrottleReason::FunctionLimit => &tally.throttled_function,
            ThrottleReason::RuntimeLimit => &tally.throttled_runtime,
            ThrottleReason::ScaleRate => &tally.throttled_scale,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an invocation stopped at the hop limit; true for the first one.
    pub(crate) fn recursive_loop(&self) -> bool {
        self.recursive_loops.fetch_add(1, Ordering::Relaxed) == 0
    }

    /// Counts an invocation refused by the permission model.
    pub(crate) fn access_denied(&self) {
        self.access_denied.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cold_start(&self) {
        self.tallies
            .local()
            .cold_starts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts time spent in an init phase (billed, as Lambda bills init).
    pub(crate) fn init_time(&self, took: Duration) {
        self.tallies
            .local()
            .init_nanos
            .fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// Counts an init failure (no handler ran).
    pub(crate) fn init_failed(&self) {
        self.tallies
            .local()
            .init_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an invocation that ran a handler for `duration`, billed `billed`.
    pub(crate) fn finished(&self, kind: OutcomeKind, duration: Duration, billed: Duration) {
        let tally = self.tallies.local();
        let counter = match kind {
            OutcomeKind::Success => &tally.successes,
            OutcomeKind::Error => &tally.errors,
            OutcomeKind::Timeout => &tally.timeouts,
            OutcomeKind::Panic => &tally.panics,
            OutcomeKind::InitFailure => &tally.init_failures,
            OutcomeKind::Cancelled | OutcomeKind::Throttled | OutcomeKind::Rejected => {
                &tally.cancelled
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tally
            .billed_nanos
            .fetch_add(nanos(billed), Ordering::Relaxed);
        tally.durations.record(duration);
    }

    /// Counts a success as [`finished`](Self::finished) does, in `batch` until it is flushed.
    pub(crate) fn succeeded_into(
        &self,
        batch: &mut Successes,
        duration: Duration,
        billed: Duration,
    ) {
        batch.runs += 1;
        batch.billed_nanos = batch.billed_nanos.saturating_add(nanos(billed));
        batch.count_in(Histogram::bucket(duration), |full| {
            let durations = &self.tallies.local().durations;
            for (bucket, n) in full.take_buckets() {
                durations.add(bucket, n);
            }
        });
    }

    /// Adds the successes counted in `batch` to the counters, and empties it.
    pub(crate) fn flush(&self, batch: &mut Successes) {
        if batch.runs == 0 {
            return;
        }
        let tally = self.tallies.local();
        tally
            .successes
            .fetch_add(std::mem::take(&mut batch.runs), Ordering::Relaxed);
        tally
            .billed_nanos
            .fetch_add(std::mem::take(&mut batch.billed_nanos), Ordering::Relaxed);
        for (bucket, n) in batch.take_buckets() {
            tally.durations.add(bucket, n);
        }
    }

    /// Counts an invocation, counted by `finished` already, that ran on a provisioned
    /// instance and was billed `billed`.
    pub(crate) fn provisioned(&self, billed: Duration) {
        let tally = self.tallies.local();
        tally.provisioned_requests.fetch_add(1, Ordering::Relaxed);
        tally
            .provisioned_billed_nanos
            .fetch_add(nanos(billed), Ordering::Relaxed);
    }

    fn sum(&self, field: impl Fn(&Tally) -> &AtomicU64) -> u64 {
        self.tallies.sum(field)
    }

    /// Accumulated usage and cost; `capacity` provisioned instances were enabled for
    /// `enabled`.
    pub(crate) fn usage(
        &self,
        memory_mb: u32,
        prices: &Prices,
        capacity: usize,
        enabled: Duration,
    ) -> Usage {
        let requests = self.sum(|t| &t.successes)
            + self.sum(|t| &t.errors)
            + self.sum(|t| &t.timeouts)
            + self.sum(|t| &t.panics)
            + self.sum(|t| &t.cancelled);
        let billed = Duration::from_nanos(self.sum(|t| &t.billed_nanos));
        let init = Duration::from_nanos(self.sum(|t| &t.init_nanos));
        Usage::new(requests, billed, init, memory_mb, prices).with_provisioned(
            Provisioned {
                requests: self.sum(|t| &t.provisioned_requests),
                billed: Duration::from_nanos(self.sum(|t| &t.provisioned_billed_nanos)),
                capacity,
                enabled,
            },
            memory_mb,
            prices,
        )
    }
}

/// A snapshot of one function's metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct FunctionMetrics {
    /// Invocations that got an instance or tried to (everything but throttles).
    pub invocations: u64,
    /// Invocations that returned their output.
    pub successes: u64,
    /// Function errors.
    pub errors: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// Panics.
    pub panics: u64,
    /// Init failures.
    pub init_failures: u64,
    /// Invocations cancelled by shutdown.
    pub cancelled: u64,
    /// Throttles because the function's reserved concurrency was in use.
    pub throttled_function_limit: u64,
    /// Throttles because the runtime's unreserved concurrency was in use.
    pub throttled_runtime_limit: u64,
    /// Throttles because the scale rate was spent.
    pub throttled_scale_rate: u64,
    /// Cold starts (instances initialised for an invocation, not provisioned).
    pub cold_starts: u64,
    /// Invocations stopped because their work had passed through too many invocations (a
    /// recursive loop; see [`hops`](crate::handler::hops)). Not counted in `invocations`.
    pub recursive_loops: u64,
    /// Invocations refused because the caller was not allowed (see
    /// [`permission`](crate::permission)). Not counted in `invocations`.
    pub access_denied: u64,
    /// Invocations running now.
    pub concurrency: usize,
    /// The most invocations ever running at once.
    pub peak_concurrency: usize,
    /// Instances alive now (idle or busy).
    pub instances: usize,
    /// Instances idle and warm now.
    pub instances_idle: usize,
    /// Median invocation duration (within 12.5 %).
    #[serde(serialize_with = "crate::util::serialize_us")]
    pub p50: Duration,
    /// 90th percentile duration.
    #[serde(serialize_with = "crate::util::serialize_us")]
    pub p90: Duration,
    /// 99th percentile duration.
    #[serde(serialize_with = "crate::util::serialize_us")]
    pub p99: Duration,
}

impl FunctionMetrics {
    /// Invocations that ran a handler (billed requests).
    pub fn requests(&self) -> u64 {
        self.invocations - self.init_failures
    }

    /// All throttles, whatever the reason.
    pub fn throttles(&self) -> u64 {
        self.throttled_function_limit + self.throttled_runtime_limit + self.throttled_scale_rate
    }
}

impl FunctionCounters {
    /// The durations of every invocation that ran a handler, all stripes merged.
    pub(crate) fn durations(&self) -> DurationHistogram {
        self.merged_durations().snapshot()
    }

    fn merged_durations(&self) -> Histogram {
        let merged = Histogram::default();
        for tally in self.tallies.iter() {
            merged.merge(&tally.durations);
        }
        merged
    }

    pub(crate) fn snapshot(&self, instances: usize, instances_idle: usize) -> FunctionMetrics {
        let [p50, p90, p99] = self.merged_durations().quantiles([0.5, 0.9, 0.99]);
        let m = FunctionMetrics {
            invocations: 0,
            successes: self.sum(|t| &t.successes),
            errors: self.sum(|t| &t.errors),
            timeouts: self.sum(|t| &t.timeouts),
            panics: self.sum(|t| &t.panics),
            init_failures: self.sum(|t| &t.init_failures),
            cancelled: self.sum(|t| &t.cancelled),
            throttled_function_limit: self.sum(|t| &t.throttled_function),
            throttled_runtime_limit: self.sum(|t| &t.throttled_runtime),
            throttled_scale_rate: self.sum(|t| &t.throttled_scale),
            cold_starts: self.sum(|t| &t.cold_starts),
            recursive_loops: self.recursive_loops.load(Ordering::Relaxed),
            access_denied: self.access_denied.load(Ordering::Relaxed),
            concurrency: self.busy(),
            peak_concurrency: self.peak_busy.load(Ordering::Relaxed),
            instances,
            instances_idle,
            p50,
            p90,
            p99,
        };
        FunctionMetrics {
            invocations: m.successes
                + m.errors
                + m.timeouts
                + m.panics
                + m.init_failures
                + m.cancelled,
            ..m
        }
    }
}
