//! One invocation on one instance: sync admission (gate, permit, instance), the guarded run
//! (timeout, panic, fault, shutdown), settlement and metering. Leasing an instance (and its init
//! phase) is in `lease.rs`.
//!
//! The handler runs on the caller's task: no spawn and no channel on the hot path. A no-op
//! invocation touches a handful of atomics and the pool's mutex twice; timers are created only
//! if the handler does not finish on its first poll (or, with the CPU governor on, must wait
//! for its CPU share).

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{governor, Executor};
use crate::error::{InvokeError, OutcomeKind, Refused};
use crate::handler::{hops, Caller, ClientContext, CognitoIdentity, Context, Extras, RequestId};
use crate::instance::{Fault, Instance, Lease};
use crate::metering::{self, UsageReport};
use crate::metrics::Successes;
use crate::util::{guarded, panic_message, CatchUnwind};

/// Options of one invocation. Who invokes is not among them: the runtime sets the
/// [`Principal`](crate::Principal) from the path the invocation takes.
///
/// # Example
///
/// ```
/// use nimbus_core::{CognitoIdentity, InvokeOptions};
///
/// let options = InvokeOptions::default()
///     .with_trace_id("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
///     .with_identity(CognitoIdentity {
///         identity_id: "us-east-1:1234".into(),
///         identity_pool_id: "us-east-1:pool".into(),
///     });
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InvokeOptions {
    /// The attempt number seen by the handler (default 1).
    pub attempt: Option<u32>,
    /// Trace header, client context, identity: shared with the context as they are.
    extras: Option<Arc<Extras>>,
    /// The hop count of the work (see [`hops`](crate::handler::hops)): mapping engines pass
    /// the highest count their records carry. The runtime keeps the higher of this and the
    /// count it knows.
    pub hops: Option<u32>,
}

impl InvokeOptions {
    /// Sets the attempt number (1 for a first attempt).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the X-Ray trace header the handler sees
    /// ([`Context::xray_trace_id`]), in place of the one nimbus derives.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.extras_mut().trace_id = Some(trace_id.into().into_boxed_str());
        self
    }

    /// Sets the client context the handler sees ([`Context::client_context`]).
    #[must_use]
    pub fn with_client_context(mut self, client_context: ClientContext) -> Self {
        self.extras_mut().client_context = Some(client_context);
        self
    }

    /// Sets the Cognito identity the handler sees ([`Context::identity`]).
    #[must_use]
    pub fn with_identity(mut self, identity: CognitoIdentity) -> Self {
        self.extras_mut().identity = Some(identity);
        self
    }

    fn extras_mut(&mut self) -> &mut Extras {
        Arc::make_mut(self.extras.get_or_insert_with(Arc::default))
    }

    /// Sets the hop count of the work this invocation handles.
    #[must_use]
    pub fn with_hops(mut self, hops: u32) -> Self {
        self.hops = Some(hops);
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

/// What [`Executor::run_on`] produced, not yet counted in the function's metrics (the
/// caller counts it: [`Executor::count`], [`Executor::count_into`]).
pub(crate) struct Run<O> {
    pub(crate) result: Result<O, InvokeError>,
    pub(crate) tally: Tally,
    pub(crate) report: UsageReport,
    /// The instance finished normally (output or function error) and may be reused.
    pub(crate) sound: bool,
    pub(crate) end: Instant,
}

/// What a run counts in the function's metrics: the executor's own figures (a backend's
/// `finished` may change the report it is shown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally {
    kind: OutcomeKind,
    duration: Duration,
    billed: Duration,
    provisioned: bool,
}

/// How a guarded run ended.
enum Ran<T> {
    Completed(T),
    Panicked(String),
    TimedOut,
    Cancelled,
}

