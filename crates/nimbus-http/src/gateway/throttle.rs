//! Route throttling, as API Gateway's: a token bucket of `burst` tokens refilled at
//! `rate_per_second`, continuously.

use std::time::Duration;

use nimbus_core::{ConfigError, TokenBucket};

/// A route's throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThrottleSettings {
    pub(crate) rate_per_second: u32,
    pub(crate) burst: u32,
}

impl ThrottleSettings {
    /// Checks both fields (each at least 1).
    pub(crate) fn validate(self) -> Result<(), ConfigError> {
        if self.rate_per_second == 0 {
            return Err(ConfigError::new(
                "route",
                "rate_per_second",
                self.rate_per_second,
                "1..=4294967295 requests per second",
            ));
        }
        if self.burst == 0 {
            return Err(ConfigError::new(
                "route",
                "burst",
                self.burst,
                "1..=4294967295 requests",
            ));
        }
        Ok(())
    }
}

/// A route's live throttle.
#[derive(Debug)]
pub(crate) struct Throttle {
    bucket: TokenBucket,
    retry_after_secs: u64,
}

impl Throttle {
    /// A full bucket for valid `settings`.
    pub(crate) fn new(settings: ThrottleSettings) -> Self {
        let rate = f64::from(settings.rate_per_second.max(1));
        // `burst` tokens come back over burst / rate seconds.
        let period = Duration::from_secs_f64(f64::from(settings.burst.max(1)) / rate);
        Self {
            bucket: TokenBucket::new(settings.burst.max(1), period),
            // An empty bucket has its next token within 1 / rate seconds; Retry-After is
            // whole seconds, at least 1.
            retry_after_secs: ((1.0 / rate).ceil() as u64).max(1),
        }
    }

    /// `Ok` if the request may go on, else the seconds to wait (for `Retry-After`).
    pub(crate) fn admit(&self) -> Result<(), u64> {
        if self.bucket.try_take() {
            Ok(())
        } else {
            Err(self.retry_after_secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_or_burst_is_invalid() {
        let error = ThrottleSettings {
            rate_per_second: 0,
            burst: 1,
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.field, "rate_per_second");
        let error = ThrottleSettings {
            rate_per_second: 1,
            burst: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(error.field, "burst");
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_at_the_rate() {
        let throttle = Throttle::new(ThrottleSettings {
            rate_per_second: 2,
            burst: 3,
        });
        assert_eq!(throttle.admit(), Ok(()));
        assert_eq!(throttle.admit(), Ok(()));
        assert_eq!(throttle.admit(), Ok(()));
        assert_eq!(throttle.admit(), Err(1));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(throttle.admit(), Err(1), "half a second per token");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(throttle.admit(), Ok(()));
        assert_eq!(throttle.admit(), Err(1));
    }
}
