//! Stopping: [`Runtime::shutdown`] and [`Runtime::unregister`], their reports, and the
//! attachments they stop first.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{AnyFunction, Attachment, AttachmentStop, Runtime, ATTACHMENT_STOP_SLACK};
use crate::async_invoke::HandedBack;
use crate::util::{far_future, guarded};

/// How long past its grace period [`Runtime::shutdown`] (and [`Runtime::unregister`]) waits
/// for the tasks it cancelled to stop. Tasks that watch the hard stop (all of nimbus's own)
/// stop at once; this bounds the wait for user code that does not give its thread back.
/// It is larger than [`ATTACHMENT_STOP_SLACK`], so that attachments given up on still fit.
pub const SHUTDOWN_SLACK: Duration = Duration::from_secs(1);

/// What [`Runtime::unregister`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct UnregisterReport {
    /// The function's async events accepted and not finished when its grace ended, handed
    /// back to the host (see [`ShutdownReport::handed_back`]).
    pub handed_back: Vec<HandedBack>,
    /// Invocations of the function running when it stopped taking new ones.
    pub in_flight: usize,
    /// Invocations of the function cancelled at the end of the grace.
    pub cancelled: usize,
    /// Idle instances dropped.
    pub instances_dropped: usize,
    /// How each of its attachments stopped.
    pub attachments: Vec<AttachmentStop>,
    /// Whether its reservation is back in the unreserved pool (always true without one): false
    /// only while a caller still holds one of its permits.
    pub reservation_returned: bool,
}

/// What [`Runtime::shutdown`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Async events accepted but not finished when the grace period ended (queued, waiting for
    /// a retry, or stopped mid-run), and failed events no destination took: handed back to the
    /// host rather than dropped.
    pub handed_back: Vec<HandedBack>,
    /// Sync invocations running when shutdown began.
    pub in_flight: usize,
    /// Of those, how many finished (with any outcome) within the grace period.
    pub finished: usize,
    /// Of those, how many were cancelled when the grace period ended. (Async events cut
    /// short are in `handed_back` instead.)
    pub cancelled: usize,
    /// Idle instances dropped.
    pub instances_dropped: usize,
    /// How each attached mapping stopped, in the order they were attached.
    pub attachments: Vec<AttachmentStop>,
}

impl Runtime {
    /// Retires the function `name`, in this order:
    ///
    /// 1. It leaves the registry at once (`invoke_json`, [`Runtime::function`] and friends
    ///    answer [`LookupError::NotFound`](crate::error::LookupError::NotFound); the name may be registered again).
    /// 2. Its attachments (mappings) are stopped as [`Runtime::shutdown`] stops them: stop
    ///    receiving, finish the batches in flight by the deadline (now + `grace`), release what
    ///    is left to the source without counting a receive.
    /// 3. Handles kept from before refuse new work: [`InvokeError::Unregistered`](crate::error::InvokeError::Unregistered), and
    ///    [`RejectReason::Unregistered`](crate::error::RejectReason::Unregistered) for async events. Running handlers' cancellation
    ///    tokens fire.
    /// 4. Running invocations and queued async events get the rest of `grace`.
    /// 5. Then what still runs is cancelled, async workers, timers and deliveries stop, and the
    ///    async events not finished are handed back in the report (as
    ///    [`ShutdownReport::handed_back`] describes). Idle instances are dropped, and
    ///    instances given back later are dropped too.
    ///
    /// The function's reservation (`max_concurrency`) returns to the unreserved pool only when
    /// its last permit is released, so the runtime-wide limit holds throughout; a caller
    /// stuck holding one (a sync invocation whose task is not polled) keeps it reserved.
    ///
    /// Returns within `grace` + [`SHUTDOWN_SLACK`]; `None` if no function has this name.
    pub async fn unregister(&self, name: &str, grace: Duration) -> Option<UnregisterReport> {
        let deadline = Instant::now().checked_add(grace).unwrap_or_else(far_future);
        let give_up = deadline.checked_add(SHUTDOWN_SLACK).unwrap_or(deadline);
        let (_, entry) = self.registry.functions.remove(name)?;
        self.registry.revoke_function_credentials(name);
        let function = entry.function;
        let attachments = self.stop_attachments(Some(name), deadline).await;
        let cancelled_before = function.cancelled();
        let in_flight = function.close();
        let _ = tokio::time::timeout_at(deadline, function.drained()).await;
        function.halt();
        let _ = tokio::time::timeout_at(give_up, function.quiesced()).await;
        let handed_back = function.hand_back();
        let instances_dropped = function.stop();
        // Disposals of the instances just stopped, within the same bound.
        let _ = tokio::time::timeout_at(give_up, function.quiesced()).await;
        let cancelled =
            usize::try_from(function.cancelled() - cancelled_before).unwrap_or(usize::MAX);
        Some(UnregisterReport {
            handed_back,
            in_flight,
            cancelled,
            instances_dropped,
            attachments,
            reservation_returned: function.reservation_returned(),
        })
    }

