//! Processing what a reader read: rounds split into lanes by partition key, tumbling windows,
//! retries, bisection, the on-failure destination, and checkpoints over the finished prefix.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;
use nimbus_core::{ErrorInfo, InvokeError, InvokeOptions};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    Done, Shared, StreamBatch, StreamCondition, StreamFailure, StreamResponse, TumblingWindow,
};
use crate::refusal::{classify, Refusal};
use crate::status::{delay_of, MappingStatus};
use crate::stream::{hash_key, stream_now, Checkpoint, Sequence, ShardId, StreamRecord};

pub(super) fn window_of(at: SystemTime, length: Duration) -> (SystemTime, SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = since.as_nanos() / length.as_nanos().max(1);
    let start = UNIX_EPOCH + Duration::from_nanos((n * length.as_nanos()) as u64);
    (start, start + length)
}

/// The open tumbling window of a shard and its state.
pub(super) struct Window {
    pub(super) bounds: Option<(SystemTime, SystemTime)>,
    pub(super) state: serde_json::Value,
}

/// Which records of a round are finished, and the checkpoint they allow.
pub(super) struct Progress {
    pub(super) sequences: Vec<Sequence>,
    pub(super) finished: Vec<bool>,
    pub(super) prefix: usize,
}

/// The bookkeeping of one round, shared by its lanes.
pub(super) struct Round {
    pub(super) progress: Mutex<Progress>,
    /// The last checkpoint written; held while writing, so checkpoints go out in order.
    pub(super) checkpointing: tokio::sync::Mutex<Option<Sequence>>,
}

impl Round {
    pub(super) fn new(records: &[StreamRecord]) -> Self {
        Self {
            progress: Mutex::new(Progress::new(records)),
            checkpointing: tokio::sync::Mutex::new(None),
        }
    }
}

impl Progress {
    pub(super) fn new(records: &[StreamRecord]) -> Self {
        Self {
            sequences: records.iter().map(|r| r.sequence).collect(),
            finished: vec![false; records.len()],
            prefix: 0,
        }
    }

    /// Marks records finished; returns the new checkpoint if the finished prefix grew.
    pub(super) fn finish(&mut self, done: &[StreamRecord]) -> Option<Sequence> {
        for record in done {
            if let Ok(i) = self.sequences.binary_search(&record.sequence) {
                self.finished[i] = true;
            }
        }
        let before = self.prefix;
        while self.prefix < self.finished.len() && self.finished[self.prefix] {
            self.prefix += 1;
        }
        (self.prefix > before).then(|| self.sequences[self.prefix - 1])
    }

    pub(super) fn unfinished(&self) -> u64 {
        (self.sequences.len() - self.prefix) as u64
    }
}

