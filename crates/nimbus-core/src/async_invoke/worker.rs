//! The async workers: take a permit and an instance, run queued events back to back, and hand
//! each failed attempt to the retry decision (`retries.rs`).
//!
//! A worker whose queue empties gives back its permit and instance and parks for a moment
//! (`PARK_FOR`): events pushed meanwhile wake it; if none come, it exits.
//!
//! A worker's events are held by a drop guard (`held.rs`), so that a worker that ends for any
//! reason gives them back and the function keeps serving. The guard also counts the worker on
//! the CPU, except while it waits, so that arrivals add no worker the threads could not run.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFuture;

use super::expiry::AgeCheck;
use super::gauge::CountGuard;
use super::held::WorkerGuard;
use super::AsyncInvoker;
use super::{Condition, ErrorInfo, Queued};
use crate::error::{InvokeError, ThrottleReason};
use crate::executor::{readiness, Readiness};

/// Events a worker takes from the queue per lock, unless it takes the oldest chunk whole (see
/// `ready.rs`); and the most it keeps behind a long handler.
pub(super) const WORKER_BATCH: usize = 32;

/// How long a worker keeps the events of a whole chunk beyond [`WORKER_BATCH`] before it hands
/// them back: as long as a batch of handlers just short of long (`SPAWN_AFTER`) would take.
const HOLD_FOR: Duration = Duration::from_micros(50 * WORKER_BATCH as u64);

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Drains the queue: takes a permit and an instance, runs events until the queue is empty,
    /// then parks; exits when the queue stays empty through a park. What it takes is held by
    /// `held`.
    pub(super) async fn worker(self: &Arc<Self>, held: &mut WorkerGuard<E, O>) {
        let state = &self.state;
        let mut throttled = 0u32;
        // Handlers this worker ran in a row that were not long: a whole chunk is taken only
        // after a batch's worth of them (see the take below).
        let mut short_runs = 0usize;
        // Kept across parks (see `park`).
        let stopping = self.exec.hard_stop().cancelled();
        tokio::pin!(stopping);
        'work: loop {
            held.settle();
            if self.exec.is_stopped() {
                break 'work;
            }
            // Events beyond a batch's worth do not wait for this worker's next instance (after
            // a fault) or permit: another worker may take them.
            self.hand_back_beyond_batch(&mut held.batch);
            if held.batch.is_empty() && state.lock_ready().is_empty() {
                held.off_cpu();
                if !self.park(stopping.as_mut()).await {
                    break 'work;
                }
                held.on_cpu();
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
                        .or_else(|| state.lock_ready().pop_front());
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
                    held.off_cpu();
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    held.on_cpu();
                    continue 'work;
                }
            };
            let Some(active) = self.exec.activate(permit, true) else {
                break 'work;
            };
            // A warm instance, or an in-process cold start, is had at the first poll; a wait for
            // one (a process's start) is not time on the CPU.
            let leasing = self.exec.lease_instance();
            tokio::pin!(leasing);
            let leased =
                match std::future::poll_fn(|cx| Poll::Ready(leasing.as_mut().poll(cx))).await {
                    Poll::Ready(leased) => leased,
                    Poll::Pending => {
                        held.off_cpu();
                        let leased = leasing.await;
                        held.on_cpu();
                        leased
                    }
                };
            let (mut lease, mut init) = match leased {
                Ok(leased) => leased,
                Err(InvokeError::Throttled(reason)) => {
                    drop(active);
                    throttled += 1;
                    self.requeue(&mut held.batch);
                    held.off_cpu();
                    if !self.wait_after_throttle(reason, throttled).await {
                        break 'work;
                    }
                    held.on_cpu();
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
                        .or_else(|| state.lock_ready().pop_front());
                    if let Some(mut queued) = next {
                        // A destination may be slow: not time on the CPU.
                        held.off_cpu();
                        // One of a recursive loop would not have run anyway: it fails as such.
                        if let Err(looping) = self.exec.check_loop(&queued.principal) {
                            let info = Some(ErrorInfo::from(&looping));
                            self.fail(queued, Condition::NotRetryable, info).await;
                        } else {
                            queued.attempts += 1;
                            self.after_failure(queued, &error).await;
                        }
                        held.on_cpu();
                    }
                    continue 'work;
                }
            };
            throttled = 0;
            let mut now = Instant::now();
            // When the events of a whole chunk, beyond a batch's worth, go back.
            let mut hand_back_at = now;
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
                if held.batch.is_empty() {
                    held.settle();
                    // Take a fair share of the backlog, so slow handlers spread over workers
                    // and fast ones pay one lock per batch: up to a batch's worth, or, after a
                    // batch's worth of handlers in a row that finished on their first poll,
                    // short and without failing, and with no on-success destination to wait
                    // for, the oldest chunk whole when the share covers it (a full-size one is
                    // handed over, not copied: a backlog's events are never moved one by one).
                    // What is held beyond a batch's worth goes back after a long handler, after
                    // `HOLD_FOR`, and before a wait for a destination or an instance
                    // (`hand_back_beyond_batch`).
                    let workers = state.workers.load(Ordering::Relaxed).max(1);
                    let mut ready = state.lock_ready();
                    let share = (ready.len() / workers).max(1);
                    let front = ready.front_len();
                    let whole = front > WORKER_BATCH
                        && front <= share
                        && short_runs >= WORKER_BATCH
                        && state.destinations.on_success.is_none()
                        && ready.take_chunk(&mut held.batch) > 0;
                    if whole {
                        hand_back_at = now + HOLD_FOR;
                    } else {
                        let take = share.min(WORKER_BATCH).min(ready.len());
                        ready.take_front(take, &mut held.batch);
                    }
                    let left = !ready.is_empty();
                    drop(ready);
                    if left {
                        // Arrivals behind one wake-up sent no other (`wake_parked`): what this
                        // worker left, a parked one takes.
                        state.wake_parked();
                    }
                }
                if held.batch.is_empty() {
                    // The queue is empty: the permit and the instance go back, and the worker
                    // parks at the top of the loop.
                    lease.release(now);
                    continue 'work;
                }
                if reused {
                    // As a sync invoke's warm instance: the next event goes to an instance
                    // only once its backend says it can take it (a process whose runtime is
                    // back in `/next`), and the wait is not part of the next run.
                    match readiness(&mut lease) {
                        Readiness::Now => {}
                        Readiness::Dead => continue 'work,
                        Readiness::Wait(wait) => {
                            let wait = self.exec.wait_until_ready(wait);
                            tokio::pin!(wait);
                            // Often ready at once (a runtime already back in `/next`).
                            let first =
                                std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx)))
                                    .await;
                            let ready = match first {
                                Poll::Ready(ready) => ready,
                                Poll::Pending => {
                                    // As behind a slow handler.
                                    short_runs = 0;
                                    let _held_up = self.stand_aside(held);
                                    let ready = tokio::select! {
                                        biased;
                                        () = self.exec.hard_stop().cancelled() => false,
                                        ready = &mut wait => ready,
                                    };
                                    held.on_cpu();
                                    if ready {
                                        now = Instant::now();
                                        // Ready: the next event it takes goes to it without
                                        // asking again.
                                        reused = false;
                                        continue;
                                    }
                                    false
                                }
                            };
                            if !ready {
                                // Died (or stopping): discarded with the lease.
                                continue 'work;
                            }
                        }
                    }
                }
                reused = true;
                let Some(mut queued) = held.batch.pop_front() else {
                    continue;
                };
                if age.expired(queued.accepted_at, now) {
                    // A destination may be slow: what finished before is counted first, and
                    // what is held beyond a batch goes back (and, until a batch of handlers
                    // ran, no whole chunk is taken: failures would hand each back).
                    held.settle();
                    self.hand_back_beyond_batch(&mut held.batch);
                    short_runs = 0;
                    held.off_cpu();
                    self.fail(queued, Condition::EventAgeExceeded, None).await;
                    held.on_cpu();
                    // The next run starts after the delivery, however long it took.
                    now = Instant::now();
                    continue;
                }
                if let Err(error) = self.exec.check_loop(&queued.principal) {
                    // A recursive loop: never run, never retried (Lambda's DLQ / on-failure).
                    let info = Some(ErrorInfo::from(&error));
                    held.settle();
                    self.hand_back_beyond_batch(&mut held.batch);
                    short_runs = 0;
                    held.off_cpu();
                    self.fail(queued, Condition::NotRetryable, info).await;
                    held.on_cpu();
                    now = Instant::now();
                    continue;
                }
                queued.attempts += 1;
                let who = (queued.request_id, queued.principal.clone(), queued.attempts);
                // Held before the clone: an event type whose `Clone` panics is kept for the host
                // by the guard, not dropped with the unwinding worker.
                let event = held.current.insert(queued).event.clone();
                let mut run =
                    std::pin::pin!(self.exec.run_on(&mut lease, event, who, init.take(), now));
                // A handler that does not finish on its first poll holds this worker for a
                // while: count it as slow, and let the backlog have another worker at once.
                let run = match std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await
                {
                    Poll::Ready(run) => run,
                    Poll::Pending => {
                        // Only handlers that finish on their first poll lead to whole chunks.
                        short_runs = 0;
                        let _held_up = self.stand_aside(held);
                        let run = run.await;
                        held.on_cpu();
                        run
                    }
                };
                now = run.end;
                self.exec.count_into(&mut held.successes, &run);
                let Some(mut queued) = held.current.take() else {
                    unreachable!("the event in hand is held until its run ends")
                };
                match run.result {
                    Ok(output) => {
                        held.succeeded += 1;
                        let delivers = state.destinations.on_success.is_some();
                        if delivers {
                            // Counted before its record is delivered, which may take a while.
                            // (With an on-success destination no whole chunk is taken.)
                            held.settle();
                            held.off_cpu();
                        }
                        if self.succeed(queued, output).await {
                            held.done += 1;
                        }
                        held.on_cpu();
                        if delivers {
                            // The next run starts after the delivery: neither its billed
                            // duration nor its deadline includes it.
                            now = Instant::now();
                        }
                    }
                    Err(InvokeError::Cancelled) => {
                        // Stopped by the end of the grace period: the attempt does not count.
                        queued.attempts -= 1;
                        state.keep(queued, None);
                    }
                    Err(error) => {
                        held.settle();
                        self.hand_back_beyond_batch(&mut held.batch);
                        short_runs = 0;
                        held.off_cpu();
                        self.after_failure(queued, &error).await;
                        held.on_cpu();
                        now = Instant::now();
                    }
                }
                // A handler that held its thread longer than an event waits before it gets a
                // worker may have handed the thread off (`block_in_place`) or blocked it: the
                // worker does not hold back others until it runs a short one.
                let long = run.report.duration >= super::SPAWN_AFTER;
                if long {
                    held.off_cpu();
                    short_runs = 0;
                } else {
                    held.on_cpu();
                    short_runs = short_runs.saturating_add(1);
                }
                // The events of a whole chunk, beyond a batch's worth, go back behind a long
                // handler, or once held for `HOLD_FOR`: no more wait behind this worker, where
                // others cannot take them, than a batch's would.
                if long || now >= hand_back_at {
                    self.hand_back_beyond_batch(&mut held.batch);
                }
                if !run.sound {
                    // The instance is discarded with the lease; get a fresh one.
                    continue 'work;
                }
            }
        }
        // `held` gives back what is left and counts the worker out.
    }

    /// Before a wait that holds this worker (a handler that did not finish on its first poll,
    /// an instance not ready yet): counts what finished before it, hands back all it holds so
    /// that other workers take it instead of waiting behind this one, and counts itself held
    /// (while the returned guard lives) and off the CPU.
    fn stand_aside(self: &Arc<Self>, held: &mut WorkerGuard<E, O>) -> CountGuard<'_> {
        held.settle();
        let held_up = CountGuard::enter(&self.state.slow);
        held.off_cpu();
        if self.requeue(&mut held.batch) > 0 {
            self.kick_soon();
        }
        held_up
    }

    /// Puts what `batch` holds beyond a batch's worth back at the front of the queue, where
    /// other workers can take it, and adds a worker for it as an arrival would (one, if the
    /// runtime's threads have room).
    fn hand_back_beyond_batch(self: &Arc<Self>, batch: &mut VecDeque<Queued<E>>) {
        if batch.len() > WORKER_BATCH {
            let depth = self.requeue_beyond(batch, WORKER_BATCH);
            self.kick(depth, false);
        }
    }

    /// Waits up to [`PARK_FOR`](super::PARK_FOR) for events, holding no permit and no
    /// instance. Returns true when woken (the caller looks at the queue again; the wake-up may
    /// have been meant for another worker), or when the wait ran out with events queued;
    /// false when it ran out with the queue empty, or the function is stopping: the worker is
    /// to exit.
    ///
    /// `stopping` is the worker's own, kept from one park to the next: a worker that parks
    /// after each event (a light, steady load) registered and removed a cancellation waiter,
    /// under the token's lock, on every park. (The timer is not kept: kept, it cost fewer
    /// instructions but more CPU per event at 10,000 events/s on real threads.)
    async fn park(&self, mut stopping: Pin<&mut WaitForCancellationFuture<'_>>) -> bool {
        let state = &self.state;
        let unparked = state.unpark.notified();
        tokio::pin!(unparked);
        // Registered before the worker counts itself parked, so that no wake-up sent after
        // the count is missed.
        if unparked.as_mut().enable() {
            // Registering took a wake-up sent while no worker waited: taken before this
            // worker's look at the queue, as in the wait below (see `wake_parked`).
            state.waking.store(false, Ordering::SeqCst);
        }
        let woken = {
            let _parked = CountGuard::enter(&state.parked);
            // Counted before this look: a push that this look misses sees the count and wakes
            // the worker (`wake_parked`).
            if !state.lock_ready().is_empty() {
                return true;
            }
            tokio::select! {
                // A wake-up wins over a timeout that is due at the same poll.
                biased;
                () = unparked => {
                    // Taken: before the look at the queue, so that a push this look misses
                    // sends another (see `wake_parked`).
                    state.waking.store(false, Ordering::SeqCst);
                    true
                }
                () = stopping.as_mut() => return false,
                () = tokio::time::sleep(super::PARK_FOR) => false,
            }
        };
        if self.exec.is_stopped() {
            return false;
        }
        // Timed out: counted out first, then a last look, so that a push that saw this worker
        // still parked (and woke nobody else) is not left behind.
        woken || !state.lock_ready().is_empty()
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
}
