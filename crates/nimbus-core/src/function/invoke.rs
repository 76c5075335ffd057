//! The invocation path: admission, permit, instance, guarded run (timeout, panic, shutdown),
//! settlement and metering.
//!
//! The handler runs on the caller's task: no spawn and no channel on the hot path. A no-op
//! invocation touches a handful of atomics and the pool's mutex twice; timers are created only
//! if the handler does not finish on its first poll.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::FunctionInner;
use crate::concurrency::Permit;
use crate::error::{InitFailure, InvokeError, OutcomeKind, ThrottleReason};
use crate::handler::{Context, Handler, InitContext, Invoker, RequestId};
use crate::instance::Lease;
use crate::metering::{self, UsageReport};
use crate::metrics::{CLOSED, RETIRED};

/// Options of one invocation.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InvokeOptions {
    /// Who is invoking (default: the host).
    pub invoker: Invoker,
    /// The attempt number seen by the handler (default 1).
    pub attempt: Option<u32>,
}

impl InvokeOptions {
    /// Sets who is invoking.
    #[must_use]
    pub fn with_invoker(mut self, invoker: Invoker) -> Self {
        self.invoker = invoker;
        self
    }

    /// Sets the attempt number (1 for a first attempt).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }
}

/// The outcome of one invocation and, if a handler ran, its usage report.
#[derive(Debug)]
#[non_exhaustive]
pub struct Invocation<O> {
    /// The output, or how the invocation failed.
    pub result: Result<O, InvokeError>,
    /// What the invocation used; `None` when no handler ran (throttled, refused, init failed).
    pub report: Option<UsageReport>,
}

impl<O> Invocation<O> {
    fn refused(error: InvokeError) -> Self {
        Self {
            result: Err(error),
            report: None,
        }
    }
}

/// What [`FunctionInner::run_on`] produced.
pub(crate) struct Run<O> {
    pub(crate) result: Result<O, InvokeError>,
    pub(crate) report: UsageReport,
    /// The instance finished normally (output or function error) and may be reused.
    pub(crate) sound: bool,
    pub(crate) end: Instant,
}

/// How a guarded run ended.
enum Ran<T> {
    Completed(T),
    Panicked(String),
    TimedOut,
    Cancelled,
}

