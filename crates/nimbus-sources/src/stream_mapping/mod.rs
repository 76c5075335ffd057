//! The stream mapping engine (Lambda's event source mapping for Kinesis): a coordinator that
//! leases shards and starts a reader per shard, parents before children; readers that batch
//! records into lanes by partition key, invoke the function, retry, bisect, send what they give
//! up on to the on-failure destination, and checkpoint.
//!
//! Invariants kept here:
//! - **Order per partition key**: a key always maps to the same lane; a lane runs one batch at
//!   a time, retries block it, and bisect halves run first half first.
//! - **Checkpoints never pass an unfinished record**: a record is finished when the function
//!   handled it or the on-failure destination took it; the checkpoint is the end of the
//!   longest finished prefix of what was read, and only ever moves forward.
//! - **Parents before children**: a shard starts only once every parent it still knows of has
//!   the `ShardEnd` checkpoint.
//! - **One reader per shard, shared fairly**: a reader runs while its lease is renewed (it
//!   stops when the lease goes elsewhere or cannot be renewed in time); each worker keeps at
//!   most ready shards ÷ live workers (rounded up) and hands the rest off between rounds, after
//!   any open tumbling window closes.
//!
//! A mapping is built with [`StreamMapping::builder`], which asks where its leases and
//! checkpoints live before it can start: a shared [`CheckpointStore`] (Redis, PostgreSQL) so
//! that several processes split the shards, or [`StreamMappingBuilder::in_memory_store`] for
//! one process, chosen explicitly. Every checkpoint write carries the reader's lease (the
//! latest renewal), and the store refuses it once the lease has expired or moved; a reader
//! whose write is refused stops between batches, as when a renewal finds its lease gone, and
//! what it had not checkpointed is read again by the next owner.
//!
//! [`StreamMapping::drained`] resolves once every shard is finished or caught up (its last read
//! returned nothing new, and everything read before is finished and checkpointed) and nothing
//! is in flight, at some moment after the call.
//!
//! Stopping ([`StreamMapping::stop`], or the shutdown of a runtime it is attached to with
//! [`nimbus_core::Runtime::attach`]): readers stop reading, finish the round in hand until the
//! deadline, their leases still renewed so that a long round is not fenced (then stop between batches, leaving the rest behind the checkpoint), flush their
//! checkpoints and give up their leases. A mapping whose function takes no more work (shutting
//! down, unregistered) stops the same way instead of restarting its readers; one whose source
//! or stores fail permanently stops with [`MappingStatus::Failed`]. Sources, stores and the
//! on-failure destination are guarded: a panic is a transient error, and calls made while
//! stopping are given up on shortly after the deadline.
//!
//! The on-failure destination retries a refused record until it is taken, holding the shard;
//! a destination that refuses the full record for its size (`nimbus.records` past a queue's
//! 1 MiB) sends [`StreamFailure::without_records`], Lambda's own record, instead.
//!
//! A shard is read in rounds: up to `batch_size × parallelization_factor` records are split into
//! lanes, and the next round starts when every lane is done, so a lane blocked on a failing
//! batch holds the shard (Lambda blocks only that lane; nimbus keeps the simpler round, which
//! keeps the checkpoint arithmetic obvious).
//!
//! One concern per module: `builder` (what a mapping needs before it starts), `coordinator`
//! (the heartbeat loop and store guards), `balance` (leases and the fair share), `reader` (a
//! shard's read loop and its checkpoints between rounds), `round` (lanes), `progress` (the
//! finished prefix, and checkpoint writes under the reader's lease), `event` (a batch as
//! Lambda's Kinesis event), `payload` (a batch's size as Lambda's event, and the cut into
//! batches), `window` (tumbling windows), `filtering` (records no filter matches), `failure`
//! (retries, bisection, the on-failure destination), `record` (what the on-failure destination
//! receives, in Lambda's shape) and `drain` (the
//! future that says the source is drained).

mod balance;
mod batch;
mod builder;
mod config;
mod coordinator;
mod drain;
mod event;
mod failure;
mod filtering;
mod metrics;
mod payload;
mod progress;
mod reader;
mod record;
mod round;
#[cfg(test)]
mod tests;
mod window;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{Attachment, AttachmentStop, FunctionHandle};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use batch::{
    FailureDestination, StreamBatch, StreamCondition, StreamResponse, TumblingWindow,
    MAX_WINDOW_STATE,
};
pub use builder::{HasStore, NeedsStore, StreamMappingBuilder};
pub use config::StreamMappingConfig;
pub use drain::DrainError;
pub use metrics::{ShardMetrics, StreamMappingMetrics};
pub use payload::MAX_BATCH_BYTES;
pub use record::StreamFailure;

use crate::error::ConfigError;
use crate::status::{settle_status, MappingStatus};
use crate::stream::{CheckpointStore, Lease, LeaseStore, ShardId, StreamSource};

