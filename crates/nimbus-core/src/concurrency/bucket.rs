//! The scale-rate token bucket: tokens per period, refilled continuously, with a burst of a
//! period's worth or paced one at a time.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket refilled at a number of tokens per `period`, continuously (Lambda refills
/// its 1,000-per-10-s scaling budget continuously rather than in steps). [`TokenBucket::new`]
/// holds a period's worth and starts full (the scale rate of functions: a burst, then the
/// rate); [`TokenBucket::paced`] holds one token and starts empty (the growth of event source
/// pollers: the rate, never a burst).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::TokenBucket;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bucket = TokenBucket::new(2, Duration::from_secs(60));
/// assert!(bucket.try_take() && bucket.try_take());
/// assert!(!bucket.try_take(), "the burst is spent until it refills");
/// # }
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_nanosecond: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled over `period`: a burst of `capacity` at once,
    /// then the rate.
    pub fn new(capacity: u32, period: Duration) -> Self {
        let capacity = f64::from(capacity);
        Self::build(capacity, period, capacity, capacity)
    }

    /// `per_period` tokens over `period`, one at a time: the bucket starts empty and holds at
    /// most one token, so tokens come at the rate and never in a burst, at the start or after
    /// a pause (Lambda's pollers grow by at most 300 a minute, not by 300 at once).
    pub fn paced(per_period: u32, period: Duration) -> Self {
        Self::build(f64::from(per_period), period, 1.0, 0.0)
    }

    fn build(per_period: f64, period: Duration, capacity: f64, tokens: f64) -> Self {
        Self {
            capacity,
            per_nanosecond: per_period / period.as_nanos() as f64,
            state: Mutex::new(State {
                tokens,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Takes one token if there is one. Only scaling decisions call this, so a mutex is fine.
    pub fn try_take(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.refilled_at).as_nanos() as f64;
        state.tokens = (state.tokens + elapsed * self.per_nanosecond).min(self.capacity);
        state.refilled_at = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there: zero if one is now. Lets a caller that found the
    /// bucket empty skip asking again (and taking its lock) until then.
    pub fn time_to_token(&self) -> Duration {
        let now = Instant::now();
        let state = self.state.lock();
        let elapsed = now.saturating_duration_since(state.refilled_at).as_nanos() as f64;
        let tokens = (state.tokens + elapsed * self.per_nanosecond).min(self.capacity);
        if tokens >= 1.0 {
            return Duration::ZERO;
        }
        let nanos = ((1.0 - tokens) / self.per_nanosecond).ceil();
        if nanos.is_finite() && nanos < u64::MAX as f64 {
            Duration::from_nanos(nanos as u64)
        } else {
            Duration::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_continuous_refill() {
        let bucket = TokenBucket::new(10, Duration::from_secs(10));
        for _ in 0..10 {
            assert!(bucket.try_take());
        }
        assert!(!bucket.try_take(), "burst spent");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!bucket.try_take(), "not yet one token back");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(), "one token per second");
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..10 {
            assert!(bucket.try_take());
        }
        assert!(!bucket.try_take(), "refill is capped at the burst size");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_bucket_gives_tokens_at_the_rate_and_never_a_burst() {
        let bucket = TokenBucket::paced(300, Duration::from_secs(60));
        assert!(!bucket.try_take(), "no burst at the start");
        assert_eq!(bucket.time_to_token(), Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(), "one token per 200 ms");
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(bucket.try_take(), "a pause leaves one token");
        assert!(!bucket.try_take(), "and no burst after it");
    }

    #[tokio::test(start_paused = true)]
    async fn says_when_the_next_token_comes() {
        let bucket = TokenBucket::new(2, Duration::from_secs(60));
        assert_eq!(bucket.time_to_token(), Duration::ZERO);
        assert!(bucket.try_take() && bucket.try_take());
        let wait = bucket.time_to_token();
        assert!(
            wait > Duration::from_millis(29_900) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        tokio::time::advance(wait).await;
        assert_eq!(bucket.time_to_token(), Duration::ZERO);
        assert!(bucket.try_take());
    }
}
