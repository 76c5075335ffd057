//! The async workers: take a permit and an instance, run queued events back to back, and decide
//! retries; the timer that moves due retries back to the queue.
//!
//! A worker whose queue empties gives back its permit and instance and parks for a moment
//! (`PARK_FOR`): events pushed meanwhile wake it; if none come, it exits.
//!
//! A worker's events are held by a drop guard: a worker that ends for any reason (its queue
//! stayed empty while it parked, the grace period ended, its task was dropped, a bug panicked
//! it) puts the events it had taken back at the front of the queue, counts itself out, and
//! starts a replacement if the backlog needs one. The function keeps serving.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::expiry::AgeCheck;
use super::queue::Delayed;
use super::AsyncInvoker;
use super::{Condition, ErrorInfo, Queued};
use crate::error::{InvokeError, OutcomeKind, RetryHint, ThrottleReason};
use crate::util::{far_future, panic_message};

/// Events a worker takes from the queue per lock.
const WORKER_BATCH: usize = 32;

/// What to do with an event after a failed attempt.
enum Next {
    Retry(Duration),
    Fail(Condition, Option<ErrorInfo>),
}

/// A worker, counted in `workers` from its spawn to its end, and what it holds: its batch,
/// the event it is running, and successes not yet counted (in `succeeded`, and out of
/// `pending`). Dropped, it gives all of it back (see the module docs).
pub(super) struct WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    function: Arc<AsyncInvoker<E, O>>,
    batch: VecDeque<Queued<E>>,
    current: Option<Queued<E>>,
    /// Finished events not yet counted out of `pending`.
    done: usize,
    /// Successes not yet added to the `succeeded` counter: counted with `done`, so that two
    /// workers do not write one cache line per event.
    succeeded: u64,
    /// The worker ran: only then does its end start a replacement (a task dropped unrun, its
    /// runtime going away, must not spawn another one that would be dropped the same way).
    started: bool,
}

impl<E, O> WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// A worker already counted in `workers` by the caller.
    pub(super) fn new(function: Arc<AsyncInvoker<E, O>>) -> Self {
        Self {
            function,
            batch: VecDeque::new(),
            current: None,
            done: 0,
            succeeded: 0,
            started: false,
        }
    }

    /// Counts what the worker finished: its successes, then (so that whoever sees the queue
    /// idle sees them counted) its finished events out of `pending`.
    fn settle(&mut self) {
        let state = &self.function.state;
        let succeeded = std::mem::take(&mut self.succeeded);
        if succeeded > 0 {
            state
                .counters
                .succeeded
                .fetch_add(succeeded, Ordering::Relaxed);
        }
        state.finish_many(std::mem::take(&mut self.done));
    }

    /// Runs the worker.
    pub(super) async fn run(mut self) {
        self.started = true;
        self.batch.reserve(WORKER_BATCH);
        let function = Arc::clone(&self.function);
        function.worker(&mut self).await;
    }
}

