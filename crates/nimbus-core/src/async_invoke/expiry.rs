//! Maximum event age while an event waits: the age timer takes an event out of the ready queue
//! when it passes `max_event_age` and sends it down the failure path (`EventAgeExceeded`),
//! without waiting for capacity, as Lambda does for a throttled function.
//!
//! One timer per function, only while events wait: it sleeps until the earliest deadline it
//! knows of (`age_deadline`) and exits when the queue is empty. Events entering the queue
//! compare their deadline with it (one atomic load: a fresh event's deadline is never the
//! earliest), and only an earlier one (a retry, events handed back by a worker) moves it and
//! wakes the timer, or starts one when none runs. Deadlines closer together than
//! [`EXPIRY_BATCH`] are handled by one scan of the queue.
//!
//! A worker tests each event it takes against the age with an [`AgeCheck`]: bounds read from
//! the clock once a millisecond, so that nearly every event is judged by one comparison.
//!
//! Expired events are delivered by a task of their own, so a slow destination does not hold
//! the timer; the events it has not reached go back to the queue when it ends for any reason.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ready::Ready;
use super::{AsyncInvoker, Condition, Queued};
use crate::util::far_future;

/// Deadlines closer together than this are handled by one scan: an event may leave up to this
/// much after its maximum age.
const EXPIRY_BATCH: Duration = Duration::from_millis(100);

/// No deadline: no age timer runs.
const NONE: u64 = u64::MAX;

/// How long an [`AgeCheck`] keeps its bounds before it reads them again from the clock.
const AGE_CHECK_SPAN: Duration = Duration::from_millis(1);

/// A worker's test of events against the maximum age, by comparisons alone: a subtraction of
/// instants costs about fifty instructions, a comparison a few. Computed at one instant and kept
/// for [`AGE_CHECK_SPAN`], its bounds decide every event but those that reach their maximum
/// age within that span, which get the exact test.
pub(super) struct AgeCheck {
    max_age: Duration,
    /// The bounds hold for instants before this one.
    until: Instant,
    /// Events accepted before this are past their age (`None`: no event is).
    expired_before: Option<Instant>,
    /// Events accepted at or after this are within their age (`None`: every event is).
    fresh_from: Option<Instant>,
}

impl AgeCheck {
    /// A check whose bounds are read at its first use, at `now` or later.
    pub(super) fn new(max_age: Duration, now: Instant) -> Self {
        Self {
            max_age,
            until: now,
            expired_before: None,
            fresh_from: None,
        }
    }

    /// Whether an event accepted at `accepted_at` is older than the maximum age at `now`
    /// (`now` never earlier than at the last call): the same answer as
    /// [`AsyncInvoker::expired`]. Inlined for the common answer, a fresh event within the span.
    #[inline]
    pub(super) fn expired(&mut self, accepted_at: Instant, now: Instant) -> bool {
        if now < self.until && self.fresh_from.is_none_or(|fresh| accepted_at >= fresh) {
            return false;
        }
        self.expired_slow(accepted_at, now)
    }

