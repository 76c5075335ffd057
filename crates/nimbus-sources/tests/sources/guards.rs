//! User code inside the engines: sources and stores that panic, fail for good or never answer
//! neither kill a poller or reader silently nor lose what it held.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::{handler_fn, Context, Function, FunctionError};
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryQueue, InMemoryStream, InMemoryStreamStore, Lease,
    LeaseStore, MappingStatus, Message, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource,
    Receipt, SourceError, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig,
    StreamResponse, StreamSource,
};

use crate::support::{eventually, forward_checkpoints, forward_leases, queue, recording, runtime};

const LIMIT: Duration = Duration::from_secs(600);

/// An in-memory queue whose first receive and first ack panic.
struct Panicky {
    inner: Arc<InMemoryQueue>,
    receives: AtomicU32,
    acks: AtomicU32,
}

#[async_trait]
impl QueueSource for Panicky {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if self.receives.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("receive panicked");
        }
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        if self.acks.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("ack panicked");
        }
        self.inner.ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.release(receipts).await
    }
    // It panics before awaiting anything, and the in-memory receive is cancel-safe.
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_queue_source_does_not_kill_the_poller() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "guarded").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(10)));
    for body in ["a", "b", "c"] {
        q.send(body).unwrap();
    }
    let source = Panicky {
        inner: q.clone(),
        receives: AtomicU32::new(0),
        acks: AtomicU32::new(0),
    };
    // One poller: if a panic kills it, nothing is ever handled.
    let config = QueueMappingConfig::new("guarded").with_initial_concurrency(1);
    let mapping = QueueMapping::start(source, function, config).unwrap();
    // The batch whose ack panicked comes back after its visibility timeout and is handled again.
    eventually(LIMIT, || q.is_empty()).await;
    let m = mapping.metrics();
    assert!(m.source_errors >= 2, "{m:?}");
    assert_eq!(m.pollers, 1);
    assert!(mapping.stop(Duration::from_secs(1)).await);
}

/// The future an `async_trait` method returns.
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// As [`Panicky`], but written out in `async_trait`'s form, panicking before it returns its
/// future: the panic comes from the call itself, not from polling what it returned. The flag
/// says whether its receive is cancel-safe (the mapping awaits the two kinds differently).
struct EagerPanicky(Panicky, bool);

#[async_trait]
impl QueueSource for EagerPanicky {
    fn receive<'s, 'f>(
        &'s self,
        max: usize,
        wait: Duration,
    ) -> Boxed<'f, Result<Vec<Message>, SourceError>>
    where
        's: 'f,
        Self: 'f,
    {
        if self.0.receives.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("receive panicked before returning its future");
        }
        self.0.inner.receive(max, wait)
    }
    fn ack<'s, 'r, 'f>(&'s self, receipts: &'r [Receipt]) -> Boxed<'f, Result<(), SourceError>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        if self.0.acks.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("ack panicked before returning its future");
        }
        self.0.inner.ack(receipts)
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.0.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.0.inner.release(receipts).await
    }
    fn receive_is_cancel_safe(&self) -> bool {
        self.1
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.0.inner.visibility_timeout()
    }
}

/// Shared through an `Arc` (whose calls hand the source's futures on as they are), a source
/// that panics in the call itself is caught as one that panics when polled.
#[tokio::test(start_paused = true)]
async fn a_source_panicking_before_it_returns_a_future_does_not_kill_the_poller() {
    for cancel_safe in [true, false] {
        let rt = runtime();
        let (function, _seen) = recording(&rt, "eager").await;
        let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(10)));
        for body in ["a", "b", "c"] {
            q.send(body).unwrap();
        }
        let panicky = Panicky {
            inner: q.clone(),
            receives: AtomicU32::new(0),
            acks: AtomicU32::new(0),
        };
        let source = Arc::new(EagerPanicky(panicky, cancel_safe));
        // Short polls: a receive that is not cancel-safe is waited for at the stop.
        let config = QueueMappingConfig::new("eager")
            .with_initial_concurrency(1)
            .with_poll_wait(Duration::from_millis(100));
        let mapping = QueueMapping::start(source, function, config).unwrap();
        eventually(LIMIT, || q.is_empty()).await;
        let m = mapping.metrics();
        assert!(m.source_errors >= 2, "cancel-safe {cancel_safe}: {m:?}");
        assert_eq!(m.pollers, 1, "cancel-safe {cancel_safe}");
        assert!(mapping.stop(Duration::from_secs(1)).await);
    }
}

/// A queue that refuses every receive for good (a missing queue, bad credentials).
struct Gone(AtomicU64);

