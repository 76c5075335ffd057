//! Where a finished async event goes: the on-success destination, or the failure path (the
//! on-failure destination, then the dead-letter target, then the host).
//!
//! Destinations and dead-letter targets are user code, and each call is a fault boundary: a
//! panic is a refused delivery, so is a call that has not answered within the function's
//! `delivery_timeout`, and a delivery still waiting when the grace period ends is cut off, its
//! event kept for the host (handed back by shutdown or unregister) with how it ended.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::SystemTime;

use super::queue::KeptFailure;
use super::{AsyncInvoker, Condition, DeadLetterAttributes, ErrorInfo, InvocationRecord, Queued};
use crate::config::UnroutedFailures;
use crate::handler::hops;
use crate::util::{panic_message, CatchUnwind};

/// How a call into a destination or dead-letter target ended.
enum Delivery {
    /// It took the value.
    Delivered,
    /// It refused (or panicked); the reason.
    Refused(String),
    /// The grace period ended first.
    Stopped,
}

type Delivering<'a, T> = Pin<Box<dyn Future<Output = Result<(), T>> + Send + 'a>>;

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Calls a destination: panics caught, the wait bounded by the delivery timeout and cut off
    /// at the end of the grace period.
    /// A delivery that finishes on its first poll costs no timer and no token registration.
    async fn guarded<'a, T>(
        &self,
        hop_count: u32,
        call: impl FnOnce() -> Delivering<'a, T>,
        reason: impl Fn(T) -> String,
    ) -> Delivery {
        // Work the target starts carries the event's hop count on, as work its handler starts
        // does (a destination that feeds the function back is a loop too).
        let call = || hops::sync_scope(hop_count, call);
        let future = match catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => future,
            Err(payload) => return Delivery::Refused(panicked(&panic_message(payload.as_ref()))),
        };
        let mut delivering = CatchUnwind(hops::scope(hop_count, future));
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut delivering).poll(cx)));
        let outcome = match first.await {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => {
                let timeout = self.exec.config().async_invoke.delivery_timeout;
                tokio::select! {
                    biased;
                    outcome = &mut delivering => outcome,
                    () = self.exec.hard_stop().cancelled() => return Delivery::Stopped,
                    () = tokio::time::sleep(timeout) => {
                        return Delivery::Refused(format!("no answer within {timeout:?}"));
                    }
                }
            }
        };
        match outcome {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(refused)) => Delivery::Refused(reason(refused)),
            Err(message) => Delivery::Refused(panicked(&message)),
        }
    }

    /// Delivers a success's record (the worker counts the success, see `WorkerGuard`).
    /// Returns whether the event is finished (the caller counts it out of `pending`); an event
    /// whose record was cut off by the end of the grace period, or refused while the runtime
    /// shuts down, is kept for the host instead.
    pub(super) async fn succeed(&self, queued: Queued<E>, output: O) -> bool {
        let state = &self.state;
        let Some(destination) = &state.destinations.on_success else {
            return true;
        };
        let delivery = match self.guarded_record(&queued, Condition::Success, Some(output), None) {
            Ok(record) => {
                self.guarded(
                    queued.principal.hops(),
                    || destination.deliver(record),
                    |refused| refused.reason,
                )
                .await
            }
            Err(refused) => refused,
        };
        match delivery {
            Delivery::Delivered => {
                state.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Delivery::Refused(reason) if self.exec.gate_closed() => {
                // Refused while the runtime shuts down (another function's queue closing, a
                // target stopping): the event is kept for the host, and handed back, rather
                // than lost. It is finished (out of `pending`, as kept failures are), so that
                // shutdown need not wait out its grace for it.
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    reason = %reason,
                    "on-success destination refused a record during shutdown; the event is kept for the host");
                state.keep_failure(KeptFailure {
                    queued,
                    condition: Condition::Success,
                    error: None,
                    at: SystemTime::now(),
                });
            }
            Delivery::Refused(reason) => {
                // The event succeeded; only its notification is lost, and it is logged.
                state
                    .counters
                    .delivery_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    reason = %reason, "on-success destination refused a record");
            }
            Delivery::Stopped => {
                state.keep(queued, Some((Condition::Success, None)));
                return false;
            }
        }
        true
    }

    /// The failure path: the on-failure destination, then the dead-letter target; an event
    /// neither takes is kept and handed back to the host.
    pub(super) async fn fail(
        &self,
        mut queued: Queued<E>,
        condition: Condition,
        error: Option<ErrorInfo>,
    ) {
        // An event that expires waiting for its retry ends with its last attempt's error.
        let error = error.or_else(|| queued.last_error.take().map(|e| *e));
        let state = &self.state;
        state.counters.failed.fetch_add(1, Ordering::Relaxed);
        let mut delivery = Delivery::Refused(String::new());
        if let Some(destination) = &state.destinations.on_failure {
            delivery = match self.guarded_record(&queued, condition, None, error.clone()) {
                Ok(record) => {
                    self.guarded(
                        queued.principal.hops(),
                        || destination.deliver(record),
                        |refused| refused.reason,
                    )
                    .await
                }
                Err(refused) => refused,
            };
            if let Delivery::Refused(reason) = &delivery {
                state
                    .counters
                    .delivery_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    reason = %reason, "on-failure destination refused a record");
            }
        }
        if let (Delivery::Refused(_), Some(dead_letter)) =
            (&delivery, &state.destinations.dead_letter)
        {
            delivery = match catch_unwind(AssertUnwindSafe(|| queued.event.clone())) {
                Ok(event) => {
                    let attributes =
                        DeadLetterAttributes::of(queued.request_id, condition, error.as_ref());
                    self.guarded(
                        queued.principal.hops(),
                        || dead_letter.send(event, attributes),
                        |refused| refused.reason,
                    )
                    .await
                }
                Err(payload) => Delivery::Refused(clone_panicked(payload.as_ref())),
            };
            if let Delivery::Refused(reason) = &delivery {
                state
                    .counters
                    .delivery_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    reason = %reason, "dead-letter target refused an event");
            }
        }
        match delivery {
            Delivery::Delivered => {
                state.counters.delivered.fetch_add(1, Ordering::Relaxed);
                state.finish_one();
            }
            // Cut off by the end of the grace period: handed back with how it ended.
            Delivery::Stopped => state.keep(queued, Some((condition, error))),
            Delivery::Refused(_) => self.unrouted(queued, condition, error),
        }
    }

    /// A failed event no target took (none configured, or each refused it): kept for the host
    /// (bounded, and not against the queue capacity), or dropped with a warning, as configured.
    fn unrouted(&self, queued: Queued<E>, condition: Condition, error: Option<ErrorInfo>) {
        let state = &self.state;
        let (error_type, message) = error
            .as_ref()
            .map_or(("", ""), |e| (e.error_type.as_str(), e.message.as_str()));
        match self.exec.config().async_invoke.unrouted_failures {
            UnroutedFailures::Discard => {
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    condition = ?condition, error_type, error_message = message,
                    "async event failed and no destination took it; discarded");
                state.counters.discarded.fetch_add(1, Ordering::Relaxed);
            }
            UnroutedFailures::Keep => {
                tracing::debug!(function = %self.exec.name(), request_id = %queued.request_id,
                    condition = ?condition, error_type, error_message = message,
                    "async event failed; kept for the host");
                let first = state.keep_failure(KeptFailure {
                    queued,
                    condition,
                    error,
                    at: SystemTime::now(),
                });
                if first {
                    tracing::warn!(function = %self.exec.name(),
                        "an async event failed and no destination took it: it is kept for the \
                         host (FunctionHandle::take_failed, handed back at shutdown); add an \
                         on-failure destination, or choose UnroutedFailures::Discard");
                }
            }
        }
        state.finish_one();
    }

    /// The record for a destination; the event's `Clone` is user code, and a panic in it is
    /// a refused delivery.
    fn guarded_record(
        &self,
        queued: &Queued<E>,
        condition: Condition,
        response: Option<O>,
        error: Option<ErrorInfo>,
    ) -> Result<InvocationRecord<E, O>, Delivery> {
        catch_unwind(AssertUnwindSafe(|| {
            self.record(queued, condition, response, error)
        }))
        .map_err(|payload| Delivery::Refused(clone_panicked(payload.as_ref())))
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
            function: self.exec.name().clone(),
            function_arn: self.arn.clone(),
            timestamp: SystemTime::now(),
            condition,
            approximate_invoke_count: queued.attempts,
            request: queued.event.clone(),
            response,
            error,
        }
    }
}

impl<E, O> AsyncInvoker<E, O> {
    /// The record of a failed event kept for the host, as the on-failure destination would have
    /// received it.
    pub(super) fn failed_record(&self, failed: KeptFailure<E>) -> InvocationRecord<E, O> {
        InvocationRecord {
            request_id: failed.queued.request_id,
            function: self.exec.name().clone(),
            function_arn: self.arn.clone(),
            timestamp: failed.at,
            condition: failed.condition,
            approximate_invoke_count: failed.queued.attempts,
            request: failed.queued.event,
            response: None,
            error: failed.error,
        }
    }
}

fn clone_panicked(payload: &(dyn std::any::Any + Send)) -> String {
    format!("cloning the event panicked: {}", panic_message(payload))
}

fn panicked(message: &str) -> String {
    format!("panicked: {message}")
}
