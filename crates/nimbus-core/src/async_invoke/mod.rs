//! Asynchronous invocation (Lambda's `Event` type): a bounded queue per function, workers that
//! drain it within the function's concurrency, retries with backoff, maximum event age,
//! destinations and dead letters, and hand-back of undelivered events at shutdown.
//!
//! Every accepted event ends in exactly one place: success (and the on-success destination, if
//! any), the on-failure destination or the dead-letter target, or the list handed back to the
//! host by [`crate::Runtime::shutdown`]. A destination that refuses a record hands it back; the
//! event then tries the dead-letter target, and failing that is handed back at shutdown.
//!
//! Workers are tasks spawned while there is backlog: each takes a permit and an instance and
//! runs queued events back to back on them, so a busy queue pays for permits and instances once
//! per batch rather than once per event. A worker exits when the queue is empty; an idle
//! function has no worker, no timer and no task polling.

mod destination;

use std::any::Any;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use destination::Destinations;
pub use destination::{
    destination_fn, Condition, DeadLetter, DeliveryError, Destination, DestinationFn, ErrorInfo,
    InvocationRecord,
};

use crate::error::{InvokeError, OutcomeKind, RetryHint, ThrottleReason};
use crate::function::{FunctionInner, InvokeOptions};
use crate::handler::{Invoker, RequestId};
use crate::padded::Padded;
use crate::retry::RetryPolicy;

/// Events a worker takes from the queue per lock.
const WORKER_BATCH: usize = 32;

/// How long the oldest queued event waits before `invoke_async` adds a worker for it.
const SPAWN_AFTER: Duration = Duration::from_micros(50);

/// An event accepted by `invoke_async` and not yet finished.
pub(crate) struct Queued<E> {
    pub(crate) request_id: RequestId,
    pub(crate) event: E,
    pub(crate) accepted_at: Instant,
    /// Attempts made so far (throttles not counted).
    pub(crate) attempts: u32,
}

struct Delayed<E> {
    due: Instant,
    seq: u64,
    queued: Queued<E>,
}

impl<E> PartialEq for Delayed<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<E> Eq for Delayed<E> {}
impl<E> PartialOrd for Delayed<E> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Delayed<E> {
    /// Reversed, so that the max-heap pops the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Why `invoke_async` refused an event; the event is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The function's async queue holds `capacity` pending events already.
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The runtime is shutting down.
    ShuttingDown,
}

/// An event `invoke_async` did not accept, handed back to the caller with the reason.
#[derive(Debug)]
pub struct Rejected<E> {
    /// The event, unchanged.
    pub event: E,
    /// Why it was refused.
    pub reason: RejectReason,
}

impl<E> std::fmt::Display for Rejected<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            RejectReason::QueueFull { capacity } => {
                write!(f, "async queue full ({capacity} pending events)")
            }
            RejectReason::ShuttingDown => f.write_str("runtime is shutting down"),
        }
    }
}

impl<E: std::fmt::Debug> std::error::Error for Rejected<E> {}

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
    /// How it failed, if it did (no destination or dead-letter target took it); `None` for an
    /// event that was still queued, waiting for a retry, or stopped mid-run.
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

/// Counters of the async path.
#[derive(Debug, Default)]
pub(crate) struct AsyncCounters {
    /// Written by producers; padded away from the workers' counters.
    pub(crate) accepted: Padded<AtomicU64>,
    pub(crate) retries: AtomicU64,
    pub(crate) throttles: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) delivery_failures: AtomicU64,
    pub(crate) handed_back: AtomicU64,
}

/// A snapshot of a function's async queue.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct AsyncMetrics {
    /// Events accepted by `invoke_async`.
    pub accepted: u64,
    /// Events pending now: queued, waiting for a retry, or running.
    pub pending: usize,
    /// Events queued and ready to run now.
    pub queue_depth: usize,
    /// Events waiting for their retry delay.
    pub waiting_retry: usize,
    /// Age of the oldest event queued or waiting for a retry.
    #[serde(serialize_with = "crate::metrics::serialize_us")]
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
}

