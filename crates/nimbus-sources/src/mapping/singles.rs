//! Handling several messages received at batch size 1 (see `pace`): an invocation for each,
//! one after another, and one delete for those that succeeded.

use std::sync::Arc;

use super::budget::Budget;
use super::poller::Poller;
use super::process::Verdict;
use super::Shared;
use crate::queue::{Message, Receipt};

impl Shared {
    /// Invokes each of `messages` on its own, in order, as `process` would a batch of one.
    /// Those that succeed are deleted together at the end: each invocation was checked against
    /// the budget, so the delete lands before their receipts expire (a cold start's init is
    /// not counted, as for any batch: one can make the delete late, and those messages come
    /// back). The others go back uncounted, as if this poller had never received them, and
    /// before that delete:
    /// - the messages of a FIFO group after one that failed (which keeps the group blocked
    ///   until it returns, so the group keeps its order);
    /// - once the mapping stops or the budget runs out, the rest;
    /// - once the poller's invocations slow down, those past what it may still hold (the one
    ///   it invokes next included), for other pollers.
    pub(super) async fn process_singles(
        &self,
        poller: &Poller,
        messages: &mut [Message],
        budget: &Budget,
        fresh: bool,
    ) {
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut succeeded: Vec<Receipt> = Vec::with_capacity(messages.len());
        // FIFO groups with a failed message in this run.
        let mut blocked: Vec<Arc<str>> = Vec::new();
        // The messages from here on go back: it only comes nearer.
        let mut end = messages.len();
        for (at, message) in messages.iter_mut().enumerate() {
            if at > 0 {
                end = end.min(at.saturating_add(poller.pace.may_hold()));
            }
            let behind_failure =
                self.fifo && (message.group_id.as_ref()).is_some_and(|g| blocked.contains(g));
            let verdict = if behind_failure || at >= end {
                Verdict::Released
            } else {
                self.handle_one(poller, message, budget, fresh && at == 0)
                    .await
            };
            match verdict {
                Verdict::Succeeded => succeeded.push(message.receipt.clone()),
                Verdict::Failed => blocked.extend(message.group_id.clone().filter(|_| self.fifo)),
                // Stopping or out of time: nothing more is invoked.
                Verdict::Released if !behind_failure => end = end.min(at),
                Verdict::Released | Verdict::Pending => {}
            }
            verdicts.push(verdict);
        }
        // What goes back first: other pollers may take it while the delete is under way.
        self.settle_verdicts(messages, &verdicts).await;
        self.delete(&succeeded).await;
    }
}
