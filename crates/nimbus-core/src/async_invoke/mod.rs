//! Asynchronous invocation (Lambda's `Event` type): a bounded queue per function, workers that
//! drain it within the function's concurrency, retries with backoff, maximum event age,
//! destinations and dead letters, and hand-back of undelivered events at shutdown.
//!
//! Every accepted event ends in exactly one place: success (and the on-success destination, if
//! any), the on-failure destination or the dead-letter target, the failed events kept for the
//! host (`FunctionHandle::take_failed`; dropped with a warning instead when the function chose
//! `UnroutedFailures::Discard`), or the list handed back to the host by the runtime's shutdown
//! or the function's unregister. A destination that
//! refuses a record (or panics) hands it back; the event then tries the dead-letter target, and
//! failing that is handed back at the end. A delivery still waiting when the grace period ends
//! is cut off and its event handed back too.
//!
//! Destinations, dead-letter targets and retry policies are user code: each call is guarded
//! (see `deliver.rs` and `retries.rs`), and a worker that ends for any reason gives its events
//! back to the queue.
//!
//! Workers are tasks spawned while there is backlog: each takes a permit and an instance and
//! runs queued events back to back on them, so a busy queue pays for permits and instances once
//! per batch rather than once per event. A worker whose queue empties gives its permit and
//! instance back and parks for `PARK_FOR`, so that the next arrival wakes it rather than
//! starting a new task; then it exits. A function idle for longer than that has no worker,
//! no timer and no task polling.
//!
//! An event that passes its maximum age while it waits (for capacity, after a throttle)
//! leaves the queue at that moment for the failure path, capacity or not (see `expiry.rs`).

mod deliver;
mod destination;
mod expiry;
mod gauge;
mod held;
mod overflow;
mod queue;
mod ready;
mod record;
mod retries;
mod worker;

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use destination::Destinations;
pub use destination::{
    destination_fn, DeadLetter, DeliveryError, Destination, DestinationFn, DestinationTarget,
};
pub use record::{Condition, DeadLetterAttributes, DeadLetterMessage, ErrorInfo, InvocationRecord};

use queue::AsyncState;

use crate::error::{RejectReason, Rejected};
use crate::executor::Executor;
use crate::handler::{hops, Caller, Principal, RecursiveLoop, RequestId};
use crate::retry::RetryPolicy;

/// How long the oldest queued event waits before `invoke_async` adds a worker for it.
const SPAWN_AFTER: Duration = Duration::from_micros(50);

/// How long a worker whose queue emptied waits for the next event before it exits (the timer
/// rounds it up to the next millisecond tick, so 1–2 ms). It covers the gaps of a steady
/// stream down to 1,000 events/s, so such a stream wakes a parked worker instead of starting
/// one per event.
const PARK_FOR: Duration = Duration::from_millis(1);

/// An event accepted by `invoke_async` and not yet finished.
pub(crate) struct Queued<E> {
    pub(crate) request_id: RequestId,
    pub(crate) event: E,
    pub(crate) accepted_at: Instant,
    /// Attempts made so far (throttles not counted).
    pub(crate) attempts: u32,
    /// Who queued it: every attempt runs as them.
    pub(crate) principal: Caller,
    /// The last failed attempt's error, for the record of an event that expires waiting for
    /// its retry (boxed: most events never fail).
    pub(crate) last_error: Option<Box<ErrorInfo>>,
}

impl<E> Queued<E> {
    /// An event just accepted, before its first attempt.
    fn arrived(request_id: RequestId, event: E, accepted_at: Instant, principal: Caller) -> Self {
        Self {
            request_id,
            event,
            accepted_at,
            attempts: 0,
            principal,
            last_error: None,
        }
    }
}

/// One function's asynchronous invocation: its queue on top of its executor.
pub(crate) struct AsyncInvoker<E, O> {
    exec: Arc<Executor<E, O>>,
    /// The function's unqualified ARN, for its records.
    arn: Arc<str>,
    state: AsyncState<E, O>,
}