/// Polls a future inside `catch_unwind`, turning a panic into a value.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl<E: Send + 'static, O: Send + 'static> FunctionInner<E, O> {
    pub(crate) async fn invoke(&self, event: E, options: InvokeOptions) -> Invocation<O> {
        // A handler that finishes on its first poll never yields; charge the task's cooperative
        // budget so that a caller looping over invocations still lets its worker run other tasks.
        tokio::task::consume_budget().await;
        let Some(_in_flight) = self.shared.gate.enter() else {
            return Invocation::refused(InvokeError::ShuttingDown);
        };
        let permit = match self.try_permit() {
            Ok(permit) => permit,
            Err(_) if self.is_closed() => return Invocation::refused(self.unregistered()),
            Err(reason) => {
                self.counters.throttled(reason);
                return Invocation::refused(InvokeError::Throttled(reason));
            }
        };
        let Some(_active) = self.activate(permit, false) else {
            return Invocation::refused(self.unregistered());
        };

        let (mut lease, init_duration) = match self.lease_instance().await {
            Ok(leased) => leased,
            Err(error) => return Invocation::refused(error),
        };
        let request_id = self.shared.next_request_id();
        let run = self
            .run_on(
                &mut lease,
                event,
                request_id,
                options,
                init_duration,
                Instant::now(),
            )
            .await;
        if run.sound {
            lease.release(run.end);
        }
        if matches!(run.result, Err(InvokeError::Cancelled)) {
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        Invocation {
            result: run.result,
            report: Some(run.report),
        }
    }

    /// A permit from the function's reservation, or from the runtime's unreserved pool.
    pub(crate) fn try_permit(&self) -> Result<Permit<'_>, ThrottleReason> {
        match &self.reserved {
            Some(limiter) => limiter.try_acquire().ok_or(ThrottleReason::FunctionLimit),
            None => self
                .shared
                .unreserved
                .try_acquire()
                .ok_or(ThrottleReason::RuntimeLimit),
        }
    }

    /// A warm instance, or a new one if the scale rate allows (with its init duration).
    /// Throttles and init failures are counted here.
    pub(crate) async fn lease_instance(
        &self,
    ) -> Result<(Lease<'_, E, O>, Option<Duration>), InvokeError> {
        if let Some(lease) = self.pool.take_warm() {
            return Ok((lease, None));
        }
        if !self.scale.try_take() {
            self.counters.throttled(ThrottleReason::ScaleRate);
            return Err(InvokeError::Throttled(ThrottleReason::ScaleRate));
        }
        match self.init_instance(false).await {
            Ok((instance, took)) => {
                self.counters.cold_start();
                Ok((self.pool.lease_new(instance), Some(took)))
            }
            Err(error) => {
                if matches!(error, InvokeError::Init(_)) {
                    self.counters.init_failed();
                }
                Err(error)
            }
        }
    }

    /// Runs one event on a leased instance: guarded run, metering, metrics, REPORT event.
    /// The caller releases the lease if the run left the instance `sound`, or drops it.
    /// `start` is now, as the caller last read the clock (one read fewer per event).
    pub(crate) async fn run_on(
        &self,
        lease: &mut Lease<'_, E, O>,
        event: E,
        request_id: RequestId,
        options: InvokeOptions,
        init_duration: Option<Duration>,
        start: Instant,
    ) -> Run<O> {
        let (instance, cancel) = lease.parts();
        let cancel = Arc::clone(cancel);
        let ctx = Context {
            request_id,
            function_name: self.name.clone(),
            memory_mb: self.config.memory_mb,
            deadline: start + self.config.timeout,
            attempt: options.attempt.unwrap_or(1),
            invoker: options.invoker,
            cancel: Arc::clone(&cancel),
        };
        let ran = self
            .run_guarded(instance.call(event, ctx), start, &cancel)
            .await;
        drop(cancel);
        let end = Instant::now();
        let duration = end.saturating_duration_since(start);

        let (result, sound) = match ran {
            Ran::Completed(Ok(output)) => (Ok(output), true),
            Ran::Completed(Err(error)) => (Err(InvokeError::Function(error)), true),
            Ran::Panicked(message) => (Err(InvokeError::Panic(message)), false),
            Ran::TimedOut => (Err(InvokeError::Timeout(self.config.timeout)), false),
            Ran::Cancelled => (Err(InvokeError::Cancelled), false),
        };
        let kind = match &result {
            Ok(_) => OutcomeKind::Success,
            Err(error) => error.kind(),
        };
        let billed = metering::billed(duration, self.config.billing);
        self.counters.finished(kind, duration, billed);
        tracing::info!(
            target: "nimbus::report",
            function = %self.name,
            request_id = %request_id,
            outcome = ?kind,
            duration_us = duration.as_micros() as u64,
            billed_ms = billed.as_millis() as u64,
            memory_mb = self.config.memory_mb,
            init_us = init_duration.map(|d| d.as_micros() as u64),
            "REPORT"
        );
        Run {
            result,
            report: UsageReport {
                request_id,
                duration,
                billed_duration: billed,
                memory_mb: self.config.memory_mb,
                init_duration,
            },
            sound,
            end,
        }
    }

    /// Runs the handler's future against the deadline and shutdown.
    async fn run_guarded<F>(
        &self,
        future: F,
        start: Instant,
        cancel: &CancellationToken,
    ) -> Ran<F::Output>
    where
        F: Future + Unpin,
    {
        let mut run = CatchUnwind(future);
        // Fast path: most handlers finish on their first poll, and then no timer is needed.
        if let Poll::Ready(done) = poll_fn(|cx| Poll::Ready(Pin::new(&mut run).poll(cx))).await {
            return match done {
                Ok(output) => Ran::Completed(output),
                Err(message) => Ran::Panicked(message),
            };
        }
        // Slow path, boxed so that the timer's state does not bloat (and get copied with) every
        // invocation's future.
        Box::pin(self.run_pending(run, start, cancel)).await
    }

    /// Waits for a handler that did not finish on its first poll, against the deadline and
    /// shutdown.
    async fn run_pending<F>(
        &self,
        mut run: CatchUnwind<F>,
        start: Instant,
        cancel: &CancellationToken,
    ) -> Ran<F::Output>
    where
        F: Future + Unpin,
    {
        let deadline = tokio::time::sleep_until(start + self.config.timeout);
        tokio::pin!(deadline);
        let mut told_of_shutdown = false;
        loop {
            tokio::select! {
                biased;
                done = &mut run => return match done {
                    Ok(output) => Ran::Completed(output),
                    Err(message) => Ran::Panicked(message),
                },
                () = &mut deadline => {
                    cancel.cancel();
                    return Ran::TimedOut;
                }
                () = self.hard_stop.cancelled() => {
                    cancel.cancel();
                    return Ran::Cancelled;
                }
                () = self.stopped.cancelled(), if !told_of_shutdown => {
                    // Tell the handler; it keeps running until the grace period ends.
                    told_of_shutdown = true;
                    cancel.cancel();
                }
            }
        }
    }

    /// The init phase of one instance, under the init timeout, with panics caught.
    pub(crate) async fn init_instance(
        &self,
        provisioned: bool,
    ) -> Result<(Box<dyn Handler<E, O>>, Duration), InvokeError> {
        let ctx = InitContext {
            function_name: self.name.clone(),
            memory_mb: self.config.memory_mb,
            instance_number: self.instance_seq.fetch_add(1, Ordering::Relaxed),
            provisioned,
        };
        let start = Instant::now();
        // The factory is user code from its first instruction: a panic before it returns its
        // future is an init failure too.
        let init = match catch_unwind(AssertUnwindSafe(|| self.factory.init(ctx))) {
            Ok(init) => init,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                return Err(InvokeError::Init(InitFailure::Panic(message)));
            }
        };
        let init = tokio::time::timeout(self.config.init_timeout, CatchUnwind(init));
        let outcome = tokio::select! {
            biased;
            outcome = init => outcome,
            () = self.hard_stop.cancelled() => {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                return Err(InvokeError::Cancelled);
            }
        };
        let took = start.elapsed();
        self.counters.init_time(took);
        match outcome {
            Ok(Ok(Ok(instance))) => Ok((instance, took)),
            Ok(Ok(Err(error))) => Err(InvokeError::Init(InitFailure::Error {
                error_type: error.error_type().to_owned(),
                message: error.message().to_owned(),
            })),
            Ok(Err(message)) => Err(InvokeError::Init(InitFailure::Panic(message))),
            Err(_elapsed) => Err(InvokeError::Init(InitFailure::Timeout(
                self.config.init_timeout,
            ))),
        }
    }
}