impl<E: Send + 'static, O: Send + 'static> Executor<E, O> {
    /// Invokes synchronously: throttled at once when there is no permit or no instance to be
    /// had, otherwise runs on a warm or new instance.
    pub(crate) fn invoke(
        &self,
        event: E,
        principal: Caller,
        options: InvokeOptions,
    ) -> impl Future<Output = Invocation<O>> + Send + '_ {
        // Not an `async fn` around `invoke_then`: a future nested in another costs a copy
        // and a drop of its state per invocation.
        self.invoke_then(
            event,
            principal,
            options,
            |_, error| Invocation::refused(error),
            |invocation| invocation,
        )
    }

    /// As [`Executor::invoke`], handing the event back when the invocation is refused before a
    /// handler sees it, so that a caller can retry a throttle without a copy of the event.
    pub(crate) fn try_invoke(
        &self,
        event: E,
        principal: Caller,
        options: InvokeOptions,
    ) -> impl Future<Output = Result<Invocation<O>, Refused<E>>> + Send + '_ {
        self.invoke_then(
            event,
            principal,
            options,
            |event, error| Err(Refused { event, error }),
            Ok,
        )
    }

    /// Invokes, answering `refuse(event, error)` when the invocation is refused before a
    /// handler sees the event, and `ran(invocation)` once one ran. `principal` inherits the
    /// hop count of the invocation running where this future is first polled.
    pub(crate) async fn invoke_then<R>(
        &self,
        event: E,
        principal: Caller,
        options: InvokeOptions,
        refuse: impl FnOnce(E, InvokeError) -> R + Send,
        ran: impl FnOnce(Invocation<O>) -> R + Send,
    ) -> R {
        // A handler that finishes on its first poll never yields; charge the task's cooperative
        // budget so that a caller looping over invocations still lets its worker run other tasks.
        tokio::task::consume_budget().await;
        let Some(_in_flight) = self.shared.gate.enter() else {
            return refuse(event, InvokeError::ShuttingDown);
        };
        if let Err(denied) = self.authorize(&principal) {
            return refuse(event, InvokeError::AccessDenied(denied));
        }
        let principal = principal.inheriting();
        let hops = principal.hops().max(options.hops.unwrap_or(0));
        let principal = principal.with_hops(hops);
        if let Err(error) = self.check_loop(&principal) {
            return refuse(event, error);
        }
        let permit = match self.try_permit() {
            Ok(permit) => permit,
            Err(_) if self.is_closed() => return refuse(event, self.unregistered()),
            Err(reason) => {
                self.counters.throttled(reason);
                return refuse(event, InvokeError::Throttled(reason));
            }
        };
        let Some(_active) = self.activate(permit, false) else {
            return refuse(event, self.unregistered());
        };

        let (mut lease, init_duration) = match self.lease_instance().await {
            Ok(leased) => leased,
            Err(error) => return refuse(event, error),
        };
        let request_id = self.shared.next_request_id();
        let attempt = options.attempt.unwrap_or(1);
        let run = self
            .run_on_with(
                &mut lease,
                event,
                (request_id, principal, attempt),
                options.extras,
                init_duration,
                Instant::now(),
            )
            .await;
        self.count(&run);
        if run.sound {
            lease.release(run.end);
        }
        if matches!(run.result, Err(InvokeError::Cancelled)) {
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        ran(Invocation {
            result: run.result,
            report: Some(run.report),
        })
    }

    /// Refuses an invocation whose hop count reached the recursion limit, unless the function
    /// allows loops (counted, and logged once per function).
    pub(crate) fn check_loop(&self, principal: &Caller) -> Result<(), InvokeError> {
        let hops = principal.hops();
        if !hops::stops(hops, self.config.recursive_loop) {
            return Ok(());
        }
        if self.counters.recursive_loop() {
            tracing::warn!(
                function = %self.name,
                hops,
                "recursive loop detected: an invocation reached the hop limit and was stopped \
                 (allow it with FunctionConfig::with_recursive_loop(RecursiveLoop::Allow))"
            );
        }
        Err(InvokeError::RecursiveLoop { hops })
    }

    /// Runs one event on a leased instance: guarded run, metering, REPORT event; the caller
    /// counts the run in the metrics.
    /// `who` is the request id, the principal and the attempt number. The caller releases the
    /// lease if the run left the instance `sound`, or drops it (discarding the instance).
    /// `start` is now, as the caller last read the clock (one read fewer per event).
    pub(crate) fn run_on<'a, 'l>(
        &'a self,
        lease: &'a mut Lease<'l, E, O>,
        event: E,
        who: (RequestId, Caller, u32),
        init_duration: Option<Duration>,
        start: Instant,
    ) -> impl Future<Output = Run<O>> + use<'a, 'l, E, O> {
        // Not an `async fn`: its future would hold `run_on_with`'s, copied into it and dropped
        // with it per event.
        self.run_on_with(lease, event, who, None, init_duration, start)
    }

    /// As [`Executor::run_on`], with what the caller set beyond the event.
    pub(crate) async fn run_on_with(
        &self,
        lease: &mut Lease<'_, E, O>,
        event: E,
        who: (RequestId, Caller, u32),
        extras: Option<Arc<Extras>>,
        init_duration: Option<Duration>,
        start: Instant,
    ) -> Run<O> {
        let (request_id, principal, attempt) = who;
        let (instance, scope) = lease.parts();
        let hop_count = principal.hops();
        let ctx = Context::new(
            request_id,
            start + self.config.timeout,
            attempt,
            principal,
            Arc::clone(scope),
            extras,
        );
        // The backend's `invoke` is user code before it returns its future too.
        // The hop count is visible to everything the handler does on this task (see `hops`).
        let invoke = || hops::sync_scope(hop_count, || instance.invoke(event, ctx));
        let ran = match catch_unwind(AssertUnwindSafe(invoke)) {
            Ok(future) => {
                // Off, the governor costs a branch: no clock read, no allocation.
                let future = if self.config.cpu_governor {
                    governor::govern(future, self.config.cpu_share(), start)
                } else {
                    future
                };
                // Fast path: most handlers finish on their first poll, and then no timer is
                // needed. Polled here rather than in a helper `async fn`, whose future would be
                // copied into this one's per invocation.
                let mut run = CatchUnwind(hops::scope(hop_count, future));
                match poll_fn(|cx| Poll::Ready(Pin::new(&mut run).poll(cx))).await {
                    Poll::Ready(Ok(output)) => Ran::Completed(output),
                    Poll::Ready(Err(message)) => Ran::Panicked(message),
                    // Slow path, boxed so that the timer's state does not bloat (and get
                    // copied with) every invocation's future.
                    Poll::Pending => Box::pin(self.run_pending(run, start, &scope.cancel)).await,
                }
            }
            Err(payload) => Ran::Panicked(panic_message(payload.as_ref())),
        };
        let end = Instant::now();
        let duration = end.saturating_duration_since(start);

        let (result, sound) = match ran {
            Ran::Completed(Ok(output)) => (Ok(output), true),
            Ran::Completed(Err(error)) => match fault_of(instance.as_mut()) {
                None => (Err(InvokeError::Function(error)), true),
                Some(Fault::Panicked(message)) => (Err(InvokeError::Panic(message)), false),
                Some(Fault::Exited(message)) => (Err(InvokeError::Crashed(message)), false),
                Some(Fault::OutOfMemory(message)) => {
                    (Err(InvokeError::OutOfMemory(message)), false)
                }
            },
            Ran::Panicked(message) => (Err(InvokeError::Panic(message)), false),
            Ran::TimedOut => (Err(InvokeError::Timeout(self.config.timeout)), false),
            Ran::Cancelled => (Err(InvokeError::Cancelled), false),
        };
        let kind = match &result {
            Ok(_) => OutcomeKind::Success,
            Err(error) => error.kind(),
        };
        let billed = metering::billed(duration, self.config.billing);
        // At debug: a line per invocation at info would cost more than a fast handler.
        tracing::debug!(
            target: "nimbus::report",
            function = %self.name,
            request_id = %request_id,
            outcome = ?kind,
            duration_us = duration.as_micros() as u64,
            billed_ms = billed.as_millis() as u64,
            memory_mb = self.config.memory_mb,
            init_us = init_duration.map(|d| d.as_micros() as u64),
            log_stream = scope.log_stream(),
            provisioned = scope.provisioned,
            "REPORT"
        );
        let provisioned = scope.provisioned;
        let mut report = UsageReport {
            request_id,
            duration,
            billed_duration: billed,
            memory_mb: self.config.memory_mb,
            max_memory_used_mb: None,
            init_duration,
            provisioned,
        };
        // The backend's answer is user code: a panic in it discards the instance.
        let told = guarded(
            || {
                instance.finished(&mut report, result.as_ref().err());
                true
            },
            false,
        );
        Run {
            result,
            tally: Tally {
                kind,
                duration,
                billed,
                provisioned,
            },
            report,
            sound: sound && told,
            end,
        }
    }

    /// Counts a run in the function's metrics (and, on a provisioned instance, in its usage).
    pub(crate) fn count(&self, run: &Run<O>) {
        let Tally {
            kind,
            duration,
            billed,
            provisioned,
        } = run.tally;
        self.counters.finished(kind, duration, billed);
        if provisioned {
            self.counters.provisioned(billed);
        }
    }

    /// As [`Executor::count`], but a success on an on-demand instance is counted in `batch`
    /// until [`Executor::flush`]: a worker running events back to back pays the counters'
    /// atomic adds once per batch.
    pub(crate) fn count_into(&self, batch: &mut Successes, run: &Run<O>) {
        let tally = run.tally;
        if tally.kind == OutcomeKind::Success && !tally.provisioned {
            self.counters
                .succeeded_into(batch, tally.duration, tally.billed);
        } else {
            self.count(run);
        }
    }

    /// Adds the successes counted in `batch` to the function's metrics.
    pub(crate) fn flush(&self, batch: &mut Successes) {
        self.counters.flush(batch);
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
}

/// Asks an instance whose invocation failed whether it died; a panic in the backend's answer
/// counts as a death.
fn fault_of<E: 'static, O: 'static>(instance: &mut dyn Instance<E, O>) -> Option<Fault> {
    guarded(
        || instance.fault(),
        Some(Fault::Exited(
            "the backend panicked reporting a fault".to_owned(),
        )),
    )
}
