//! Failure handling: retries, bisection, partial batch responses, record age, and delivery to
//! the on-failure destination; throttles wait uncounted, a function that takes no more work
//! stops the mapping.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::FutureExt as _;
use nimbus_core::{ErrorInfo, InvokeError, RequestId};
use tokio_util::sync::CancellationToken;

use super::progress::Round;
use super::window::Window;
use super::{Done, Shared, StreamBatch, StreamCondition, StreamFailure, TumblingWindow};
use crate::refusal::{classify, Refusal};
use crate::status::{delay_of, MappingStatus};
use crate::stream::{stream_now, ShardId, StreamRecord};

/// What the attempts on records given up on came to.
pub(super) struct Attempts {
    pub(super) condition: StreamCondition,
    /// The last attempt's error; `None` if the last attempt reported failed items, or none
    /// was made.
    pub(super) error: Option<ErrorInfo>,
    /// The last invocation's request id.
    pub(super) request: Option<RequestId>,
    /// Invocations with these records.
    pub(super) count: u32,
}

impl Shared {
    /// The function takes no more work: stop the mapping (its readers would only restart
    /// over the same records), leaving them behind the checkpoint.
    pub(super) fn function_gone(&self, error: &InvokeError) {
        tracing::info!(mapping = %self.name, %error, "the function takes no more work; stopping the mapping");
        self.halt(MappingStatus::Stopped {
            reason: format!("function {}: {error}", self.function.name()),
        });
    }

