//! The scale-rate token bucket: `capacity` tokens per period, refilled continuously, starting
//! full (a burst) or empty.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket refilled at `capacity` tokens per `period`, continuously (Lambda refills its
/// 1,000-per-10-s scaling budget continuously rather than in steps). Used for the scale rate
/// of functions and of event source pollers.
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
        Self::holding(capacity, period, f64::from(capacity))
    }

    /// An empty bucket of `capacity` tokens refilled over `period`: the rate from the start,
    /// the first token after `period / capacity` (Lambda's pollers grow by at most 300 a
    /// minute, not by 300 at once).
    pub fn empty(capacity: u32, period: Duration) -> Self {
        Self::holding(capacity, period, 0.0)
    }

    fn holding(capacity: u32, period: Duration, tokens: f64) -> Self {
        let capacity = f64::from(capacity);
        Self {
            capacity,
            per_nanosecond: capacity / period.as_nanos() as f64,
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
    async fn an_empty_bucket_gives_tokens_at_the_rate_from_the_start() {
        let bucket = TokenBucket::empty(300, Duration::from_secs(60));
        assert!(!bucket.try_take(), "no burst");
        assert_eq!(bucket.time_to_token(), Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(199)).await;
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(bucket.try_take(), "one token per 200 ms");
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..300 {
            assert!(bucket.try_take());
        }
        assert!(!bucket.try_take(), "refill is capped at the capacity");
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
