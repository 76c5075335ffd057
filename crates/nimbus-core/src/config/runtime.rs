//! The runtime's configuration: the shared concurrency limit, prices, and the region and
//! account that ARNs name.

use super::{PayloadLimits, Prices};
use crate::error::ConfigError;
use crate::permission::AccessSettings;
use crate::util::aws;

/// Runtime-wide settings, validated by [`crate::Runtime::new`].
///
/// # Example
///
/// ```
/// use nimbus_core::RuntimeConfig;
///
/// let config = RuntimeConfig::default().with_concurrency_limit(50);
/// assert_eq!(config.effective_min_unreserved(), 5);
/// let err = RuntimeConfig::default().with_concurrency_limit(0).validate().unwrap_err();
/// assert_eq!(err.field, "concurrency_limit");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Concurrent invocations across all functions (1..=1,000,000, default 1,000; Lambda's
    /// account limit).
    pub concurrency_limit: u32,
    /// Capacity that reservations may never take (default: a tenth of the limit, as Lambda
    /// keeps 100 of 1,000); at most `concurrency_limit`.
    pub min_unreserved: Option<u32>,
    /// Prices for cost estimates.
    pub prices: Prices,
    /// The region that ARNs in events, records and contexts name (default `us-east-1`).
    pub region: String,
    /// The account id that ARNs name: twelve digits (default `000000000000`).
    pub account_id: String,
    /// The largest JSON payloads of calls by name (default: Lambda's, 6 MB sync each way,
    /// 1 MB async).
    pub payload_limits: PayloadLimits,
    /// How callers no policy statement speaks of are treated (see
    /// [`permission`](crate::permission)).
    pub access: AccessSettings,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency_limit: 1_000,
            min_unreserved: None,
            prices: Prices::default(),
            region: aws::DEFAULT_REGION.to_owned(),
            account_id: aws::DEFAULT_ACCOUNT_ID.to_owned(),
            payload_limits: PayloadLimits::default(),
            access: AccessSettings::default(),
        }
    }
}

impl RuntimeConfig {
    /// Sets the runtime-wide concurrency limit.
    #[must_use]
    pub fn with_concurrency_limit(mut self, limit: u32) -> Self {
        self.concurrency_limit = limit;
        self
    }

    /// Sets the capacity that must stay unreserved.
    #[must_use]
    pub fn with_min_unreserved(mut self, min: u32) -> Self {
        self.min_unreserved = Some(min);
        self
    }

    /// Sets the prices used for cost estimates.
    #[must_use]
    pub fn with_prices(mut self, prices: Prices) -> Self {
        self.prices = prices;
        self
    }

    /// Sets the region ARNs name (`us-east-1`, `eu-west-2`, ...).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets the account id ARNs name (twelve digits).
    #[must_use]
    pub fn with_account_id(mut self, account_id: impl Into<String>) -> Self {
        self.account_id = account_id.into();
        self
    }

    /// Turns the permission model off (every caller may invoke everything) or back on
    /// (see [`AccessSettings::enforce`]).
    #[must_use]
    pub fn with_permissions_enforced(mut self, enforce: bool) -> Self {
        self.access.enforce = enforce;
        self
    }

    /// Requires roles: a function without one may call only functions whose policy allows
    /// anyone, may not be fed by a mapping, and may not name a destination's target (see
    /// [`AccessSettings::require`]).
    #[must_use]
    pub fn with_permissions_required(mut self, require: bool) -> Self {
        self.access.require = require;
        self
    }

    /// Whether identities of the runtime's own account are trusted without a statement
    /// (default yes; see [`AccessSettings::trust_same_account`]).
    #[must_use]
    pub fn with_same_account_trusted(mut self, trusted: bool) -> Self {
        self.access.trust_same_account = trusted;
        self
    }

    /// Sets the largest JSON payloads of calls by name.
    #[must_use]
    pub fn with_payload_limits(mut self, limits: PayloadLimits) -> Self {
        self.payload_limits = limits;
        self
    }

    /// The capacity reservations must leave free.
    pub fn effective_min_unreserved(&self) -> u32 {
        self.min_unreserved.unwrap_or(self.concurrency_limit / 10)
    }

    /// Checks every field against its allowed range.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1_000_000).contains(&self.concurrency_limit) {
            return Err(ConfigError::new(
                "runtime",
                "concurrency_limit",
                self.concurrency_limit,
                "1..=1000000",
            ));
        }
        if self.effective_min_unreserved() > self.concurrency_limit {
            return Err(ConfigError::new(
                "runtime",
                "min_unreserved",
                self.effective_min_unreserved(),
                format!("0..=concurrency_limit ({})", self.concurrency_limit),
            ));
        }
        let prices = &self.prices;
        for (field, price) in [
            ("prices.per_gb_second", prices.per_gb_second),
            ("prices.per_million_requests", prices.per_million_requests),
            (
                "prices.provisioned_concurrency_per_gb_second",
                prices.provisioned_concurrency_per_gb_second,
            ),
            (
                "prices.provisioned_duration_per_gb_second",
                prices.provisioned_duration_per_gb_second,
            ),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                return Err(ConfigError::new(
                    "runtime",
                    field,
                    price,
                    "a finite price >= 0",
                ));
            }
        }
        if !aws::is_region(&self.region) {
            return Err(ConfigError::new(
                "runtime",
                "region",
                &self.region,
                "a region name such as us-east-1",
            ));
        }
        if !aws::is_account_id(&self.account_id) {
            return Err(ConfigError::new(
                "runtime",
                "account_id",
                &self.account_id,
                "twelve digits",
            ));
        }
        self.payload_limits.validate()
    }
}
