//! [`Prices`]: what a GB-second (on demand, on provisioned instances, and of provisioned
//! capacity) and a million requests cost, for usage estimates.

/// Prices used for cost estimates; the defaults are Lambda's x86 prices (us-east-1).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Prices {
    /// Price of one GB-second of duration on demand.
    pub per_gb_second: f64,
    /// Price of one million requests.
    pub per_million_requests: f64,
    /// Price of one GB-second of provisioned concurrency while it is enabled (`min_instances`
    /// × memory × time registered), whether used or not.
    pub provisioned_concurrency_per_gb_second: f64,
    /// Price of one GB-second of duration of an invocation on a provisioned instance.
    pub provisioned_duration_per_gb_second: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            per_gb_second: 0.000_016_666_7,
            per_million_requests: 0.20,
            provisioned_concurrency_per_gb_second: 0.000_004_166_7,
            provisioned_duration_per_gb_second: 0.000_009_722_2,
        }
    }
}

impl Prices {
    /// Prices per GB-second on demand and per million requests (provisioned prices at their
    /// defaults).
    pub fn new(per_gb_second: f64, per_million_requests: f64) -> Self {
        Self {
            per_gb_second,
            per_million_requests,
            ..Self::default()
        }
    }

    /// Sets the prices of provisioned concurrency: per GB-second of capacity while enabled,
    /// and per GB-second of duration on provisioned instances.
    #[must_use]
    pub fn with_provisioned(
        mut self,
        concurrency_per_gb_second: f64,
        duration_per_gb_second: f64,
    ) -> Self {
        self.provisioned_concurrency_per_gb_second = concurrency_per_gb_second;
        self.provisioned_duration_per_gb_second = duration_per_gb_second;
        self
    }
}
