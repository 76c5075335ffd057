//! Arrivals that find the ready queue locked: pushed into a lock-free overflow rather than
//! waiting for the lock, and moved into the ready queue by whoever locks it next.
//!
//! An arrival used to wait for the lock. A worker holding it (to take events) on a busy
//! machine can lose its thread for a whole time slice, and the caller then waited that long:
//! in an open loop at half of capacity, the sender parked on the lock about fifty times a run
//! and fell up to milliseconds behind, so every event sent after such a wait was late. A Tokio
//! mpsc sender never waits for its receiver; now an async arrival does not either.
//!
//! What holds with the overflow:
//! - **Order.** An arrival that gets the lock moves the overflow in before its own event, and
//!   so does every other holder: the events of one caller stay in the order it sent them.
//! - **Hand-back.** An arrival counts itself in `overflowing` before it looks at `sealed`;
//!   the hand-back seals the queue, then waits for those counted before it takes the overflow
//!   (`AsyncState::hand_back`).
//! - **Wake-ups, workers leaving, the age timer.** Each reads a count or flag after the push,
//!   as an arrival with the lock does after its push: a parked worker's look, a leaving
//!   worker's look and the age timer's scan take the overflow, and the age timer looks at it
//!   once more before it stops (`expiry.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;
use tokio::time::Instant;

use super::queue::{AsyncState, Intake};
use super::{AsyncInvoker, Queued};
use crate::error::Rejected;
use crate::handler::{Caller, RequestId};

