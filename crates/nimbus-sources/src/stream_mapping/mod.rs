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
//! Stopping ([`StreamMapping::stop`], or the shutdown of a runtime it is attached to with
//! [`nimbus_core::Runtime::attach`]): readers stop reading, finish the round in hand until the
//! deadline (then stop between batches, leaving the rest behind the checkpoint), flush their
//! checkpoints and give up their leases. A mapping whose function takes no more work (shutting
//! down, unregistered) stops the same way instead of restarting its readers; one whose source
//! or stores fail permanently stops with [`MappingStatus::Failed`]. Sources, stores and the
//! on-failure destination are guarded: a panic is a transient error, and calls made while
//! stopping are given up on shortly after the deadline.
//!
//! A shard is read in rounds: up to `batch_size × parallelization_factor` records are split into
//! lanes, and the next round starts when every lane is done, so a lane blocked on a failing
//! batch holds the shard (Lambda blocks only that lane; nimbus keeps the simpler round, which
//! keeps the checkpoint arithmetic obvious).

mod batch;
mod config;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;
use nimbus_core::{
    Attachment, AttachmentStop, Backoff, ErrorInfo, FunctionHandle, InvokeError, InvokeOptions,
    Invoker,
};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use batch::{
    FailureDestination, StreamBatch, StreamCondition, StreamFailure, StreamResponse, TumblingWindow,
};
pub use config::StreamMappingConfig;

use crate::error::{ConfigError, SourceError};
use crate::status::{delay_of, guarded, settle_status, MappingStatus};
use crate::stream::{
    hash_key, stream_now, Checkpoint, CheckpointStore, Lease, LeaseStore, Position, Sequence,
    ShardId, ShardInfo, StreamRecord, StreamSource,
};

/// The function a stream mapping invokes.
pub type StreamFunction = FunctionHandle<StreamBatch, StreamResponse>;

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
    /// Age of the last record of the last batch when it was handled (Lambda's IteratorAge).
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
    /// The largest iterator age over the shards.
    pub iterator_age: Duration,
    /// Shards being read by this process now.
    pub shards_running: usize,
    /// Permanent errors from the source or the stores: the mapping stopped on the first.
    pub permanent_source_errors: u64,
    /// Per shard, by id.
    pub shards: HashMap<String, ShardMetrics>,
}

struct Shared {
    name: Arc<str>,
    config: StreamMappingConfig,
    source: Arc<dyn StreamSource>,
    function: StreamFunction,
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
    tasks: TaskTracker,
    stopped_rounds: AtomicU64,
}

/// How long past its deadline a stopping stream mapping waits for checkpoints and lease
/// releases before it gives up on the stores.
const FLUSH_GRACE: Duration = Duration::from_millis(250);

/// What a refused invocation means to a stream mapping.
enum Refusal {
    /// No capacity now: wait and retry, uncounted.
    Throttled,
    /// The function ran and failed: a failed attempt.
    Failed,
    /// The function takes no more work (shutting down, cancelled, unregistered, gone).
    Stop,
}

fn classify(error: &InvokeError) -> Refusal {
    match error {
        InvokeError::Throttled(_) => Refusal::Throttled,
        InvokeError::Function(_)
        | InvokeError::Timeout(_)
        | InvokeError::Panic(_)
        | InvokeError::Init(_) => Refusal::Failed,
        _ => Refusal::Stop,
    }
}

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
    /// Set once the reader has returned and is giving its lease back: not renewed any more.
    ending: bool,
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

/// The stores and destination a stream mapping works with.
pub struct StreamMappingParts {
    /// Where checkpoints are kept.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Where shard leases are kept.
    pub leases: Arc<dyn LeaseStore>,
    /// Where records the mapping gives up on go (required when it may give up).
    pub on_failure: Option<Arc<dyn FailureDestination>>,
}

impl std::fmt::Debug for StreamMappingParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMappingParts")
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

impl StreamMappingParts {
    /// In-memory checkpoints and leases, no on-failure destination.
    pub fn in_memory() -> Self {
        Self {
            checkpoints: Arc::new(crate::stream::InMemoryCheckpoints::new()),
            leases: Arc::new(crate::stream::InMemoryLeases::new()),
            on_failure: None,
        }
    }

    /// Sets the on-failure destination.
    #[must_use]
    pub fn with_on_failure(mut self, destination: impl FailureDestination) -> Self {
        self.on_failure = Some(Arc::new(destination));
        self
    }

    /// Sets the checkpoint store.
    #[must_use]
    pub fn with_checkpoints(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.checkpoints = store;
        self
    }

    /// Sets the lease store.
    #[must_use]
    pub fn with_leases(mut self, store: Arc<dyn LeaseStore>) -> Self {
        self.leases = store;
        self
    }
}

