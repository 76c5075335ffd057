//! Stream sources (Kinesis semantics): the [`StreamSource`] trait over ordered shards, record
//! [`Sequence`] numbers, the [`LeaseStore`] and [`CheckpointStore`] traits (a checkpoint store
//! keeps the leases too, and refuses a checkpoint written under a lease that has expired or
//! moved), and in-memory implementations: [`InMemoryStream`] and [`InMemoryStreamStore`].
//!
//! A stream is split into shards that each hold records in sequence order. Records are routed
//! to a shard by a 128-bit hash of their partition key over the shards' hash-key ranges, so
//! splitting and merging shards are range operations that close the parents and open children.
//! The trait is shaped for Kinesis and DynamoDB Streams (`ListShards`, `GetShardIterator` +
//! `GetRecords`), Redis Streams (a key per shard, `XREAD BLOCK` after an id) and NATS
//! JetStream (subjects as shards, an ordered consumer from a sequence).

mod checkpoint;
mod keys;
mod lease;
mod memory;
mod sequence;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use lease::{Lease, LeaseStore};
pub use memory::{InMemoryStream, StreamConfig};
pub use sequence::{ParseSequenceError, Sequence, MAX_SEQUENCE_DIGITS};
pub use store::InMemoryStreamStore;

use crate::error::SourceError;

/// A shard's id.
pub type ShardId = Arc<str>;

/// What a source says about one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardInfo {
    /// The shard's id.
    pub id: ShardId,
    /// The shards it was split or merged from; they must be finished before it is read.
    pub parents: Vec<ShardId>,
    /// The hash-key range it owns, inclusive.
    pub hash_range: (u128, u128),
    /// Closed shards take no new records; once read to the end they are finished.
    pub closed: bool,
}

impl ShardInfo {
    /// A shard's facts, for sources built outside this crate.
    pub fn new(id: ShardId, parents: Vec<ShardId>, hash_range: (u128, u128), closed: bool) -> Self {
        Self {
            id,
            parents,
            hash_range,
            closed,
        }
    }
}

/// Where to start reading a shard that has no checkpoint, or where to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Position {
    /// The oldest record still retained.
    TrimHorizon,
    /// Only records that arrive from now on.
    Latest,
    /// The first record that arrived at or after this time.
    AtTimestamp(SystemTime),
    /// The record after this sequence number.
    After(Sequence),
}

/// One record of a stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct StreamRecord {
    /// The partition key that routed it (order is kept per key).
    pub partition_key: Arc<str>,
    /// Its sequence number in its shard (a decimal string in JSON).
    pub sequence: Sequence,
    /// The data (serialised as a string when it is UTF-8).
    #[serde(with = "crate::mapping::body_serde")]
    pub data: Bytes,
    /// When the stream accepted it.
    pub arrived_at: SystemTime,
}

impl StreamRecord {
    /// A record, for sources built outside this crate.
    pub fn new(
        partition_key: impl Into<Arc<str>>,
        sequence: Sequence,
        data: impl Into<Bytes>,
        arrived_at: SystemTime,
    ) -> Self {
        Self {
            partition_key: partition_key.into(),
            sequence,
            data: data.into(),
            arrived_at,
        }
    }

    /// The data as text.
    ///
    /// # Errors
    ///
    /// The data is not UTF-8.
    pub fn data_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.data)
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadResult {
    /// Records in sequence order.
    pub records: Vec<StreamRecord>,
    /// Where the next read continues.
    pub next: Position,
    /// The shard is closed and every record has been read: it is finished.
    pub shard_ended: bool,
    /// The requested position had been trimmed; reading started at the trim horizon.
    pub trimmed: bool,
}

impl ReadResult {
    /// A read's result, for sources built outside this crate.
    pub fn new(
        records: Vec<StreamRecord>,
        next: Position,
        shard_ended: bool,
        trimmed: bool,
    ) -> Self {
        Self {
            records,
            next,
            shard_ended,
            trimmed,
        }
    }
}

/// A stream that a mapping reads shard by shard.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::{InMemoryStream, Position, StreamConfig, StreamSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let stream = InMemoryStream::new(StreamConfig::default().with_shards(2))?;
/// let (shard, _seq) = stream.put("user-1", "clicked")?;
/// let read = stream.read(&shard, Position::TrimHorizon, 10, Duration::ZERO).await?;
/// assert_eq!(&read.records[0].data[..], b"clicked");
/// # Ok(())
/// # }
/// ```
///
/// Implementing it: a stream that returns at most a page of records per read, as brokers with
/// a page size do, keeping records in an [`InMemoryStream`]. A wrapper forwards
/// [`StreamSource::shards_changed`] too, so that mappings hear of splits and merges at once.
/// The `async_trait` attribute is re-exported by this crate.
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::{async_trait, InMemoryStream, Position, ReadResult, ShardId, ShardInfo, SourceError, StreamConfig, StreamSource};
///
/// #[derive(Debug)]
/// struct Paged {
///     inner: InMemoryStream,
///     page: usize,
/// }
///
/// #[async_trait]
/// impl StreamSource for Paged {
///     async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
///         self.inner.shards().await
///     }
///     async fn read(&self, shard: &ShardId, from: Position, max: usize, wait: Duration) -> Result<ReadResult, SourceError> {
///         self.inner.read(shard, from, max.min(self.page), wait).await
///     }
///     async fn shards_changed(&self) {
///         self.inner.shards_changed().await;
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let stream = Paged { inner: InMemoryStream::new(StreamConfig::default())?, page: 2 };
/// let (shard, _sequence) = stream.inner.put("user-1", "a")?;
/// stream.inner.put("user-1", "b")?;
/// stream.inner.put("user-1", "c")?;
/// let first = stream.read(&shard, Position::TrimHorizon, 100, Duration::ZERO).await?;
/// assert_eq!(first.records.len(), 2);
/// let rest = stream.read(&shard, first.next, 100, Duration::ZERO).await?;
/// assert_eq!(rest.records[0].data_str()?, "c");
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait StreamSource: Send + Sync + 'static {
    /// Every shard, open and closed, still known to the source.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the mapping retries with backoff.
    async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError>;

    /// Reads up to `max` records of `shard` from `from`, waiting up to `wait` for the first
    /// (long poll; an open shard with nothing new returns empty after `wait`).
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; an unknown shard is [`SourceError::Invalid`].
    async fn read(
        &self,
        shard: &ShardId,
        from: Position,
        max: usize,
        wait: Duration,
    ) -> Result<ReadResult, SourceError>;

    /// Resolves when the shard list may have changed (a split or merge), if the source can
    /// tell; otherwise never, and the mapping re-lists shards on its lease heartbeat.
    async fn shards_changed(&self) {
        std::future::pending::<()>().await;
    }
}

