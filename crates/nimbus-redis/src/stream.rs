//! A sharded stream on Redis Streams: one stream key per shard, read by position.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_sources::{
    hash_key, Position, ReadResult, Sequence, ShardId, ShardInfo, SourceError, StreamProducer,
    StreamRecord, StreamSource,
};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::Value;

use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::fields::{stream_record, Fields};

/// The longest a receive or read blocks: a longer wait (even `Duration::MAX`) is cut to it,
/// and the call returns empty at its end, which callers treat as "nothing arrived in time".
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A wait as `BLOCK` milliseconds: at least 1 (0 would block forever), at most [`MAX_WAIT`].
pub(crate) fn block_millis(wait: Duration) -> u64 {
    wait.clamp(Duration::from_millis(1), MAX_WAIT).as_millis() as u64
}

/// Parses a stream entry id `ms-seq`.
pub(crate) fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// An entry id as a sequence number: `ms << 64 | seq`, so that sequence numbers order as ids do.
fn position_of(id: &str) -> Option<u128> {
    parse_id(id).map(|(ms, seq)| (u128::from(ms) << 64) | u128::from(seq))
}

fn id_of(position: u128) -> String {
    format!("{}-{}", (position >> 64) as u64, position as u64)
}

/// The entry position a sequence number stands for; one above 128 bits was not made here.
fn position_of_sequence(sequence: &Sequence) -> Result<u128, SourceError> {
    sequence.as_u128().ok_or_else(|| {
        SourceError::Invalid(format!(
            "sequence number {sequence} is not a Redis stream position (above 128 bits)"
        ))
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        _ => Vec::new(),
    }
}

/// The entries of an `XRANGE`-shaped reply: (id, fields).
pub(crate) fn entries(value: &Value) -> Vec<(String, Fields)> {
    let Value::Array(list) = value else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in list {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(text), parts.get(1))
        else {
            continue;
        };
        let mut map = Vec::with_capacity(fields.len() / 2);
        for pair in fields.chunks(2) {
            if let (Some(k), Some(v)) = (pair.first().and_then(text), pair.get(1)) {
                map.push((k, bytes(v)));
            }
        }
        out.push((id, map));
    }
    out
}

/// A stream of `shards` Redis Streams, keys `<key>:shard:<n>`, each owning an even slice of the
/// hash-key range. Shard count is fixed (no split or merge).
pub struct RedisStream {
    config: RedisConfig,
    client: redis::Client,
    manager: ConnectionManager,
    blocking: parking_lot::Mutex<Vec<MultiplexedConnection>>,
    shards: Vec<ShardInfo>,
}

impl std::fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStream")
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

impl RedisStream {
    /// Connects.
    ///
    /// # Errors
    ///
    /// An invalid config ([`RedisError::Config`], e.g. `shards` outside 1..=1024), or the
    /// server cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())?;
        let manager = client
            .get_connection_manager_with_config(crate::config::shared())
            .await?;
        let width = u128::MAX / config.shards as u128;
        let shards = (0..config.shards)
            .map(|i| {
                ShardInfo::new(
                    Arc::from(format!("{}:shard:{i}", config.key)),
                    Vec::new(),
                    (
                        width * i as u128 + u128::from(i != 0),
                        if i + 1 == config.shards {
                            u128::MAX
                        } else {
                            width * (i as u128 + 1)
                        },
                    ),
                    false,
                )
            })
            .collect();
        Ok(Self {
            config,
            client,
            manager,
            blocking: parking_lot::Mutex::new(Vec::new()),
            shards,
        })
    }

    /// Appends a record to the shard that owns the key; returns the shard.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn put(&self, partition_key: &str, data: &[u8]) -> Result<ShardId, RedisError> {
        let hash = hash_key(partition_key);
        let shard = self
            .shards
            .iter()
            .find(|s| s.hash_range.0 <= hash && hash <= s.hash_range.1)
            .ok_or_else(|| RedisError::Reply("no shard owns the key".into()))?;
        let mut con = self.manager.clone();
        let _: String = redis::cmd("XADD")
            .arg(&*shard.id)
            .arg("*")
            .arg("k")
            .arg(partition_key)
            .arg("d")
            .arg(data)
            .query_async(&mut con)
            .await?;
        Ok(shard.id.clone())
    }

    /// The records of an entry list; entries written by other producers too (see
    /// the rules in `fields.rs`): none is skipped for lacking `k` or `d`.
    fn records(list: &Value) -> Vec<StreamRecord> {
        entries(list)
            .into_iter()
            .filter_map(|(id, fields)| {
                let position = position_of(&id)?;
                let (key, data) = stream_record(fields);
                let arrived = UNIX_EPOCH + Duration::from_millis((position >> 64) as u64);
                Some(StreamRecord::new(
                    key,
                    Sequence::new(position),
                    data,
                    arrived,
                ))
            })
            .collect()
    }

    async fn last_position(&self, shard: &str) -> Result<Option<u128>, RedisError> {
        let mut con = self.manager.clone();
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(shard)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut con)
            .await?;
        Ok(Self::records(&reply)
            .first()
            .and_then(|r| r.sequence.as_u128()))
    }
}

#[async_trait]
impl StreamSource for RedisStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(self.shards.clone())
    }

    async fn read(
        &self,
        shard: &ShardId,
        from: Position,
        max: usize,
        wait: Duration,
    ) -> Result<ReadResult, SourceError> {
        if !self.shards.iter().any(|s| &s.id == shard) {
            return Err(SourceError::Invalid(format!("unknown shard {shard}")));
        }
        // Resolve the position to "after this id" (or the start).
        let after: Option<u128> = match from {
            Position::After(seq) => Some(position_of_sequence(&seq)?),
            Position::Latest => Some(self.last_position(shard).await?.unwrap_or(0)),
            Position::TrimHorizon => None,
            Position::AtTimestamp(at) => {
                let ms = at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                Some((u128::from(ms) << 64).saturating_sub(1))
            }
            _ => None,
        };
        let start = after.map_or_else(|| "-".to_owned(), |seq| format!("({}", id_of(seq)));
        let mut con = self.manager.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(&**shard)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        let mut records = Self::records(&reply);
        if records.is_empty() && !wait.is_zero() {
            let pooled = self.blocking.lock().pop();
            let mut blocking = match pooled {
                Some(con) => con,
                None => self
                    .client
                    .get_multiplexed_async_connection_with_config(&crate::config::blocking())
                    .await
                    .map_err(RedisError::from)?,
            };
            let id = after.map_or_else(|| "0-0".to_owned(), id_of);
            let reply: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(max)
                .arg("BLOCK")
                .arg(block_millis(wait))
                .arg("STREAMS")
                .arg(&**shard)
                .arg(&id)
                .query_async(&mut blocking)
                .await
                .map_err(RedisError::from)?;
            self.blocking.lock().push(blocking);
            if let Value::Array(streams) = reply {
                for stream in streams {
                    if let Value::Array(parts) = stream {
                        if let Some(list) = parts.get(1) {
                            records.extend(Self::records(list));
                        }
                    }
                }
            }
        }
        let next = match (records.last(), after) {
            (Some(r), _) => Position::After(r.sequence.clone()),
            (None, Some(position)) => Position::After(Sequence::new(position)),
            (None, None) => Position::TrimHorizon,
        };
        Ok(ReadResult::new(records, next, false, false))
    }
}

#[async_trait]
impl StreamProducer for RedisStream {
    async fn append(&self, partition_key: &str, data: Bytes) -> Result<ShardId, SourceError> {
        Ok(self.put(partition_key, &data).await?)
    }
}
