//! Stopping a queue mapping: waiting for batches in flight, releasing what is left, and
//! bounding receives in flight (see the module documentation of the mapping).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::AttachmentStop;
use tokio::time::Instant;

use super::metrics::add;
use super::{QueueMapping, Receiving, Shared};
use crate::error::SourceError;
use crate::queue::{Message, Receipt};
use crate::status::{guarded, settle_status, MappingStatus};

/// How long past its deadline a stopping mapping waits for releases and acknowledgements
/// before it gives up on a source that does not answer; twice that, it drops the receives
/// still in flight and returns.
const RELEASE_GRACE: Duration = Duration::from_millis(200);

// The whole stop fits in the time the runtime gives an attachment.
const _: () =
    assert!(2 * RELEASE_GRACE.as_millis() < nimbus_core::ATTACHMENT_STOP_SLACK.as_millis());

impl QueueMapping {
    /// Stops by `deadline`; gives up `2 × RELEASE_GRACE` after it.
    pub(super) async fn stop_by(&self, deadline: Instant) -> AttachmentStop {
        let shared = &self.shared;
        let released_before = shared.counters.released.load(Ordering::Relaxed);
        settle_status(
            &shared.status,
            MappingStatus::Stopped {
                reason: "stopped".to_owned(),
            },
        );
        // However this stop ends (returned, or dropped by a runtime giving up on it), draining
        // receives are dropped: nothing outlives it.
        let _give_up = shared.given_up.clone().drop_guard();
        let give_up = deadline.checked_add(2 * RELEASE_GRACE).unwrap_or(deadline);
        shared.cancel.cancel();
        // Nothing more is wanted: a source that prefetches may stop and hand back its buffer.
        shared.want_nothing();
        shared.tasks.close();
        shared.draining.close();
        let mut clean = tokio::time::timeout_at(deadline, shared.tasks.wait())
            .await
            .is_ok();
        if !clean {
            // Batches still in flight are abandoned and released; a source that does not
            // answer the releases is given up on shortly after.
            shared.hard_stop.cancel();
            let released = tokio::time::timeout(RELEASE_GRACE, shared.tasks.wait()).await;
            if released.is_err() {
                shared.abandon.cancel();
                let _ = tokio::time::timeout(RELEASE_GRACE, shared.tasks.wait()).await;
            } else {
                clean = true;
            }
        }
        // Pollers are done (or given up on): they start no more receives.
        let drained = tokio::time::timeout_at(give_up, shared.draining.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(mapping = %self.name(), "a receive was still in flight at the stop's give-up point; dropped");
            shared.given_up.cancel();
            // Each draining task ends at its next poll.
            shared.draining.wait().await;
        }
        shared.last_stats();
        let released = shared.counters.released.load(Ordering::Relaxed) - released_before;
        let stop = if !clean {
            AttachmentStop::failed(
                self.name(),
                "the source did not take back every message in time",
            )
        } else if !drained {
            AttachmentStop::failed(
                self.name(),
                "a receive was still in flight at the stop's give-up point and was dropped; \
                 what it claimed may stay invisible until its visibility timeout",
            )
        } else {
            AttachmentStop::clean(self.name())
        };
        stop.with_released(released)
    }
}

impl Shared {
    /// A receive as an owned future.
    fn receiving(&self, max: usize, wait: Duration) -> Receiving {
        let source = Arc::clone(&self.source);
        Box::pin(async move { guarded("receive", async { source.receive(max, wait).await }).await })
    }

    /// Awaits a receive unless the mapping stops first. Then a cancel-safe receive is
    /// dropped; any other is not (an adapter may have claimed messages for it) but handed to
    /// a task that releases what it brings, until the stop gives up. `None` when the mapping
    /// stopped.
    pub(super) async fn receive_or_stop(
        self: &Arc<Self>,
        max: usize,
        wait: Duration,
    ) -> Option<Result<Vec<Message>, SourceError>> {
        if self.cancel_safe {
            // Dropped if the mapping stops: borrowed, it needs no box of the mapping's own and
            // no clone of the source's `Arc`, whose count every poller would write on every
            // receive. The receive is polled first, as below; pinned where it is made, so
            // that it is not copied into the select.
            let receiving = guarded("receive", async { self.source.receive(max, wait).await });
            tokio::pin!(receiving);
            return tokio::select! {
                biased;
                received = &mut receiving => Some(received),
                () = self.cancel.cancelled() => None,
            };
        }
        let mut receiving = self.receiving(max, wait);
        // The receive first: when it is ready at once (a backlog), the stop signal is never
        // polled, so no waiter is registered on it (a lock each way, shared by every poller).
        tokio::select! {
            biased;
            received = &mut receiving => Some(received),
            () = self.cancel.cancelled() => {
                let this = Arc::clone(self);
                self.draining.spawn(async move {
                    let drain = async {
                        if let Ok(messages) = receiving.await {
                            this.counters.received(messages.len());
                            this.release(&messages).await;
                        }
                    };
                    // Past the give-up point nothing more happens, even if ready.
                    tokio::select! {
                        biased;
                        () = this.given_up.cancelled() => {}
                        () = drain => {}
                    }
                });
                None
            }
        }
    }

    /// A call into the source from the end of a batch: guarded against panics, and given up
    /// on once the mapping abandons its source after the stop deadline. Biased towards the
    /// call: one the source answers at once goes through even after that. Callers pass the
    /// source's call inside an `async` block, so that a source whose method panics before it
    /// returns its future is caught too.
    pub(super) async fn call<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let calling = guarded(what, call);
        tokio::pin!(calling);
        tokio::select! {
            biased;
            result = &mut calling => result,
            () = self.abandon.cancelled() => Err(SourceError::transient(format!(
                "{what} did not answer before the stop deadline"
            ))),
        }
    }

    /// Hands messages back unhandled, last first (so a FIFO group keeps its order).
    pub(super) async fn release(&self, messages: &[Message]) {
        if messages.is_empty() {
            return;
        }
        let receipts: Vec<Receipt> = messages.iter().map(|m| m.receipt.clone()).collect();
        self.release_receipts(&receipts).await;
    }

    pub(super) async fn release_receipts(&self, receipts: &[Receipt]) {
        if receipts.is_empty() {
            return;
        }
        let released = self
            .call("release", async { self.source.release(receipts).await })
            .await;
        add(
            &self.counters.released,
            self.settled("release", released, receipts.len()),
        );
    }

    /// How many of the `given` receipts of an ack or a release took effect, by its answer;
    /// counts the refused ones and the errors.
    pub(super) fn settled(
        &self,
        what: &'static str,
        answer: Result<(), SourceError>,
        given: usize,
    ) -> usize {
        let refused = match answer {
            Ok(()) => return given,
            // Distinct positions within the call: an adapter's answer is not trusted to be
            // well formed, and a repeat must not count a receipt twice.
            Err(SourceError::Refused { positions }) => positions
                .iter()
                .filter(|&&at| at < given)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            // A source that cannot say which receipts it refused: none is counted as done.
            Err(SourceError::UnknownReceipt) => given,
            Err(error) => {
                self.source_error(&error);
                return 0;
            }
        };
        add(&self.counters.refused_receipts, refused);
        tracing::warn!(mapping = %self.name, what, refused, given, "receipts no longer current (their visibility timeout passed); those messages come back");
        given - refused
    }
}
