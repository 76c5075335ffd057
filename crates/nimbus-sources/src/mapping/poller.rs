//! A poller: the loop that receives a batch, hands it to the function and asks for more
//! pollers when batches come full; and what each poller keeps of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Budget;
use super::metrics::add;
use super::pace::Pace;
use super::{size, QueueFunction, QueueOrigin, Shared};
use crate::error::SourceError;
use crate::queue::Message;
use crate::status::{delay_of, MappingStatus};

/// What one poller keeps of its own rather than share with the other pollers: the function's
/// handle (with its principal), the mapping's name and the records' origin. Each invocation
/// clones these `Arc`s into its batch and its handler's context; with copies of its own, a
/// poller writes their reference counts on cache lines no other poller writes. And how long
/// its invocations take.
pub(super) struct Poller {
    pub(super) function: QueueFunction,
    pub(super) name: Arc<str>,
    pub(super) origin: Arc<QueueOrigin>,
    pub(super) pace: Pace,
}

impl Poller {
    fn of(shared: &Shared) -> Self {
        Self {
            // The same principal as the mapping's (the mapping as an event source).
            function: shared.function.for_event_source(&shared.name),
            name: Arc::from(&*shared.name),
            origin: Arc::new(QueueOrigin::clone(&shared.origin)),
            pace: Pace::default(),
        }
    }
}

impl Shared {
    /// Runs one poller until the mapping stops, the scaler retires it or its source fails
    /// for good.
    pub(super) async fn poll(self: Arc<Self>) {
        let poller = Poller::of(&self);
        let mut source_failures = 0u32;
        // Scale-in decisions count the poller out under the lock; other exits count it here.
        let retired = loop {
            if self.cancel.is_cancelled() {
                break false;
            }
            if self.retire_if_over_target() {
                break true;
            }
            if !self.still_allowed() {
                break false;
            }
            // Before the receive starts: its empty answer tells a `drained` call made since
            // nothing about messages sent meanwhile.
            let epoch = self.drain.epoch();
            // At batch size 1, as many as this poller's pace allows (see `pace`).
            let wanted = if self.config.batch_size == 1 {
                poller.pace.may_hold()
            } else {
                self.config.batch_size
            };
            let (messages, received_at, waited) = match self.gather(wanted).await {
                Ok(gathered) => {
                    source_failures = 0;
                    gathered
                }
                Err(error) if error.is_permanent() => {
                    add(&self.counters.permanent_source_errors, 1);
                    tracing::error!(mapping = %self.name, %error, "permanent source error; stopping the mapping");
                    self.halt(MappingStatus::Failed { error });
                    break false;
                }
                Err(_) => {
                    source_failures += 1;
                    let delay = delay_of(&nimbus_core::Backoff::throttles(), source_failures)
                        .min(Duration::from_secs(30));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = self.cancel.cancelled() => break false,
                    }
                }
            };
            if messages.is_empty() {
                if self.cancel.is_cancelled() {
                    break false;
                }
                if self.retire_if_idle() {
                    break true;
                }
                // The only poller left found nothing.
                self.found_nothing(epoch);
                continue;
            }
            let received = messages.len();
            self.counters.received(received);
            // A batch in hand until its messages are acknowledged, failed or handed back
            // (`drained` reads this count).
            let now = self.counters.batch_taken();
            self.drain.received();
            // A role changed during the receive is checked before the function sees anything.
            if !self.still_allowed() || self.cancel.is_cancelled() {
                // Received as the mapping stopped: not in flight yet, so back it goes.
                self.release(&messages).await;
                self.batch_done();
                break false;
            }
            let full = received >= self.config.batch_size;
            self.counters.note_peak(now);
            let mut budget =
                Budget::new(received_at, self.visibility, self.function.config().timeout);
            if waited {
                budget = budget.waited();
            }
            self.process(&poller, messages, budget).await;
            self.batch_done();
            if full {
                self.grow();
            }
        };
        if !retired {
            let mut scaling = self.scaling.lock();
            scaling.active -= 1;
            self.note_surplus(&scaling);
        }
    }

    /// Receives one batch: a long poll for the first messages, then more until the batch is
    /// full, the window ends or the payload cap is reached. Also returns when the first
    /// messages arrived (the oldest receipts' visibility timeout runs from about then), and
    /// whether anything was awaited since (a release, the window's receives).
    ///
    /// At batch size 1, up to `wanted` messages, each to be invoked on its own: none of them
    /// can pass the payload cap alone, so none is cut off.
    async fn gather(
        self: &Arc<Self>,
        wanted: usize,
    ) -> Result<(Vec<Message>, Instant, bool), SourceError> {
        let size = self.config.batch_size;
        let Some(first) = self.receive_or_stop(wanted, self.config.poll_wait).await else {
            return Ok((Vec::new(), Instant::now(), false));
        };
        let received_at = Instant::now();
        let mut batch = first.inspect_err(|e| self.source_error(e))?;
        if size == 1 {
            return Ok((batch, received_at, false));
        }
        // What the records take in the invocation's payload: the batch never passes the cap
        // (6 MB by default); what does not fit goes back, its receive not counted, for the
        // next batch.
        let cap = self.config.max_batch_bytes;
        let mut payload = size::Payload::default();
        let kept = payload.fit(&[], &batch, cap);
        if kept < batch.len() {
            let over = batch.split_off(kept);
            self.release(&over).await;
            return Ok((batch, received_at, true));
        }
        if batch.is_empty() || self.config.batching_window.is_zero() {
            return Ok((batch, received_at, false));
        }
        // The window is at most 300 s (validated).
        let until = received_at + self.config.batching_window;
        while batch.len() < size && payload.has_room(&batch, cap) {
            let left = until.saturating_duration_since(Instant::now());
            // A receive that is ready at once wins over the stop signal (see
            // `receive_or_stop`): look at it here, or a backlog would keep the window going.
            if left.is_zero() || self.cancel.is_cancelled() {
                break;
            }
            match self.receive_or_stop(size - batch.len(), left).await {
                None => break,
                Some(Ok(mut more)) => {
                    let kept = payload.fit(&batch, &more, cap);
                    let over = more.split_off(kept);
                    batch.extend(more);
                    if !over.is_empty() {
                        self.release(&over).await;
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Keep what we have; the next receive reports the failure again if it lasts.
                    self.source_error(&e);
                    break;
                }
            }
        }
        // The window's receives were awaited too.
        Ok((batch, received_at, true))
    }
}
