//! A stream mapping's metrics, per shard and in total.

use std::collections::HashMap;
use std::time::Duration;

use crate::stream::Sequence;

/// Per-shard metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct ShardMetrics {
    /// Records the function handled.
    pub records: u64,
    /// Invocations with records.
    pub batches: u64,
    /// Retries of failing batches.
    pub retries: u64,
    /// Batches split in two.
    pub bisections: u64,
    /// Records sent to the on-failure destination.
    pub sent_to_on_failure: u64,
    /// Records skipped because no filter matched them.
    pub filtered: u64,
    /// Answers that listed failed records while `report_batch_item_failures` is off: taken as
    /// success, as Lambda does.
    pub ignored_item_failures: u64,
    /// Age of the last record of the last batch when that batch was sent (Lambda's IteratorAge).
    pub iterator_age: Duration,
    /// The checkpoint.
    pub checkpoint: Option<Sequence>,
    /// Records read but not yet covered by the checkpoint.
    pub checkpoint_lag: u64,
    /// Reads that found their position trimmed and restarted at the horizon.
    pub trimmed_reads: u64,
    /// The shard is finished (`ShardEnd`).
    pub finished: bool,
}

/// A snapshot of a stream mapping's metrics: totals, and per shard.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StreamMappingMetrics {
    /// Records the function handled.
    pub records: u64,
    /// Invocations with records.
    pub batches: u64,
    /// Retries.
    pub retries: u64,
    /// Bisections.
    pub bisections: u64,
    /// Records sent to the on-failure destination.
    pub sent_to_on_failure: u64,
    /// Records skipped because no filter matched them.
    pub filtered: u64,
    /// Answers that listed failed records while `report_batch_item_failures` is off: taken as
    /// success, as Lambda does (a warning is logged once per mapping).
    pub ignored_item_failures: u64,
    /// The largest iterator age over the shards.
    pub iterator_age: Duration,
    /// Shards being read by this process now.
    pub shards_running: usize,
    /// Permanent errors from the source or the stores: the mapping stopped on the first.
    pub permanent_source_errors: u64,
    /// Per shard, by id.
    pub shards: HashMap<String, ShardMetrics>,
}