#[async_trait]
impl QueueSource for Gone {
    async fn receive(&self, _max: usize, _wait: Duration) -> Result<Vec<Message>, SourceError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(SourceError::permanent("no such queue"))
    }
    async fn ack(&self, _receipts: &[Receipt]) -> Result<(), SourceError> {
        Ok(())
    }
    async fn retry_later(&self, _receipt: &Receipt, _delay: Duration) -> Result<(), SourceError> {
        Ok(())
    }
    async fn release(&self, _receipts: &[Receipt]) -> Result<(), SourceError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_source_error_stops_the_mapping_instead_of_retrying_forever() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "gone").await;
    let source = Arc::new(Gone(AtomicU64::new(0)));
    let mapping =
        QueueMapping::start(source.clone(), function, QueueMappingConfig::new("gone")).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let receives = source.0.load(Ordering::Relaxed);
    assert!(receives <= 5, "{receives} receives of a queue that is gone");
    assert_eq!(mapping.metrics().pollers, 0);
    assert_eq!(
        mapping.status(),
        MappingStatus::Failed {
            error: SourceError::permanent("no such queue")
        }
    );
    assert!(mapping.metrics().permanent_source_errors >= 1);
}

/// A checkpoint store whose first write panics.
#[derive(Default)]
struct PanickyCheckpoints {
    inner: InMemoryStreamStore,
    puts: AtomicU32,
}

#[async_trait]
impl CheckpointStore for PanickyCheckpoints {
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
        if self.puts.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("checkpoint store panicked");
        }
        self.inner.put(mapping, shard, checkpoint, lease).await
    }
}

forward_leases!(PanickyCheckpoints, inner);

#[tokio::test(start_paused = true)]
async fn a_panicking_checkpoint_store_does_not_wedge_the_shard() {
    let rt = runtime();
    let function = rt
        .register(Function::new(
            "count",
            handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
                Ok::<_, FunctionError>(StreamResponse::success())
            }),
        ))
        .await
        .unwrap();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    let checkpoints = Arc::new(PanickyCheckpoints::default());
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("count").with_batch_size(2),
    )
    .store(checkpoints.clone())
    .start()
    .unwrap();
    let mut last = nimbus_sources::Sequence::new(0);
    for i in 0..6 {
        last = stream.put("k", format!("{i}")).unwrap().1;
    }
    eventually(LIMIT, || {
        mapping
            .metrics()
            .shards
            .get(&*shard)
            .is_some_and(|m| m.checkpoint.as_ref() == Some(&last))
    })
    .await;
    assert!(mapping.stop(Duration::from_secs(1)).await);
}

/// A receive that is not cancel-safe: it claims messages, then takes 300 ms to return them
/// (less than a stop's slack past its deadline). Dropping it then would strand them until
/// their visibility timeout.
struct SlowClaim {
    inner: Arc<InMemoryQueue>,
    claimed: tokio::sync::Notify,
}

#[async_trait]
impl QueueSource for SlowClaim {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let got = self.inner.receive(max, wait).await?;
        if !got.is_empty() {
            self.claimed.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(got)
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.release(receipts).await
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
}

#[tokio::test(start_paused = true)]
async fn a_receive_in_flight_at_stop_is_not_dropped_but_released() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "claim").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    let source = Arc::new(SlowClaim {
        inner: q.clone(),
        claimed: tokio::sync::Notify::new(),
    });
    let mapping = QueueMapping::start(
        source.clone(),
        function,
        QueueMappingConfig::new("claim").with_initial_concurrency(1),
    )
    .unwrap();
    q.send("claimed").unwrap();
    source.claimed.notified().await;
    assert!(mapping.stop(Duration::from_millis(100)).await);
    // Well before the visibility timeout, the message is back, its receive uncounted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = q.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(back.len(), 1, "stranded until the visibility timeout");
    assert_eq!(back[0].receive_count, 1);
    assert!(seen.lock().is_empty());
}

/// A lease store whose release never answers.
#[derive(Default)]
struct StuckRelease(InMemoryStreamStore);

