//! What the stream engine's unit tests share: a mapping's state built without its coordinator,
//! scripted functions, and stores and sources that do as a test says.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use nimbus_core::{handler_fn, Backoff, Context, Function, FunctionError, Runtime};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::super::progress::Round;
use super::super::{
    Done, FailureDestination, Shared, StreamBatch, StreamFunction, StreamMappingConfig,
    StreamResponse,
};
use crate::error::SourceError;
use crate::status::MappingStatus;
use crate::stream::{
    stream_now, Checkpoint, CheckpointStore, InMemoryStreamStore, Lease, LeaseStore, Position,
    ReadResult, Sequence, ShardId, ShardInfo, StreamRecord, StreamSource,
};

/// A record of `key` with sequence number `sequence`, arrived now; its data names both.
pub(super) fn record(key: &str, sequence: u128) -> StreamRecord {
    record_at(key, sequence, stream_now())
}

/// A record that arrived at `arrived_at`.
pub(super) fn record_at(key: &str, sequence: u128, arrived_at: SystemTime) -> StreamRecord {
    StreamRecord::new(
        key,
        Sequence::from(sequence),
        format!("{key}:{sequence}"),
        arrived_at,
    )
}

/// The sequence numbers of records.
pub(super) fn sequences(records: &[StreamRecord]) -> Vec<Sequence> {
    records.iter().map(|r| r.sequence.clone()).collect()
}

/// A small configuration: quick retries, so paused tests move on at once.
pub(super) fn config(name: &str) -> StreamMappingConfig {
    StreamMappingConfig::new(name)
        .with_retry_backoff(
            Backoff::new(
                Duration::from_millis(10),
                1.0,
                Duration::from_millis(10),
                0.0,
            )
            .expect("valid backoff"),
        )
        .with_poll_wait(Duration::from_secs(1))
        .with_owner("me")
}

/// Every batch the function was invoked with.
pub(super) type Calls = Arc<Mutex<Vec<StreamBatch>>>;

/// A function that answers each batch with `script`, recording every batch.
pub(super) async fn function(
    runtime: &Runtime,
    script: impl Fn(&StreamBatch) -> Result<StreamResponse, FunctionError> + Send + Sync + 'static,
) -> (StreamFunction, Calls) {
    let calls: Calls = Arc::default();
    let script = Arc::new(script);
    let handle = runtime
        .register(Function::new(
            "f",
            handler_fn({
                let calls = calls.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    let answer = script(&batch);
                    calls.lock().push(batch);
                    async move { answer }
                }
            }),
        ))
        .await
        .expect("registered");
    (handle, calls)
}

/// A function that handles everything.
pub(super) async fn succeeding(runtime: &Runtime) -> (StreamFunction, Calls) {
    function(runtime, |_| Ok(StreamResponse::success())).await
}

/// The parts a test chooses; the rest are defaults.
pub(super) struct Parts {
    pub(super) config: StreamMappingConfig,
    pub(super) source: Arc<dyn StreamSource>,
    pub(super) checkpoints: Arc<dyn CheckpointStore>,
    pub(super) leases: Arc<dyn LeaseStore>,
    pub(super) on_failure: Option<Arc<dyn FailureDestination>>,
}

impl Parts {
    pub(super) fn new(config: StreamMappingConfig) -> Self {
        let store = Arc::new(InMemoryStreamStore::new());
        Self {
            config,
            source: Arc::new(Silent::default()),
            checkpoints: store.clone(),
            leases: store,
            on_failure: None,
        }
    }

    /// Keeps leases and checkpoints in `store` (one store for both, so that checkpoint writes
    /// are checked against the leases).
    pub(super) fn store<S: CheckpointStore>(&mut self, store: Arc<S>) {
        self.checkpoints = store.clone();
        self.leases = store;
    }

    /// A mapping's state, without its coordinator: the test drives the engine itself.
    pub(super) fn build(self, function: StreamFunction) -> Arc<Shared> {
        let filters =
            crate::filter::Filters::parse_for_streams(&self.config.filters).expect("valid filters");
        Arc::new(Shared {
            name: Arc::from(self.config.name.as_str()),
            stream_arn: Arc::from(super::super::record::stream_arn(
                function.arn(),
                self.config
                    .stream_name
                    .as_deref()
                    .unwrap_or(&self.config.name),
            )),
            function,
            config: self.config,
            source: self.source,
            checkpoints: self.checkpoints,
            leases: self.leases,
            on_failure: self.on_failure,
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
            drain: Default::default(),
            filters,
        })
    }
}

/// A source with a fixed shard list whose reads never return: readers started in a test wait
/// until they are stopped.
#[derive(Debug, Default)]
pub(super) struct Silent {
    pub(super) shards: Vec<ShardInfo>,
}

impl Silent {
    /// Open shards with these ids and no parents.
    pub(super) fn open(ids: &[&str]) -> Self {
        Self {
            shards: ids
                .iter()
                .map(|id| ShardInfo::new(Arc::from(*id), Vec::new(), (0, u128::MAX), false))
                .collect(),
        }
    }
}

