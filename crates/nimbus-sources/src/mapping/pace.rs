//! How long a poller's invocations take, and so how many messages it may hold at batch size 1.
//!
//! At batch size 1 every message is an invocation of its own, and a receive, a delete and a
//! round of the poller's loop for each cost more than the invocation of a short handler. A
//! poller whose invocations take microseconds therefore receives several messages at once (at
//! most 10, as an SQS receive), invokes them one after another and deletes those that
//! succeeded together. It holds no more than it expects to finish within [`HOLD_FOR`], so a
//! message waits at most about that long behind the others; a slow handler gets one message
//! at a time, as before, and a poller whose invocations slow down hands back what it holds.
//! What holds a poller counts as an invocation's duration: a cold start's init, the wait
//! before a throttled invocation's retry, and [`REFUSED`] for an invocation refused without
//! a report (an init that failed or timed out, say), whose wait nothing measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// About how long a message may wait in a poller's hands behind the others it received.
const HOLD_FOR: Duration = Duration::from_micros(100);

/// The most messages a poller holds at batch size 1: an SQS receive's maximum.
pub(super) const MOST_HELD: usize = 10;

/// What an invocation refused without a report counts as: long enough to hand back what the
/// poller holds, and forgotten after a few dozen short invocations.
pub(super) const REFUSED: Duration = Duration::from_millis(1);

/// Nothing measured yet.
const UNKNOWN: u64 = u64::MAX;

/// A moving average of a poller's invocation durations, in nanoseconds. Atomic only because the
/// poller is shared by reference across awaits; only its own task writes it.
#[derive(Debug)]
pub(super) struct Pace {
    mean_nanos: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            mean_nanos: AtomicU64::new(UNKNOWN),
        }
    }
}

impl Pace {
    /// Notes an invocation that ran for `took`: the average moves an eighth of the way, and at
    /// once to a duration longer than it (a handler that slows down is believed at once, one
    /// that speeds up after a few invocations).
    pub(super) fn note(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
        let mean = self.mean_nanos.load(Ordering::Relaxed);
        let next = if mean == UNKNOWN || took >= mean {
            took
        } else {
            mean - (mean - took) / 8
        };
        self.mean_nanos.store(next, Ordering::Relaxed);
    }

    /// How many messages the poller may hold now: those it expects to finish within
    /// [`HOLD_FOR`], at least one and at most [`MOST_HELD`]; one until an invocation was timed.
    pub(super) fn may_hold(&self) -> usize {
        let mean = self.mean_nanos.load(Ordering::Relaxed);
        if mean == UNKNOWN {
            return 1;
        }
        let budget = u64::try_from(HOLD_FOR.as_nanos()).unwrap_or(u64::MAX);
        let n = budget / mean.max(1);
        usize::try_from(n).unwrap_or(MOST_HELD).clamp(1, MOST_HELD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_until_an_invocation_was_timed() {
        assert_eq!(Pace::default().may_hold(), 1);
    }

    #[test]
    fn short_invocations_hold_up_to_ten_and_long_ones_one() {
        let pace = Pace::default();
        pace.note(Duration::from_nanos(300));
        assert_eq!(pace.may_hold(), MOST_HELD);
        pace.note(Duration::ZERO);
        assert_eq!(pace.may_hold(), MOST_HELD);
        pace.note(Duration::from_micros(25));
        assert_eq!(pace.may_hold(), 4);
        pace.note(Duration::from_millis(3));
        assert_eq!(pace.may_hold(), 1);
    }

    #[test]
    fn a_slower_invocation_counts_at_once_and_a_faster_one_gradually() {
        let pace = Pace::default();
        pace.note(Duration::from_micros(1));
        pace.note(Duration::from_micros(50));
        assert_eq!(pace.may_hold(), 2, "believed at once");
        pace.note(Duration::from_micros(1));
        // 50 µs less an eighth of 49: 43.875 µs.
        assert_eq!(pace.may_hold(), 2);
        for _ in 0..40 {
            pace.note(Duration::from_micros(1));
        }
        assert_eq!(pace.may_hold(), MOST_HELD);
    }

    #[test]
    fn a_refused_invocation_counts_as_a_long_one() {
        let pace = Pace::default();
        pace.note(Duration::from_micros(1));
        assert_eq!(pace.may_hold(), MOST_HELD);
        pace.note(REFUSED);
        assert_eq!(pace.may_hold(), 1);
    }

    #[test]
    fn absurd_durations_do_not_overflow() {
        let pace = Pace::default();
        pace.note(Duration::MAX);
        assert_eq!(pace.may_hold(), 1);
        pace.note(Duration::ZERO);
        assert_eq!(pace.may_hold(), 1);
    }
}
