//! Tumbling windows: a shard's open window and its state, the batches that stay within one
//! window, and the final invocation that closes it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::{Done, Shared, StreamBatch, TumblingWindow};
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
        let (round, records) = self.skip_filtered(shard, records).await;
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
}