/// The function a stream mapping invokes.
pub type StreamFunction = FunctionHandle<StreamBatch, StreamResponse>;

struct Shared {
    name: Arc<str>,
    /// The stream's ARN, as on-failure records name it.
    stream_arn: Arc<str>,
    config: StreamMappingConfig,
    source: Arc<dyn StreamSource>,
    function: StreamFunction,
    /// The store, as a checkpoint store; `leases` is the same store seen as a lease store.
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
    on_failure: Option<Arc<dyn FailureDestination>>,
    metrics: Mutex<HashMap<ShardId, ShardMetrics>>,
    running: Mutex<HashMap<ShardId, Reader>>,
    shard_done: tokio::sync::Notify,
    /// Stops readers between batches (the stop deadline, a permanent error, a function that
    /// takes no more work).
    cancel: CancellationToken,
    /// Stop reading: readers finish the round in hand; the coordinator stops.
    stopping: CancellationToken,
    /// Stopping took too long: give up on stores and sources.
    abandon: CancellationToken,
    status: Mutex<MappingStatus>,
    permanent_errors: AtomicU64,
    /// The warning about item failures ignored (`report_batch_item_failures` off) was logged.
    warned_ignored_failures: std::sync::atomic::AtomicBool,
    tasks: TaskTracker,
    stopped_rounds: AtomicU64,
    drain: drain::Drain,
    /// The parsed `config.filters`.
    filters: crate::filter::Filters,
}

/// How long past its deadline a stopping stream mapping waits for checkpoints and lease
/// releases before it gives up on the stores.
const FLUSH_GRACE: Duration = Duration::from_millis(250);

/// Lease keys of live workers are `<mapping>/<WORKERS><owner>`; shard leases `<mapping>/<shard>`.
const WORKERS: &str = "~worker/";

/// A shard reader that is running.
struct Reader {
    /// Stops this reader alone, between batches (a child of the mapping's token): its lease
    /// was lost.
    cancel: CancellationToken,
    /// Stops this reader after the round in hand, so that nothing handled is left behind the
    /// checkpoint: it gives the shard to another worker.
    hand_off: CancellationToken,
    /// When its lease was last renewed.
    renewed: tokio::time::Instant,
    /// The lease as last acquired or renewed: checkpoint writes carry it.
    lease: Arc<Lease>,
    /// Set once the reader has returned and is giving its lease back: not renewed any more.
    ending: bool,
    /// The drain request current when the reader last found the shard caught up (its last read
    /// empty, everything before finished and checkpointed); `None` once it reads records.
    caught_up: Option<u64>,
}

/// A running stream mapping.
#[derive(Clone)]
pub struct StreamMapping {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StreamMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMapping")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// One store seen as both of the traits the mapping uses, so that leases and checkpoints are
/// always kept together.
struct Stores {
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Arc<dyn LeaseStore>,
}

impl Stores {
    fn new<S: CheckpointStore>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            checkpoints: store.clone(),
            leases: store,
        }
    }
}

/// How processing a set of records ended.
enum Done {
    Finished,
    Stopped,
}