/// The async queue of one function.
pub(crate) struct AsyncState<E, O> {
    ready: Padded<Mutex<VecDeque<Queued<E>>>>,
    delayed: Mutex<BinaryHeap<Delayed<E>>>,
    delayed_changed: Notify,
    timer_started: AtomicBool,
    delay_seq: AtomicU64,
    /// Accepted and not finished: ready + delayed + running + being delivered.
    pending: Padded<AtomicUsize>,
    idle: Notify,
    workers: AtomicUsize,
    /// Workers awaiting a handler that did not finish on its first poll.
    slow: AtomicUsize,
    /// A delayed look at the backlog is scheduled (`kick_soon`).
    kick_scheduled: AtomicBool,
    /// Events kept for the host: stopped by the end of shutdown, or failed with no target
    /// that would take them. Handed back at shutdown; they count against the capacity.
    kept: Mutex<Vec<Kept<E>>>,
    pub(crate) destinations: Destinations<E, O>,
    pub(crate) retry: Arc<dyn RetryPolicy>,
    pub(crate) counters: AsyncCounters,
}

impl<E, O> AsyncState<E, O> {
    pub(crate) fn new(destinations: Destinations<E, O>, retry: Arc<dyn RetryPolicy>) -> Self {
        Self {
            ready: Padded(Mutex::new(VecDeque::new())),
            delayed: Mutex::new(BinaryHeap::new()),
            delayed_changed: Notify::new(),
            timer_started: AtomicBool::new(false),
            delay_seq: AtomicU64::new(0),
            pending: Padded(AtomicUsize::new(0)),
            idle: Notify::new(),
            workers: AtomicUsize::new(0),
            slow: AtomicUsize::new(0),
            kick_scheduled: AtomicBool::new(false),
            kept: Mutex::new(Vec::new()),
            destinations,
            retry,
            counters: AsyncCounters::default(),
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits until no event is pending.
    pub(crate) async fn until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn finish_one(&self) {
        self.finish_many(1);
    }

    /// Counts `n` events finished; workers batch this so that the producer and the workers
    /// do not bounce the `pending` cache line on every event.
    fn finish_many(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::SeqCst) == n {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn metrics(&self) -> AsyncMetrics {
        let now = Instant::now();
        let (queue_depth, oldest_ready) = {
            let ready = self.ready.lock();
            (ready.len(), ready.front().map(|q| q.accepted_at))
        };
        let (waiting_retry, oldest_delayed) = {
            let delayed = self.delayed.lock();
            (
                delayed.len(),
                delayed.iter().map(|d| d.queued.accepted_at).min(),
            )
        };
        let oldest = match (oldest_ready, oldest_delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        AsyncMetrics {
            accepted: load(&c.accepted),
            pending: self.pending(),
            queue_depth,
            waiting_retry,
            oldest_event_age: oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            retries: load(&c.retries),
            throttles: load(&c.throttles),
            succeeded: load(&c.succeeded),
            failed: load(&c.failed),
            delivered: load(&c.delivered),
            delivery_failures: load(&c.delivery_failures),
            handed_back: load(&c.handed_back),
        }
    }
}

impl<E: Send + 'static, O> AsyncState<E, O> {
    /// Takes every unfinished event out, for the host (after the workers have stopped).
    pub(crate) fn hand_back(&self, function: &str) -> Vec<HandedBack> {
        let unfinished = |queued| Kept {
            queued,
            failure: None,
        };
        let mut events: Vec<Kept<E>> = self.ready.lock().drain(..).map(unfinished).collect();
        events.extend(self.delayed.lock().drain().map(|d| unfinished(d.queued)));
        events.append(&mut self.kept.lock());
        self.counters
            .handed_back
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events
            .into_iter()
            .map(|kept| {
                self.finish_one();
                let (condition, error) = kept.failure.unzip();
                HandedBack {
                    function: function.to_owned(),
                    request_id: kept.queued.request_id,
                    attempts: kept.queued.attempts,
                    condition,
                    error: error.flatten(),
                    event: Box::new(kept.queued.event),
                }
            })
            .collect()
    }
}

/// An event kept for the host, with how it ended if it did.
struct Kept<E> {
    queued: Queued<E>,
    failure: Option<(Condition, Option<ErrorInfo>)>,
}

/// What to do with an event after a failed attempt.
enum Next {
    Retry(Duration),
    Fail(Condition),
}

impl<E, O> FunctionInner<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Accepts an event for asynchronous invocation.
    pub(crate) fn invoke_async(self: &Arc<Self>, event: E) -> Result<RequestId, Rejected<E>> {
        if self.shared.gate.is_closed() {
            return Err(Rejected {
                event,
                reason: RejectReason::ShuttingDown,
            });
        }
        let state = &self.async_state;
        let capacity = self.config.async_invoke.queue_capacity;
        if state.pending.fetch_add(1, Ordering::SeqCst) >= capacity {
            state.finish_one();
            return Err(Rejected {
                event,
                reason: RejectReason::QueueFull { capacity },
            });
        }
        state.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let queued = Queued {
            request_id: self.shared.next_request_id(),
            event,
            accepted_at: Instant::now(),
            attempts: 0,
        };
        let request_id = queued.request_id;
        let accepted_at = queued.accepted_at;
        if self.config.max_concurrency == Some(0) {
            // Never invoked: straight to the failure path, as Lambda does.
            let this = Arc::clone(self);
            self.shared.tasks.spawn(async move {
                this.fail(queued, Condition::ZeroReservedConcurrency, None)
                    .await;
            });
            return Ok(request_id);
        }
        let (depth, waited) = {
            let mut ready = state.ready.lock();
            ready.push_back(queued);
            let oldest = ready.front().map_or(accepted_at, |q| q.accepted_at);
            (ready.len(), accepted_at.saturating_duration_since(oldest))
        };
        // A worker is added only once the oldest event has waited a little: a backlog that the
        // running workers clear at once does not need another one (fast handlers would
        // otherwise get a worker per burst, and more runnable threads than cores).
        let workers = state.workers.load(Ordering::SeqCst);
        if waited >= SPAWN_AFTER || workers == 0 {
            self.kick(depth, false);
        } else if state.slow.load(Ordering::SeqCst) >= workers {
            // Every worker is in a slow handler: unless one frees up in a moment, the event
            // needs a worker of its own.
            self.kick_soon();
        }
        Ok(request_id)
    }

    /// Looks again in [`SPAWN_AFTER`]: if the oldest event is still waiting, adds a worker.
    /// At most one such look is scheduled at a time.
    fn kick_soon(self: &Arc<Self>) {
        if self.async_state.kick_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = Arc::clone(self);
        self.shared.tasks.spawn(async move {
            tokio::time::sleep(SPAWN_AFTER).await;
            let state = &this.async_state;
            state.kick_scheduled.store(false, Ordering::SeqCst);
            let (depth, waited) = {
                let ready = state.ready.lock();
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
    /// look uses it once events have waited; arrivals do not, so that a steady stream to
    /// busy workers is not met with a new worker per event.
    fn kick(self: &Arc<Self>, depth: usize, past_slow: bool) {
        let state = &self.async_state;
        let cap = self
            .reserved
            .as_ref()
            .map_or_else(|| self.shared.unreserved.limit(), |l| l.limit());
        let slow = if past_slow {
            state.slow.load(Ordering::SeqCst)
        } else {
            0
        };
        let wanted = (depth + slow).min(cap.max(1));
        let mut workers = state.workers.load(Ordering::SeqCst);
        loop {
            if workers >= wanted {
                return;
            }
            match state.workers.compare_exchange_weak(
                workers,
                workers + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(seen) => workers = seen,
            }
        }
        let this = Arc::clone(self);
        self.shared.tasks.spawn(async move { this.worker().await });
    }

    /// Drains the queue: takes a permit and an instance, runs events until the queue is empty.
    async fn worker(self: Arc<Self>) {
        let state = &self.async_state;
        let mut throttled = 0u32;
        let mut batch: VecDeque<Queued<E>> = VecDeque::with_capacity(WORKER_BATCH);
        // Successes not yet subtracted from `pending` (flushed per batch).
        let mut done = 0;
        'work: loop {
            state.finish_many(std::mem::take(&mut done));
            if self.shared.is_stopped() || (batch.is_empty() && state.ready.lock().is_empty()) {
                break 'work;
            }
            let permit = match self.try_permit() {
                Ok(permit) => permit,
                Err(reason) => {
                    throttled += 1;
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    continue 'work;
                }
            };
            self.counters.busy_enter();
            let _busy = crate::function::BusyGuard(&self);
            let (mut lease, mut init) = match self.lease_instance().await {
                Ok(leased) => leased,
                Err(InvokeError::Throttled(reason)) => {
                    drop(permit);
                    throttled += 1;
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    continue 'work;
                }
                Err(error) => {
                    // An init failure is a failed attempt of the next event, as in Lambda.
                    let next = state.ready.lock().pop_front();
                    if let Some(mut queued) = next {
                        queued.attempts += 1;
                        self.after_failure(queued, &error).await;
                    }
                    continue 'work;
                }
            };
            throttled = 0;
            let mut now = Instant::now();
            loop {
                if self.shared.is_stopped() {
                    lease.release(now);
                    break 'work;
                }
                if batch.is_empty() {
                    state.finish_many(std::mem::take(&mut done));
                    // Take a fair share of the backlog, so slow handlers spread over workers
                    // and fast ones pay one lock per batch.
                    let workers = state.workers.load(Ordering::Relaxed).max(1);
                    let mut ready = state.ready.lock();
                    let take = (ready.len() / workers)
                        .clamp(1, WORKER_BATCH)
                        .min(ready.len());
                    batch.extend(ready.drain(..take));
                }
                let Some(mut queued) = batch.pop_front() else {
                    lease.release(now);
                    break 'work;
                };
                if self.expired(&queued, now) {
                    self.fail(queued, Condition::EventAgeExceeded, None).await;
                    continue;
                }
                queued.attempts += 1;
                let options = InvokeOptions::default()
                    .with_invoker(Invoker::AsyncQueue)
                    .with_attempt(queued.attempts);
                let run = self.run_on(
                    &mut lease,
                    queued.event.clone(),
                    queued.request_id,
                    options,
                    init.take(),
                    now,
                );
                tokio::pin!(run);
                // A handler that does not finish on its first poll holds this worker for a
                // while: count it as slow, and let the backlog have another worker at once.
                let run = match std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await
                {
                    Poll::Ready(run) => run,
                    Poll::Pending => {
                        state.slow.fetch_add(1, Ordering::SeqCst);
                        // Hand the events taken with this one back, so that other workers
                        // take them instead of waiting behind the slow handler.
                        let depth = {
                            let mut ready = state.ready.lock();
                            while let Some(queued) = batch.pop_back() {
                                ready.push_front(queued);
                            }
                            ready.len()
                        };
                        if depth > 0 {
                            self.kick_soon();
                        }
                        let run = run.await;
                        state.slow.fetch_sub(1, Ordering::SeqCst);
                        run
                    }
                };
                now = run.end;
                match run.result {
                    Ok(output) => {
                        self.succeed(queued, output).await;
                        done += 1;
                    }
                    Err(InvokeError::Cancelled) => {
                        // Stopped by the end of shutdown: the attempt does not count.
                        queued.attempts -= 1;
                        state.kept.lock().push(Kept {
                            queued,
                            failure: None,
                        });
                    }
                    Err(error) => self.after_failure(queued, &error).await,
                }
                if !run.sound {
                    // The instance is discarded with the lease; get a fresh one.
                    continue 'work;
                }
            }
        }
        state.finish_many(done);
        // Events taken but not started go back to the front of the queue.
        if !batch.is_empty() {
            let mut ready = state.ready.lock();
            while let Some(queued) = batch.pop_back() {
                ready.push_front(queued);
            }
        }
        let remaining = state.workers.fetch_sub(1, Ordering::SeqCst) - 1;
        // An event pushed while this worker was leaving must not be stranded.
        let depth = state.ready.lock().len();
        if depth > remaining && !self.shared.is_stopped() {
            self.kick(depth, false);
        }
    }

    /// Backs off after a throttle; a returned permit ends the wait early. Returns false when
    /// the runtime is stopping.
    async fn wait_after_throttle(&self, reason: ThrottleReason, throttled: u32) -> bool {
        self.async_state
            .counters
            .throttles
            .fetch_add(1, Ordering::Relaxed);
        self.counters.throttled(reason);
        let delay = self.config.async_invoke.throttle_backoff.delay(throttled);
        let limiter = match (&self.reserved, reason) {
            (_, ThrottleReason::ScaleRate) => None,
            (Some(limiter), _) => Some(limiter),
            (None, _) => Some(&self.shared.unreserved),
        };
        let freed = async {
            match limiter {
                Some(limiter) => drop(limiter.acquire().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = freed => true,
            () = self.shared.hard_stop.cancelled() => false,
        }
    }

    fn expired(&self, queued: &Queued<E>, at: Instant) -> bool {
        at.saturating_duration_since(queued.accepted_at) > self.config.async_invoke.max_event_age
    }

    /// Decides and carries out what follows a failed attempt.
    async fn after_failure(self: &Arc<Self>, queued: Queued<E>, error: &InvokeError) {
        let next = match self.async_state.retry.retry(queued.attempts, error) {
            Some(delay) => {
                if self.expired(&queued, Instant::now() + delay) {
                    Next::Fail(Condition::EventAgeExceeded)
                } else {
                    Next::Retry(delay)
                }
            }
            None => {
                let never = matches!(error, InvokeError::Function(e) if e.retry_hint() == RetryHint::Never)
                    || !matches!(
                        error.kind(),
                        OutcomeKind::Error
                            | OutcomeKind::Timeout
                            | OutcomeKind::Panic
                            | OutcomeKind::InitFailure
                    );
                Next::Fail(if never {
                    Condition::NotRetryable
                } else {
                    Condition::RetriesExhausted
                })
            }
        };
        match next {
            Next::Retry(delay) => self.schedule_retry(queued, delay),
            Next::Fail(condition) => self.fail(queued, condition, Some(error.into())).await,
        }
    }

    fn schedule_retry(self: &Arc<Self>, queued: Queued<E>, delay: Duration) {
        let state = &self.async_state;
        state.counters.retries.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now() + delay;
        let seq = state.delay_seq.fetch_add(1, Ordering::Relaxed);
        state.delayed.lock().push(Delayed { due, seq, queued });
        state.delayed_changed.notify_one();
        if !state.timer_started.swap(true, Ordering::SeqCst) {
            let this = Arc::clone(self);
            self.shared
                .tasks
                .spawn(async move { this.retry_timer().await });
        }
    }

    /// Moves retries to the ready queue when they are due. Sleeps until the earliest is due,
    /// parks when there is none; stops at the end of shutdown.
    async fn retry_timer(self: Arc<Self>) {
        let state = &self.async_state;
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let next = {
                let mut delayed = state.delayed.lock();
                while delayed.peek().is_some_and(|d| d.due <= now) {
                    if let Some(d) = delayed.pop() {
                        due.push(d.queued);
                    }
                }
                delayed.peek().map(|d| d.due)
            };
            if !due.is_empty() {
                let depth = {
                    let mut ready = state.ready.lock();
                    ready.extend(due);
                    ready.len()
                };
                self.kick(depth, false);
            }
            let changed = state.delayed_changed.notified();
            tokio::select! {
                () = changed => {}
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = self.shared.hard_stop.cancelled() => return,
            }
        }
    }

    /// Counts a success and delivers its record; the caller counts the event finished.
    async fn succeed(&self, queued: Queued<E>, output: O) {
        let state = &self.async_state;
        state.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        if let Some(destination) = &state.destinations.on_success {
            let record = self.record(&queued, Condition::Success, Some(output), None);
            match destination.deliver(record).await {
                Ok(()) => {
                    state.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(refused) => {
                    // The event succeeded; only its notification is lost, and it is logged.
                    state
                        .counters
                        .delivery_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        function = %self.name,
                        request_id = %queued.request_id,
                        reason = %refused.reason,
                        "on-success destination refused a record"
                    );
                }
            }
        }
    }

    /// The failure path: the on-failure destination, then the dead-letter target; an event
    /// neither takes is kept and handed back at shutdown.
    async fn fail(&self, queued: Queued<E>, condition: Condition, error: Option<ErrorInfo>) {
        let state = &self.async_state;
        state.counters.failed.fetch_add(1, Ordering::Relaxed);
        let mut delivered = false;
        if let Some(destination) = &state.destinations.on_failure {
            let record = self.record(&queued, condition, None, error.clone());
            match destination.deliver(record).await {
                Ok(()) => delivered = true,
                Err(refused) => {
                    state
                        .counters
                        .delivery_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(function = %self.name, request_id = %queued.request_id,
                        reason = %refused.reason, "on-failure destination refused a record");
                }
            }
        }
        if !delivered {
            if let Some(dead_letter) = &state.destinations.dead_letter {
                match dead_letter.send(queued.event.clone()).await {
                    Ok(()) => delivered = true,
                    Err(refused) => {
                        state
                            .counters
                            .delivery_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(function = %self.name, request_id = %queued.request_id,
                            reason = %refused.reason, "dead-letter target refused an event");
                    }
                }
            }
        }
        if delivered {
            state.counters.delivered.fetch_add(1, Ordering::Relaxed);
            state.finish_one();
        } else {
            // No target took it (none configured, or every one refused): keep it for the host
            // rather than drop it, as Lambda would. It still counts against the queue capacity,
            // so an ignored failure path shows up as backpressure, not as silent loss.
            tracing::warn!(function = %self.name, request_id = %queued.request_id,
                condition = ?condition, error = ?error, "async event failed; kept for the host");
            state.kept.lock().push(Kept {
                queued,
                failure: Some((condition, error)),
            });
        }
    }

    fn record(
        &self,
        queued: &Queued<E>,
        condition: Condition,
        response: Option<O>,
        error: Option<ErrorInfo>,
    ) -> InvocationRecord<E, O> {
        InvocationRecord {
            request_id: queued.request_id,
            function: self.name.clone(),
            timestamp: SystemTime::now(),
            condition,
            approximate_invoke_count: queued.attempts,
            request: queued.event.clone(),
            response,
            error,
        }
    }
}
