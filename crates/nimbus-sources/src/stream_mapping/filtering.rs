//! Event filters on stream records: a record that no pattern matches is finished at once (the
//! checkpoint passes it with the records around it) and never handed to the function, as
//! Lambda's Kinesis filters skip records.

use std::sync::Arc;

use super::progress::Round;
use super::Shared;
use crate::stream::{ShardId, StreamRecord};

impl Shared {
    /// The round's bookkeeping over every record read, and the records to handle with their
    /// places in the round: those the filters match (all of them when there are no filters).
    /// The others are marked finished now, so the checkpoint moves past them once what comes
    /// before them is finished.
    pub(super) async fn skip_filtered(
        &self,
        shard: &ShardId,
        records: Vec<StreamRecord>,
    ) -> (Arc<Round>, Vec<StreamRecord>, Vec<usize>) {
        let round = Arc::new(Round::new(&records));
        if self.filters.is_empty() {
            let at = (0..records.len()).collect();
            return (round, records, at);
        }
        let mut kept = Vec::new();
        let mut at = Vec::new();
        let mut skipped = Vec::new();
        let mut skipped_at = Vec::new();
        for (i, record) in records.into_iter().enumerate() {
            if self.filters.matches_data(&record.data) {
                kept.push(record);
                at.push(i);
            } else {
                skipped.push(record);
                skipped_at.push(i);
            }
        }
        if !skipped.is_empty() {
            let count = skipped.len() as u64;
            self.shard_metrics(shard, |m| m.filtered += count);
            self.finished(shard, &skipped, Some(&skipped_at), &round)
                .await;
        }
        (round, kept, at)
    }
}
