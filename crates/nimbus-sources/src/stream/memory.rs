//! The in-memory sharded stream: records routed by partition-key hash over shard ranges,
//! per-shard sequence numbers, retention, and resharding by split and merge. Readers wake on
//! append, never on a timer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::keys::Keys;
use super::{
    hash_key, stream_now, Position, ReadResult, Sequence, ShardId, ShardInfo, StreamRecord,
    StreamSource,
};
use crate::error::{ConfigError, SourceError};
use crate::pack::Packer;

/// Configuration of an [`InMemoryStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Shards at creation (1..=1,024, default 1), splitting the hash-key space evenly.
    pub shards: usize,
    /// How long records are kept (1 s..=365 days, default 24 h, as Kinesis).
    pub retention: Duration,
    /// The first record's sequence number (at least 1, default 1); the stream numbers its
    /// records from there, one apart. A 56-digit value numbers them as Kinesis does, and
    /// `ms << 64 | 1` as a Redis stream would, for tests of what large numbers do downstream.
    pub first_sequence: Sequence,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            retention: Duration::from_secs(24 * 3_600),
            first_sequence: Sequence::new(1),
        }
    }
}

impl StreamConfig {
    /// Sets the number of shards.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Sets the retention.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the first record's sequence number.
    #[must_use]
    pub fn with_first_sequence(mut self, first: impl Into<Sequence>) -> Self {
        self.first_sequence = first.into();
        self
    }
}

#[derive(Debug)]
struct Shard {
    info: ShardInfo,
    records: VecDeque<StreamRecord>,
    /// The sequence number of the newest record trimmed away, if any.
    trimmed_through: Option<Sequence>,
    /// Packs the data of appends, so that records share a few allocations (and readers'
    /// reference counts) instead of one each.
    packer: Packer,
}

#[derive(Debug, Default)]
struct State {
    shards: Vec<Shard>,
    next_shard: u64,
    /// The partition keys of recent appends, shared by their records.
    keys: Keys,
}

/// An in-memory sharded stream with Kinesis semantics.
#[derive(Debug)]
pub struct InMemoryStream {
    config: StreamConfig,
    state: Mutex<State>,
    next_sequence: AtomicU64,
    appended: Notify,
    resharded: Notify,
    trimmed_reads: AtomicU64,
}