    /// An answer listed failed records while `report_batch_item_failures` is off: success, as
    /// Lambda takes it, but counted, and logged once per mapping.
    fn ignored_item_failures(&self, shard: &ShardId) {
        self.shard_metrics(shard, |m| m.ignored_item_failures += 1);
        if !self
            .warned_ignored_failures
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(mapping = %self.name, %shard, "the function reported failed records, but report_batch_item_failures is off: the batch counts as a success, as in Lambda (counted in ignored_item_failures)");
        }
    }

    /// Waits before retry `attempt`; false if the mapping stops meanwhile.
    pub(super) async fn pause(&self, attempt: u32, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay_of(&self.config.retry_backoff, attempt)) => true,
            () = cancel.cancelled() => false,
        }
    }

    /// Runs one batch until every record is handled or sent to the on-failure destination.
    /// `at`, when known, are the records' places in the round, which finishing them uses.
    pub(super) async fn process_batch(
        self: &Arc<Self>,
        shard: &ShardId,
        batch: Vec<StreamRecord>,
        at: Option<Vec<usize>>,
        mut window: Option<&mut Window>,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        // (records, their places in the round if known, failed attempts so far); bisect halves
        // start from zero, as splits do not count as retries.
        type Part = (Vec<StreamRecord>, Option<Vec<usize>>, u32);
        let mut pending: VecDeque<Part> = VecDeque::from([(batch, at, 0)]);
        while let Some((mut records, mut at, mut attempts)) = pending.pop_front() {
            let mut last_error: Option<ErrorInfo> = None;
            let mut last_request: Option<RequestId> = None;
            loop {
                if cancel.is_cancelled() {
                    return Done::Stopped;
                }
                if let Some(max_age) = self.config.max_record_age {
                    let now = stream_now();
                    let (expired, fresh): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
                        now.duration_since(r.arrived_at).unwrap_or_default() > max_age
                    });
                    if !expired.is_empty() {
                        // Rare: the fresh records are found by their sequence numbers instead.
                        at = None;
                    }
                    records = fresh;
                    if !expired.is_empty() {
                        let done = self
                            .send_to_on_failure(
                                shard,
                                expired,
                                Attempts {
                                    condition: StreamCondition::RecordAgeExceeded,
                                    error: last_error.clone(),
                                    request: last_request,
                                    count: attempts,
                                },
                                round,
                                cancel,
                            )
                            .await;
                        if matches!(done, Done::Stopped) {
                            return Done::Stopped;
                        }
                        // The delivery may have taken a while: the rest are checked again
                        // before they are invoked.
                        continue;
                    }
                    if records.is_empty() {
                        break;
                    }
                }
                let batch = StreamBatch {
                    mapping: Arc::clone(&self.name),
                    shard_id: Arc::clone(shard),
                    stream_arn: Arc::clone(&self.stream_arn),
                    records: records.clone(),
                    window: window.as_ref().and_then(|w| {
                        w.bounds.map(|(start, end)| TumblingWindow {
                            start,
                            end,
                            state: w.state.clone(),
                            is_final: false,
                            terminated_early: false,
                        })
                    }),
                };
                // Lambda's `IteratorAge`: the last record's age when its batch is sent.
                let age = records
                    .last()
                    .and_then(|r| stream_now().duration_since(r.arrived_at).ok())
                    .unwrap_or_default();
                let (result, request) = self.invoke_reporting(batch, attempts + 1).await;
                if request.is_some() {
                    last_request = request;
                }
                self.shard_metrics(shard, |m| {
                    m.batches += 1;
                    m.iterator_age = age;
                });
                let failed_from = match result {
                    Ok(response) if window.is_some() && response.state.is_none() => {
                        // Lambda counts an answer without state a failed invocation.
                        last_error = Some(ErrorInfo::from(&InvokeError::Function(
                            nimbus_core::FunctionError::new(
                                "MissingWindowState",
                                "a tumbling window's invocation must answer with a state",
                            ),
                        )));
                        Some(0)
                    }
                    Ok(response) => {
                        let first_failed = if self.config.report_batch_item_failures {
                            response
                                .item_failures
                                .iter()
                                .map(|seq| {
                                    records.iter().position(|r| r.sequence == *seq).unwrap_or(0)
                                })
                                .min()
                        } else {
                            if !response.item_failures.is_empty() {
                                self.ignored_item_failures(shard);
                            }
                            None
                        };
                        if first_failed.is_none() {
                            if let (Some(w), Some(state)) = (window.as_deref_mut(), response.state)
                            {
                                if matches!(
                                    self.carry_state(shard, w, state, cancel).await,
                                    Done::Stopped
                                ) {
                                    return Done::Stopped;
                                }
                            }
                        }
                        first_failed
                    }
                    Err(error) if matches!(classify(&error), Refusal::Throttled) => {
                        // Throttles are not the batch's fault: wait and retry, uncounted.
                        if !self.pause(1, cancel).await {
                            return Done::Stopped;
                        }
                        continue;
                    }
                    Err(error) if matches!(classify(&error), Refusal::Stop) => {
                        self.function_gone(&error);
                        return Done::Stopped;
                    }
                    Err(error) => {
                        last_error = Some(ErrorInfo::from(&error));
                        Some(0)
                    }
                };
                let Some(first_failed) = failed_from else {
                    let n = records.len() as u64;
                    self.shard_metrics(shard, |m| m.records += n);
                    self.finished(shard, &records, at.as_deref(), round).await;
                    break;
                };
                // Records before the first failure are done: checkpoint just before it.
                let rest = records.split_off(first_failed);
                let rest_at = at
                    .as_mut()
                    .map(|at| at.split_off(first_failed.min(at.len())));
                if !records.is_empty() {
                    let n = records.len() as u64;
                    self.shard_metrics(shard, |m| m.records += n);
                    self.finished(shard, &records, at.as_deref(), round).await;
                }
                records = rest;
                at = rest_at;
                if last_error.is_none() {
                    last_error = Some(ErrorInfo::from(&InvokeError::Function(
                        nimbus_core::FunctionError::new(
                            super::record::PARTIAL_BATCH_FAILURE,
                            "the function reported failed records",
                        ),
                    )));
                }
                if self.config.bisect_on_error && records.len() > 1 {
                    self.shard_metrics(shard, |m| m.bisections += 1);
                    let half = records.len() / 2;
                    let second = records.split_off(half);
                    let second_at = at.as_mut().map(|at| at.split_off(half.min(at.len())));
                    pending.push_front((second, second_at, attempts));
                    pending.push_front((records, at, attempts));
                    break;
                }
                attempts += 1;
                self.shard_metrics(shard, |m| m.retries += 1);
                let exhausted = self.config.max_retry_attempts >= 0
                    && i64::from(attempts) > self.config.max_retry_attempts;
                if exhausted {
                    if matches!(
                        self.send_to_on_failure(
                            shard,
                            records,
                            Attempts {
                                condition: StreamCondition::RetryAttemptsExhausted,
                                error: last_error,
                                request: last_request,
                                count: attempts,
                            },
                            round,
                            cancel,
                        )
                        .await,
                        Done::Stopped
                    ) {
                        return Done::Stopped;
                    }
                    break;
                }
                if !self.pause(attempts, cancel).await {
                    return Done::Stopped;
                }
            }
        }
        Done::Finished
    }

    /// Delivers records to the on-failure destination, retrying until it takes them.
    pub(super) async fn send_to_on_failure(
        &self,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        attempts: Attempts,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        let Some(destination) = &self.on_failure else {
            // Validation requires a destination whenever records can be given up; should one
            // be missing anyway, keep the records unfinished rather than drop them.
            tracing::error!(mapping = %self.name, %shard, "no on-failure destination; stopping the shard");
            return Done::Stopped;
        };
        if records.is_empty() {
            return Done::Finished;
        }
        let mut failure = StreamFailure::new(
            self.function.arn(),
            Arc::clone(&self.stream_arn),
            Arc::clone(shard),
            attempts.condition,
            records,
        );
        failure.request_id = attempts.request.map(|id| id.to_string());
        failure.function = Arc::from(self.function.name());
        failure.approximate_invoke_count = attempts.count;
        failure.mapping = Arc::clone(&self.name);
        failure.error = attempts.error;
        let sent = failure.records.clone();
        let mut attempts = 0;
        loop {
            // A panicking destination is a refusal; the records are kept for the next try.
            let kept = failure.clone();
            let delivering =
                std::panic::AssertUnwindSafe(destination.deliver(failure)).catch_unwind();
            let delivered = tokio::select! {
                delivered = delivering => delivered,
                () = cancel.cancelled() => return Done::Stopped,
            };
            match delivered {
                Ok(Ok(())) => break,
                Ok(Err(refused)) => {
                    attempts += 1;
                    tracing::warn!(mapping = %self.name, %shard, reason = %refused.reason, "on-failure destination refused records; retrying");
                    failure = refused.value;
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
                Err(panic) => {
                    attempts += 1;
                    let reason = crate::status::panic_message(panic.as_ref());
                    tracing::warn!(mapping = %self.name, %shard, %reason, "on-failure destination panicked; retrying");
                    failure = kept;
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
            }
        }
        let n = sent.len() as u64;
        self.shard_metrics(shard, |m| m.sent_to_on_failure += n);
        self.finished(shard, &sent, None, round).await;
        Done::Finished
    }
}
