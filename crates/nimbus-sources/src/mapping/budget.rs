//! A batch's time budget: its messages may be acknowledged only until the visibility timeout
//! of the oldest receipt passes, so an invocation starts only if it can end, and its
//! acknowledgement land, before then. Checked at build time for the batching window and the
//! function timeout, and at run time before every invocation and throttle retry.
//!
//! Not counted: a cold start. The function's timeout clock starts after its instance is
//! initialised, so an invocation that needs a new instance may take up to `init_timeout` more;
//! its acknowledgement can then be refused and the messages come back (at least once, never
//! lost). A visibility timeout of six times the function timeout, as Lambda recommends, leaves
//! room for it.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// The most room a batch keeps for its acknowledgement.
const MAX_ACK_ROOM: Duration = Duration::from_secs(1);

/// The room for an acknowledgement that the build-time check reserves: a tenth of the
/// visibility timeout, at most a second. At run time an invocation needs only half of it,
/// so that a batch gathered for its whole window still gets its first invocation.
pub(super) fn ack_room(visibility: Duration) -> Duration {
    (visibility / 10).min(MAX_ACK_ROOM)
}

/// Checks that a batch gathered for `window` can then run for `timeout` and be acknowledged
/// within `visibility`. Lambda only refuses a function timeout above the visibility timeout
/// (and recommends six times the timeout plus the window); nimbus refuses what would make an
/// acknowledgement late even without a retry.
pub(super) fn check(
    visibility: Duration,
    timeout: Duration,
    window: Duration,
) -> Result<(), ConfigError> {
    let usable = visibility.saturating_sub(ack_room(visibility));
    if timeout > usable {
        return Err(ConfigError::new(
            "mapping",
            "function timeout",
            timeout,
            format!(
                "at most {usable:?}: the queue's visibility timeout ({visibility:?}) less \
                 {:?} for the acknowledgement",
                ack_room(visibility)
            ),
        ));
    }
    let left = usable - timeout;
    if window > left {
        return Err(ConfigError::new(
            "mapping",
            "batching_window",
            window,
            format!(
                "{:?}..={left:?}: the batching window, the function timeout ({timeout:?}) and \
                 {:?} for the acknowledgement must fit in the queue's visibility timeout \
                 ({visibility:?})",
                Duration::ZERO,
                ack_room(visibility)
            ),
        ));
    }
    Ok(())
}

/// How long one received batch has: until its oldest receipt expires.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    /// When the oldest receipt expires; `None` for a source without a visibility timeout.
    expires: Option<Instant>,
    /// What an invocation needs: the function timeout and half the acknowledgement's room.
    need: Duration,
    /// Nothing was awaited between the receive and the batch's processing (see
    /// [`Budget::waited`]).
    fresh: bool,
}

impl Budget {
    /// The budget of a batch whose first messages arrived at `received`.
    pub(super) fn new(received: Instant, visibility: Option<Duration>, timeout: Duration) -> Self {
        match visibility {
            Some(visibility) => Self {
                // Past the clock's range there is no deadline to keep.
                expires: received.checked_add(visibility),
                need: timeout.saturating_add(ack_room(visibility) / 2),
                fresh: true,
            },
            None => Self {
                expires: None,
                need: Duration::ZERO,
                fresh: true,
            },
        }
    }

    /// The same budget, for a batch whose receive was followed by a wait (a release of what
    /// did not fit the payload cap): its first invocation looks at the clock too.
    pub(super) fn waited(self) -> Self {
        Self {
            fresh: false,
            ..self
        }
    }

    /// Whether nothing was awaited since the receive, so that the first invocation, started
    /// at once, is within the time the build-time check left it.
    pub(super) fn fresh(&self) -> bool {
        self.fresh
    }

    /// Whether an invocation started after `delay` would end, its acknowledgement included,
    /// before the oldest receipt expires.
    pub(super) fn allows(&self, delay: Duration) -> bool {
        let Some(expires) = self.expires else {
            return true;
        };
        Instant::now()
            .checked_add(delay.saturating_add(self.need))
            .is_some_and(|end| end <= expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_a_tenth_of_the_visibility_timeout_up_to_a_second() {
        assert_eq!(ack_room(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(ack_room(Duration::from_secs(30)), Duration::from_secs(1));
    }

    #[test]
    fn window_and_timeout_must_fit() {
        let s = Duration::from_secs;
        assert!(check(s(30), s(3), s(0)).is_ok());
        assert!(check(s(30), s(19), s(10)).is_ok());
        assert_eq!(
            check(s(30), s(30), s(0)).unwrap_err().field,
            "function timeout"
        );
        assert_eq!(
            check(s(30), s(20), s(10)).unwrap_err().field,
            "batching_window"
        );
        assert!(check(s(1), Duration::from_millis(500), s(0)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_invocation_must_end_before_the_oldest_receipt_expires() {
        let s = Duration::from_secs;
        let budget = Budget::new(Instant::now(), Some(s(30)), s(10));
        assert!(budget.allows(s(19)));
        assert!(!budget.allows(s(20)));
        tokio::time::advance(s(19)).await;
        assert!(budget.allows(Duration::ZERO));
        tokio::time::advance(s(1)).await;
        assert!(!budget.allows(Duration::ZERO));
        let unbounded = Budget::new(Instant::now(), None, s(10));
        assert!(unbounded.allows(Duration::MAX));
    }
}