#[async_trait]
impl nimbus_sources::LeaseStore for StuckRelease {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<nimbus_sources::Lease>, SourceError> {
        self.0.acquire(key, owner, ttl).await
    }
    async fn release(&self, _key: &str, _owner: &str) -> Result<(), SourceError> {
        std::future::pending().await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<nimbus_sources::Lease>, SourceError> {
        self.0.list(prefix).await
    }
}

forward_checkpoints!(StuckRelease, 0);

async fn counting_function(rt: &nimbus_core::Runtime) -> nimbus_sources::StreamFunction {
    rt.register(Function::new(
        "count",
        handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
            Ok::<_, FunctionError>(StreamResponse::success())
        }),
    ))
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn stopping_is_bounded_when_a_lease_store_never_answers() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let mapping = StreamMapping::builder(
        stream.clone(),
        counting_function(&rt).await,
        StreamMappingConfig::new("count"),
    )
    .store(Arc::new(StuckRelease::default()))
    .start()
    .unwrap();
    stream.put("k", "v").unwrap();
    eventually(LIMIT, || mapping.metrics().records == 1).await;
    let started = tokio::time::Instant::now();
    let clean = mapping.stop(Duration::from_secs(1)).await;
    assert!(!clean, "a release that never answered is not a clean stop");
    assert!(
        started.elapsed() <= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A stream that is gone for good.
struct GoneStream;

#[async_trait]
impl StreamSource for GoneStream {
    async fn shards(&self) -> Result<Vec<nimbus_sources::ShardInfo>, SourceError> {
        Err(SourceError::permanent("no such stream"))
    }
    async fn read(
        &self,
        _shard: &nimbus_sources::ShardId,
        _from: nimbus_sources::Position,
        _max: usize,
        _wait: Duration,
    ) -> Result<nimbus_sources::ReadResult, SourceError> {
        Err(SourceError::permanent("no such stream"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_stream_error_stops_the_mapping_with_a_status() {
    let rt = runtime();
    let mapping = StreamMapping::builder(
        GoneStream,
        counting_function(&rt).await,
        StreamMappingConfig::new("gone"),
    )
    .in_memory_store()
    .start()
    .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        mapping.status(),
        MappingStatus::Failed {
            error: SourceError::permanent("no such stream")
        }
    );
    assert_eq!(mapping.metrics().permanent_source_errors, 1);
}

/// An on-failure destination that panics on its first delivery.
struct PanickyDestination {
    calls: AtomicU32,
    delivered: tokio::sync::mpsc::UnboundedSender<nimbus_sources::StreamFailure>,
}

#[async_trait]
impl nimbus_sources::FailureDestination for PanickyDestination {
    async fn deliver(
        &self,
        failure: nimbus_sources::StreamFailure,
    ) -> Result<(), nimbus_core::DeliveryError<nimbus_sources::StreamFailure>> {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("destination panicked");
        }
        self.delivered.send(failure).unwrap();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_failure_destination_is_retried_and_loses_nothing() {
    let rt = runtime();
    let function = rt
        .register(Function::new(
            "fails",
            handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
                Err::<StreamResponse, _>(FunctionError::msg("always"))
            }),
        ))
        .await
        .unwrap();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let destination = PanickyDestination {
        calls: AtomicU32::new(0),
        delivered: tx,
    };
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("fails")
            .with_max_retry_attempts(0)
            .with_retry_backoff(nimbus_core::Backoff::fixed(Duration::from_secs(1)).unwrap()),
    )
    .in_memory_store()
    .on_failure(destination)
    .start()
    .unwrap();
    let (_, sequence) = stream.put("k", "v").unwrap();
    let failure = rx.recv().await.unwrap();
    assert_eq!(failure.records[0].sequence, sequence);
    eventually(LIMIT, || {
        mapping
            .metrics()
            .shards
            .values()
            .any(|m| m.checkpoint.as_ref() == Some(&sequence))
    })
    .await;
    assert!(mapping.stop(Duration::from_secs(1)).await);
}

/// A checkpoint store whose next write never answers once `hang` is set.
#[derive(Default)]
struct HangingCheckpoints {
    inner: InMemoryStreamStore,
    hang: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CheckpointStore for HangingCheckpoints {
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
        if self.hang.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.put(mapping, shard, checkpoint, lease).await
    }
}

forward_leases!(HangingCheckpoints, inner);

/// A checkpoint write hangs, so the stop abandons its stores; the reader's final checkpoint
/// flush and its lease release, which the stores answer at once, must still go through. (An
/// unbiased select against the abandoned token skipped each about half the time: the
/// checkpoint stayed behind, to be read again, and the lease held until its TTL.)
#[tokio::test(start_paused = true)]
async fn after_a_stop_abandons_its_stores_calls_they_answer_at_once_still_go_through() {
    for _trial in 0..8 {
        let rt = runtime();
        let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
        let shard = stream.shards().await.unwrap()[0].id.clone();
        let checkpoints = Arc::new(HangingCheckpoints::default());
        let mapping = StreamMapping::builder(
            stream.clone(),
            counting_function(&rt).await,
            StreamMappingConfig::new("count"),
        )
        .store(checkpoints.clone())
        .start()
        .unwrap();
        stream.put("k", "a").unwrap();
        eventually(LIMIT, || mapping.metrics().records == 1).await;
        eventually(LIMIT, || {
            mapping
                .metrics()
                .shards
                .get(&*shard)
                .is_some_and(|m| m.checkpoint.is_some())
        })
        .await;
        checkpoints.hang.store(true, Ordering::SeqCst);
        let last = stream.put("k", "b").unwrap().1;
        eventually(LIMIT, || mapping.metrics().records == 2).await;
        assert!(!mapping.stop(Duration::from_millis(50)).await);
        assert_eq!(
            checkpoints.inner.get("count", &shard).await.unwrap(),
            Some(Checkpoint::At(last)),
            "the final checkpoint flush was skipped"
        );
        let now = tokio::time::Instant::now();
        let held: Vec<_> = checkpoints
            .list("count/")
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.expires > now)
            .collect();
        assert!(held.is_empty(), "leases still held: {held:?}");
    }
}