/// An invocation counted in its function's busy gauge, holding its permit. Dropped, it returns
/// the permit first and then counts the invocation out, so that the last one out of a retired
/// function knows that every permit of the function is back.
pub(crate) struct Active<'a, E, O> {
    function: &'a FunctionInner<E, O>,
    permit: Option<Permit<'a>>,
}

impl<E, O> Drop for Active<'_, E, O> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let flags = self.function.counters.busy_leave();
        if flags != 0 {
            self.function.last_out(flags);
        }
    }
}

impl<E, O> FunctionInner<E, O> {
    /// Counts an invocation holding `permit` in, unless the function is closed to it: a
    /// `worker` of the async queue runs until the function is retired, a caller only until it
    /// is closed.
    pub(crate) fn activate<'a>(
        &'a self,
        permit: Permit<'a>,
        worker: bool,
    ) -> Option<Active<'a, E, O>> {
        let flags = self.counters.busy_enter();
        let active = Active {
            function: self,
            permit: Some(permit),
        };
        let refused = if worker { RETIRED } else { CLOSED | RETIRED };
        (flags & refused == 0).then_some(active)
    }

    /// The error of an invocation refused because the function was unregistered.
    pub(crate) fn unregistered(&self) -> InvokeError {
        InvokeError::Unregistered(self.name.to_string())
    }
}