#[async_trait]
impl<S: StreamSource + ?Sized> StreamSource for Arc<S> {
    async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        (**self).shards().await
    }
    async fn read(
        &self,
        shard: &ShardId,
        from: Position,
        max: usize,
        wait: Duration,
    ) -> Result<ReadResult, SourceError> {
        (**self).read(shard, from, max, wait).await
    }
    async fn shards_changed(&self) {
        (**self).shards_changed().await;
    }
}

/// Wall-clock time as the stream sees it: the system time when first asked, advanced by Tokio's
/// clock since. Arrival times, retention and record ages then follow `tokio::time::pause` in
/// tests, and never jump back when the system clock is adjusted.
pub fn stream_now() -> SystemTime {
    static BASE: std::sync::OnceLock<(SystemTime, std::time::Instant)> = std::sync::OnceLock::new();
    let (system, instant) = *BASE.get_or_init(|| (SystemTime::now(), std::time::Instant::now()));
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(instant);
    system + elapsed
}

/// The 128-bit hash of a partition key that picks its shard (two FNV-1a passes; Kinesis uses
/// MD5, but any stable, well-spread hash keeps the same range arithmetic).
pub fn hash_key(partition_key: &str) -> u128 {
    fn fnv1a(bytes: &[u8], offset: u64) -> u64 {
        let mut hash = offset;
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A final avalanche, so that keys differing in the last byte spread over the range.
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^ (hash >> 33)
    }
    let bytes = partition_key.as_bytes();
    (u128::from(fnv1a(bytes, 0xcbf2_9ce4_8422_2325)) << 64)
        | u128::from(fnv1a(bytes, 0x8422_2325_cbf2_9ce4))
}

/// A stream that can be appended to: the producer side of an adapter (the conformance kit uses it).
///
/// # Example
///
/// A stream whose producer refuses empty records, keeping records in an [`InMemoryStream`]. A
/// producer is a [`StreamSource`] too; here that side is forwarded to the inner stream.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use nimbus_sources::{async_trait, InMemoryStream, Position, ReadResult, ShardId, ShardInfo, SourceError, StreamConfig, StreamProducer, StreamSource};
///
/// #[derive(Debug)]
/// struct NonEmpty(InMemoryStream);
///
/// #[async_trait]
/// impl StreamProducer for NonEmpty {
///     async fn append(&self, partition_key: &str, data: Bytes) -> Result<ShardId, SourceError> {
///         if data.is_empty() {
///             return Err(SourceError::Invalid("empty record".into()));
///         }
///         let (shard, _sequence) = self.0.put(partition_key, data)?;
///         Ok(shard)
///     }
/// }
///
/// #[async_trait]
/// impl StreamSource for NonEmpty {
///     async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
///         self.0.shards().await
///     }
///     async fn read(&self, shard: &ShardId, from: Position, max: usize, wait: Duration) -> Result<ReadResult, SourceError> {
///         self.0.read(shard, from, max, wait).await
///     }
///     async fn shards_changed(&self) {
///         self.0.shards_changed().await;
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let stream = NonEmpty(InMemoryStream::new(StreamConfig::default().with_shards(4))?);
/// let shard = stream.append("order-9", Bytes::from_static(b"paid")).await?;
/// assert!(stream.append("order-9", Bytes::new()).await.is_err());
/// let read = stream.read(&shard, Position::TrimHorizon, 10, Duration::ZERO).await?;
/// assert_eq!(read.records.len(), 1);
/// assert_eq!(&*read.records[0].partition_key, "order-9");
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait StreamProducer: StreamSource {
    /// Appends one record; returns its shard.
    ///
    /// # Errors
    ///
    /// A [`SourceError`].
    async fn append(&self, partition_key: &str, data: Bytes) -> Result<ShardId, SourceError>;
}

#[async_trait]
impl StreamProducer for memory::InMemoryStream {
    async fn append(&self, partition_key: &str, data: Bytes) -> Result<ShardId, SourceError> {
        self.put(partition_key, data).map(|(shard, _)| shard)
    }
}
