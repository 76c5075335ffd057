//! Handling one received batch: filtering, invoking (with throttle retries, bisection and FIFO
//! group blocking), then deleting what succeeded and releasing what goes back unhandled.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use crate::refusal::{classify, Refusal};
use tokio::time::Instant;

use super::metrics::add;
use super::{BatchResponse, QueueBatch, QueueRecord, Shared};
use crate::queue::{Message, Receipt};
use crate::status::{delay_of, MappingStatus};

/// How one invocation of a sub-batch ended.
enum Invoked {
    Ok(BatchResponse),
    Failed,
    Released,
}

impl Shared {
    pub(super) async fn process(&self, messages: Vec<Message>) {
        let (matching, filtered): (Vec<Message>, Vec<Message>) = if self.filters.is_empty() {
            (messages, Vec::new())
        } else {
            messages
                .into_iter()
                .partition(|m| self.filters.matches(&m.body, &m.attributes))
        };
        if !filtered.is_empty() {
            add(&self.counters.filtered, filtered.len());
            let receipts: Vec<Receipt> = filtered.iter().map(|m| m.receipt.clone()).collect();
            if let Err(e) = self.call("ack", self.source.ack(&receipts)).await {
                self.source_error(&e);
            }
        }
        if matching.is_empty() {
            return;
        }

        #[derive(Clone, Copy, PartialEq)]
        enum Verdict {
            Pending,
            Succeeded,
            Failed,
            Released,
        }
        let mut verdicts = vec![Verdict::Pending; matching.len()];
        // Message groups with a failed record in this batch (FIFO): later records of those
        // groups must not be handled ahead of it.
        let mut blocked: HashSet<Arc<str>> = HashSet::new();
        let mut work: VecDeque<Vec<usize>> = VecDeque::from([(0..matching.len()).collect()]);
        let mut stopping = false;
        while let Some(indices) = work.pop_front() {
            let group_of = |i: usize| matching[i].group_id.clone();
            let (runnable, held): (Vec<usize>, Vec<usize>) = if self.fifo {
                indices
                    .into_iter()
                    .partition(|&i| group_of(i).is_none_or(|g| !blocked.contains(&g)))
            } else {
                (indices, Vec::new())
            };
            for i in held {
                verdicts[i] = Verdict::Failed;
            }
            if runnable.is_empty() {
                continue;
            }
            // Once one sub-batch went back (the mapping stops), the rest go back too.
            let invoked = if stopping {
                Invoked::Released
            } else {
                self.invoke(&matching, &runnable).await
            };
            match invoked {
                Invoked::Ok(response) => {
                    let failed = self.failed_indices(&matching, &runnable, &response);
                    for &i in &runnable {
                        let fails = failed.contains(&i)
                            || (self.fifo && group_of(i).is_some_and(|g| blocked.contains(&g)));
                        if fails {
                            verdicts[i] = Verdict::Failed;
                            if let Some(group) = group_of(i) {
                                blocked.insert(group);
                            }
                        } else {
                            verdicts[i] = Verdict::Succeeded;
                        }
                    }
                }
                Invoked::Failed if self.config.bisect_on_error && runnable.len() > 1 => {
                    add(&self.counters.bisections, 1);
                    let mut first = runnable;
                    let second = first.split_off(first.len() / 2);
                    work.push_front(second);
                    work.push_front(first);
                }
                Invoked::Failed => {
                    for &i in &runnable {
                        verdicts[i] = Verdict::Failed;
                        if let Some(group) = group_of(i) {
                            blocked.insert(group);
                        }
                    }
                }
                Invoked::Released => {
                    stopping = true;
                    for &i in &runnable {
                        verdicts[i] = Verdict::Released;
                    }
                }
            }
        }

        let receipts = |verdict: Verdict| -> Vec<Receipt> {
            matching
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == verdict)
                .map(|(m, _)| m.receipt.clone())
                .collect()
        };
        let succeeded = receipts(Verdict::Succeeded);
        if !succeeded.is_empty() {
            match self.call("ack", self.source.ack(&succeeded)).await {
                Ok(()) => add(&self.counters.deleted, succeeded.len()),
                Err(e) => self.source_error(&e),
            }
        }
        // Failed messages stay invisible until their visibility timeout, as in SQS.
        let failed = verdicts.iter().filter(|v| **v == Verdict::Failed).count();
        if failed > 0 {
            add(&self.counters.failed, failed);
            self.drain.failed();
        }
        // Released ones go back at once, their receive uncounted (not a failed attempt).
        self.release_receipts(&receipts(Verdict::Released)).await;
    }

    /// The indices a response reports as failed; every index if an id is unknown.
    fn failed_indices(
        &self,
        messages: &[Message],
        indices: &[usize],
        response: &BatchResponse,
    ) -> HashSet<usize> {
        if !self.config.report_batch_item_failures || response.item_failures.is_empty() {
            return HashSet::new();
        }
        let mut failed = HashSet::new();
        for id in &response.item_failures {
            match indices.iter().find(|&&i| messages[i].id == *id) {
                Some(&i) => {
                    failed.insert(i);
                }
                None => {
                    tracing::warn!(mapping = %self.name, %id, "item failure names an id not in the batch; failing the batch");
                    return indices.iter().copied().collect();
                }
            }
        }
        failed
    }

    /// Invokes the function with the records at `indices`, retrying throttles with backoff
    /// while the messages stay invisible. Abandoned (released) at the stop deadline.
    async fn invoke(&self, messages: &[Message], indices: &[usize]) -> Invoked {
        tokio::select! {
            invoked = self.invoke_until_done(messages, indices) => invoked,
            () = self.hard_stop.cancelled() => Invoked::Released,
        }
    }

    async fn invoke_until_done(&self, messages: &[Message], indices: &[usize]) -> Invoked {
        let started = Instant::now();
        let visibility = self.source.visibility_timeout();
        let timeout = self.function.config().timeout;
        let mut throttled = 0u32;
        loop {
            let batch = QueueBatch {
                mapping: Arc::clone(&self.name),
                records: indices
                    .iter()
                    .map(|&i| QueueRecord::from_message(&messages[i]))
                    .collect(),
            };
            add(&self.counters.invocations, 1);
            let error = match self.function.invoke(batch).await {
                Ok(response) => return Invoked::Ok(response),
                Err(error) => error,
            };
            match classify(&error) {
                Refusal::Throttled => {
                    add(&self.counters.throttles, 1);
                    self.back_off();
                    throttled += 1;
                    let delay = delay_of(&nimbus_core::Backoff::throttles(), throttled);
                    // Give up once a retry could not finish before the messages reappear.
                    let too_late = visibility.is_some_and(|v| {
                        started
                            .elapsed()
                            .saturating_add(delay)
                            .saturating_add(timeout)
                            >= v
                    });
                    if too_late {
                        return Invoked::Released;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => return Invoked::Released,
                    }
                }
                Refusal::Failed => {
                    add(&self.counters.function_errors, 1);
                    tracing::debug!(mapping = %self.name, %error, records = indices.len(), "batch failed");
                    self.back_off();
                    return Invoked::Failed;
                }
                Refusal::Stop => {
                    tracing::info!(mapping = %self.name, %error, "the function takes no more work; stopping the mapping");
                    self.halt(MappingStatus::Stopped {
                        reason: format!("function {}: {error}", self.function.name()),
                    });
                    return Invoked::Released;
                }
            }
        }
    }
}
