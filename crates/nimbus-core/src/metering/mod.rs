//! Metering: what each invocation used, in Lambda's billing terms, and what it would cost.
//!
//! Each invocation yields a [`UsageReport`] (Lambda's `REPORT` line) and is logged as one
//! `tracing` event with target `nimbus::report`. Billed duration is the run time rounded up to
//! the billing granularity; GB-seconds are memory (GB) × billed seconds. Init time of on-demand
//! cold starts is billed too, as Lambda does since August 2025. Invocations on provisioned instances
//! (`min_instances`) are billed at the provisioned duration price, and the provisioned capacity
//! at its own price for as long as it is enabled, whether used or not.

use std::time::Duration;

use crate::config::{BillingGranularity, Prices};
use crate::handler::RequestId;
use crate::util::serialize_display;

/// What one invocation used: Lambda's `REPORT` line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct UsageReport {
    /// The invocation's request id.
    #[serde(serialize_with = "serialize_display")]
    pub request_id: RequestId,
    /// How long the handler ran.
    pub duration: Duration,
    /// `duration` rounded up to the billing granularity.
    pub billed_duration: Duration,
    /// The function's memory size in MB.
    pub memory_mb: u32,
    /// The most memory the invocation's instance has used so far, in MB (Lambda's `Max Memory
    /// Used`: an environment's high-water mark), where its backend can tell (process instances:
    /// the cgroup's peak, else the process's); `None` for in-process handlers, whose memory is
    /// the host's.
    pub max_memory_used_mb: Option<u32>,
    /// The init phase's duration, on a cold start.
    pub init_duration: Option<Duration>,
    /// The invocation ran on a provisioned instance (`min_instances`).
    pub provisioned: bool,
}

impl UsageReport {
    /// GB-seconds billed for this invocation (init included, unless the instance is a
    /// provisioned one, whose init the provisioned capacity pays for).
    pub fn gb_seconds(&self) -> f64 {
        let init = if self.provisioned {
            Duration::ZERO
        } else {
            self.init_duration.unwrap_or_default()
        };
        let billed = self.billed_duration + init;
        f64::from(self.memory_mb) / 1024.0 * billed.as_secs_f64()
    }
}

impl std::fmt::Display for UsageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "REPORT RequestId: {} Duration: {:.2} ms Billed Duration: {} ms Memory Size: {} MB",
            self.request_id,
            self.duration.as_secs_f64() * 1e3,
            self.billed_duration.as_millis(),
            self.memory_mb
        )?;
        if let Some(used) = self.max_memory_used_mb {
            write!(f, " Max Memory Used: {used} MB")?;
        }
        if let Some(init) = self.init_duration {
            write!(f, " Init Duration: {:.2} ms", init.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// Rounds `duration` up to a whole number of `granularity` units (at least one unit).
pub(crate) fn billed(duration: Duration, granularity: BillingGranularity) -> Duration {
    // u64 nanoseconds cover 584 years; the u128 division this avoids showed in profiles.
    let unit = granularity.unit();
    // Most runs are shorter than a unit: no division (a tenth of a fast handler's run was
    // this one, in a profile of the async bench).
    if duration <= unit {
        return unit;
    }
    let unit = unit.as_nanos() as u64;
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX - unit);
    Duration::from_nanos(nanos.div_ceil(unit) * unit)
}

/// A function's accumulated usage and its estimated cost.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// Billed requests (invocations that ran a handler).
    pub requests: u64,
    /// Sum of billed durations.
    pub billed_duration: Duration,
    /// Sum of billed init durations: on-demand cold starts (a provisioned instance's init is
    /// paid for by the provisioned capacity).
    pub init_duration: Duration,
    /// GB-seconds, init included.
    pub gb_seconds: f64,
    /// Of `requests`, those that ran on provisioned instances.
    pub provisioned_requests: u64,
    /// Of `gb_seconds`, those of invocations on provisioned instances (priced at
    /// [`Prices::provisioned_duration_per_gb_second`]).
    pub provisioned_gb_seconds: f64,
    /// GB-seconds of provisioned capacity: `min_instances` × memory × the time it has been
    /// enabled (priced at [`Prices::provisioned_concurrency_per_gb_second`]).
    pub provisioned_capacity_gb_seconds: f64,
    /// Estimated cost at the runtime's prices.
    pub cost: f64,
}