impl InMemoryStream {
    /// A stream with this configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field out of range.
    pub fn new(config: StreamConfig) -> Result<Self, ConfigError> {
        if !(1..=1_024).contains(&config.shards) {
            return Err(ConfigError::new(
                "stream",
                "shards",
                config.shards,
                "1..=1024",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(365 * 86_400)).contains(&config.retention)
        {
            return Err(ConfigError::new(
                "stream",
                "retention",
                config.retention,
                "1s..=365d",
            ));
        }
        if config.first_sequence == Sequence::new(0) {
            return Err(ConfigError::new(
                "stream",
                "first_sequence",
                &config.first_sequence,
                "1 or more (0 means before the first record)",
            ));
        }
        let mut state = State::default();
        let width = u128::MAX / config.shards as u128;
        for i in 0..config.shards {
            let low = width * i as u128 + if i == 0 { 0 } else { 1 };
            let high = if i + 1 == config.shards {
                u128::MAX
            } else {
                width * (i as u128 + 1)
            };
            let id = Self::shard_id(&mut state);
            state.shards.push(Shard {
                info: ShardInfo {
                    id,
                    parents: Vec::new(),
                    hash_range: (low, high),
                    closed: false,
                },
                records: VecDeque::new(),
                trimmed_through: None,
                packer: Packer::default(),
            });
        }
        Ok(Self {
            config,
            state: Mutex::new(state),
            next_sequence: AtomicU64::new(0),
            appended: Notify::new(),
            resharded: Notify::new(),
            trimmed_reads: AtomicU64::new(0),
        })
    }

    fn shard_id(state: &mut State) -> ShardId {
        let id = Arc::from(format!("shard-{:06}", state.next_shard));
        state.next_shard += 1;
        id
    }

    /// Appends a record to the open shard that owns the key's hash; returns the shard and the
    /// sequence number.
    ///
    /// # Errors
    ///
    /// [`SourceError::Invalid`] when sequence numbers run out (past
    /// [`MAX_SEQUENCE_DIGITS`](super::MAX_SEQUENCE_DIGITS) digits); never otherwise (every hash
    /// has an open shard).
    pub fn put(
        &self,
        partition_key: &str,
        data: impl Into<Bytes>,
    ) -> Result<(ShardId, Sequence), SourceError> {
        let hash = hash_key(partition_key);
        let now = stream_now();
        let result = {
            let mut state = self.state.lock();
            let partition_key = state.keys.share(partition_key, hash);
            let shard = state
                .shards
                .iter_mut()
                .find(|s| {
                    !s.info.closed && s.info.hash_range.0 <= hash && hash <= s.info.hash_range.1
                })
                .ok_or_else(|| SourceError::Invalid("no open shard owns this key".into()))?;
            let offset = self.next_sequence.fetch_add(1, Ordering::Relaxed);
            let sequence = self
                .config
                .first_sequence
                .checked_add(offset)
                .ok_or_else(|| SourceError::Invalid("sequence numbers ran out".into()))?;
            shard.records.push_back(StreamRecord {
                partition_key,
                sequence: sequence.clone(),
                data: shard.packer.pack(data.into()),
                arrived_at: now,
            });
            let id = Arc::clone(&shard.info.id);
            self.trim(&mut state, now);
            (id, sequence)
        };
        self.appended.notify_waiters();
        Ok(result)
    }

    /// Drops records older than the retention.
    fn trim(&self, state: &mut State, now: SystemTime) {
        let Some(horizon) = now.checked_sub(self.config.retention) else {
            return;
        };
        for shard in &mut state.shards {
            while shard
                .records
                .front()
                .is_some_and(|r| r.arrived_at < horizon)
            {
                if let Some(record) = shard.records.pop_front() {
                    shard.trimmed_through = Some(record.sequence);
                }
            }
        }
    }

    /// Splits an open shard at `at` (a hash key inside its range): the parent closes, two
    /// children own `[low, at - 1]` and `[at, high]`. Returns the children's ids.
    ///
    /// # Errors
    ///
    /// [`SourceError::Invalid`] for an unknown or closed shard, or `at` outside its range.
    pub fn split(&self, shard: &str, at: u128) -> Result<(ShardId, ShardId), SourceError> {
        let children = {
            let mut state = self.state.lock();
            let parent = state
                .shards
                .iter_mut()
                .find(|s| &*s.info.id == shard && !s.info.closed)
                .ok_or_else(|| SourceError::Invalid(format!("no open shard {shard}")))?;
            let (low, high) = parent.info.hash_range;
            if at <= low || at > high {
                return Err(SourceError::Invalid(format!(
                    "split point outside {shard}'s range"
                )));
            }
            parent.info.closed = true;
            let parent_id = Arc::clone(&parent.info.id);
            let left = Self::shard_id(&mut state);
            let right = Self::shard_id(&mut state);
            for (id, range) in [(&left, (low, at - 1)), (&right, (at, high))] {
                state.shards.push(Shard {
                    info: ShardInfo {
                        id: Arc::clone(id),
                        parents: vec![Arc::clone(&parent_id)],
                        hash_range: range,
                        closed: false,
                    },
                    records: VecDeque::new(),
                    trimmed_through: None,
                    packer: Packer::default(),
                });
            }
            (left, right)
        };
        self.resharded.notify_waiters();
        self.appended.notify_waiters();
        Ok(children)
    }

    /// Merges two open shards with adjacent ranges into one child; both parents close.
    ///
    /// # Errors
    ///
    /// [`SourceError::Invalid`] for unknown, closed or non-adjacent shards.
    pub fn merge(&self, a: &str, b: &str) -> Result<ShardId, SourceError> {
        let child = {
            let mut state = self.state.lock();
            let range_of = |state: &State, id: &str| {
                state
                    .shards
                    .iter()
                    .find(|s| &*s.info.id == id && !s.info.closed)
                    .map(|s| s.info.hash_range)
            };
            let (ra, rb) = match (range_of(&state, a), range_of(&state, b)) {
                (Some(ra), Some(rb)) => (ra, rb),
                _ => {
                    return Err(SourceError::Invalid(format!(
                        "{a} and {b} must be open shards"
                    )))
                }
            };
            let (first, second) = if ra.0 < rb.0 { (ra, rb) } else { (rb, ra) };
            if first.1.checked_add(1) != Some(second.0) {
                return Err(SourceError::Invalid(format!(
                    "{a} and {b} are not adjacent"
                )));
            }
            for shard in &mut state.shards {
                if &*shard.info.id == a || &*shard.info.id == b {
                    shard.info.closed = true;
                }
            }
            let id = Self::shard_id(&mut state);
            state.shards.push(Shard {
                info: ShardInfo {
                    id: Arc::clone(&id),
                    parents: vec![Arc::from(a), Arc::from(b)],
                    hash_range: (first.0, second.1),
                    closed: false,
                },
                records: VecDeque::new(),
                trimmed_through: None,
                packer: Packer::default(),
            });
            id
        };
        self.resharded.notify_waiters();
        self.appended.notify_waiters();
        Ok(child)
    }

    /// Reads that asked for a trimmed position and started at the trim horizon.
    pub fn trimmed_reads(&self) -> u64 {
        self.trimmed_reads.load(Ordering::Relaxed)
    }

    /// Records held in all shards.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .shards
            .iter()
            .map(|s| s.records.len())
            .sum()
    }

    /// Whether no shard holds a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard that owns a partition key now.
    pub fn shard_for(&self, partition_key: &str) -> Option<ShardId> {
        let hash = hash_key(partition_key);
        self.state
            .lock()
            .shards
            .iter()
            .find(|s| !s.info.closed && s.info.hash_range.0 <= hash && hash <= s.info.hash_range.1)
            .map(|s| Arc::clone(&s.info.id))
    }

    fn read_now(
        &self,
        shard: &ShardId,
        from: Position,
        max: usize,
    ) -> Result<ReadResult, SourceError> {
        let mut state = self.state.lock();
        self.trim(&mut state, stream_now());
        let shard = state
            .shards
            .iter()
            .find(|s| &s.info.id == shard)
            .ok_or_else(|| SourceError::Invalid(format!("unknown shard {shard}")))?;
        let records = &shard.records;
        let last = records.back().map(|r| r.sequence.clone());
        let (start, trimmed) = match from {
            Position::TrimHorizon => (0, false),
            Position::Latest => (records.len(), false),
            Position::AtTimestamp(at) => (records.partition_point(|r| r.arrived_at < at), false),
            Position::After(ref seq) => {
                let index = records.partition_point(|r| r.sequence <= *seq);
                // Records after `seq` were trimmed: reading resumes at the trim horizon.
                let trimmed = shard.trimmed_through.as_ref().is_some_and(|t| t > seq);
                (index, trimmed)
            }
        };
        if trimmed {
            self.trimmed_reads.fetch_add(1, Ordering::Relaxed);
        }
        let taken: Vec<StreamRecord> = records.iter().skip(start).take(max).cloned().collect();
        let next = match (taken.last(), from) {
            (Some(r), _) => Position::After(r.sequence.clone()),
            (None, Position::Latest) => last.map_or(Position::TrimHorizon, Position::After),
            (None, other) => other,
        };
        let read_all = start + taken.len() >= records.len();
        Ok(ReadResult {
            shard_ended: shard.info.closed && read_all,
            records: taken,
            next,
            trimmed,
        })
    }
}

#[async_trait]
impl StreamSource for InMemoryStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(self
            .state
            .lock()
            .shards
            .iter()
            .map(|s| s.info.clone())
            .collect())
    }

    async fn read(
        &self,
        shard: &ShardId,
        from: Position,
        max: usize,
        wait: Duration,
    ) -> Result<ReadResult, SourceError> {
        let give_up = tokio::time::Instant::now().checked_add(wait);
        let mut from = from;
        loop {
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let result = self.read_now(shard, from.clone(), max)?;
            if !result.records.is_empty() || result.shard_ended {
                return Ok(result);
            }
            // `Latest` pins down to "after the last record now", so appends are not missed.
            from = result.next.clone();
            let now = tokio::time::Instant::now();
            if give_up.is_some_and(|at| at <= now) {
                return Ok(result);
            }
            match give_up {
                Some(at) => {
                    tokio::select! {
                        () = &mut appended => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => appended.await,
            }
        }
    }

    async fn shards_changed(&self) {
        self.resharded.notified().await;
    }
}
