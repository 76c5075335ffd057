//! Invoking the function with a sub-batch's records: the records take what no later invocation
//! needs, throttles are retried with backoff while the batch's budget allows (with the batch
//! handed back by the refusal), and the stop deadline abandons the invocation.

use std::sync::Arc;

use nimbus_core::handler::hops;
use nimbus_core::InvokeOptions;

use crate::queue::Message;
use crate::refusal::{classify, Refusal};
use crate::status::{delay_of, MappingStatus};

use super::budget::Budget;
use super::metrics::add;
use super::pace::REFUSED;
use super::poller::Poller;
use super::{BatchResponse, QueueBatch, QueueRecord, Shared};

/// How one invocation of a sub-batch ended.
pub(super) enum Invoked {
    Ok(BatchResponse),
    Failed,
    /// The mapping stops: hand the messages back.
    Released,
    /// Too little of the batch's budget is left to invoke (again).
    OutOfTime,
}

impl Shared {
    /// Invokes the function with the records at `indices`, retrying throttles with backoff
    /// while the budget allows. Abandoned (released) at the stop deadline.
    pub(super) async fn invoke(
        &self,
        poller: &Poller,
        messages: &mut [Message],
        indices: &[usize],
        budget: &Budget,
    ) -> Invoked {
        // The invocation first: one that ends on its first poll never registers a waiter on
        // the stop signal (a lock each way). Pinned where it is made and selected on by
        // reference: moved into the select, its kilobyte and a half was copied twice a batch.
        let invoking = self.invoke_until_done(poller, messages, indices, budget);
        tokio::pin!(invoking);
        tokio::select! {
            biased;
            invoked = &mut invoking => invoked,
            () = self.hard_stop.cancelled() => Invoked::Released,
        }
    }

    /// Invokes the function with the records at `indices` until an invocation runs, retrying
    /// throttles with backoff while the budget allows.
    ///
    /// The records take the messages' bodies and attributes rather than copies when no later
    /// invocation can need them (without bisection, or a single record, nothing is invoked
    /// twice): a throttle, refused before a handler saw the batch, hands it back for the retry.
    async fn invoke_until_done(
        &self,
        poller: &Poller,
        messages: &mut [Message],
        indices: &[usize],
        budget: &Budget,
    ) -> Invoked {
        // The work's hop count: the highest its records carry (read before they are taken).
        let hops = indices
            .iter()
            .filter(|&&i| !messages[i].attributes.is_empty())
            .map(|&i| hop_count(&messages[i]))
            .max();
        let options = InvokeOptions::default().with_hops(hops.unwrap_or(0));
        let take = !self.splits_on_failure(indices.len());
        let now = std::time::SystemTime::now();
        let mut batch = QueueBatch {
            mapping: Arc::clone(&poller.name),
            records: indices
                .iter()
                .map(|&i| QueueRecord::from_message(&mut messages[i], take, &poller.origin, now))
                .collect(),
        };
        let mut throttled = 0u32;
        loop {
            self.counters.invoked();
            let error = match poller
                .function
                .try_invoke_with(batch, options.clone())
                .await
            {
                Ok(invocation) => {
                    // What held the poller: a cold start's init too (see `pace`).
                    poller
                        .pace
                        .note(invocation.report.as_ref().map_or(REFUSED, |report| {
                            report
                                .duration
                                .saturating_add(report.init_duration.unwrap_or_default())
                        }));
                    match invocation.result {
                        Ok(response) => return Invoked::Ok(response),
                        // A handler saw the batch: not retried here. (A throttle is always a
                        // refusal, before any handler: never an error of one that ran.)
                        Err(error) => match classify(&error) {
                            Refusal::Stop => return self.stop_for(&error),
                            Refusal::Failed | Refusal::Throttled => {
                                return self.failed(&error, indices.len())
                            }
                        },
                    }
                }
                Err(refused) => {
                    poller.pace.note(REFUSED);
                    batch = refused.event;
                    refused.error
                }
            };
            match classify(&error) {
                Refusal::Throttled => {
                    add(&self.counters.throttles, 1);
                    self.back_off();
                    throttled += 1;
                    let delay = delay_of(&nimbus_core::Backoff::throttles(), throttled);
                    // The wait holds the poller as an invocation would: what else it holds
                    // goes back for other pollers (see `pace`).
                    poller.pace.note(delay);
                    // Give up once a retry could not end before the oldest receipt expires.
                    if !budget.allows(delay) {
                        return Invoked::OutOfTime;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => return Invoked::Released,
                    }
                    // Handed over again now.
                    let now = std::time::SystemTime::now();
                    for record in &mut batch.records {
                        record.first_received_at = now;
                    }
                }
                Refusal::Failed => return self.failed(&error, indices.len()),
                Refusal::Stop => return self.stop_for(&error),
            }
        }
    }

    /// Whether a failed invocation of `records` records is split and its halves invoked
    /// again (bisection): the only way a record is invoked twice, so the only one that needs
    /// the messages' bodies kept after an invocation.
    pub(super) fn splits_on_failure(&self, records: usize) -> bool {
        self.config.bisect_on_error && records > 1
    }

    /// A failed invocation of `records` records: counted, and the mapping backs off.
    fn failed(&self, error: &nimbus_core::InvokeError, records: usize) -> Invoked {
        add(&self.counters.function_errors, 1);
        tracing::debug!(mapping = %self.name, %error, records, "batch failed");
        self.back_off();
        Invoked::Failed
    }

    /// The function takes no more work: the mapping stops, handing the messages back.
    fn stop_for(&self, error: &nimbus_core::InvokeError) -> Invoked {
        tracing::info!(mapping = %self.name, %error, "the function takes no more work; stopping the mapping");
        self.halt(MappingStatus::Stopped {
            reason: format!("function {}: {error}", self.function.name()),
        });
        Invoked::Released
    }
}

/// The hop count a message carries in its [`hops::ATTRIBUTE`] attribute (0 without one).
pub(super) fn hop_count(message: &Message) -> u32 {
    message
        .attributes
        .get(hops::ATTRIBUTE)
        .and_then(hops::parse)
        .unwrap_or(0)
}