#[async_trait]
impl StreamSource for Silent {
    async fn shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(self.shards.clone())
    }
    async fn read(
        &self,
        _shard: &ShardId,
        _from: Position,
        _max: usize,
        _wait: Duration,
    ) -> Result<ReadResult, SourceError> {
        std::future::pending().await
    }
}

/// Leases kept in memory, except that keys the test names are refused (held by someone else)
/// or fail (the store cannot be reached).
#[derive(Debug, Default)]
pub(super) struct ScriptedLeases {
    pub(super) inner: InMemoryStreamStore,
    pub(super) refused: Mutex<HashSet<String>>,
    pub(super) failing: Mutex<HashSet<String>>,
    /// Shards whose checkpoint cannot be read.
    pub(super) failing_gets: Mutex<HashSet<String>>,
    /// Lease keys (`<mapping>/<shard>`) that another worker finishes (checkpoints `ShardEnd`)
    /// just before the next acquire of them.
    pub(super) finished_on_acquire: Mutex<HashSet<String>>,
}

impl ScriptedLeases {
    /// Keys of the shard leases `owner` holds now.
    pub(super) async fn held_by(&self, owner: &str) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let mut keys: Vec<String> = self
            .inner
            .list("")
            .await
            .expect("listing")
            .into_iter()
            .filter(|l| owner_is(&l.owner, owner) && l.expires > now && !l.key.contains("~worker"))
            .map(|l| l.key)
            .collect();
        keys.sort();
        keys
    }
}

#[async_trait]
impl LeaseStore for ScriptedLeases {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        if self.failing.lock().contains(key) {
            return Err(SourceError::transient("the lease store is unreachable"));
        }
        if self.refused.lock().contains(key) {
            return Ok(None);
        }
        if self.finished_on_acquire.lock().remove(key) {
            let finisher = self.inner.acquire(key, "finisher", ttl).await?;
            let finisher = finisher.expect("a free lease");
            let (mapping, shard) = key.split_once('/').expect("a shard lease key");
            self.inner
                .put(mapping, shard, Checkpoint::ShardEnd, &finisher)
                .await?;
            self.inner.release(key, "finisher").await?;
        }
        self.inner.acquire(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        self.inner.release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        self.inner.list(prefix).await
    }
}

/// Checkpoints kept in memory, recording every write that succeeded.
#[derive(Debug, Default)]
pub(super) struct RecordedCheckpoints {
    pub(super) inner: InMemoryStreamStore,
    pub(super) written: Mutex<Vec<(String, Checkpoint)>>,
}

#[async_trait]
impl CheckpointStore for RecordedCheckpoints {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        self.inner.get(mapping, shard).await
    }
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        self.inner
            .put(mapping, shard, checkpoint.clone(), lease)
            .await?;
        self.written.lock().push((shard.to_owned(), checkpoint));
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for RecordedCheckpoints {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        self.inner.acquire(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        self.inner.release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        self.inner.list(prefix).await
    }
}

#[async_trait]
impl CheckpointStore for ScriptedLeases {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        if self.failing_gets.lock().contains(shard) {
            return Err(SourceError::transient(
                "the checkpoint store is unreachable",
            ));
        }
        self.inner.get(mapping, shard).await
    }
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        self.inner.put(mapping, shard, checkpoint, lease).await
    }
}

/// Leases `shard` for the mapping's owner and registers a live reader holding it, as the
/// coordinator would: checkpoint writes are made under a reader's lease.
pub(super) async fn hold(shared: &Shared, shard: &ShardId) -> Lease {
    let lease = shared
        .leases
        .acquire(
            &shared.lease_key(shard),
            &shared.config.owner,
            shared.config.lease_ttl,
        )
        .await
        .expect("the lease store answers")
        .expect("a free lease");
    shared.running.lock().insert(
        shard.clone(),
        super::super::Reader {
            cancel: shared.cancel.child_token(),
            hand_off: CancellationToken::new(),
            renewed: tokio::time::Instant::now(),
            lease: Arc::new(lease.clone()),
            ending: false,
            caught_up: None,
        },
    );
    lease
}

/// Runs one batch of `shard` through the failure handling to its end: no places in the round
/// known, no window, never stopped.
pub(super) async fn run_batch(
    shared: &Arc<Shared>,
    shard: &ShardId,
    records: Vec<StreamRecord>,
    round: &Round,
) -> Done {
    shared
        .process_batch(shard, records, None, None, round, &CancellationToken::new())
        .await
}

/// Whether a lease's owner is the mapping configured with `owner` (a started mapping appends
/// a per-start suffix `#<nonce>`), or `owner` itself.
pub(super) fn owner_is(lease_owner: &str, owner: &str) -> bool {
    lease_owner == owner
        || lease_owner
            .strip_prefix(owner)
            .is_some_and(|rest| rest.starts_with('#'))
}