/// How processing a set of records ended.
enum Done {
    Finished,
    Stopped,
}

impl StreamMapping {
    /// Starts a mapping from `source` to `function`. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
    /// use nimbus_sources::{InMemoryStream, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig, StreamMappingParts, StreamResponse};
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
    /// let mapping = StreamMapping::start(stream, count, StreamMappingParts::in_memory(), StreamMappingConfig::new("count"))?;
    /// // Attached, the mapping is stopped first when the runtime shuts down: checkpoints
    /// // flushed, leases given up.
    /// runtime.attach(mapping.clone())?;
    /// while mapping.metrics().records < 1 {
    ///     tokio::task::yield_now().await;
    /// }
    /// let report = runtime.shutdown(Duration::from_secs(1)).await;
    /// assert!(report.attachments[0].clean);
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(
        source: impl StreamSource,
        function: StreamFunction,
        parts: StreamMappingParts,
        config: StreamMappingConfig,
    ) -> Result<Self, ConfigError> {
        config.validate(parts.on_failure.is_some())?;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            config,
            source: Arc::new(source),
            function,
            checkpoints: parts.checkpoints,
            leases: parts.leases,
            on_failure: parts.on_failure,
            metrics: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            shard_done: tokio::sync::Notify::new(),
            cancel: CancellationToken::new(),
            stopping: CancellationToken::new(),
            abandon: CancellationToken::new(),
            status: Mutex::new(MappingStatus::Running),
            permanent_errors: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            stopped_rounds: AtomicU64::new(0),
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

fn window_of(at: SystemTime, length: Duration) -> (SystemTime, SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = since.as_nanos() / length.as_nanos().max(1);
    let start = UNIX_EPOCH + Duration::from_nanos((n * length.as_nanos()) as u64);
    (start, start + length)
}

/// The open tumbling window of a shard and its state.
struct Window {
    bounds: Option<(SystemTime, SystemTime)>,
    state: serde_json::Value,
}

/// Which records of a round are finished, and the checkpoint they allow.
struct Progress {
    sequences: Vec<Sequence>,
    finished: Vec<bool>,
    prefix: usize,
}

/// The bookkeeping of one round, shared by its lanes.
struct Round {
    progress: Mutex<Progress>,
    /// The last checkpoint written; held while writing, so checkpoints go out in order.
    checkpointing: tokio::sync::Mutex<Option<Sequence>>,
}

impl Round {
    fn new(records: &[StreamRecord]) -> Self {
        Self {
            progress: Mutex::new(Progress::new(records)),
            checkpointing: tokio::sync::Mutex::new(None),
        }
    }
}

impl Progress {
    fn new(records: &[StreamRecord]) -> Self {
        Self {
            sequences: records.iter().map(|r| r.sequence).collect(),
            finished: vec![false; records.len()],
            prefix: 0,
        }
    }

    /// Marks records finished; returns the new checkpoint if the finished prefix grew.
    fn finish(&mut self, done: &[StreamRecord]) -> Option<Sequence> {
        for record in done {
            if let Ok(i) = self.sequences.binary_search(&record.sequence) {
                self.finished[i] = true;
            }
        }
        let before = self.prefix;
        while self.prefix < self.finished.len() && self.finished[self.prefix] {
            self.prefix += 1;
        }
        (self.prefix > before).then(|| self.sequences[self.prefix - 1])
    }

    fn unfinished(&self) -> u64 {
        (self.sequences.len() - self.prefix) as u64
    }
}

impl Shared {
    fn lease_key(&self, shard: &str) -> String {
        format!("{}/{}", self.name, shard)
    }

    /// The key under which this worker says it is alive.
    fn worker_key(&self) -> String {
        format!("{}/{WORKERS}{}", self.name, self.config.owner)
    }

    /// Lists shards and balances them on a heartbeat (a third of the lease TTL), and at once
    /// when shards change, a reader ends, or a lease it waits for expires. Gives its worker
    /// lease back when the mapping stops; readers give back theirs as they end.
    async fn coordinate(self: Arc<Self>) {
        let heartbeat = self.config.lease_ttl / 3;
        let mut failures = 0u32;
        loop {
            if self.stopping.is_cancelled() || self.cancel.is_cancelled() {
                break;
            }
            // Bounded, so that a hung store cannot keep readers going past their leases.
            let balanced = tokio::time::timeout(heartbeat, async {
                let shards = guarded("listing shards", self.source.shards()).await?;
                self.balance(&shards).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(crate::error::SourceError::transient(
                    "balancing took longer than a heartbeat".to_owned(),
                ))
            });
            self.stop_unrenewed();
            let mut wait = heartbeat;
            match balanced {
                Ok(next_expiry) => {
                    failures = 0;
                    if let Some(next) = next_expiry {
                        // A little past the expiry, so the store agrees it is over.
                        wait = wait.min(next + Duration::from_millis(20));
                    }
                }
                Err(error) if error.is_permanent() => {
                    self.fail(error);
                    break;
                }
                Err(error) => {
                    failures += 1;
                    wait = delay_of(&Backoff::throttles(), failures).min(heartbeat);
                    tracing::warn!(mapping = %self.name, %error, "balancing shards failed");
                }
            }
            tokio::select! {
                () = self.source.shards_changed() => {}
                () = self.shard_done.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = self.cancel.cancelled() => break,
                () = self.stopping.cancelled() => break,
            }
        }
        self.store_call(
            "lease store release",
            self.leases.release(&self.worker_key(), &self.config.owner),
        )
        .await
        .ok();
    }

    /// Stops the mapping on a permanent error.
    fn fail(&self, error: SourceError) {
        self.permanent_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(mapping = %self.name, %error, "permanent error; stopping the mapping");
        self.halt(MappingStatus::Failed { error });
    }

    /// Stops every reader and the coordinator with this status.
    fn halt(&self, status: MappingStatus) {
        settle_status(&self.status, status);
        self.stopping.cancel();
        self.cancel.cancel();
    }

    /// A call into a store or the source: guarded against panics, and given up on once the
    /// mapping abandons its stores after the stop deadline.
    async fn store_call<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        tokio::select! {
            result = guarded(what, call) => result,
            () = self.abandon.cancelled() => Err(SourceError::transient(format!(
                "{what} did not answer before the stop deadline"
            ))),
        }
    }

    /// Stops readers whose lease was not renewed for nine tenths of its TTL (the store is
    /// unreachable, or balancing keeps failing): another worker may take the shard soon.
    fn stop_unrenewed(&self) {
        let ttl = self.config.lease_ttl;
        let Some(deadline) = tokio::time::Instant::now().checked_sub(ttl - ttl / 10) else {
            return;
        };
        for (id, reader) in self.running.lock().iter() {
            if reader.renewed <= deadline && !reader.cancel.is_cancelled() {
                tracing::warn!(mapping = %self.name, shard = %id, "lease not renewed in time; stopping the reader");
                reader.cancel.cancel();
            }
        }
    }

    /// One round of balancing: says this worker is alive, renews the leases of running shards
    /// (stopping a reader whose lease is lost), gives back shards above the fair share
    /// (ready shards ÷ live workers, rounded up) and takes free ready shards up to it. Returns
    /// how long until the next lease that matters expires: another worker's, or, when this
    /// worker wants more shards, a shard lease held elsewhere.
    async fn balance(
        self: &Arc<Self>,
        shards: &[ShardInfo],
    ) -> Result<Option<Duration>, crate::error::SourceError> {
        let (owner, ttl) = (&self.config.owner, self.config.lease_ttl);
        self.store_call(
            "lease store acquire",
            self.leases.acquire(&self.worker_key(), owner, ttl),
        )
        .await?;
        let prefix = format!("{}/", self.name);
        let workers_prefix = format!("{prefix}{WORKERS}");
        let listed = self
            .store_call("lease store list", self.leases.list(&prefix))
            .await?;
        let now = tokio::time::Instant::now();
        let live_workers: Vec<&Lease> = listed
            .iter()
            .filter(|l| l.key.starts_with(&workers_prefix) && l.expires > now)
            .collect();
        let workers = live_workers.len().max(1);
        // When another worker's lease expires (it died), the fair share grows: look again then.
        let mut next_expiry: Option<Duration> = live_workers
            .iter()
            .filter(|l| &l.owner != owner)
            .map(|l| l.expires.saturating_duration_since(now))
            .min();
        let held_elsewhere: HashMap<&str, tokio::time::Instant> = listed
            .iter()
            .filter(|l| &l.owner != owner && l.expires > now)
            .map(|l| (l.key.as_str(), l.expires))
            .collect();

        let ready = self.ready_shards(shards).await;
        let fair = ready.len().div_ceil(workers);

        type Snapshot = (
            ShardId,
            CancellationToken,
            CancellationToken,
            tokio::time::Instant,
        );
        let running: Vec<Snapshot> = self
            .running
            .lock()
            .iter()
            .filter(|(_, r)| !r.cancel.is_cancelled() && !r.ending)
            .map(|(id, r)| {
                (
                    Arc::clone(id),
                    r.cancel.clone(),
                    r.hand_off.clone(),
                    r.renewed,
                )
            })
            .collect();
        let mut kept = Vec::new();
        for (id, cancel, hand_off, renewed) in running {
            match self
                .store_call(
                    "lease store acquire",
                    self.leases.acquire(&self.lease_key(&id), owner, ttl),
                )
                .await
            {
                Ok(Some(_)) => {
                    let live = match self.running.lock().get_mut(&id) {
                        Some(reader) if !reader.ending => {
                            reader.renewed = now;
                            true
                        }
                        _ => false,
                    };
                    if !live {
                        // The reader ended while this renewal was on its way: give it back.
                        let _ = self
                            .store_call(
                                "lease store release",
                                self.leases.release(&self.lease_key(&id), owner),
                            )
                            .await;
                        continue;
                    }
                    // A reader handing off keeps its lease until its round is done.
                    if !hand_off.is_cancelled() {
                        kept.push(hand_off);
                    }
                }
                Ok(None) => {
                    tracing::warn!(mapping = %self.name, shard = %id, "lease lost; stopping the reader");
                    cancel.cancel();
                }
                // Unsure whether the lease still holds: keep reading until it would have expired.
                Err(error) if now < renewed + ttl => {
                    tracing::warn!(mapping = %self.name, shard = %id, %error, "renewing a lease failed");
                    kept.push(hand_off);
                }
                Err(_) => cancel.cancel(),
            }
        }
        // Above the fair share: hand the surplus off; their readers finish the round in hand
        // and give the leases back.
        for hand_off in kept.iter().skip(fair) {
            hand_off.cancel();
        }
        let mut held = kept.len().min(fair);
        let mut next_shard_expiry: Option<Duration> = None;
        for shard in ready {
            if held >= fair || self.cancel.is_cancelled() {
                break;
            }
            if self.running.lock().contains_key(&shard.id) {
                continue;
            }
            let key = self.lease_key(&shard.id);
            if let Some(expires) = held_elsewhere.get(key.as_str()) {
                let left = expires.saturating_duration_since(now);
                next_shard_expiry = Some(next_shard_expiry.map_or(left, |n| n.min(left)));
                continue;
            }
            if let Ok(Some(_)) = self
                .store_call("lease store acquire", self.leases.acquire(&key, owner, ttl))
                .await
            {
                // Read the checkpoint again under the lease: the last owner may have moved it.
                match self
                    .store_call(
                        "checkpoint store get",
                        self.checkpoints.get(&self.name, &shard.id),
                    )
                    .await
                {
                    Ok(checkpoint) => {
                        held += 1;
                        self.start_reader(Arc::clone(&shard.id), checkpoint, now);
                    }
                    Err(error) => {
                        tracing::warn!(mapping = %self.name, shard = %shard.id, %error, "reading a checkpoint failed");
                        let _ = self
                            .store_call("lease store release", self.leases.release(&key, owner))
                            .await;
                    }
                }
            }
        }
        if held < fair {
            next_expiry = match (next_expiry, next_shard_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next_expiry)
    }

    /// Shards that may be read now: not finished, and every parent the source still knows of
    /// finished. A shard whose checkpoints cannot be read now is left for a later round.
    async fn ready_shards<'a>(&self, shards: &'a [ShardInfo]) -> Vec<&'a ShardInfo> {
        let known: HashSet<&str> = shards.iter().map(|s| &*s.id).collect();
        let mut ready = Vec::new();
        'shards: for shard in shards {
            match self
                .store_call(
                    "checkpoint store get",
                    self.checkpoints.get(&self.name, &shard.id),
                )
                .await
            {
                Ok(Some(Checkpoint::ShardEnd)) => {
                    self.shard_metrics(&shard.id, |m| m.finished = true);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(mapping = %self.name, shard = %shard.id, %error, "reading a checkpoint failed");
                    continue;
                }
            }
            // A parent gone from the source (expired) has nothing left to read.
            for parent in shard.parents.iter().filter(|p| known.contains(&***p)) {
                match self
                    .store_call(
                        "checkpoint store get",
                        self.checkpoints.get(&self.name, parent),
                    )
                    .await
                {
                    Ok(Some(Checkpoint::ShardEnd)) => {}
                    _ => continue 'shards,
                }
            }
            ready.push(shard);
        }
        ready
    }

    /// Starts the reader of a leased shard; when it ends, its lease is given back.
    fn start_reader(
        self: &Arc<Self>,
        id: ShardId,
        checkpoint: Option<Checkpoint>,
        renewed: tokio::time::Instant,
    ) {
        let cancel = self.cancel.child_token();
        let hand_off = CancellationToken::new();
        let reader = Reader {
            cancel: cancel.clone(),
            hand_off: hand_off.clone(),
            renewed,
            ending: false,
        };
        self.running.lock().insert(Arc::clone(&id), reader);
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            this.read_shard(Arc::clone(&id), checkpoint, &cancel, &hand_off)
                .await;
            // Still in `running` (so no new reader starts before the release), but no longer
            // renewed; a renewal already under way notices and releases again.
            if let Some(reader) = this.running.lock().get_mut(&id) {
                reader.ending = true;
            }
            let _ = this
                .store_call(
                    "lease store release",
                    this.leases
                        .release(&this.lease_key(&id), &this.config.owner),
                )
                .await;
            this.running.lock().remove(&id);
            this.shard_done.notify_one();
        });
    }

    /// Between rounds, where everything read is finished: records the position reached as the
    /// checkpoint if it is past the last one (an empty read moves the position without a
    /// checkpoint). Not when the lease was lost (the shard is someone else's now).
    async fn settle(&self, shard: &ShardId, position: Position) {
        let lease_lost = !self.cancel.is_cancelled()
            && self
                .running
                .lock()
                .get(shard)
                .is_some_and(|r| r.cancel.is_cancelled());
        let sequence = match position {
            Position::After(sequence) => sequence,
            // Read from the start of a shard that had nothing yet (`Latest` on an empty shard).
            Position::TrimHorizon => 0,
            Position::Latest | Position::AtTimestamp(_) => return,
        };
        let last = self.metrics.lock().get(shard).and_then(|m| m.checkpoint);
        let unchanged = last.is_some_and(|last| last >= sequence);
        if lease_lost || unchanged {
            return;
        }
        if self
            .store_call(
                "checkpoint store put",
                self.checkpoints
                    .put(&self.name, shard, Checkpoint::At(sequence)),
            )
            .await
            .is_ok()
        {
            self.shard_metrics(shard, |m| m.checkpoint = Some(sequence));
        }
    }

    async fn read_shard(
        self: &Arc<Self>,
        shard: ShardId,
        checkpoint: Option<Checkpoint>,
        cancel: &CancellationToken,
        hand_off: &CancellationToken,
    ) {
        let mut position = match checkpoint {
            Some(Checkpoint::At(sequence)) => Position::After(sequence),
            _ => self.config.starting_position,
        };
        if position == Position::Latest {
            // Pin `Latest` to a place now and checkpoint it, so that a later owner of the shard
            // (after a hand-off or a crash) reads on from here instead of from its own Latest,
            // which would skip what arrived in between.
            if let Ok(now) = guarded(
                "reading a shard",
                self.source
                    .read(&shard, Position::Latest, 1, Duration::ZERO),
            )
            .await
            {
                if now.records.is_empty() {
                    position = now.next;
                    self.settle(&shard, position).await;
                }
            }
        }
        let mut window = Window {
            bounds: None,
            state: serde_json::Value::Null,
        };
        let round = self.config.batch_size * self.config.parallelization_factor as usize;
        let mut failures = 0u32;
        loop {
            // An open tumbling window is finished before the shard is handed off, so that its
            // state is not lost with it; windows close on time even without records.
            let handing_off = (hand_off.is_cancelled() || self.stopping.is_cancelled())
                && window.bounds.is_none();
            if cancel.is_cancelled() || handing_off {
                self.settle(&shard, position).await;
                return;
            }
            let mut wait = self.config.poll_wait;
            if let Some((_, end)) = window.bounds {
                wait = wait.min(end.duration_since(stream_now()).unwrap_or_default());
            }
            let read = tokio::select! {
                read = guarded("reading a shard", self.source.read(&shard, position, round, wait)) => read,
                () = cancel.cancelled() => continue,
                () = hand_off.cancelled(), if window.bounds.is_none() => continue,
                () = self.stopping.cancelled(), if window.bounds.is_none() => continue,
            };
            let mut read = match read {
                Ok(read) => {
                    failures = 0;
                    read
                }
                Err(error) if error.is_permanent() => {
                    self.fail(error);
                    return;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(mapping = %self.name, %shard, %error, "reading a shard failed");
                    let delay =
                        delay_of(&Backoff::throttles(), failures).min(Duration::from_secs(30));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = cancel.cancelled() => return,
                    }
                }
            };
            if read.trimmed {
                self.shard_metrics(&shard, |m| m.trimmed_reads += 1);
            }
            // Batching window: gather more until a round is full or the window ends.
            if !read.records.is_empty() && !self.config.batching_window.is_zero() {
                let until = tokio::time::Instant::now() + self.config.batching_window;
                while read.records.len() < round && !read.shard_ended {
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let more = tokio::select! {
                        more = guarded("reading a shard", self.source.read(&shard, read.next, round - read.records.len(), left)) => more,
                        () = cancel.cancelled() => break,
                    };
                    match more {
                        Ok(more) => {
                            read.records.extend(more.records);
                            read.next = more.next;
                            read.shard_ended = more.shard_ended;
                        }
                        Err(_) => break,
                    }
                }
            }
            if !read.records.is_empty() {
                let count = read.records.len() as u64;
                self.shard_metrics(&shard, |m| m.checkpoint_lag = count);
                let done = if self.config.tumbling_window.is_zero() {
                    self.process_round(&shard, read.records, cancel).await
                } else {
                    self.process_windowed(&shard, read.records, &mut window, cancel)
                        .await
                };
                if matches!(done, Done::Stopped) {
                    self.stopped_rounds.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            position = read.next;
            // A window whose time is up closes even when no record arrives.
            if let Some((_, end)) = window.bounds {
                if (read.shard_ended || stream_now() >= end)
                    && matches!(
                        self.close_window(&shard, &mut window, cancel).await,
                        Done::Stopped
                    )
                {
                    return;
                }
            }
            if read.shard_ended {
                let _ = self
                    .store_call(
                        "checkpoint store put",
                        self.checkpoints
                            .put(&self.name, &shard, Checkpoint::ShardEnd),
                    )
                    .await;
                self.shard_metrics(&shard, |m| m.finished = true);
                return;
            }
        }
    }

    fn shard_metrics(&self, shard: &ShardId, update: impl FnOnce(&mut ShardMetrics)) {
        update(self.metrics.lock().entry(Arc::clone(shard)).or_default());
    }

    /// Lanes by partition key, each running its batches in order; rounds end when all do.
    async fn process_round(
        self: &Arc<Self>,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        cancel: &CancellationToken,
    ) -> Done {
        let round = Arc::new(Round::new(&records));
        let factor = self.config.parallelization_factor as u128;
        let mut lanes: Vec<Vec<StreamRecord>> = vec![Vec::new(); factor as usize];
        for record in records {
            let lane = (hash_key(&record.partition_key) % factor) as usize;
            lanes[lane].push(record);
        }
        let mut running = tokio::task::JoinSet::new();
        for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
            let (this, shard) = (Arc::clone(self), Arc::clone(shard));
            let round = Arc::clone(&round);
            let cancel = cancel.clone();
            running.spawn(async move {
                for batch in lane.chunks(this.config.batch_size) {
                    let done = this
                        .process_batch(&shard, batch.to_vec(), None, &round, &cancel)
                        .await;
                    if matches!(done, Done::Stopped) {
                        return Done::Stopped;
                    }
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

    /// Tumbling windows (one lane): batches never span windows; a window is closed with a
    /// final invocation when a record of a later window arrives, its time is up, or the shard
    /// ends.
    async fn process_windowed(
        self: &Arc<Self>,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        window: &mut Window,
        cancel: &CancellationToken,
    ) -> Done {
        let round = Arc::new(Round::new(&records));
        let mut rest = records.as_slice();
        while let Some(first) = rest.first() {
            let bounds = window_of(first.arrived_at, self.config.tumbling_window);
            let len = rest
                .iter()
                .take(self.config.batch_size)
                .take_while(|r| window_of(r.arrived_at, self.config.tumbling_window) == bounds)
                .count();
            if window.bounds.is_some_and(|b| b != bounds)
                && matches!(
                    self.close_window(shard, window, cancel).await,
                    Done::Stopped
                )
            {
                return Done::Stopped;
            }
            window.bounds = Some(bounds);
            let (batch, tail) = rest.split_at(len);
            rest = tail;
            if matches!(
                self.process_batch(shard, batch.to_vec(), Some(window), &round, cancel,)
                    .await,
                Done::Stopped
            ) {
                return Done::Stopped;
            }
        }
        Done::Finished
    }

    /// The final invocation of a window: no records, the state, `is_final`.
    async fn close_window(
        self: &Arc<Self>,
        shard: &ShardId,
        window: &mut Window,
        cancel: &CancellationToken,
    ) -> Done {
        let Some((start, end)) = window.bounds.take() else {
            return Done::Finished;
        };
        let mut attempts = 0u32;
        loop {
            let batch = StreamBatch {
                mapping: Arc::clone(&self.name),
                shard_id: Arc::clone(shard),
                records: Vec::new(),
                window: Some(TumblingWindow {
                    start,
                    end,
                    state: window.state.clone(),
                    is_final: true,
                }),
            };
            match self.invoke(batch, attempts + 1).await {
                Ok(_) => break,
                Err(error) if matches!(classify(&error), Refusal::Stop) => {
                    self.function_gone(&error);
                    return Done::Stopped;
                }
                Err(error) => {
                    attempts += 1;
                    let exhausted = self.config.max_retry_attempts >= 0
                        && i64::from(attempts) > self.config.max_retry_attempts;
                    if exhausted {
                        tracing::error!(mapping = %self.name, %shard, %error, "final window invocation failed; window state dropped");
                        break;
                    }
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
            }
        }
        window.state = serde_json::Value::Null;
        Done::Finished
    }

    /// Invokes the function; `attempt` numbers the tries of one batch, from 1.
    async fn invoke(
        &self,
        batch: StreamBatch,
        attempt: u32,
    ) -> Result<StreamResponse, InvokeError> {
        let options = InvokeOptions::default()
            .with_invoker(Invoker::EventSource(Arc::clone(&self.name)))
            .with_attempt(attempt);
        self.function.invoke_with(batch, options).await.result
    }

    /// The function takes no more work: stop the mapping (its readers would only restart
    /// over the same records), leaving them behind the checkpoint.
    fn function_gone(&self, error: &InvokeError) {
        tracing::info!(mapping = %self.name, %error, "the function takes no more work; stopping the mapping");
        self.halt(MappingStatus::Stopped {
            reason: format!("function {}: {error}", self.function.name()),
        });
    }

    /// Waits before retry `attempt`; false if the mapping stops meanwhile.
    async fn pause(&self, attempt: u32, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay_of(&self.config.retry_backoff, attempt)) => true,
            () = cancel.cancelled() => false,
        }
    }

    /// Runs one batch until every record is handled or sent to the on-failure destination.
    async fn process_batch(
        self: &Arc<Self>,
        shard: &ShardId,
        batch: Vec<StreamRecord>,
        mut window: Option<&mut Window>,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        // (records, failed attempts so far); bisect halves start from zero, as splits do not
        // count as retries.
        let mut pending: VecDeque<(Vec<StreamRecord>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((mut records, mut attempts)) = pending.pop_front() {
            let mut last_error: Option<ErrorInfo> = None;
            loop {
                if cancel.is_cancelled() {
                    return Done::Stopped;
                }
                if let Some(max_age) = self.config.max_record_age {
                    let now = stream_now();
                    let (expired, fresh): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| {
                        now.duration_since(r.arrived_at).unwrap_or_default() > max_age
                    });
                    records = fresh;
                    if !expired.is_empty()
                        && matches!(
                            self.send_to_on_failure(
                                shard,
                                expired,
                                StreamCondition::RecordAgeExceeded,
                                last_error.clone(),
                                round,
                                cancel,
                            )
                            .await,
                            Done::Stopped
                        )
                    {
                        return Done::Stopped;
                    }
                    if records.is_empty() {
                        break;
                    }
                }
                let batch = StreamBatch {
                    mapping: Arc::clone(&self.name),
                    shard_id: Arc::clone(shard),
                    records: records.clone(),
                    window: window.as_ref().and_then(|w| {
                        w.bounds.map(|(start, end)| TumblingWindow {
                            start,
                            end,
                            state: w.state.clone(),
                            is_final: false,
                        })
                    }),
                };
                let last_arrival = records.last().map(|r| r.arrived_at);
                let result = self.invoke(batch, attempts + 1).await;
                let age = last_arrival
                    .and_then(|t| stream_now().duration_since(t).ok())
                    .unwrap_or_default();
                self.shard_metrics(shard, |m| {
                    m.batches += 1;
                    m.iterator_age = age;
                });
                let failed_from = match result {
                    Ok(response) => {
                        let first_failed = if self.config.report_batch_item_failures {
                            response
                                .item_failures
                                .iter()
                                .map(|seq| {
                                    records.iter().position(|r| r.sequence == *seq).unwrap_or(0)
                                })
                                .min()
                        } else {
                            None
                        };
                        if first_failed.is_none() {
                            if let (Some(w), Some(state)) = (window.as_deref_mut(), response.state)
                            {
                                w.state = state;
                            }
                        }
                        first_failed
                    }
                    Err(InvokeError::Throttled(_)) => {
                        // Throttles are not the batch's fault: wait and retry, uncounted.
                        if !self.pause(1, cancel).await {
                            return Done::Stopped;
                        }
                        continue;
                    }
                    Err(error) if matches!(classify(&error), Refusal::Stop) => {
                        self.function_gone(&error);
                        return Done::Stopped;
                    }
                    Err(error) => {
                        last_error = Some(ErrorInfo::from(&error));
                        Some(0)
                    }
                };
                let Some(first_failed) = failed_from else {
                    let n = records.len() as u64;
                    self.shard_metrics(shard, |m| m.records += n);
                    self.finished(shard, &records, round).await;
                    break;
                };
                // Records before the first failure are done: checkpoint just before it.
                let rest = records.split_off(first_failed);
                if !records.is_empty() {
                    let n = records.len() as u64;
                    self.shard_metrics(shard, |m| m.records += n);
                    self.finished(shard, &records, round).await;
                }
                records = rest;
                if last_error.is_none() {
                    last_error = Some(ErrorInfo::from(&InvokeError::Function(
                        nimbus_core::FunctionError::new(
                            "PartialBatchFailure",
                            "the function reported failed records",
                        ),
                    )));
                }
                if self.config.bisect_on_error && records.len() > 1 {
                    self.shard_metrics(shard, |m| m.bisections += 1);
                    let second = records.split_off(records.len() / 2);
                    pending.push_front((second, attempts));
                    pending.push_front((records, attempts));
                    break;
                }
                attempts += 1;
                self.shard_metrics(shard, |m| m.retries += 1);
                let exhausted = self.config.max_retry_attempts >= 0
                    && i64::from(attempts) > self.config.max_retry_attempts;
                if exhausted {
                    if matches!(
                        self.send_to_on_failure(
                            shard,
                            records,
                            StreamCondition::RetryAttemptsExhausted,
                            last_error,
                            round,
                            cancel,
                        )
                        .await,
                        Done::Stopped
                    ) {
                        return Done::Stopped;
                    }
                    break;
                }
                if !self.pause(attempts, cancel).await {
                    return Done::Stopped;
                }
            }
        }
        Done::Finished
    }

    /// Delivers records to the on-failure destination, retrying until it takes them.
    async fn send_to_on_failure(
        &self,
        shard: &ShardId,
        records: Vec<StreamRecord>,
        condition: StreamCondition,
        error: Option<ErrorInfo>,
        round: &Round,
        cancel: &CancellationToken,
    ) -> Done {
        let Some(destination) = &self.on_failure else {
            // Validation requires a destination whenever records can be given up; should one
            // be missing anyway, keep the records unfinished rather than drop them.
            tracing::error!(mapping = %self.name, %shard, "no on-failure destination; stopping the shard");
            return Done::Stopped;
        };
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Done::Finished;
        };
        let mut failure = StreamFailure {
            mapping: Arc::clone(&self.name),
            function: Arc::from(self.function.name()),
            timestamp: stream_now(),
            condition,
            shard_id: Arc::clone(shard),
            first_sequence: first.sequence,
            last_sequence: last.sequence,
            batch_size: records.len(),
            error,
            records,
        };
        let sent = failure.records.clone();
        let mut attempts = 0;
        loop {
            // A panicking destination is a refusal; the records are kept for the next try.
            let kept = failure.clone();
            let delivering =
                std::panic::AssertUnwindSafe(destination.deliver(failure)).catch_unwind();
            let delivered = tokio::select! {
                delivered = delivering => delivered,
                () = cancel.cancelled() => return Done::Stopped,
            };
            match delivered {
                Ok(Ok(())) => break,
                Ok(Err(refused)) => {
                    attempts += 1;
                    tracing::warn!(mapping = %self.name, %shard, reason = %refused.reason, "on-failure destination refused records; retrying");
                    failure = refused.value;
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
                Err(panic) => {
                    attempts += 1;
                    let reason = crate::status::panic_message(panic.as_ref());
                    tracing::warn!(mapping = %self.name, %shard, %reason, "on-failure destination panicked; retrying");
                    failure = kept;
                    if !self.pause(attempts, cancel).await {
                        return Done::Stopped;
                    }
                }
            }
        }
        let n = sent.len() as u64;
        self.shard_metrics(shard, |m| m.sent_to_on_failure += n);
        self.finished(shard, &sent, round).await;
        Done::Finished
    }

    /// Marks records finished and moves the checkpoint over the finished prefix.
    async fn finished(&self, shard: &ShardId, records: &[StreamRecord], round: &Round) {
        let (checkpoint, lag) = {
            let mut p = round.progress.lock();
            (p.finish(records), p.unfinished())
        };
        let Some(sequence) = checkpoint else { return };
        let mut last = round.checkpointing.lock().await;
        if last.is_some_and(|l| l >= sequence) {
            return;
        }
        match self
            .store_call(
                "checkpoint store put",
                self.checkpoints
                    .put(&self.name, shard, Checkpoint::At(sequence)),
            )
            .await
        {
            Ok(()) => {
                *last = Some(sequence);
                self.shard_metrics(shard, |m| {
                    m.checkpoint = Some(sequence);
                    m.checkpoint_lag = lag;
                });
            }
            Err(error) => tracing::warn!(mapping = %self.name, %shard, %error, "checkpoint failed"),
        }
    }
}