impl<E, O> Drop for WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    fn drop(&mut self) {
        self.settle();
        let state = &self.function.state;
        if let Some(current) = self.current.take() {
            if std::thread::panicking() {
                // The event in hand when the worker panicked may be what panics it: it is kept
                // for the host rather than run again.
                state.keep(current, None);
            } else {
                self.batch.push_front(current);
            }
        }
        self.function.requeue(&mut self.batch);
        let remaining = state.workers.fetch_sub(1, Ordering::SeqCst) - 1;
        // An event pushed while this worker was leaving must not be stranded: count the worker
        // out first, then look at the queue. A producer that pushed before this look is seen
        // here; one that pushes after it sees the lower worker count: with none left it adds
        // a worker, and with every one left in a slow handler it schedules a look.
        let depth = state.ready.lock().len();
        // Workers inside slow handlers will not take the events soon: they do not count.
        let slow = state.slow.load(Ordering::SeqCst);
        if self.started
            && depth > remaining.saturating_sub(slow)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.function.kick(depth, slow > 0);
        }
    }
}

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Drains the queue: takes a permit and an instance, runs events until the queue is empty,
    /// then parks; exits when the queue stays empty through a park. What it takes is held by
    /// `held`.
    async fn worker(self: &Arc<Self>, held: &mut WorkerGuard<E, O>) {
        let state = &self.state;
        let mut throttled = 0u32;
        'work: loop {
            held.settle();
            if self.exec.is_stopped() {
                break 'work;
            }
            if held.batch.is_empty() && state.ready.lock().is_empty() {
                if !self.park().await {
                    break 'work;
                }
                // Woken (perhaps by a wake-up meant for another worker): look again.
                throttled = 0;
                continue 'work;
            }
            if self.exec.config().max_concurrency == Some(0) {
                // Never invoked: each event goes straight to the failure path, as Lambda does.
                // Queued like any other, so shutdown hands back what this has not reached.
                loop {
                    let next = held
                        .batch
                        .pop_front()
                        .or_else(|| state.ready.lock().pop_front());
                    let Some(queued) = next else { break 'work };
                    if self.exec.is_stopped() {
                        held.batch.push_front(queued);
                        break 'work;
                    }
                    self.fail(queued, Condition::ZeroReservedConcurrency, None)
                        .await;
                }
            }
            let permit = match self.exec.try_permit() {
                Ok(permit) => permit,
                Err(reason) => {
                    throttled += 1;
                    // Events held through the wait would not age in the queue.
                    self.requeue(&mut held.batch);
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    continue 'work;
                }
            };
            let Some(active) = self.exec.activate(permit, true) else {
                break 'work;
            };
            let (mut lease, mut init) = match self.exec.lease_instance().await {
                Ok(leased) => leased,
                Err(InvokeError::Throttled(reason)) => {
                    drop(active);
                    throttled += 1;
                    self.requeue(&mut held.batch);
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    continue 'work;
                }
                // Stopped by the end of the grace period: the next event was never tried,
                // and stays queued for the host.
                Err(InvokeError::Cancelled) => break 'work,
                Err(error) => {
                    // An init failure is a failed attempt of the next event, as in Lambda.
                    let next = held
                        .batch
                        .pop_front()
                        .or_else(|| state.ready.lock().pop_front());
                    if let Some(mut queued) = next {
                        // One of a recursive loop would not have run anyway: it fails as such.
                        if let Err(looping) = self.exec.check_loop(&queued.principal) {
                            let info = Some(ErrorInfo::from(&looping));
                            self.fail(queued, Condition::NotRetryable, info).await;
                            continue 'work;
                        }
                        queued.attempts += 1;
                        self.after_failure(queued, &error).await;
                    }
                    continue 'work;
                }
            };
            throttled = 0;
            let mut now = Instant::now();
            let mut age = AgeCheck::new(self.exec.config().async_invoke.max_event_age, now);
            // A warm instance was checked when taken; one kept across events is checked
            // before each reuse, since it may have died after answering.
            let mut reused = false;
            loop {
                if self.exec.is_stopped() {
                    lease.release(now);
                    break 'work;
                }
                if reused && lease.is_faulted() {
                    // Discarded with the lease; the events stay held for the next instance.
                    continue 'work;
                }
                reused = true;
                if held.batch.is_empty() {
                    held.settle();
                    // Take a fair share of the backlog, so slow handlers spread over workers
                    // and fast ones pay one lock per batch.
                    let workers = state.workers.load(Ordering::Relaxed).max(1);
                    let mut ready = state.ready.lock();
                    let take = (ready.len() / workers)
                        .clamp(1, WORKER_BATCH)
                        .min(ready.len());
                    ready.take_front(take, &mut held.batch);
                }
                let Some(mut queued) = held.batch.pop_front() else {
                    // The queue is empty: the permit and the instance go back, and the worker
                    // parks at the top of the loop.
                    lease.release(now);
                    continue 'work;
                };
                if age.expired(queued.accepted_at, now) {
                    // A destination may be slow: what finished before is counted first.
                    held.settle();
                    self.fail(queued, Condition::EventAgeExceeded, None).await;
                    continue;
                }
                if let Err(error) = self.exec.check_loop(&queued.principal) {
                    // A recursive loop: never run, never retried (Lambda's DLQ / on-failure).
                    let info = Some(ErrorInfo::from(&error));
                    held.settle();
                    self.fail(queued, Condition::NotRetryable, info).await;
                    continue;
                }
                queued.attempts += 1;
                let who = (queued.request_id, queued.principal.clone(), queued.attempts);
                // Held before the clone: an event type whose `Clone` panics is kept for the host
                // by the guard, not dropped with the unwinding worker.
                let event = held.current.insert(queued).event.clone();
                let run = self.exec.run_on(&mut lease, event, who, init.take(), now);
                tokio::pin!(run);
                // A handler that does not finish on its first poll holds this worker for a
                // while: count it as slow, and let the backlog have another worker at once.
                let run = match std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await
                {
                    Poll::Ready(run) => run,
                    Poll::Pending => {
                        // What finished before this handler is counted now, not after it.
                        held.settle();
                        state.slow.fetch_add(1, Ordering::SeqCst);
                        let _slow = CountGuard(&state.slow);
                        // Hand the events taken with this one back, so that other workers
                        // take them instead of waiting behind the slow handler.
                        if self.requeue(&mut held.batch) > 0 {
                            self.kick_soon();
                        }
                        run.await
                    }
                };
                now = run.end;
                let Some(mut queued) = held.current.take() else {
                    unreachable!("the event in hand is held until its run ends")
                };
                match run.result {
                    Ok(output) => {
                        held.succeeded += 1;
                        if state.destinations.on_success.is_some() {
                            // Counted before its record is delivered, which may take a while.
                            held.settle();
                        }
                        if self.succeed(queued, output).await {
                            held.done += 1;
                        }
                    }
                    Err(InvokeError::Cancelled) => {
                        // Stopped by the end of the grace period: the attempt does not count.
                        queued.attempts -= 1;
                        state.keep(queued, None);
                    }
                    Err(error) => {
                        held.settle();
                        self.after_failure(queued, &error).await;
                    }
                }
                if !run.sound {
                    // The instance is discarded with the lease; get a fresh one.
                    continue 'work;
                }
            }
        }
        // `held` gives back what is left and counts the worker out.
    }

    /// Waits up to [`PARK_FOR`](super::PARK_FOR) for events, holding no permit and no
    /// instance. Returns true when woken (the caller looks at the queue again; the wake-up may
    /// have been meant for another worker), or when the wait ran out with events queued;
    /// false when it ran out with the queue empty, or the function is stopping: the worker is
    /// to exit.
    async fn park(&self) -> bool {
        let state = &self.state;
        let unparked = state.unpark.notified();
        tokio::pin!(unparked);
        // Registered before the worker counts itself parked, so that no wake-up sent after
        // the count is missed.
        unparked.as_mut().enable();
        let woken = {
            state.parked.fetch_add(1, Ordering::SeqCst);
            let _parked = CountGuard(&state.parked);
            // Counted before this look: a push that this look misses sees the count and wakes
            // the worker (`wake_parked`).
            if !state.ready.lock().is_empty() {
                return true;
            }
            tokio::select! {
                // A wake-up wins over a timeout that is due at the same poll.
                biased;
                () = unparked => true,
                () = self.exec.hard_stop().cancelled() => return false,
                () = tokio::time::sleep(super::PARK_FOR) => false,
            }
        };
        if self.exec.is_stopped() {
            return false;
        }
        // Timed out: counted out first, then a last look, so that a push that saw this worker
        // still parked (and woke nobody else) is not left behind.
        woken || !state.ready.lock().is_empty()
    }

    /// Backs off after a throttle; a returned permit ends the wait early. Returns false when
    /// the function is stopping.
    async fn wait_after_throttle(&self, reason: ThrottleReason, throttled: u32) -> bool {
        self.state
            .counters
            .throttles
            .fetch_add(1, Ordering::Relaxed);
        self.exec.count_throttle(reason);
        let delay = self
            .exec
            .config()
            .async_invoke
            .throttle_backoff
            .delay(throttled);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.exec.permit_returned(reason) => true,
            () = self.exec.hard_stop().cancelled() => false,
        }
    }

    /// Decides and carries out what follows a failed attempt. The retry policy is user code:
    /// a panic in it means no retry, and the failure says why.
    pub(super) async fn after_failure(self: &Arc<Self>, queued: Queued<E>, error: &InvokeError) {
        let policy = &self.state.retry;
        let decided = catch_unwind(AssertUnwindSafe(|| policy.retry(queued.attempts, error)));
        let next = match decided {
            // A delay past any instant is past the event's maximum age too.
            Ok(Some(delay)) => match Instant::now().checked_add(delay) {
                Some(due) if !self.expired(&queued, due) => Next::Retry(delay),
                _ => Next::Fail(Condition::EventAgeExceeded, Some(error.into())),
            },
            Ok(None) => Next::Fail(give_up_condition(error), Some(error.into())),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    panic = %message, "retry policy panicked; the event is not retried");
                let mut info = ErrorInfo::from(error);
                info.message = format!(
                    "{} (not retried: the retry policy panicked: {message})",
                    info.message
                );
                Next::Fail(give_up_condition(error), Some(info))
            }
        };
        match next {
            Next::Retry(delay) => {
                let mut queued = queued;
                queued.last_error = Some(Box::new(error.into()));
                self.schedule_retry(queued, delay);
            }
            Next::Fail(condition, info) => self.fail(queued, condition, info).await,
        }
    }

    fn schedule_retry(self: &Arc<Self>, queued: Queued<E>, delay: Duration) {
        let state = &self.state;
        state.counters.retries.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        let seq = state.delay_seq.fetch_add(1, Ordering::Relaxed);
        state.delayed.lock().push(Delayed { due, seq, queued });
        state.delayed_changed.notify_one();
        if !state.timer_started.swap(true, Ordering::SeqCst) {
            let this = Arc::clone(self);
            self.exec.spawn(async move { this.retry_timer().await });
        }
    }

    /// Moves retries to the ready queue when they are due. Sleeps until the earliest is due,
    /// parks when there is none; stops at the end of the grace period.
    async fn retry_timer(self: Arc<Self>) {
        let state = &self.state;
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
            if let Some(oldest) = due.iter().map(|q| q.accepted_at).min() {
                let depth = {
                    let mut ready = state.ready.lock();
                    ready.extend(due);
                    ready.len()
                };
                state.wake_parked();
                self.watch_age(oldest);
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
                () = self.exec.hard_stop().cancelled() => return,
            }
        }
    }
}

/// The condition of an event the retry policy gave up on.
fn give_up_condition(error: &InvokeError) -> Condition {
    let never = matches!(error, InvokeError::Function(e) if e.retry_hint() == RetryHint::Never)
        || !matches!(
            error.kind(),
            OutcomeKind::Error
                | OutcomeKind::Timeout
                | OutcomeKind::Panic
                | OutcomeKind::InitFailure
        );
    if never {
        Condition::NotRetryable
    } else {
        Condition::RetriesExhausted
    }
}

/// Counts a worker out of the slow (or the parked) ones however its wait ends.
struct CountGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