impl<E, O> AsyncState<E, O> {
    /// Locks the ready events, with the arrivals that found them locked moved in.
    pub(super) fn lock_ready(&self) -> MutexGuard<'_, Intake<E>> {
        let mut ready = self.ready.lock();
        self.take_overflow(&mut ready);
        ready
    }

    /// Moves the arrivals that found the ready events locked to their back, in order, and
    /// counts them accepted.
    pub(super) fn take_overflow(&self, ready: &mut Intake<E>) {
        // Mostly empty: two loads, where a pop from an empty queue also fences. An arrival
        // whose push this misses is as one the pop would have missed.
        if self.overflow.is_empty() {
            return;
        }
        while let Some(queued) = self.overflow.pop() {
            ready.accepted += 1;
            ready.push_back(queued);
        }
    }
}

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Accepts an event whose arrival found the ready events locked, without waiting for the
    /// lock: the holder (a worker taking events, another arrival) may have lost its thread
    /// while holding it, and an arrival that waited out its time slice would be late by as
    /// much, and every event sent after it too. The event goes into the overflow, which the
    /// next holder of the lock moves in. Without the lock, the backlog's depth and its oldest
    /// event are unknown: a worker is added only where that does not need them (none is
    /// running, or all are in slow handlers); the next arrival to get the lock looks at the
    /// backlog as usual.
    pub(super) fn accept_locked_out(
        self: &Arc<Self>,
        event: E,
        principal: Caller,
        accepted_at: Instant,
    ) -> Result<RequestId, Rejected<E>> {
        let state = &self.state;
        // Counted before the look at `sealed`: a hand-back that sealed the queue after this
        // look waits for the push (see `AsyncState::hand_back`).
        state.overflowing.fetch_add(1, Ordering::SeqCst);
        if state.sealed.load(Ordering::SeqCst) {
            state.overflowing.fetch_sub(1, Ordering::SeqCst);
            return Err(self.refuse_sealed(event));
        }
        let request_id = self.exec.request_id(self.exec.reserve_request_ids(1));
        state
            .overflow
            .push(Queued::arrived(request_id, event, accepted_at, principal));
        state.overflowing.fetch_sub(1, Ordering::SeqCst);
        self.watch_fresh_age(accepted_at);
        state.wake_parked();
        let workers = state.workers.load(Ordering::SeqCst);
        if workers == 0 {
            self.kick(1, false);
        } else if state.slow.load(Ordering::SeqCst) >= workers {
            self.kick_soon();
        }
        Ok(request_id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::async_invoke::{AsyncInvoker, Destinations};
    use crate::config::{FunctionConfig, RuntimeConfig};
    use crate::error::FunctionError;
    use crate::executor::{Executor, Shared};
    use crate::handler::{handler_fn, Caller, CloneFactory, Context};
    use crate::instance::InProcess;
    use crate::retry::{Backoff, Retries};

    /// How long a test lets an arrival take before it calls it stuck behind the lock.
    const STUCK: Duration = Duration::from_secs(5);

    /// A function's async queue, on an executor of its own, whose handler sends each event
    /// it runs to `ran`.
    fn queue(ran: mpsc::UnboundedSender<u32>) -> Arc<AsyncInvoker<u32, ()>> {
        let handler = handler_fn(move |n: u32, _ctx: Context| {
            let _ = ran.send(n);
            async { Ok::<_, FunctionError>(()) }
        });
        let backend = Arc::new(InProcess(Arc::new(CloneFactory(handler))));
        let shared = Arc::new(Shared::new(RuntimeConfig::default()));
        let exec = Arc::new(Executor::new(
            "f",
            FunctionConfig::default(),
            backend,
            shared,
        ));
        let retry = Arc::new(Retries::new(0, Backoff::default()).expect("valid"));
        Arc::new(AsyncInvoker::new(
            exec,
            Arc::from("arn:f"),
            Destinations::default(),
            retry,
        ))
    }

    /// Sends `events` from another thread while the test holds the queue's lock: an arrival
    /// that waited for the lock would wait for the test (which, failing, lets it go as it
    /// unwinds). Returns once they are accepted.
    fn send_while_locked(queue: &Arc<AsyncInvoker<u32, ()>>, events: &'static [u32]) {
        let locked = queue.state.ready.lock();
        let (sent, returned) = std_mpsc::channel();
        std::thread::spawn({
            let queue = Arc::clone(queue);
            move || {
                let ids: Vec<_> = events
                    .iter()
                    .map(|&n| {
                        queue
                            .invoke_async(n, Caller::default())
                            .map_err(|r| r.reason)
                    })
                    .collect();
                let _ = sent.send(ids);
            }
        });
        let ids = returned
            .recv_timeout(STUCK)
            .expect("the arrivals returned while the queue was locked");
        assert!(ids.iter().all(Result::is_ok), "{ids:?}");
        assert_eq!(queue.state.overflow.len(), events.len(), "in the overflow");
        drop(locked);
    }

    /// An arrival that finds the ready events locked returns at once, and its event runs after
    /// those sent before it and before those sent after it.
    #[tokio::test]
    async fn an_arrival_does_not_wait_for_a_locked_queue_and_keeps_its_place() {
        let (ran, mut order) = mpsc::unbounded_channel();
        let queue = queue(ran);
        queue.invoke_async(0, Caller::default()).expect("queued");
        send_while_locked(&queue, &[1, 2]);
        queue.invoke_async(3, Caller::default()).expect("queued");
        queue.until_idle().await;
        let mut seen = Vec::new();
        while let Ok(n) = order.try_recv() {
            seen.push(n);
        }
        assert_eq!(seen, [0, 1, 2, 3]);
        let metrics = queue.metrics();
        assert_eq!((metrics.accepted, metrics.succeeded), (4, 4));
    }

    /// An event in the overflow when the queue is handed back is handed back with the rest.
    /// (On this single-threaded runtime no worker runs before the hand-back; a worker's look at
    /// the queue would move the overflow in first.)
    #[tokio::test]
    async fn the_hand_back_takes_the_overflow() {
        let (ran, _order) = mpsc::unbounded_channel();
        let queue = queue(ran);
        send_while_locked(&queue, &[7]);
        let events: Vec<u32> = queue
            .state
            .hand_back("f")
            .into_iter()
            .map(|h| h.downcast::<u32>().expect("a u32 event"))
            .collect();
        assert_eq!(events, [7]);
        assert_eq!(queue.state.pending(), 0, "counted out as handed back");
        assert!(
            queue.invoke_async(8, Caller::default()).is_err(),
            "refused once handed back"
        );
    }
}
