//! Rounds: what a reader read, split into lanes by partition key (order is kept per key), each
//! lane running its batches in order; and the invocation of one batch.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use nimbus_core::{InvokeError, InvokeOptions, RequestId};
use tokio_util::sync::CancellationToken;

use super::progress::Round;
use super::{Done, Shared, StreamBatch, StreamResponse};
use crate::stream::{hash_key, ShardId, StreamRecord};

/// A lane's batches of at most `size` records, in order (no byte limit; the mapping cuts
/// with [`Shared::limits`]).
#[cfg(test)]
pub(super) fn batches(lane: Vec<StreamRecord>, size: usize) -> Vec<Vec<StreamRecord>> {
    super::payload::Limits {
        records: size,
        bytes: usize::MAX,
        repeated: 0,
    }
    .batches(lane)
}

/// The lane of `factor` that records with this partition key take: the key hash's low 64 bits
/// scaled to `0..factor` by a multiply (a 128-bit remainder is a library call: 3.8 % of the
/// workers' samples in a 4 shards x factor 4 drain). Not the high bits: those pick the shard
/// (shards own ranges of the hash), so every key of a shard would share them and take one lane.
pub(super) fn lane_of(partition_key: &str, factor: u32) -> usize {
    let low = hash_key(partition_key) as u64;
    ((u128::from(low) * u128::from(factor)) >> 64) as usize
}

impl Shared {
    /// Lanes by partition key, each running its batches in order; rounds end when all do.
    pub(super) async fn process_round(
        self: &Arc<Self>,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        cancel: &CancellationToken,
    ) -> Done {
        let (round, records, at) = self.skip_filtered(shard, records).await;
        let factor = self.config.parallelization_factor;
        // Each lane's records with their places in the round, which finishing them uses.
        let lanes: Vec<(Vec<StreamRecord>, Vec<usize>)> = if factor == 1 {
            // One lane: no key to hash.
            vec![(records, at)]
        } else {
            let mut lanes = vec![(Vec::new(), Vec::new()); factor as usize];
            for (record, i) in records.into_iter().zip(at) {
                let (records, at) = &mut lanes[lane_of(&record.partition_key, factor)];
                records.push(record);
                at.push(i);
            }
            lanes
        };
        let limits = self.limits(shard);
        let mut lanes: Vec<_> = lanes.into_iter().filter(|(l, _)| !l.is_empty()).collect();
        if lanes.len() == 1 {
            // One lane (a factor of 1, or every key in one lane): it runs in the reader's task,
            // where a task of its own would only add a spawn, a join and a wake-up a round. A
            // panic stops the round, as a lane task's would.
            let (lane, at) = lanes.pop().expect("one lane");
            let lane = self.run_lane(shard, lane, &at, limits, &round, cancel);
            return AssertUnwindSafe(lane)
                .catch_unwind()
                .await
                .unwrap_or(Done::Stopped);
        }
        let mut running = tokio::task::JoinSet::new();
        for (lane, at) in lanes {
            let (this, shard) = (Arc::clone(self), Arc::clone(shard));
            let round = Arc::clone(&round);
            let cancel = cancel.clone();
            running.spawn(async move {
                this.run_lane(&shard, lane, &at, limits, &round, &cancel)
                    .await
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

    /// Runs a lane's batches in order (`at`: the records' places in the round); stops at the
    /// first batch that stops.
    async fn run_lane(
        self: &Arc<Self>,
        shard: &ShardId,
        lane: Vec<StreamRecord>,
        at: &[usize],
        limits: super::payload::Limits,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        let mut places = at;
        for batch in limits.batches(lane) {
            let (batch_at, rest) = places.split_at(batch.len().min(places.len()));
            places = rest;
            let batch_at = Some(batch_at.to_vec());
            let done = self
                .process_batch(shard, batch, batch_at, None, round, cancel)
                .await;
            if matches!(done, Done::Stopped) {
                return Done::Stopped;
            }
        }
        Done::Finished
    }

    /// The limits of a batch from `shard`: `batch_size` records and `max_batch_bytes` of
    /// Lambda's Kinesis event.
    pub(super) fn limits(&self, shard: &ShardId) -> super::payload::Limits {
        super::payload::Limits {
            records: self.config.batch_size,
            bytes: self.config.max_batch_bytes,
            repeated: super::payload::repeated_bytes(shard, &self.stream_arn, &self.name),
        }
    }

    /// Invokes the function; `attempt` numbers the tries of one batch, from 1.
    pub(super) async fn invoke(
        &self,
        batch: StreamBatch,
        attempt: u32,
    ) -> Result<StreamResponse, InvokeError> {
        self.invoke_reporting(batch, attempt).await.0
    }

    /// Invokes the function, with the request id of the invocation when a handler ran.
    pub(super) async fn invoke_reporting(
        &self,
        batch: StreamBatch,
        attempt: u32,
    ) -> (Result<StreamResponse, InvokeError>, Option<RequestId>) {
        let options = InvokeOptions::default().with_attempt(attempt);
        let invocation = self.function.invoke_with(batch, options).await;
        (
            invocation.result,
            invocation.report.map(|report| report.request_id),
        )
    }
}
