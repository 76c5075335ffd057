//! Retries: a [`RetryPolicy`] trait, the default [`Retries`] policy, and [`Backoff`].
//!
//! # Retry storms
//!
//! Retrying a failure adds load to whatever failed; when many events fail together (a broken
//! dependency), immediate retries multiply the load at the worst moment. nimbus therefore
//! waits before every retry, growing the wait exponentially, and spreads the waits with
//! jitter so that events that failed together do not retry together. Retries are capped
//! (`max_retries`, Lambda's 0..=2 for async invocations) and an event older than its maximum
//! age is not retried at all. Throttles are not failures of the event: they are requeued with
//! their own backoff and never use up a retry.

mod backoff;

use std::time::Duration;

pub use backoff::Backoff;

use crate::error::{ConfigError, InvokeError, OutcomeKind, RetryHint};

/// Decides whether, and after how long, a failed attempt is retried.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::{InvokeError, RetryPolicy};
///
/// /// Retry timeouts only, once, after a second.
/// #[derive(Debug)]
/// struct TimeoutsOnce;
///
/// impl RetryPolicy for TimeoutsOnce {
///     fn retry(&self, attempt: u32, failure: &InvokeError) -> Option<Duration> {
///         (attempt == 1 && matches!(failure, InvokeError::Timeout(_))).then_some(Duration::from_secs(1))
///     }
/// }
///
/// let timeout = InvokeError::Timeout(Duration::from_secs(3));
/// assert_eq!(TimeoutsOnce.retry(1, &timeout), Some(Duration::from_secs(1)));
/// assert_eq!(TimeoutsOnce.retry(2, &timeout), None);
/// assert_eq!(TimeoutsOnce.retry(1, &InvokeError::Panic("boom".into())), None);
/// // A function takes it with `Function::with_retry_policy(TimeoutsOnce)`.
/// ```
pub trait RetryPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// `attempt` is the number of the attempt that just failed (1 for the first). Returns the
    /// delay before the next attempt, or `None` to stop and take the failure path.
    fn retry(&self, attempt: u32, failure: &InvokeError) -> Option<Duration>;
}

/// The default policy: up to `max_retries` retries of function errors, timeouts, panics and
/// init failures, waiting [`Backoff::delay`] before each; a handler's [`RetryHint`] is obeyed
/// (`Never` stops at once, `After(d)` waits at least `d`).
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    max_retries: u32,
    backoff: Backoff,
}

impl Retries {
    /// Largest `max_retries` for async invocations (Lambda: 2).
    pub const MAX_ASYNC_RETRIES: u32 = 2;

    /// A policy of at most `max_retries` retries (0..=2) with this backoff.
    ///
    /// # Errors
    ///
    /// `max_retries` out of range.
    pub fn new(max_retries: u32, backoff: Backoff) -> Result<Self, ConfigError> {
        if max_retries > Self::MAX_ASYNC_RETRIES {
            return Err(ConfigError::new(
                "function",
                "max_retries",
                max_retries,
                "0..=2",
            ));
        }
        Ok(Self {
            max_retries,
            backoff,
        })
    }

    /// The retry limit.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }
}

impl Default for Retries {
    /// Lambda's async defaults: 2 retries, about 1 min then 2 min apart.
    fn default() -> Self {
        Self {
            max_retries: 2,
            backoff: Backoff::async_retries(),
        }
    }
}

impl RetryPolicy for Retries {
    fn retry(&self, attempt: u32, failure: &InvokeError) -> Option<Duration> {
        if attempt > self.max_retries {
            return None;
        }
        let hint = match failure {
            InvokeError::Function(error) => error.retry_hint(),
            _ => RetryHint::Default,
        };
        let retryable = matches!(
            failure.kind(),
            OutcomeKind::Error
                | OutcomeKind::Timeout
                | OutcomeKind::Panic
                | OutcomeKind::InitFailure
        );
        if !retryable {
            return None;
        }
        let delay = self.backoff.delay(attempt);
        match hint {
            RetryHint::Never => None,
            RetryHint::After(at_least) => Some(delay.max(at_least)),
            _ => Some(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FunctionError;

    #[test]
    fn stops_after_max_retries_and_obeys_hints() {
        let policy = Retries::new(2, Backoff::fixed(Duration::from_secs(5)).unwrap()).unwrap();
        let error = || InvokeError::Function(FunctionError::msg("x"));
        assert_eq!(policy.retry(1, &error()), Some(Duration::from_secs(5)));
        assert_eq!(policy.retry(2, &error()), Some(Duration::from_secs(5)));
        assert_eq!(policy.retry(3, &error()), None);
        let never = InvokeError::Function(FunctionError::msg("x").not_retryable());
        assert_eq!(policy.retry(1, &never), None);
        let later =
            InvokeError::Function(FunctionError::msg("x").retry_after(Duration::from_secs(30)));
        assert_eq!(policy.retry(1, &later), Some(Duration::from_secs(30)));
        assert_eq!(
            policy.retry(1, &InvokeError::Timeout(Duration::from_secs(1))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            policy.retry(1, &InvokeError::Panic("p".into())),
            Some(Duration::from_secs(5))
        );
        assert_eq!(policy.retry(1, &InvokeError::Payload("bad".into())), None);
    }

    #[test]
    fn max_retries_is_validated() {
        let err = Retries::new(3, Backoff::default()).unwrap_err();
        assert_eq!((err.field, err.allowed.as_str()), ("max_retries", "0..=2"));
    }
}
