//! Tumbling windows: a shard's open window and its state, the batches that stay within one
//! window, and the final invocation that closes it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{Done, Shared, StreamBatch, TumblingWindow, MAX_WINDOW_STATE};
use crate::refusal::{classify, Refusal};
use crate::stream::{ShardId, StreamRecord};

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

impl Shared {
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
        let (round, records, _) = self.skip_filtered(shard, records).await;
        let limits = self.limits(shard);
        let mut rest = records.as_slice();
        while let Some(first) = rest.first() {
            let bounds = window_of(first.arrived_at, self.config.tumbling_window);
            // The batch carries the window's state too: what is left of the limit is for records.
            let limits = limits.with_state(&window.state, shard, &self.stream_arn);
            let len = rest[..limits.fitting(rest)]
                .iter()
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
                self.process_batch(shard, batch.to_vec(), None, Some(window), &round, cancel,)
                    .await,
                Done::Stopped
            ) {
                return Done::Stopped;
            }
        }
        Done::Finished
    }

    /// Keeps the state a batch answered with for the window's next invocation; one above
    /// [`MAX_WINDOW_STATE`] ends the window early, as Lambda does: a final invocation with
    /// that state, flagged `terminated_early`, then the same window goes on from `null`.
    pub(super) async fn carry_state(
        self: &Arc<Self>,
        shard: &ShardId,
        window: &mut Window,
        state: serde_json::Value,
        cancel: &CancellationToken,
    ) -> Done {
        let size = serde_json::to_vec(&state).map_or(usize::MAX, |json| json.len());
        window.state = state;
        if size <= MAX_WINDOW_STATE {
            return Done::Finished;
        }
        tracing::warn!(mapping = %self.name, %shard, size, "window state above 1 MiB; ending the window early");
        let bounds = window.bounds;
        let done = self.finish_window(shard, window, true, cancel).await;
        if matches!(done, Done::Finished) {
            window.bounds = bounds;
        }
        done
    }

    /// The final invocation of a window: no records, the state, `is_final`.
    pub(super) async fn close_window(
        self: &Arc<Self>,
        shard: &ShardId,
        window: &mut Window,
        cancel: &CancellationToken,
    ) -> Done {
        self.finish_window(shard, window, false, cancel).await
    }

    /// The final invocation, retried until it succeeds (Lambda suspends the shard's
    /// processing until it does), then the state is dropped.
    async fn finish_window(
        self: &Arc<Self>,
        shard: &ShardId,
        window: &mut Window,
        terminated_early: bool,
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
                stream_arn: Arc::clone(&self.stream_arn),
                records: Vec::new(),
                window: Some(TumblingWindow {
                    start,
                    end,
                    state: window.state.clone(),
                    is_final: true,
                    terminated_early,
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
                    // No retry limit: Lambda suspends the shard until the final invocation
                    // succeeds, and the state is not given up.
                    attempts = attempts.saturating_add(1);
                    tracing::warn!(mapping = %self.name, %shard, %error, attempts, "final window invocation failed; retrying");
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
            }
        }
        window.state = serde_json::Value::Null;
        Done::Finished
    }
}