    #[inline(never)]
    fn expired_slow(&mut self, accepted_at: Instant, now: Instant) -> bool {
        if now >= self.until {
            // From `now` until `until`, the exact cutoff (`now` less the age) lies between
            // these two bounds.
            self.until = now.checked_add(AGE_CHECK_SPAN).unwrap_or_else(far_future);
            self.expired_before = now.checked_sub(self.max_age);
            self.fresh_from = self.until.checked_sub(self.max_age);
        }
        match (self.fresh_from, self.expired_before) {
            (None, _) => false,
            (Some(fresh), _) if accepted_at >= fresh => false,
            (_, Some(expired)) if accepted_at < expired => true,
            _ => now.saturating_duration_since(accepted_at) > self.max_age,
        }
    }
}

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// The deadline of an event accepted at `accepted_at`, in nanoseconds from the epoch: the
    /// first instant at which it is older than `max_event_age`.
    fn deadline_of(&self, accepted_at: Instant) -> u64 {
        let state = &self.state;
        let since = accepted_at.saturating_duration_since(state.age_epoch) + state.max_event_age;
        u64::try_from(since.as_nanos())
            .unwrap_or(NONE - 1)
            .saturating_add(1)
            .min(NONE - 1)
    }

    fn instant_of(&self, deadline: u64) -> Instant {
        self.state
            .age_epoch
            .checked_add(Duration::from_nanos(deadline))
            .unwrap_or_else(far_future)
    }

    /// Called after events entered the ready queue, the oldest of them accepted at `oldest`:
    /// moves the age timer's deadline earlier if it must, and starts the timer if none runs.
    pub(super) fn watch_age(self: &Arc<Self>, oldest: Instant) {
        let deadline = self.deadline_of(oldest);
        let state = &self.state;
        if deadline >= state.age_deadline.load(Ordering::SeqCst) {
            return;
        }
        let before = state.age_deadline.fetch_min(deadline, Ordering::SeqCst);
        if before == NONE {
            // This call moved the deadline off `NONE`: it starts the timer.
            let this = Arc::clone(self);
            self.exec.spawn(async move { this.age_timer().await });
        } else if deadline < before {
            state.age_changed.notify_one();
        }
    }

    /// Whether `queued` is older than the maximum age at `at`.
    pub(super) fn expired(&self, queued: &Queued<E>, at: Instant) -> bool {
        at.saturating_duration_since(queued.accepted_at)
            > self.exec.config().async_invoke.max_event_age
    }

    /// [`watch_age`](Self::watch_age) for an event just accepted at `accepted_at`, with one
    /// load instead of the deadline's arithmetic (a tenth of `invoke_async`). While a timer
    /// runs, its deadline is that of an event already queued: accepted earlier, or by a caller
    /// that read the clock while this one was between its clock read and its push. The
    /// timer's scan at that deadline takes every event past its age, this one included, so
    /// the event leaves at most that moment (plus [`EXPIRY_BATCH`]) late.
    pub(super) fn watch_fresh_age(self: &Arc<Self>, accepted_at: Instant) {
        if self.state.age_deadline.load(Ordering::SeqCst) == NONE {
            self.watch_age(accepted_at);
        }
    }

    /// Puts events a worker took back at the front of the queue and watches their age;
    /// returns the queue's depth.
    pub(super) fn requeue(self: &Arc<Self>, batch: &mut VecDeque<Queued<E>>) -> usize {
        self.requeue_beyond(batch, 0)
    }

    /// As [`requeue`](Self::requeue), for the events after the first `keep`.
    pub(super) fn requeue_beyond(
        self: &Arc<Self>,
        batch: &mut VecDeque<Queued<E>>,
        keep: usize,
    ) -> usize {
        let oldest = batch.iter().skip(keep).map(|q| q.accepted_at).min();
        let depth = self.state.requeue_front(batch, keep);
        if let Some(oldest) = oldest {
            self.watch_age(oldest);
        }
        depth
    }

    /// Sleeps until the earliest deadline, then takes every expired event out of the queue
    /// and sends it down the failure path. Exits when the queue is empty or at the end of the
    /// grace period.
    async fn age_timer(self: Arc<Self>) {
        let state = &self.state;
        let mut scanned: Option<Instant> = None;
        loop {
            let deadline = self.instant_of(state.age_deadline.load(Ordering::SeqCst));
            let wake = scanned.map_or(deadline, |at| deadline.max(at + EXPIRY_BATCH));
            if Instant::now() < wake {
                let changed = state.age_changed.notified();
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    // An earlier deadline: sleep again until it.
                    () = changed => continue,
                    () = self.exec.hard_stop().cancelled() => return,
                }
            }
            if self.exec.is_stopped() {
                return;
            }
            let now = Instant::now();
            scanned = Some(now);
            let (expired, last, overflowed) = {
                let mut ready = state.lock_ready();
                let mut expired = VecDeque::new();
                let mut kept = Ready::default();
                let mut next = NONE;
                for queued in ready.take_all() {
                    if self.expired(&queued, now) {
                        expired.push_back(queued);
                    } else {
                        next = next.min(self.deadline_of(queued.accepted_at));
                        kept.push_back(queued);
                    }
                }
                ready.events = kept;
                // Under the lock: an event pushed after this is seen by its producer's
                // `watch_age`, which starts a new timer once this one has stopped (decided
                // here, so that two never run).
                state.age_deadline.store(next, Ordering::SeqCst);
                // Looked at under the lock, where nothing else can move it into the queue
                // unseen: an arrival that found the queue locked by this scan pushed into the
                // overflow, and may have read the deadline before it was cleared, starting no
                // timer.
                let overflowed = next == NONE && !state.overflow.is_empty();
                (expired, next == NONE, overflowed)
            };
            if !expired.is_empty() {
                let expiring = Expiring {
                    function: Arc::clone(&self),
                    events: expired,
                };
                self.exec.spawn(expiring.run());
            }
            if last {
                if overflowed {
                    // A timer for what the overflow held, its deadline counted from this scan
                    // (later than its own by at most the scan).
                    self.watch_age(now);
                }
                return;
            }
        }
    }
}

/// Expired events on their way down the failure path; dropped, it puts back those it has not
/// reached, for the age timer or the hand-back.
struct Expiring<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    function: Arc<AsyncInvoker<E, O>>,
    events: VecDeque<Queued<E>>,
}

impl<E, O> Expiring<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    async fn run(mut self) {
        let function = Arc::clone(&self.function);
        while let Some(queued) = self.events.pop_front() {
            if function.exec.is_stopped() {
                self.events.push_front(queued);
                return;
            }
            function
                .fail(queued, Condition::EventAgeExceeded, None)
                .await;
        }
    }
}

impl<E, O> Drop for Expiring<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    fn drop(&mut self) {
        if !self.events.is_empty() {
            self.function.requeue(&mut self.events);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the age and however the clock moves, the bounds answer as the exact test,
        /// at the age itself and a nanosecond either side of it too.
        #[test]
        fn the_age_check_answers_as_the_exact_test(
            max_age_ns in 1u64..4_000_000,
            steps in vec((0u64..1_500_000, 0u64..8_000_000, -1i64..=1, any::<bool>()), 1..300),
        ) {
            let max_age = Duration::from_nanos(max_age_ns);
            let start = Instant::now() + Duration::from_secs(10);
            let mut check = AgeCheck::new(max_age, start);
            let mut now = start;
            for (advance, age, nudge, at_the_edge) in steps {
                now += Duration::from_nanos(advance);
                let age = if at_the_edge { max_age_ns.saturating_add_signed(nudge) } else { age };
                let accepted_at = now - Duration::from_nanos(age);
                let exact = now.saturating_duration_since(accepted_at) > max_age;
                prop_assert_eq!(check.expired(accepted_at, now), exact, "age {} ns", age);
            }
        }
    }
}