    /// Stops every attachment (or those of one function) by `deadline`, concurrently; each is
    /// given up on [`ATTACHMENT_STOP_SLACK`] after it.
    async fn stop_attachments(
        &self,
        function: Option<&str>,
        deadline: Instant,
    ) -> Vec<AttachmentStop> {
        let stopping: Vec<Arc<dyn Attachment>> = {
            let mut attachments = self.attachments.lock();
            match function {
                // Shutdown takes them all, and closes the list to later ones.
                None => attachments.take().unwrap_or_default(),
                Some(f) => match &mut *attachments {
                    Some(list) => {
                        let (stop, keep) = list
                            .drain(..)
                            .partition(|a| guarded(|| a.function() == f, false));
                        *list = keep;
                        stop
                    }
                    None => Vec::new(),
                },
            }
        };
        let give_up = deadline
            .checked_add(ATTACHMENT_STOP_SLACK)
            .unwrap_or(deadline);
        // Each on its own task: concurrent, and a panic in one is its own failed stop.
        let tasks: Vec<_> = stopping
            .iter()
            .map(|attachment| {
                let attachment = Arc::clone(attachment);
                tokio::spawn(async move { attachment.stop(deadline).await })
            })
            .collect();
        let mut stops = Vec::with_capacity(tasks.len());
        for (attachment, task) in stopping.iter().zip(tasks) {
            let abort = task.abort_handle();
            stops.push(match tokio::time::timeout_at(give_up, task).await {
                Ok(Ok(stop)) => stop,
                Ok(Err(_panicked)) => {
                    AttachmentStop::failed(name_of(attachment), "panicked while stopping")
                }
                Err(_) => {
                    abort.abort();
                    AttachmentStop::failed(name_of(attachment), "did not stop in time")
                }
            });
        }
        stops
    }

    /// Shuts down gracefully, in this order:
    ///
    /// 1. Attachments (mappings) stop first, concurrently: they stop receiving, let the
    ///    batches in flight finish by the deadline (now + `grace`), and release what they
    ///    still hold to their source without counting a receive (see [`Attachment::stop`]);
    ///    each is given up [`ATTACHMENT_STOP_SLACK`] after the deadline.
    /// 2. New invocations are refused ([`InvokeError::ShuttingDown`](crate::error::InvokeError::ShuttingDown), and
    ///    [`RejectReason::ShuttingDown`](crate::error::RejectReason::ShuttingDown) for async ones), as are registrations and attachments;
    ///    every running invocation's cancellation token fires.
    /// 3. Running invocations and queued async events get the rest of `grace` to finish.
    /// 4. At the deadline, what still runs is cancelled ([`InvokeError::Cancelled`](crate::error::InvokeError::Cancelled)); async
    ///    workers, retry timers and deliveries to destinations and dead-letter targets stop.
    ///    Every async event accepted and not finished is handed back in
    ///    [`ShutdownReport::handed_back`]: queued, waiting for a retry, stopped mid-run, failed
    ///    with no target that took it, or cut off while a destination held it.
    /// 5. Reapers stop and idle instances are dropped.
    ///
    /// # Guarantees
    ///
    /// It returns within `grace` + [`SHUTDOWN_SLACK`], even when a destination, a dead-letter
    /// target or an attachment never answers. Every accepted async event ends in exactly one
    /// place: finished, taken by a destination or dead-letter target, or handed back. The one
    /// exception is user code that blocks its thread without yielding past the slack: the task
    /// running it is left behind, and the event it holds is not in the report.
    ///
    /// Calling it again returns at once with an empty report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let deadline = Instant::now().checked_add(grace).unwrap_or_else(far_future);
        let give_up = deadline.checked_add(SHUTDOWN_SLACK).unwrap_or(deadline);
        // Mappings first: they stop receiving and hand back what they hold while the
        // functions still run the batches in flight.
        let attachments = self.stop_attachments(None, deadline).await;
        let in_flight = self.shared.gate.close();
        self.shared.shutting_down.cancel();
        let cancelled_before = self.shared.cancelled.load(Ordering::Relaxed);
        let functions: Vec<Arc<dyn AnyFunction>> = self
            .registry
            .functions
            .iter()
            .map(|e| Arc::clone(&e.function))
            .collect();
        let drained = async {
            self.shared.gate.drained().await;
            for function in &functions {
                function.async_idle().await;
            }
        };
        let _ = tokio::time::timeout_at(deadline, drained).await;
        // Whatever still runs now is cancelled; async workers, timers and deliveries stop.
        self.shared.mark_stopped();
        self.shared.hard_stop.cancel();
        self.shared.tasks.close();
        let stopped = async {
            self.shared.gate.drained().await;
            self.shared.tasks.wait().await;
        };
        if tokio::time::timeout_at(give_up, stopped).await.is_err() {
            tracing::warn!("shutdown: tasks still running after the slack are left behind");
        }
        let handed_back = functions.iter().flat_map(|f| f.hand_back()).collect();
        let cancelled =
            usize::try_from(self.shared.cancelled.load(Ordering::Relaxed) - cancelled_before)
                .unwrap_or(usize::MAX);
        let mut instances_dropped = 0;
        for entry in self.registry.functions.iter() {
            instances_dropped += entry.function.stop();
        }
        // Disposals of the instances just stopped (a process backend's exits), within the
        // same bound.
        if tokio::time::timeout_at(give_up, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown: instance disposals still running after the slack are left behind"
            );
        }
        ShutdownReport {
            handed_back,
            in_flight,
            finished: in_flight.saturating_sub(cancelled),
            cancelled,
            instances_dropped,
            attachments,
        }
    }
}

/// An attachment's name, for a report.
fn name_of(attachment: &Arc<dyn Attachment>) -> String {
    guarded(
        || attachment.name().to_owned(),
        "(an attachment whose name() panicked)".to_owned(),
    )
}