/// What a function's provisioned instances did, for [`Usage::with_provisioned`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provisioned {
    /// Invocations that ran on provisioned instances.
    pub(crate) requests: u64,
    /// Their billed duration.
    pub(crate) billed: Duration,
    /// Provisioned instances (`min_instances`).
    pub(crate) capacity: usize,
    /// How long they have been enabled.
    pub(crate) enabled: Duration,
}

impl Usage {
    /// Usage of `requests` invocations billed `billed` in all, plus `init` of init phases, at
    /// `memory_mb`, priced at `prices`.
    pub(crate) fn new(
        requests: u64,
        billed: Duration,
        init: Duration,
        memory_mb: u32,
        prices: &Prices,
    ) -> Self {
        let gb_seconds = f64::from(memory_mb) / 1024.0 * (billed + init).as_secs_f64();
        Self {
            requests,
            billed_duration: billed,
            init_duration: init,
            gb_seconds,
            provisioned_requests: 0,
            provisioned_gb_seconds: 0.0,
            provisioned_capacity_gb_seconds: 0.0,
            cost: gb_seconds * prices.per_gb_second
                + requests as f64 / 1e6 * prices.per_million_requests,
        }
    }

    /// This usage with the part that ran on provisioned instances, and the provisioned
    /// capacity, priced at their own prices.
    pub(crate) fn with_provisioned(
        mut self,
        provisioned: Provisioned,
        memory_mb: u32,
        prices: &Prices,
    ) -> Self {
        let gb = f64::from(memory_mb) / 1024.0;
        let on_provisioned = gb * provisioned.billed.as_secs_f64();
        let capacity = gb * provisioned.capacity as f64 * provisioned.enabled.as_secs_f64();
        self.provisioned_requests = provisioned.requests;
        self.provisioned_gb_seconds = on_provisioned;
        self.provisioned_capacity_gb_seconds = capacity;
        self.cost += on_provisioned
            * (prices.provisioned_duration_per_gb_second - prices.per_gb_second)
            + capacity * prices.provisioned_concurrency_per_gb_second;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_rounds_up_to_the_granularity() {
        let ms = BillingGranularity::Millisecond;
        let hundred = BillingGranularity::HundredMilliseconds;
        assert_eq!(
            billed(Duration::from_micros(1), ms),
            Duration::from_millis(1)
        );
        assert_eq!(billed(Duration::ZERO, ms), Duration::from_millis(1));
        assert_eq!(
            billed(Duration::from_micros(1_001), ms),
            Duration::from_millis(2)
        );
        assert_eq!(
            billed(Duration::from_millis(2), ms),
            Duration::from_millis(2)
        );
        assert_eq!(
            billed(Duration::from_millis(101), hundred),
            Duration::from_millis(200)
        );
        assert_eq!(
            billed(Duration::from_millis(100), hundred),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn gb_seconds_and_cost() {
        // 1,000 invocations of 1 s at 1,024 MB: 1,000 GB-s.
        let usage = Usage::new(
            1_000,
            Duration::from_secs(1_000),
            Duration::ZERO,
            1024,
            &Prices::new(0.00001, 0.20),
        );
        assert_eq!(usage.requests, 1_000);
        assert!((usage.gb_seconds - 1_000.0).abs() < 1e-9);
        assert!((usage.cost - (0.01 + 0.0002)).abs() < 1e-12);
    }

    #[test]
    fn report_includes_init_in_gb_seconds() {
        let report = UsageReport {
            request_id: RequestId::from_u128(7),
            duration: Duration::from_millis(10),
            billed_duration: Duration::from_millis(10),
            memory_mb: 2048,
            max_memory_used_mb: Some(61),
            init_duration: Some(Duration::from_millis(90)),
            provisioned: false,
        };
        assert!((report.gb_seconds() - 0.2).abs() < 1e-12);
        assert!(report
            .to_string()
            .contains("Max Memory Used: 61 MB Init Duration: 90.00 ms"));
    }
}