impl<E, O> AsyncInvoker<E, O> {
    pub(crate) fn new(
        exec: Arc<Executor<E, O>>,
        arn: Arc<str>,
        destinations: Destinations<E, O>,
        retry: Arc<dyn RetryPolicy>,
    ) -> Self {
        let max_event_age = exec.config().async_invoke.max_event_age;
        // The runtime its workers run on when the caller is outside any.
        let threads = tokio::runtime::Handle::try_current().map_or_else(
            |_| std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            |runtime| runtime.metrics().num_workers(),
        );
        Self {
            exec,
            arn,
            state: AsyncState::new(destinations, retry, max_event_age, threads),
        }
    }

    /// A snapshot of the queue.
    pub(crate) fn metrics(&self) -> AsyncMetrics {
        self.state.metrics()
    }

    /// Resolves when no async event is pending.
    pub(crate) async fn until_idle(&self) {
        self.state.until_idle().await;
    }
}

impl<E: Send + 'static, O> AsyncInvoker<E, O> {
    /// Takes the failed events kept for the host, as the records an on-failure destination
    /// would have received.
    pub(crate) fn take_failed(&self) -> Vec<InvocationRecord<E, O>> {
        self.state
            .take_failed()
            .into_iter()
            .map(|f| self.failed_record(f))
            .collect()
    }

    /// Takes every unfinished async event out, for the host (after the workers stopped).
    pub(crate) fn hand_back(&self) -> Vec<HandedBack> {
        self.state.hand_back(self.exec.name())
    }
}

/// An event that was accepted but not finished when the runtime shut down, handed back to the
/// host instead of being dropped.
#[derive(Debug)]
#[non_exhaustive]
pub struct HandedBack {
    /// The function it was for.
    pub function: String,
    /// Its request id.
    pub request_id: RequestId,
    /// Attempts already made.
    pub attempts: u32,
    /// Who queued it: a host that queues it again may keep it in mind.
    pub principal: Principal,
    /// The hop count its work carries (see [`hops`]): a host that
    /// queues it again from inside `hops::sync_scope(hop_count - 1, ..)` keeps a loop
    /// detectable across restarts.
    pub hop_count: u32,
    /// How it ended, if it did, when the destination that should have taken it refused it or
    /// was cut off by the end of the grace period: a failure no destination or dead-letter
    /// target took, or `Success` for an event whose handler succeeded but whose on-success
    /// record was cut off. `None` for an event that was still queued, waiting for a retry, or
    /// stopped mid-run (its attempt not counted).
    pub condition: Option<Condition>,
    /// The last attempt's error, for a failed event.
    pub error: Option<ErrorInfo>,
    event: Box<dyn Any + Send>,
}

impl HandedBack {
    /// The event, if it has type `E`; otherwise `self` back.
    ///
    /// # Errors
    ///
    /// `self`, unchanged, when the event is of another type.
    pub fn downcast<E: 'static>(self) -> Result<E, Box<Self>> {
        match self.event.downcast::<E>() {
            Ok(event) => Ok(*event),
            Err(event) => Err(Box::new(Self { event, ..self })),
        }
    }
}