impl Shared {
    /// Lanes by partition key, each running its batches in order; rounds end when all do.
    pub(super) async fn process_round(
        self: &Arc<Self>,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        cancel: &CancellationToken,
    ) -> Done {
        let round = Arc::new(Round::new(&records));
        let factor = self.config.parallelization_factor as u128;
        let mut lanes: Vec<Vec<StreamRecord>> = vec![Vec::new(); factor as usize];
        for record in records {
            let lane = (hash_key(&record.partition_key) % factor) as usize;
            lanes[lane].push(record);
        }
        let mut running = tokio::task::JoinSet::new();
        for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
            let (this, shard) = (Arc::clone(self), Arc::clone(shard));
            let round = Arc::clone(&round);
            let cancel = cancel.clone();
            running.spawn(async move {
                for batch in lane.chunks(this.config.batch_size) {
                    let done = this
                        .process_batch(&shard, batch.to_vec(), None, &round, &cancel)
                        .await;
                    if matches!(done, Done::Stopped) {
                        return Done::Stopped;
                    }
                }
                Done::Finished
            });
        }
        let mut outcome = Done::Finished;
        while let Some(done) = running.join_next().await {
            if !matches!(done, Ok(Done::Finished)) {
                outcome = Done::Stopped;
            }
        }
        outcome
    }

    /// Tumbling windows (one lane): batches never span windows; a window is closed with a
    /// final invocation when a record of a later window arrives, its time is up, or the shard
    /// ends.
    pub(super) async fn process_windowed(
        self: &Arc<Self>,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        window: &mut Window,
        cancel: &CancellationToken,
    ) -> Done {
        let round = Arc::new(Round::new(&records));
        let mut rest = records.as_slice();
        while let Some(first) = rest.first() {
            let bounds = window_of(first.arrived_at, self.config.tumbling_window);
            let len = rest
                .iter()
                .take(self.config.batch_size)
                .take_while(|r| window_of(r.arrived_at, self.config.tumbling_window) == bounds)
                .count();
            if window.bounds.is_some_and(|b| b != bounds)
                && matches!(
                    self.close_window(shard, window, cancel).await,
                    Done::Stopped
                )
            {
                return Done::Stopped;
            }
            window.bounds = Some(bounds);
            let (batch, tail) = rest.split_at(len);
            rest = tail;
            if matches!(
                self.process_batch(shard, batch.to_vec(), Some(window), &round, cancel,)
                    .await,
                Done::Stopped
            ) {
                return Done::Stopped;
            }
        }
        Done::Finished
    }

    /// The final invocation of a window: no records, the state, `is_final`.
    pub(super) async fn close_window(
        self: &Arc<Self>,
        shard: &ShardId,
        window: &mut Window,
        cancel: &CancellationToken,
    ) -> Done {
        let Some((start, end)) = window.bounds.take() else {
            return Done::Finished;
        };
        let mut attempts = 0u32;
        loop {
            let batch = StreamBatch {
                mapping: Arc::clone(&self.name),
                shard_id: Arc::clone(shard),
                records: Vec::new(),
                window: Some(TumblingWindow {
                    start,
                    end,
                    state: window.state.clone(),
                    is_final: true,
                }),
            };
            match self.invoke(batch, attempts + 1).await {
                Ok(_) => break,
                Err(error) if matches!(classify(&error), Refusal::Throttled) => {
                    // Not the window's fault: wait and retry, uncounted, as batches do.
                    if !self.pause(1, cancel).await {
                        return Done::Stopped;
                    }
                }
                Err(error) if matches!(classify(&error), Refusal::Stop) => {
                    self.function_gone(&error);
                    return Done::Stopped;
                }
                Err(error) => {
                    attempts += 1;
                    let exhausted = self.config.max_retry_attempts >= 0
                        && i64::from(attempts) > self.config.max_retry_attempts;
                    if exhausted {
                        tracing::error!(mapping = %self.name, %shard, %error, "final window invocation failed; window state dropped");
                        break;
                    }
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
            }
        }
        window.state = serde_json::Value::Null;
        Done::Finished
    }

    /// Invokes the function; `attempt` numbers the tries of one batch, from 1.
    pub(super) async fn invoke(
        &self,
        batch: StreamBatch,
        attempt: u32,
    ) -> Result<StreamResponse, InvokeError> {
        let options = InvokeOptions::default().with_attempt(attempt);
        self.function.invoke_with(batch, options).await.result
    }

    /// The function takes no more work: stop the mapping (its readers would only restart
    /// over the same records), leaving them behind the checkpoint.
    pub(super) fn function_gone(&self, error: &InvokeError) {
        tracing::info!(mapping = %self.name, %error, "the function takes no more work; stopping the mapping");
        self.halt(MappingStatus::Stopped {
            reason: format!("function {}: {error}", self.function.name()),
        });
    }

    /// Waits before retry `attempt`; false if the mapping stops meanwhile.
    pub(super) async fn pause(&self, attempt: u32, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay_of(&self.config.retry_backoff, attempt)) => true,
            () = cancel.cancelled() => false,
        }
    }

    /// Runs one batch until every record is handled or sent to the on-failure destination.
    pub(super) async fn process_batch(
        self: &Arc<Self>,
        shard: &ShardId,
        batch: Vec<StreamRecord>,
        mut window: Option<&mut Window>,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        // (records, failed attempts so far); bisect halves start from zero, as splits do not
        // count as retries.
        let mut pending: VecDeque<(Vec<StreamRecord>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((mut records, mut attempts)) = pending.pop_front() {
            let mut last_error: Option<ErrorInfo> = None;
            loop {
                if cancel.is_cancelled() {
                    return Done::Stopped;
                }
                if let Some(max_age) = self.config.max_record_age {
                    let now = stream_now();
                    let (expired, fresh): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
                        now.duration_since(r.arrived_at).unwrap_or_default() > max_age
                    });
                    records = fresh;
                    if !expired.is_empty()
                        && matches!(
                            self.send_to_on_failure(
                                shard,
                                expired,
                                StreamCondition::RecordAgeExceeded,
                                last_error.clone(),
                                round,
                                cancel,
                            )
                            .await,
                            Done::Stopped
                        )
                    {
                        return Done::Stopped;
                    }
                    if records.is_empty() {
                        break;
                    }
                }
                let batch = StreamBatch {
                    mapping: Arc::clone(&self.name),
                    shard_id: Arc::clone(shard),
                    records: records.clone(),
                    window: window.as_ref().and_then(|w| {
                        w.bounds.map(|(start, end)| TumblingWindow {
                            start,
                            end,
                            state: w.state.clone(),
                            is_final: false,
                        })
                    }),
                };
                let last_arrival = records.last().map(|r| r.arrived_at);
                let result = self.invoke(batch, attempts + 1).await;
                let age = last_arrival
                    .and_then(|t| stream_now().duration_since(t).ok())
                    .unwrap_or_default();
                self.shard_metrics(shard, |m| {
                    m.batches += 1;
                    m.iterator_age = age;
                });
                let failed_from = match result {
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
                            None
                        };
                        if first_failed.is_none() {
                            if let (Some(w), Some(state)) = (window.as_deref_mut(), response.state)
                            {
                                w.state = state;
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
                    self.finished(shard, &records, round).await;
                    break;
                };
                // Records before the first failure are done: checkpoint just before it.
                let rest = records.split_off(first_failed);
                if !records.is_empty() {
                    let n = records.len() as u64;
                    self.shard_metrics(shard, |m| m.records += n);
                    self.finished(shard, &records, round).await;
                }
                records = rest;
                if last_error.is_none() {
                    last_error = Some(ErrorInfo::from(&InvokeError::Function(
                        nimbus_core::FunctionError::new(
                            "PartialBatchFailure",
                            "the function reported failed records",
                        ),
                    )));
                }
                if self.config.bisect_on_error && records.len() > 1 {
                    self.shard_metrics(shard, |m| m.bisections += 1);
                    let second = records.split_off(records.len() / 2);
                    pending.push_front((second, attempts));
                    pending.push_front((records, attempts));
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
                            StreamCondition::RetryAttemptsExhausted,
                            last_error,
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
        condition: StreamCondition,
        error: Option<ErrorInfo>,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        let Some(destination) = &self.on_failure else {
            // Validation requires a destination whenever records can be given up; should one
            // be missing anyway, keep the records unfinished rather than drop them.
            tracing::error!(mapping = %self.name, %shard, "no on-failure destination; stopping the shard");
            return Done::Stopped;
        };
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Done::Finished;
        };
        let mut failure = StreamFailure {
            mapping: Arc::clone(&self.name),
            function: Arc::from(self.function.name()),
            timestamp: stream_now(),
            condition,
            shard_id: Arc::clone(shard),
            first_sequence: first.sequence,
            last_sequence: last.sequence,
            batch_size: records.len(),
            error,
            records,
        };
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
        self.finished(shard, &sent, round).await;
        Done::Finished
    }

    /// Marks records finished and moves the checkpoint over the finished prefix.
    pub(super) async fn finished(&self, shard: &ShardId, records: &[StreamRecord], round: &Round) {
        let (checkpoint, lag) = {
            let mut p = round.progress.lock();
            (p.finish(records), p.unfinished())
        };
        let Some(sequence) = checkpoint else { return };
        let mut last = round.checkpointing.lock().await;
        if last.is_some_and(|l| l >= sequence) {
            return;
        }
        match self
            .store_call(
                "checkpoint store put",
                self.checkpoints
                    .put(&self.name, shard, Checkpoint::At(sequence)),
            )
            .await
        {
            Ok(()) => {
                *last = Some(sequence);
                self.shard_metrics(shard, |m| {
                    m.checkpoint = Some(sequence);
                    m.checkpoint_lag = lag;
                });
            }
            Err(error) => tracing::warn!(mapping = %self.name, %shard, %error, "checkpoint failed"),
        }
    }
}
