//! Per-function metrics: atomic counters on the hot path, read as a [`FunctionMetrics`] snapshot.

mod histogram;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) use histogram::Histogram;

use crate::error::{OutcomeKind, ThrottleReason};

/// Counters of one function, updated by every invocation.
#[derive(Debug, Default)]
pub(crate) struct FunctionCounters {
    pub(crate) invocations: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) init_failures: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) throttled_function: AtomicU64,
    pub(crate) throttled_runtime: AtomicU64,
    pub(crate) throttled_scale: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
    pub(crate) busy: AtomicUsize,
    pub(crate) peak_busy: AtomicUsize,
    pub(crate) durations: Histogram,
}

impl FunctionCounters {
    pub(crate) fn busy_enter(&self) {
        let now = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        if now > self.peak_busy.load(Ordering::Relaxed) {
            self.peak_busy.fetch_max(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn busy_leave(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self, reason: ThrottleReason) {
        let counter = match reason {
            ThrottleReason::FunctionLimit => &self.throttled_function,
            ThrottleReason::RuntimeLimit => &self.throttled_runtime,
            ThrottleReason::ScaleRate => &self.throttled_scale,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished invocation (one that ran, or tried to start, an instance).
    pub(crate) fn finished(&self, kind: OutcomeKind, duration: Option<Duration>) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let counter = match kind {
            OutcomeKind::Success => &self.successes,
            OutcomeKind::Error => &self.errors,
            OutcomeKind::Timeout => &self.timeouts,
            OutcomeKind::Panic => &self.panics,
            OutcomeKind::InitFailure => &self.init_failures,
            OutcomeKind::Cancelled | OutcomeKind::Throttled | OutcomeKind::Rejected => {
                &self.cancelled
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(duration) = duration {
            self.durations.record(duration);
        }
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
    /// Invocations running now.
    pub concurrency: usize,
    /// The most invocations ever running at once.
    pub peak_concurrency: usize,
    /// Instances alive now (idle or busy).
    pub instances: usize,
    /// Instances idle and warm now.
    pub instances_idle: usize,
    /// Median invocation duration (within 12.5 %).
    #[serde(with = "duration_us")]
    pub p50: Duration,
    /// 90th percentile duration.
    #[serde(with = "duration_us")]
    pub p90: Duration,
    /// 99th percentile duration.
    #[serde(with = "duration_us")]
    pub p99: Duration,
}

impl FunctionMetrics {
    /// All throttles, whatever the reason.
    pub fn throttles(&self) -> u64 {
        self.throttled_function_limit + self.throttled_runtime_limit + self.throttled_scale_rate
    }
}

impl FunctionCounters {
    pub(crate) fn snapshot(&self, instances: usize, instances_idle: usize) -> FunctionMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let [p50, p90, p99] = self.durations.quantiles([0.5, 0.9, 0.99]);
        FunctionMetrics {
            invocations: load(&self.invocations),
            successes: load(&self.successes),
            errors: load(&self.errors),
            timeouts: load(&self.timeouts),
            panics: load(&self.panics),
            init_failures: load(&self.init_failures),
            cancelled: load(&self.cancelled),
            throttled_function_limit: load(&self.throttled_function),
            throttled_runtime_limit: load(&self.throttled_runtime),
            throttled_scale_rate: load(&self.throttled_scale),
            cold_starts: load(&self.cold_starts),
            concurrency: self.busy.load(Ordering::Relaxed),
            peak_concurrency: self.peak_busy.load(Ordering::Relaxed),
            instances,
            instances_idle,
            p50,
            p90,
            p99,
        }
    }
}

/// Serialises a duration as whole microseconds.
pub(crate) fn serialize_us<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    duration_us::serialize(d, s)
}

/// Serialises a duration as whole microseconds.
mod duration_us {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}
