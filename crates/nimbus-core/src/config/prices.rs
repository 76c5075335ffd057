//! [`Prices`]: what a GB-second and a million requests cost, for usage estimates.

/// Prices used for cost estimates; the defaults are Lambda's x86 on-demand prices.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Prices {
    /// Price of one GB-second of duration.
    pub per_gb_second: f64,
    /// Price of one million requests.
    pub per_million_requests: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            per_gb_second: 0.000_016_666_7,
            per_million_requests: 0.20,
        }
    }
}

impl Prices {
    /// Prices per GB-second and per million requests.
    pub fn new(per_gb_second: f64, per_million_requests: f64) -> Self {
        Self {
            per_gb_second,
            per_million_requests,
        }
    }
}
