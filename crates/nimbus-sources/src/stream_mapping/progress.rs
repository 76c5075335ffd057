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

    /// Marks records finished; returns the new checkpoint if the finished prefix grew. `at`,
    /// when the caller kept them, are the records' places in the round: each is checked against
    /// the record's sequence number, and a record whose place is unknown or wrong is searched
    /// for (the search cost most of a 4 x 4 stream mapping's bookkeeping).
    pub(super) fn finish(
        &mut self,
        done: &[StreamRecord],
        at: Option<&[usize]>,
    ) -> Option<Sequence> {
        // `done` is in sequence order as the engine makes batches: each record is searched for
        // after the last one found, and only then before it.
        let mut from = 0;
        for (k, record) in done.iter().enumerate() {
            let placed = at
                .and_then(|at| at.get(k).copied())
                .filter(|&i| self.sequences.get(i) == Some(&record.sequence));
            let found = placed
                .or_else(|| self.find(from, &record.sequence))
                .or_else(|| {
                    let before = self.sequences.get(..from)?;
                    before.binary_search(&record.sequence).ok()
                });
            if let Some(i) = found {
                self.finished[i] = true;
                from = i + 1;
            }
        }
        let before = self.prefix;
        while self.prefix < self.finished.len() && self.finished[self.prefix] {
            self.prefix += 1;
        }
        (self.prefix > before).then(|| self.sequences[self.prefix - 1].clone())
    }

    /// The index of `sequence` at or after `from`. Galloping: a batch's records are close
    /// together in the round (next to each other in one lane, a few apart with several), so
    /// most are found in a compare or two.
    fn find(&self, from: usize, sequence: &Sequence) -> Option<usize> {
        let rest = self.sequences.get(from..)?;
        let mut bound = 1;
        while bound < rest.len() && rest[bound - 1] < *sequence {
            bound *= 2;
        }
        let low = bound / 2;
        let high = bound.min(rest.len());
        let window = rest.get(low..high)?;
        window.binary_search(sequence).ok().map(|i| from + low + i)
    }

    pub(super) fn unfinished(&self) -> u64 {
        (self.sequences.len() - self.prefix) as u64
    }
}

impl Shared {
    /// Marks records finished (at their places in the round, `at`, when known) and moves the
    /// checkpoint over the finished prefix.
    pub(super) async fn finished(
        &self,
        shard: &ShardId,
        records: &[StreamRecord],
        at: Option<&[usize]>,
        round: &Round,
    ) {
        let (checkpoint, lag) = {
            let mut p = round.progress.lock();
            (p.finish(records, at), p.unfinished())
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

#[cfg(test)]
mod finding {
    use std::time::SystemTime;

    use proptest::prelude::*;

    use super::Progress;
    use crate::stream::{Sequence, StreamRecord};

    fn records(sequences: &[u128]) -> Vec<StreamRecord> {
        sequences
            .iter()
            .map(|&s| StreamRecord::new("k", Sequence::new(s), "x", SystemTime::UNIX_EPOCH))
            .collect()
    }

    proptest! {
        /// However a round is split into lanes and batches (in order or not), finishing a batch
        /// marks exactly its records, and the checkpoint is the end of the finished prefix.
        #[test]
        fn finishing_batches_marks_exactly_their_records(
            gaps in proptest::collection::vec(1u128..1_000, 1..200),
            lanes in 1usize..6,
            batch in 1usize..20,
            reversed in any::<bool>(),
            places in 0u8..3,
        ) {
            let mut at = u128::from(u64::MAX) - 500;
            let sequences: Vec<u128> = gaps.iter().map(|g| { at += g; at }).collect();
            let round = records(&sequences);
            let mut progress = Progress::new(&round);
            let mut finished = vec![false; round.len()];
            for lane in 0..lanes {
                let mine: Vec<usize> = (lane..round.len()).step_by(lanes).collect();
                for chunk in mine.chunks(batch) {
                    let mut done: Vec<StreamRecord> =
                        chunk.iter().map(|&i| round[i].clone()).collect();
                    let mut at = chunk.to_vec();
                    // Out of order too: slower, never wrong.
                    if reversed {
                        done.reverse();
                        at.reverse();
                    }
                    // The records' places: unknown, known, or wrong (each one off, the last
                    // maybe past the end, the last record's missing): wrong places cost the
                    // search, never a mark.
                    let wrong: Vec<usize> = at.iter().take(at.len() - 1).map(|&i| i + 1).collect();
                    let at = match places {
                        0 => None,
                        1 => Some(at.as_slice()),
                        _ => Some(wrong.as_slice()),
                    };
                    let checkpoint = progress.finish(&done, at);
                    for &i in chunk {
                        finished[i] = true;
                    }
                    prop_assert_eq!(&progress.finished, &finished);
                    let prefix = finished.iter().take_while(|f| **f).count();
                    prop_assert_eq!(progress.prefix, prefix);
                    if let Some(checkpoint) = checkpoint {
                        prop_assert_eq!(checkpoint, Sequence::new(sequences[prefix - 1]));
                    }
                }
            }
            prop_assert_eq!(progress.unfinished(), 0);
        }
    }

    #[test]
    fn records_not_in_the_round_are_ignored() {
        let round = records(&[10, 20, 30]);
        let mut progress = Progress::new(&round);
        assert_eq!(progress.finish(&records(&[5, 25, 40]), None), None);
        assert_eq!(
            progress.finish(&records(&[10, 20]), None),
            Some(Sequence::new(20))
        );
        assert_eq!(
            progress.finish(&records(&[30]), None),
            Some(Sequence::new(30))
        );
    }
}
