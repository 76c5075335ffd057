//! A function's lifecycle in its executor: invocations counted in and out ([`Active`]),
//! provisioning and the reaper, and the steps of unregister and shutdown (close, drain, halt,
//! quiesce, stop instances) with the reservation returned by the last permit out.

use std::sync::atomic::Ordering;

use super::Executor;
use crate::concurrency::Permit;
use crate::error::{InitFailure, InvokeError};
use crate::metrics::{CLOSED, RETIRED};

/// An invocation counted in its function's busy gauge, holding its permit. Dropped, it returns
/// the permit first and then counts the invocation out, so that the last one out of a retired
/// function knows that every permit of the function is back.
pub(crate) struct Active<'a, E, O> {
    function: &'a Executor<E, O>,
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

impl<E, O> Executor<E, O> {
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

    /// The last invocation left a closed function; `flags` are those it found.
    fn last_out(&self, flags: usize) {
        self.drained.notify_waiters();
        if flags & RETIRED != 0 {
            self.return_reservation();
        }
    }

    /// Gives the function's reservation back to the runtime's pool, once.
    fn return_reservation(&self) {
        if let Some(amount) = self.config.reserved_concurrency() {
            if !self.reservation_returned.swap(true, Ordering::AcqRel) {
                self.shared.unreserve(amount);
            }
        }
    }

    /// Waits until no invocation is counted in (only once the function is closed).
    async fn until_not_busy(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counters.busy() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Unregister begins: refuse new invocations, tell running handlers. Returns how many
    /// invocations were in flight.
    pub(crate) fn close(&self) -> usize {
        self.lifecycle.closed.store(true, Ordering::Release);
        let in_flight = self.counters.busy_flag(CLOSED);
        self.stopped.cancel();
        in_flight
    }

    /// Resolves when no invocation is counted in.
    pub(crate) async fn drained(&self) {
        self.until_not_busy().await;
    }

    /// The unregister grace has ended: cancel what runs, stop the function's tasks; the
    /// reservation returns with the last permit.
    pub(crate) fn halt(&self) {
        self.lifecycle.halted.store(true, Ordering::Release);
        if self.counters.busy_flag(RETIRED) == 0 {
            self.return_reservation();
        }
        self.hard_stop.cancel();
    }

    /// Resolves when nothing of the function runs any more.
    pub(crate) async fn quiesced(&self) {
        self.until_not_busy().await;
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops the reaper and disposes of idle instances (and of any given back later); returns
    /// how many were disposed of now.
    pub(crate) fn stop_instances(&self) -> usize {
        self.stopped.cancel();
        self.provisioned_disabled();
        self.pool.close()
    }

    /// Invocations of the function cancelled so far.
    pub(crate) fn cancelled(&self) -> u64 {
        self.counters.snapshot(0, 0).cancelled
    }

    /// Whether the function holds no reservation any more.
    pub(crate) fn reservation_returned(&self) -> bool {
        self.config.reserved_concurrency().is_none()
            || self.reservation_returned.load(Ordering::Acquire)
    }
}

impl<E: Send + 'static, O: Send + 'static> Executor<E, O> {
    /// Initialises the provisioned instances, yielding between them so that a caller's
    /// timeout can fire however many there are.
    pub(crate) async fn provision(&self) -> Result<(), InitFailure> {
        let min = self.config.min_instances as usize;
        for _ in 0..min {
            tokio::task::yield_now().await;
            let claimed = self.pool.claim_provisioned(min);
            let outcome = self.init_instance(claimed).await;
            if outcome.is_err() && claimed {
                self.pool.unclaim_provisioned();
            }
            match outcome {
                Ok((instance, scope, _)) => self.pool.add_idle(instance, scope),
                Err(InvokeError::Init(failure)) => return Err(failure),
                Err(other) => {
                    return Err(InitFailure::Error {
                        error_type: other.error_type().to_owned(),
                        message: other.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Starts the reaper of idle instances.
    pub(crate) fn start_reaper(self: &std::sync::Arc<Self>) {
        let this = std::sync::Arc::clone(self);
        self.spawn(async move {
            let min = this.config.min_instances as usize;
            this.pool
                .reap(min, this.config.idle_timeout, &this.stopped)
                .await;
        });
    }
}
