//! Exponential backoff with jitter.

use std::time::Duration;

use crate::error::ConfigError;

/// Shortest first delay.
const MIN_INITIAL: Duration = Duration::from_millis(1);
/// Longest first delay.
const MAX_INITIAL: Duration = Duration::from_secs(3_600);
/// Longest delay.
const MAX_MAX: Duration = Duration::from_secs(86_400);

/// Exponential backoff: the `n`th delay is `initial × multiplier^(n-1)`, capped at `max`, then
/// shortened by a random fraction of up to `jitter` (0.0 = exact, 0.2 = up to 20 % shorter).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::Backoff;
///
/// let backoff = Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(60), 0.0).unwrap();
/// assert_eq!(backoff.delay(1), Duration::from_secs(1));
/// assert_eq!(backoff.delay(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay(10), Duration::from_secs(60));
/// assert!(Backoff::new(Duration::ZERO, 2.0, Duration::from_secs(1), 0.0).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// A validated backoff.
    ///
    /// # Errors
    ///
    /// `initial` outside 1 ms..=1 h, `multiplier` outside 1.0..=10.0, `max` below `initial` or
    /// above 24 h, `jitter` outside 0.0..=1.0.
    pub fn new(
        initial: Duration,
        multiplier: f64,
        max: Duration,
        jitter: f64,
    ) -> Result<Self, ConfigError> {
        let backoff = Self {
            initial,
            multiplier,
            max,
            jitter,
        };
        backoff.validate()?;
        Ok(backoff)
    }

    /// The same delay every time, without jitter.
    ///
    /// # Errors
    ///
    /// `delay` outside 1 ms..=1 h (the range of [`Backoff::new`]'s `initial`), naming the
    /// field `delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use nimbus_core::Backoff;
    ///
    /// assert_eq!(Backoff::fixed(Duration::from_secs(5))?.delay(3), Duration::from_secs(5));
    /// assert_eq!(Backoff::fixed(Duration::MAX).unwrap_err().field, "delay");
    /// # Ok::<(), nimbus_core::ConfigError>(())
    /// ```
    pub fn fixed(delay: Duration) -> Result<Self, ConfigError> {
        if !(MIN_INITIAL..=MAX_INITIAL).contains(&delay) {
            return Err(ConfigError::new("backoff", "delay", delay, "1ms..=1h"));
        }
        Ok(Self {
            initial: delay,
            multiplier: 1.0,
            max: delay,
            jitter: 0.0,
        })
    }

    /// Checks every field against its range (as [`Backoff::new`] does); every constructor
    /// validates, so this holds for any `Backoff`. Configurations that hold one check it again
    /// when they are validated.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] of scope `backoff` naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, value: &dyn std::fmt::Debug, allowed: &str| {
            Err(ConfigError::new("backoff", field, value, allowed))
        };
        if !(MIN_INITIAL..=MAX_INITIAL).contains(&self.initial) {
            return err("initial", &self.initial, "1ms..=1h");
        }
        if !(1.0..=10.0).contains(&self.multiplier) {
            return err("multiplier", &self.multiplier, "1.0..=10.0");
        }
        if !(self.initial..=MAX_MAX).contains(&self.max) {
            return err("max", &self.max, "initial..=24h");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return err("jitter", &self.jitter, "0.0..=1.0");
        }
        Ok(())
    }

    /// Lambda's async retry delays: 1 min, then 2 min, up to 20 % shorter.
    pub fn async_retries() -> Self {
        Self {
            initial: Duration::from_secs(60),
            multiplier: 2.0,
            max: Duration::from_secs(120),
            jitter: 0.2,
        }
    }

    /// Lambda's throttle backoff: 1 s doubling to 5 min, up to 20 % shorter.
    pub fn throttles() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }

    /// The delay before retry number `n` (1 for the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = grown.min(self.max.as_secs_f64());
        let shortened = if self.jitter > 0.0 {
            capped * (1.0 - self.jitter * fastrand::f64())
        } else {
            capped
        };
        // Validation keeps this in range; saturate rather than panic all the same.
        Duration::try_from_secs_f64(shortened).unwrap_or(self.max)
    }

    /// The longest delay this backoff can produce for retry `n` (before jitter).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::try_from_secs_f64(grown.min(self.max.as_secs_f64())).unwrap_or(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::async_retries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_grow_stay_capped_and_jitter_only_shortens(
            initial_ms in 1u64..10_000,
            multiplier in 1.0f64..10.0,
            extra_ms in 0u64..1_000_000,
            jitter in 0.0f64..=1.0,
            n in 1u32..200,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let backoff = Backoff::new(initial, multiplier, max, jitter).unwrap();
            let ceiling = backoff.ceiling(n);
            prop_assert!(ceiling <= max);
            prop_assert!(ceiling >= backoff.ceiling(n.saturating_sub(1).max(1)));
            let delay = backoff.delay(n);
            prop_assert!(delay <= ceiling + Duration::from_nanos(1));
            prop_assert!(delay.as_secs_f64() >= ceiling.as_secs_f64() * (1.0 - jitter) - 1e-9);
        }
    }

    #[test]
    fn fixed_validates_its_delay() {
        assert_eq!(Backoff::fixed(Duration::ZERO).unwrap_err().field, "delay");
        assert_eq!(Backoff::fixed(Duration::MAX).unwrap_err().field, "delay");
        let fixed = Backoff::fixed(Duration::from_secs(3_600)).unwrap();
        assert_eq!(fixed.delay(u32::MAX), Duration::from_secs(3_600));
        assert!(fixed.validate().is_ok());
    }

    #[test]
    fn invalid_fields_are_named() {
        let one = Duration::from_secs(1);
        assert_eq!(
            Backoff::new(one, 0.5, one, 0.0).unwrap_err().field,
            "multiplier"
        );
        assert_eq!(
            Backoff::new(one, 2.0, Duration::from_millis(1), 0.0)
                .unwrap_err()
                .field,
            "max"
        );
        assert_eq!(
            Backoff::new(one, 2.0, one, 1.5).unwrap_err().field,
            "jitter"
        );
    }
}
