//! Rounds: what a reader read, split into lanes by partition key (order is kept per key), each
//! lane running its batches in order; and the invocation of one batch.

use std::sync::Arc;

use nimbus_core::{InvokeError, InvokeOptions};
use tokio_util::sync::CancellationToken;

use super::progress::Round;
use super::{Done, Shared, StreamBatch, StreamResponse};
use crate::stream::{hash_key, ShardId, StreamRecord};

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
        let lanes: Vec<Vec<StreamRecord>> = if factor == 1 {
            // One lane: no key to hash.
            vec![records]
        } else {
            let mut lanes = vec![Vec::new(); factor as usize];
            for record in records {
                let lane = (hash_key(&record.partition_key) % factor) as usize;
                lanes[lane].push(record);
            }
            lanes
        };
        let mut running = tokio::task::JoinSet::new();
        for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
            let (this, shard) = (Arc::clone(self), Arc::clone(shard));
            let round = Arc::clone(&round);
            let cancel = cancel.clone();
            running.spawn(async move {
                // Batches are split off the lane, not copied record by record: a lane that is
                // one batch goes as it is.
                let mut batch = lane;
                while !batch.is_empty() {
                    let rest = if batch.len() > this.config.batch_size {
                        batch.split_off(this.config.batch_size)
                    } else {
                        Vec::new()
                    };
                    let done = this
                        .process_batch(&shard, batch, None, &round, &cancel)
                        .await;
                    if matches!(done, Done::Stopped) {
                        return Done::Stopped;
                    }
                    batch = rest;
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

    /// Invokes the function; `attempt` numbers the tries of one batch, from 1.
    pub(super) async fn invoke(
        &self,
        batch: StreamBatch,
        attempt: u32,
    ) -> Result<StreamResponse, InvokeError> {
        let options = InvokeOptions::default().with_attempt(attempt);
        self.function.invoke_with(batch, options).await.result
    }
}
