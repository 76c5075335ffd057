//! Progress: which records of a round are finished, checkpoints that never pass an unfinished
//! record, and checkpoint writes under the reader's lease.

use std::sync::Arc;

use parking_lot::Mutex;

use super::Shared;
use crate::error::SourceError;
use crate::stream::{Checkpoint, Sequence, ShardId, StreamRecord};

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
            sequences: records.iter().map(|r| r.sequence.clone()).collect(),
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
        (self.prefix > before).then(|| self.sequences[self.prefix - 1].clone())
    }

    pub(super) fn unfinished(&self) -> u64 {
        (self.sequences.len() - self.prefix) as u64
    }
}

impl Shared {
    /// Marks records finished and moves the checkpoint over the finished prefix.
    pub(super) async fn finished(&self, shard: &ShardId, records: &[StreamRecord], round: &Round) {
        let (checkpoint, lag) = {
            let mut p = round.progress.lock();
            (p.finish(records), p.unfinished())
        };
        let Some(sequence) = checkpoint else { return };
        let mut last = round.checkpointing.lock().await;
        if last.as_ref().is_some_and(|l| *l >= sequence) {
            return;
        }
        match self
            .put_checkpoint(shard, Checkpoint::At(sequence.clone()))
            .await
        {
            Ok(()) => {
                *last = Some(sequence.clone());
                self.shard_metrics(shard, |m| {
                    m.checkpoint = Some(sequence);
                    m.checkpoint_lag = lag;
                });
            }
            Err(error) => tracing::warn!(mapping = %self.name, %shard, %error, "checkpoint failed"),
        }
    }

    /// Writes a checkpoint under the reader's lease (as last renewed). A write the store fences
    /// out means the lease is lost: the reader stops between batches, as when a renewal finds
    /// the lease gone, and what it has not checkpointed is read again by the next owner.
    pub(super) async fn put_checkpoint(
        &self,
        shard: &ShardId,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        let lease = self.running.lock().get(shard).map(|r| Arc::clone(&r.lease));
        let Some(lease) = lease else {
            return Err(SourceError::fenced(
                self.lease_key(shard),
                "is not held by this worker",
            ));
        };
        let result = self
            .store_call(
                "checkpoint store put",
                self.checkpoints.put(&self.name, shard, checkpoint, &lease),
            )
            .await;
        if let Err(error @ SourceError::Fenced { .. }) = &result {
            tracing::warn!(mapping = %self.name, %shard, %error, "checkpoint fenced out; stopping the reader");
            if let Some(reader) = self.running.lock().get(shard) {
                reader.cancel.cancel();
            }
        }
        result
    }
}
