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
        let oldest = batch.iter().map(|q| q.accepted_at).min();
        let depth = self.state.requeue_front(batch);
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
            let (expired, last) = {
                let mut ready = state.ready.lock();
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
                *ready = kept;
                // Under the lock: an event pushed after this is seen by its producer's
                // `watch_age`, which starts a new timer once this one has stopped (decided
                // here, so that two never run).
                state.age_deadline.store(next, Ordering::SeqCst);
                (expired, next == NONE)
            };
            if !expired.is_empty() {
                let expiring = Expiring {
                    function: Arc::clone(&self),
                    events: expired,
                };
                self.exec.spawn(expiring.run());
            }
            if last {
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
