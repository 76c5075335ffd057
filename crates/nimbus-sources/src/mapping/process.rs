//! Handling one received batch within its time budget: filtering, invoking its sub-batches
//! (see `invoke`) with bisection and FIFO group blocking, deleting each sub-batch that
//! succeeded, and releasing what goes back unhandled.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::handler::{hops, RecursiveLoop};

use super::budget::Budget;
use super::invoke::{hop_count, Invoked};
use super::metrics::add;
use super::poller::Poller;
use super::{BatchResponse, Shared};
use crate::queue::{Message, Receipt};

/// What became of a message of the batch.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    Pending,
    Succeeded,
    Failed,
    Released,
}

/// A sub-batch still to invoke, and the failed invocation it was split from (0: none, it is
/// the whole batch).
struct Work {
    indices: Vec<usize>,
    parent: u32,
}

impl Shared {
    /// Handles a received batch within its `budget`: no invocation starts unless it can end,
    /// and its acknowledgement land, before the oldest receipt expires. Each sub-batch that
    /// succeeds is acknowledged at once. When the budget runs out, the sub-batches split from
    /// the invocation that failed last (the smallest set known to hold a failure) are left to
    /// their visibility timeout, their receive counted; the others, not yet known to fail,
    /// are handed back uncounted.
    pub(super) async fn process(&self, poller: &Poller, messages: Vec<Message>, budget: Budget) {
        let (mut matching, filtered): (Vec<Message>, Vec<Message>) = if self.filters.is_empty() {
            (messages, Vec::new())
        } else {
            messages
                .into_iter()
                .partition(|m| self.filters.matches(&m.body, &m.attributes))
        };
        // Nothing awaited since the receive (no batching window, no release of what did not
        // fit the payload cap, no ack of filtered messages): the first invocation starts
        // within the time the build-time check left it, and needs no look at the clock (the
        // hot path of small batches).
        let mut fresh =
            budget.fresh() && self.config.batching_window.is_zero() && filtered.is_empty();
        if !filtered.is_empty() {
            let receipts: Vec<Receipt> = filtered.iter().map(|m| m.receipt.clone()).collect();
            let acked = self
                .call("ack", async { self.source.ack(&receipts).await })
                .await;
            add(
                &self.counters.filtered,
                self.settled("ack", acked, receipts.len()),
            );
        }
        if matching.is_empty() {
            return;
        }
        if let [message] = matching.as_mut_slice() {
            // One record: nothing to bisect, block or split off, so none of the bookkeeping
            // below (the hot path of batch size 1).
            let verdict = self.handle_one(poller, message, &budget, fresh).await;
            if verdict == Verdict::Succeeded {
                self.delete(std::slice::from_ref(&message.receipt)).await;
            } else {
                self.settle_verdicts(&matching, &[verdict]).await;
            }
            return;
        }
        if self.config.batch_size == 1 {
            // Several messages received at batch size 1 (see `pace`): one invocation each.
            self.process_singles(poller, &mut matching, &budget, fresh)
                .await;
            return;
        }

        let mut verdicts = vec![Verdict::Pending; matching.len()];
        // Message groups with a failed record in this batch (FIFO): later records of those
        // groups must not be handled ahead of it.
        let mut blocked: HashSet<Arc<str>> = HashSet::new();
        // Records of a recursive loop take the failure path without an invocation (with, on a
        // FIFO queue, the records of their group that come after them).
        let (looping, indices) = self.split_loops(&matching);
        for &i in &looping {
            verdicts[i] = Verdict::Failed;
        }
        // The whole batch first, then what bisection splits off: the deque is allocated
        // only when a failing batch is split.
        let mut first = Some(Work { indices, parent: 0 });
        let mut work = VecDeque::new();
        // Failed invocations so far; the number of the latest.
        let mut failures = 0u32;
        let mut stopping = false;
        let mut out_of_time = false;
        while let Some(Work { indices, parent }) = first.take().or_else(|| work.pop_front()) {
            let group_of = |matching: &[Message], i: usize| matching[i].group_id.clone();
            let (runnable, held): (Vec<usize>, Vec<usize>) = if self.fifo {
                indices
                    .into_iter()
                    .partition(|&i| group_of(&matching, i).is_none_or(|g| !blocked.contains(&g)))
            } else {
                (indices, Vec::new())
            };
            for i in held {
                verdicts[i] = Verdict::Failed;
            }
            if runnable.is_empty() {
                continue;
            }
            // Once one sub-batch went back (the mapping stops) or the budget ran out, the
            // rest is not invoked either.
            let in_time = std::mem::take(&mut fresh) || budget.allows(Duration::ZERO);
            let invoked = if stopping {
                Invoked::Released
            } else if out_of_time || !in_time {
                Invoked::OutOfTime
            } else {
                self.invoke(poller, &mut matching, &runnable, &budget).await
            };
            match invoked {
                Invoked::Ok(response) => {
                    let failed = self.failed_indices(&matching, &runnable, &response);
                    let mut succeeded = Vec::with_capacity(runnable.len());
                    for &i in &runnable {
                        let fails = failed.as_ref().is_some_and(|f| f.contains(&i))
                            || (self.fifo
                                && group_of(&matching, i).is_some_and(|g| blocked.contains(&g)));
                        if fails {
                            verdicts[i] = Verdict::Failed;
                            if let Some(group) = group_of(&matching, i) {
                                blocked.insert(group);
                            }
                        } else {
                            verdicts[i] = Verdict::Succeeded;
                            succeeded.push(matching[i].receipt.clone());
                        }
                    }
                    // Deleted now, while the receipts are surely current.
                    self.delete(&succeeded).await;
                }
                // The one case that invokes records again: `invoke_until_done` copies them.
                Invoked::Failed if self.splits_on_failure(runnable.len()) => {
                    failures += 1;
                    add(&self.counters.bisections, 1);
                    let mut first = runnable;
                    let second = first.split_off(first.len() / 2);
                    work.push_front(Work {
                        indices: second,
                        parent: failures,
                    });
                    work.push_front(Work {
                        indices: first,
                        parent: failures,
                    });
                }
                Invoked::Failed => {
                    failures += 1;
                    for &i in &runnable {
                        verdicts[i] = Verdict::Failed;
                        if let Some(group) = group_of(&matching, i) {
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
                Invoked::OutOfTime => {
                    out_of_time = true;
                    // Split from the latest failure: one of these holds what failed.
                    let known_to_fail = parent != 0 && parent == failures;
                    for &i in &runnable {
                        if known_to_fail {
                            verdicts[i] = Verdict::Failed;
                            if let Some(group) = group_of(&matching, i) {
                                blocked.insert(group);
                            }
                        } else {
                            verdicts[i] = Verdict::Released;
                        }
                    }
                }
            }
        }
        self.settle_verdicts(&matching, &verdicts).await;
    }

    /// Handles a batch of one record, as `process` would: invoked if it is in time and not a
    /// recursive loop. The caller deletes it if it succeeded.
    pub(super) async fn handle_one(
        &self,
        poller: &Poller,
        message: &mut Message,
        budget: &Budget,
        fresh: bool,
    ) -> Verdict {
        if self.stops_loop(message) {
            self.note_loops(1);
            return Verdict::Failed;
        }
        if !fresh && !budget.allows(Duration::ZERO) {
            // Not known to fail: back it goes, uncounted.
            return Verdict::Released;
        }
        let messages = std::slice::from_mut(message);
        match self.invoke(poller, messages, &[0], budget).await {
            Invoked::Ok(response) => {
                let failed = self.failed_indices(messages, &[0], &response);
                if failed.is_some_and(|f| f.contains(&0)) {
                    return Verdict::Failed;
                }
                Verdict::Succeeded
            }
            Invoked::Failed => Verdict::Failed,
            Invoked::Released | Invoked::OutOfTime => Verdict::Released,
        }
    }

    /// What follows the verdicts of a batch's messages: failed ones stay invisible until their
    /// visibility timeout, as in SQS (counted here); released ones go back at once, their
    /// receive uncounted (not a failed attempt). Succeeded ones are the caller's to delete.
    pub(super) async fn settle_verdicts(&self, matching: &[Message], verdicts: &[Verdict]) {
        let failed = verdicts.iter().filter(|v| **v == Verdict::Failed).count();
        if failed > 0 {
            add(&self.counters.failed, failed);
            self.drain.failed();
        }
        let released: Vec<Receipt> = matching
            .iter()
            .zip(verdicts)
            .filter(|(_, v)| **v == Verdict::Released)
            .map(|(m, _)| m.receipt.clone())
            .collect();
        self.release_receipts(&released).await;
    }

    /// Splits the indices of records whose hop count reached the recursion limit (unless the
    /// function allows loops) from the others. Such records are a loop the function feeds
    /// itself: they fail without an invocation, and come back until the queue's redrive
    /// moves them to its dead-letter queue, as Lambda stops a loop through SQS. On a FIFO
    /// queue the records of the same group that come after a looping one fail with it (they
    /// must not overtake it); those before it are handled.
    fn split_loops(&self, messages: &[Message]) -> (Vec<usize>, Vec<usize>) {
        // Most messages carry no attributes at all: then none can be looping.
        if self.function.config().recursive_loop == RecursiveLoop::Allow
            || messages.iter().all(|m| m.attributes.is_empty())
        {
            return (Vec::new(), (0..messages.len()).collect());
        }
        let mut stopped: HashSet<Arc<str>> = HashSet::new();
        let mut looping = 0;
        let (failing, others): (Vec<usize>, Vec<usize>) = (0..messages.len()).partition(|&i| {
            let group = messages[i].group_id.as_ref().filter(|_| self.fifo);
            if self.stops_loop(&messages[i]) {
                looping += 1;
                if let Some(group) = group {
                    stopped.insert(Arc::clone(group));
                }
                return true;
            }
            group.is_some_and(|g| stopped.contains(g))
        });
        self.note_loops(looping);
        (failing, others)
    }

    /// Whether a record reached the recursion limit and is to fail without an invocation (the
    /// function does not allow loops).
    fn stops_loop(&self, message: &Message) -> bool {
        self.function.config().recursive_loop != RecursiveLoop::Allow
            && !message.attributes.is_empty()
            && hop_count(message) >= hops::LIMIT
    }

    /// Counts `looping` records stopped as a recursive loop, and says so.
    fn note_loops(&self, looping: usize) {
        if looping == 0 {
            return;
        }
        add(&self.counters.recursive_loops, looping);
        // Once per mapping at warn: without redrive the same message comes back for ever.
        if !self
            .loop_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(mapping = %self.name, function = %self.function.name(),
                records = looping, "recursive loop: records reached the hop limit and are not handed to the function");
        } else {
            tracing::debug!(mapping = %self.name, records = looping, "recursive loop records failed");
        }
    }

    /// Deletes the messages of a sub-batch that succeeded.
    pub(super) async fn delete(&self, receipts: &[Receipt]) {
        if receipts.is_empty() {
            return;
        }
        let acked = self
            .call("ack", async { self.source.ack(receipts).await })
            .await;
        self.counters
            .deleted(self.settled("ack", acked, receipts.len()));
    }

    /// The indices a response reports as failed, every index if an id is unknown; `None` when
    /// it reports none (the usual answer, which then costs no set).
    fn failed_indices(
        &self,
        messages: &[Message],
        indices: &[usize],
        response: &BatchResponse,
    ) -> Option<HashSet<usize>> {
        if !self.config.report_batch_item_failures || response.item_failures.is_empty() {
            return None;
        }
        let mut failed = HashSet::new();
        for id in &response.item_failures {
            match indices.iter().find(|&&i| messages[i].id == *id) {
                Some(&i) => {
                    failed.insert(i);
                }
                None => {
                    tracing::warn!(mapping = %self.name, %id, "item failure names an id not in the batch; failing the batch");
                    return Some(indices.iter().copied().collect());
                }
            }
        }
        Some(failed)
    }
}