impl StreamMapping {
    /// A builder of a mapping from `source` to `function`: it must be told where leases and
    /// checkpoints live ([`StreamMappingBuilder::store`] or
    /// [`StreamMappingBuilder::in_memory_store`]) before it can start.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
    /// use nimbus_sources::{InMemoryStream, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::default();
    /// let count = runtime
    ///     .register(Function::new("count", handler_fn(|batch: StreamBatch, _ctx: Context| async move {
    ///         println!("{} records from {}", batch.records.len(), batch.shard_id);
    ///         Ok::<_, FunctionError>(StreamResponse::success())
    ///     })))
    ///     .await?;
    /// let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2))?);
    /// stream.put("user-1", "hello")?;
    /// // One process: leases and checkpoints in memory, said so.
    /// let mapping = StreamMapping::builder(stream, count, StreamMappingConfig::new("count"))
    ///     .in_memory_store()
    ///     .start()?;
    /// // Attached, the mapping is stopped first when the runtime shuts down: checkpoints
    /// // flushed, leases given up.
    /// runtime.attach(mapping.clone())?;
    /// mapping.drained().await?;
    /// assert_eq!(mapping.metrics().records, 1);
    /// let report = runtime.shutdown(Duration::from_secs(1)).await;
    /// assert!(report.attachments[0].clean);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(
        source: impl StreamSource,
        function: StreamFunction,
        config: StreamMappingConfig,
    ) -> StreamMappingBuilder<NeedsStore> {
        StreamMappingBuilder::new(Arc::new(source), function, config)
    }

    /// Starts the mapping the builder describes. Must be called inside a Tokio runtime.
    fn launch(
        source: Arc<dyn StreamSource>,
        function: StreamFunction,
        config: StreamMappingConfig,
        stores: Stores,
        on_failure: Option<Arc<dyn FailureDestination>>,
    ) -> Result<Self, ConfigError> {
        config.validate(on_failure.is_some())?;
        let filters = crate::filter::Filters::parse_for_streams(&config.filters)?;
        let mut config = config;
        // Unique per start: a name shared by two processes (one config, or host names reused)
        // would let both read every shard and pass each other's fence.
        config.owner = format!("{}#{:016x}", config.owner, fastrand::u64(..));
        let stream_arn = record::stream_arn(
            function.arn(),
            config.stream_name.as_deref().unwrap_or(&config.name),
        );
        // Before anything starts: a mapping its function's role does not allow is refused.
        crate::refusal::check_on_attach(&function, &crate::refusal::STREAM_ACTIONS, &stream_arn)?;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            stream_arn: Arc::from(stream_arn),
            // Its handlers see this mapping as the principal.
            function: function.for_event_source(&config.name),
            config,
            source,
            checkpoints: stores.checkpoints,
            leases: stores.leases,
            on_failure,
            metrics: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            shard_done: tokio::sync::Notify::new(),
            cancel: CancellationToken::new(),
            stopping: CancellationToken::new(),
            abandon: CancellationToken::new(),
            status: Mutex::new(MappingStatus::Running),
            permanent_errors: AtomicU64::new(0),
            warned_ignored_failures: std::sync::atomic::AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stopped_rounds: AtomicU64::new(0),
            drain: drain::Drain::default(),
            filters,
        });
        shared.tasks.spawn(Arc::clone(&shared).coordinate());
        Ok(Self { shared })
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> StreamMappingMetrics {
        let shards = self.shared.metrics.lock().clone();
        let mut m = StreamMappingMetrics {
            shards_running: self.shared.running.lock().len(),
            permanent_source_errors: self.shared.permanent_errors.load(Ordering::Relaxed),
            ..StreamMappingMetrics::default()
        };
        for s in shards.values() {
            m.records += s.records;
            m.batches += s.batches;
            m.retries += s.retries;
            m.bisections += s.bisections;
            m.sent_to_on_failure += s.sent_to_on_failure;
            m.filtered += s.filtered;
            m.ignored_item_failures += s.ignored_item_failures;
            m.iterator_age = m.iterator_age.max(s.iterator_age);
        }
        m.shards = shards
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        m
    }

    /// Whether the mapping runs, or why it stopped.
    pub fn status(&self) -> MappingStatus {
        self.shared.status.lock().clone()
    }

    /// Stops the mapping: readers stop reading and finish the round in hand (or, once
    /// `grace` is over, stop between batches and leave the rest behind the checkpoint), flush
    /// their checkpoints and release their leases. Returns whether everything stopped within
    /// `grace` (plus a short flush).
    pub async fn stop(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now()
            .checked_add(grace)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
        self.stop_by(deadline).await.clean
    }

    async fn stop_by(&self, deadline: tokio::time::Instant) -> AttachmentStop {
        let shared = &self.shared;
        settle_status(
            &shared.status,
            MappingStatus::Stopped {
                reason: "stopped".to_owned(),
            },
        );
        shared.stopping.cancel();
        shared.drain.changed.notify_waiters();
        for reader in shared.running.lock().values() {
            reader.hand_off.cancel();
        }
        shared.tasks.close();
        if tokio::time::timeout_at(deadline, shared.tasks.wait())
            .await
            .is_err()
        {
            // The deadline: stop between batches; what is unfinished stays behind the
            // checkpoint, to be read again.
            shared.cancel.cancel();
        }
        let clean = tokio::time::timeout_at(deadline + FLUSH_GRACE, shared.tasks.wait())
            .await
            .is_ok();
        if !clean {
            shared.abandon.cancel();
            let _ = tokio::time::timeout(FLUSH_GRACE, shared.tasks.wait()).await;
        }
        if clean {
            AttachmentStop::clean(&*shared.name)
        } else {
            AttachmentStop::failed(
                &*shared.name,
                "a store or source did not answer before the deadline",
            )
        }
    }
}

/// The runtime's handle on the mapping: [`nimbus_core::Runtime::shutdown`] stops it before
/// the function, and unregistering the function stops it.
#[nimbus_core::async_trait]
impl Attachment for StreamMapping {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn function(&self) -> &str {
        self.shared.function.name()
    }

    async fn stop(&self, deadline: tokio::time::Instant) -> AttachmentStop {
        self.stop_by(deadline).await
    }
}

impl Shared {
    pub(super) fn shard_metrics(&self, shard: &ShardId, update: impl FnOnce(&mut ShardMetrics)) {
        update(self.metrics.lock().entry(Arc::clone(shard)).or_default());
    }
}
