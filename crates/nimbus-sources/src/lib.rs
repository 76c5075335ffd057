//! nimbus-sources: event sources for nimbus. Source traits, the mapping engine that polls a
//! source and invokes a function, and in-memory sources.
//!
//! A *queue* ([`QueueSource`]) delivers messages at least once with visibility timeouts, as SQS
//! does; [`InMemoryQueue`] implements it in-process, with redrive to a dead-letter queue and a
//! FIFO variant. A [`QueueMapping`] polls a queue, batches, filters ([`FilterPattern`]) and
//! invokes a nimbus function with a [`QueueBatch`], deleting what succeeded and leaving failures
//! to reappear, scaling its pollers with the backlog.
//!
//! A *stream* ([`StreamSource`]) keeps records in order per shard, numbered by [`Sequence`]
//! (large enough for Kinesis, DynamoDB Streams and Redis positions); [`InMemoryStream`]
//! implements it with Kinesis semantics. A [`StreamMapping`] reads each shard under a lease,
//! invokes a function with a [`StreamBatch`], and checkpoints what is finished, in a
//! [`CheckpointStore`] that keeps the leases too and refuses a checkpoint whose lease has
//! expired or moved; it is built with [`StreamMapping::builder`], which asks where that store
//! is ([`InMemoryStreamStore`] for one process).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
//! use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::default();
//! let sum = runtime
//!     .register(Function::new("sum", handler_fn(|batch: QueueBatch, _ctx: Context| async move {
//!         // Report records whose body is not a number; the others are deleted.
//!         let bad = batch.records.iter().filter(|r| r.json::<u64>().is_err());
//!         Ok::<_, FunctionError>(BatchResponse::failures(bad.map(|r| r.message_id.clone())))
//!     })))
//!     .await?;
//! let queue = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
//! for body in ["1", "2", "oops"] {
//!     queue.send(body)?;
//! }
//! // Attached, the mapping is stopped first when the runtime shuts down: what it holds goes
//! // back to the queue, its receive count unchanged.
//! let mapping = QueueMapping::builder(queue.clone(), sum, QueueMappingConfig::new("sum"))
//!     .attach(&runtime)
//!     .start()?;
//! // (`mapping.drained()` would wait for "oops" to come back after its 30 s visibility timeout.)
//! while mapping.metrics().deleted + mapping.metrics().failed < 3 {
//!     tokio::task::yield_now().await;
//! }
//! assert_eq!(mapping.metrics().failed, 1);
//! runtime.shutdown(Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

mod aws_time;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod filter;
mod mapping;
mod object;
mod pack;
mod queue;
mod refusal;
mod status;
mod stop_signal;
mod stream;
mod stream_mapping;

pub use error::{BoxError, ConfigError, Retry, SourceError};
pub use filter::{FilterPattern, Filters, MAX_PATTERNS, MAX_PATTERN_LEN};
pub use mapping::{
    BatchResponse, QueueBatch, QueueFunction, QueueMapping, QueueMappingBuilder,
    QueueMappingConfig, QueueMappingMetrics, QueueOrigin, QueueRecord,
};
pub use object::{
    decode_key, encode_key, EventTarget, EventType, InMemoryObjectStore, NotificationConfig,
    NotificationRule, ObjectEvent, ObjectInfo, ObjectStore, RequestParameters, ResponseElements,
    S3Bucket, S3Entity, S3Event, S3Object, UserIdentity,
};
#[cfg(feature = "directory")]
pub use object::{DirectoryConfig, DirectoryStore};
pub use queue::limits as queue_limits;
pub use queue::{
    Attributes, InMemoryQueue, Message, MessageId, Outgoing, QueueConfig, QueueProducer,
    QueueSource, QueueStats, Receipt, SendBatchError, SendError,
};
pub use refusal::{QUEUE_ACTIONS, STREAM_ACTIONS};
pub use status::MappingStatus;
pub use stream::{
    hash_key, stream_now, Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, Lease,
    LeaseStore, ParseSequenceError, Position, ReadResult, Sequence, ShardId, ShardInfo,
    StreamConfig, StreamProducer, StreamRecord, StreamSource, MAX_SEQUENCE_DIGITS,
};
pub use stream_mapping::{
    DrainError, FailureDestination, HasStore, NeedsStore, ShardMetrics, StreamBatch,
    StreamCondition, StreamFailure, StreamFunction, StreamMapping, StreamMappingBuilder,
    StreamMappingConfig, StreamMappingMetrics, StreamResponse, TumblingWindow, MAX_BATCH_BYTES,
    MAX_WINDOW_STATE,
};

/// Re-exported so that implementations of the source traits need no dependency of their own:
/// write `#[nimbus_sources::async_trait]` (or `use nimbus_sources::async_trait;`).
pub use nimbus_core::async_trait;

/// Re-exported because message and object bodies are `Bytes`: a source or store implemented
/// outside this crate names it without a dependency of its own.
pub use bytes::Bytes;