/// A snapshot of a function's async queue.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct AsyncMetrics {
    /// Events accepted by `invoke_async`.
    pub accepted: u64,
    /// Events pending now: queued, waiting for a retry, or running.
    pub pending: usize,
    /// Events queued and ready to run now: not those a worker has taken to run next (up to a
    /// batch of 32, or, for a moment, up to 256 of a backlog), which count in `pending`.
    pub queue_depth: usize,
    /// Events waiting for their retry delay.
    pub waiting_retry: usize,
    /// Age of the oldest event queued or waiting for a retry.
    #[serde(serialize_with = "crate::util::serialize_us")]
    pub oldest_event_age: Duration,
    /// Retries scheduled.
    pub retries: u64,
    /// Times a worker was throttled (not counted as attempts).
    pub throttles: u64,
    /// Events that succeeded.
    pub succeeded: u64,
    /// Events that took the failure path.
    pub failed: u64,
    /// Records and dead letters delivered.
    pub delivered: u64,
    /// Deliveries refused by a destination or dead-letter target.
    pub delivery_failures: u64,
    /// Events handed back at shutdown.
    pub handed_back: u64,
    /// Failed events kept for the host now, that no destination or dead-letter target took
    /// (see `UnroutedFailures`); `FunctionHandle::take_failed` takes them.
    pub kept_failures: usize,
    /// Failed events that no target took, dropped (`UnroutedFailures::Discard`).
    pub discarded: u64,
}

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Accepts an event for asynchronous invocation on behalf of `principal`.
    pub(crate) fn invoke_async(
        self: &Arc<Self>,
        event: E,
        principal: Caller,
    ) -> Result<RequestId, Rejected<E>> {
        if self.exec.gate_closed() {
            return Err(Rejected {
                event,
                reason: RejectReason::ShuttingDown,
            });
        }
        if self.exec.is_closed() {
            return Err(Rejected {
                event,
                reason: RejectReason::Unregistered,
            });
        }
        // Checked once, here: the retries of an accepted event are not checked again.
        if let Err(denied) = self.exec.authorize(&principal) {
            return Err(Rejected {
                event,
                reason: RejectReason::AccessDenied(denied),
            });
        }
        if principal.hops() > hops::LIMIT
            && self.exec.config().recursive_loop == RecursiveLoop::Terminate
        {
            // Only the failure path of an event already stopped at the limit sends work this
            // far (a destination feeding the function back): refused, so that it cannot spin.
            return Err(Rejected {
                event,
                reason: RejectReason::RecursiveLoop {
                    hops: principal.hops(),
                },
            });
        }
        let state = &self.state;
        let config = &self.exec.config().async_invoke;
        if state.kept_failures.load(Ordering::Relaxed) >= config.max_kept_failures {
            // Accepting more would keep failures without bound, or drop them.
            return Err(Rejected {
                event,
                reason: RejectReason::KeptFailuresFull {
                    limit: config.max_kept_failures,
                },
            });
        }
        let capacity = config.queue_capacity;
        if state.pending.fetch_add(1, Ordering::SeqCst) >= capacity {
            state.finish_one();
            return Err(Rejected {
                event,
                reason: RejectReason::QueueFull { capacity },
            });
        }
        let accepted_at = Instant::now();
        let Some(mut ready) = state.ready.try_lock() else {
            return self.accept_locked_out(event, principal, accepted_at);
        };
        let (request_id, depth, oldest) = {
            state.take_overflow(&mut ready);
            if state.sealed.load(Ordering::Relaxed) {
                // The queue was handed back while this call passed the checks above: the
                // event would never run nor be handed back, so it is refused instead.
                drop(ready);
                return Err(self.refuse_sealed(event));
            }
            let request_id = ready.admit(&self.exec);
            ready.push_back(Queued::arrived(request_id, event, accepted_at, principal));
            let oldest = ready.front().map_or(accepted_at, |q| q.accepted_at);
            (request_id, ready.len(), oldest)
        };
        drop(ready);
        self.watch_fresh_age(accepted_at);
        // A parked worker takes the event: waking it costs the caller less than a new
        // worker (no task to allocate and start). Parked workers count as workers below: a
        // push wakes one, and a worker that leaves events behind when it takes its share
        // wakes another (`wake_parked`).
        state.wake_parked();
        // A worker is added only once the oldest event has waited a little: a backlog that the
        // running workers clear at once does not need another one (fast handlers would
        // otherwise get a worker per burst, and more runnable threads than cores). The wait is
        // measured only when it can matter: an instant's subtraction costs a tenth of this
        // call, and a backlog at the concurrency cap, or behind workers that fill the runtime's
        // threads (see `kick`), gets no worker from it.
        let waited_long = || {
            oldest != accepted_at && accepted_at.saturating_duration_since(oldest) >= SPAWN_AFTER
        };
        let workers = state.workers.load(Ordering::SeqCst);
        if workers == 0 {
            self.kick(depth, false);
        } else if workers < self.exec.concurrency_cap().max(1)
            && !state.cpu_bound()
            && waited_long()
        {
            // Waited behind workers that are all in slow handlers: as the delayed look would
            // do, without waiting for a timer (whose resolution is a millisecond).
            let all_slow = state.slow.load(Ordering::SeqCst) >= workers;
            self.kick(depth, all_slow);
        } else if state.slow.load(Ordering::SeqCst) >= workers && !waited_long() {
            // Every worker is in a slow handler: unless one frees up in a moment, the event
            // needs a worker of its own.
            self.kick_soon();
        }
        Ok(request_id)
    }

    /// Refuses an event that arrived after the queue was handed back (it was counted pending).
    pub(super) fn refuse_sealed(&self, event: E) -> Rejected<E> {
        self.state.finish_one();
        let reason = if self.exec.is_closed() {
            RejectReason::Unregistered
        } else {
            RejectReason::ShuttingDown
        };
        Rejected { event, reason }
    }

    /// Looks again in [`SPAWN_AFTER`]: if the oldest event is still waiting, adds a worker.
    /// At most one such look is scheduled at a time.
    fn kick_soon(self: &Arc<Self>) {
        if self.state.kick_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        self.exec.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(SPAWN_AFTER) => {}
                () = this.exec.hard_stop().cancelled() => return,
            }
            let state = &this.state;
            state.kick_scheduled.store(false, Ordering::SeqCst);
            let (depth, waited) = {
                let ready = state.lock_ready();
                let waited = ready.front().map(|q| q.accepted_at.elapsed());
                (ready.len(), waited)
            };
            if depth > 0 && waited.is_some_and(|w| w >= SPAWN_AFTER) {
                this.kick(depth, true);
            }
        });
    }

    /// Spawns a worker if the backlog exceeds the workers free to drain it (those not held by
    /// a slow handler), within the function's concurrency.
    ///
    /// `past_slow` also counts the workers held by slow handlers as unavailable: the delayed
    /// look uses it once events have waited, and a leaving worker when the workers left are
    /// in slow handlers; arrivals do not, so that a steady stream to busy workers is not met
    /// with a new worker per event.
    ///
    /// Without `past_slow`, no worker is added while the workers on the CPU fill the runtime's
    /// threads: they are taking the events as fast as the threads allow, and another would
    /// only take its share of them (in three alternating runs, two workers drained a backlog
    /// of no-op events 1.2–1.8 times as fast as the thousand the cap allowed). Workers in slow
    /// handlers, deliveries, cold starts or throttle waits are not on the CPU, nor are those
    /// whose last handler held its thread past [`SPAWN_AFTER`] (it may have blocked it), so
    /// events behind them still get one.
    fn kick(self: &Arc<Self>, depth: usize, past_slow: bool) {
        if self.exec.is_stopped() || (!past_slow && self.state.cpu_bound()) {
            return;
        }
        let state = &self.state;
        let cap = self.exec.concurrency_cap();
        let slow = if past_slow {
            state.slow.load(Ordering::SeqCst)
        } else {
            0
        };
        let wanted = (depth + slow).min(cap.max(1));
        // Events behind slow handlers get a worker each at once: one worker per look would
        // add workers more slowly than a step in load adds events, and the backlog built
        // meanwhile would later need more workers than the load (overshoot). Arrivals add
        // one, so that a steady stream to busy workers is not met with a burst.
        let mut spawn = if past_slow { wanted } else { 1 };
        let mut workers = state.workers.load(Ordering::SeqCst);
        while spawn > 0 {
            if workers >= wanted {
                return;
            }
            match state.workers.compare_exchange_weak(
                workers,
                workers + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    workers += 1;
                    spawn -= 1;
                    // The worker is counted in by its guard, which goes with the task: a task
                    // dropped before it ever runs (its runtime going away) still counts the
                    // worker out.
                    let held = held::WorkerGuard::new(Arc::clone(self));
                    self.exec.spawn(async move { held.run().await });
                }
                Err(seen) => workers = seen,
            }
        }
    }
}
