//! Mappings and the runtime they feed: shutting the runtime down (with the mapping attached,
//! or left running) dead-letters nothing and never spins.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, InMemoryQueue, InMemoryStream, InMemoryStreamStore, Lease, LeaseStore,
    MappingStatus, QueueBatch, QueueConfig, QueueFunction, QueueMapping, QueueMappingConfig,
    QueueSource, SourceError, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig,
    StreamResponse,
};
use parking_lot::Mutex;

use crate::support::{eventually, forward_checkpoints, queue, runtime};

const LIMIT: Duration = Duration::from_secs(600);

type Handled = Arc<Mutex<HashSet<String>>>;

/// A queue function that takes 10 ms per batch and records the bodies it handled.
async fn slow_consumer(rt: &Runtime, name: &str) -> (QueueFunction, Handled) {
    let handled: Handled = Arc::default();
    let function = rt
        .register(Function::new(
            name,
            handler_fn({
                let handled = handled.clone();
                move |batch: QueueBatch, _ctx: Context| {
                    let handled = handled.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let mut handled = handled.lock();
                        for r in &batch.records {
                            handled.insert(r.body_str().unwrap().to_owned());
                        }
                        Ok::<_, FunctionError>(BatchResponse::success())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    (function, handled)
}

/// 2,000 messages on a queue that dead-letters after three receives.
fn backlog() -> (Arc<InMemoryQueue>, Arc<InMemoryQueue>) {
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(30))
            .with_redrive(dlq.clone(), 3),
    );
    for i in 0..2_000 {
        q.send(format!("m{i}")).unwrap();
    }
    (q, dlq)
}

/// Nothing dead-lettered, nothing in flight, and every message handled or back in the queue
/// with the receive count it had (never received: 1 on the next receive).
async fn nothing_lost(q: &InMemoryQueue, dlq: &InMemoryQueue, handled: &Handled) {
    assert_eq!(dlq.len(), 0, "dead-lettered {} messages", dlq.len());
    assert_eq!(q.counts().in_flight, 0, "messages left in flight");
    let left = q.receive(10_000, Duration::ZERO).await.unwrap();
    assert!(
        left.iter().all(|m| m.receive_count == 1),
        "a receive count was raised"
    );
    let handled = handled.lock();
    let left: HashSet<String> = left
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert!(handled.is_disjoint(&left), "handled messages came back");
    assert_eq!(handled.len() + left.len(), 2_000);
}

#[tokio::test(start_paused = true)]
async fn shutting_the_runtime_down_under_a_running_queue_mapping_dead_letters_nothing() {
    let rt = runtime();
    let (function, handled) = slow_consumer(&rt, "consume").await;
    let (q, dlq) = backlog();
    let mapping =
        QueueMapping::start(q.clone(), function, QueueMappingConfig::new("consume")).unwrap();
    eventually(LIMIT, || handled.lock().len() >= 100).await;
    rt.shutdown(Duration::from_millis(50)).await;
    // The mapping notices and stops; it does not go on receiving.
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    let received = mapping.metrics().received;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mapping.metrics().received, received, "still receiving");
    assert_eq!(mapping.metrics().pollers, 0);
    assert!(
        matches!(mapping.status(), MappingStatus::Stopped { .. }),
        "{:?}",
        mapping.status()
    );
    nothing_lost(&q, &dlq, &handled).await;
}

#[tokio::test(start_paused = true)]
async fn an_attached_queue_mapping_is_stopped_first_and_releases_what_it_holds() {
    let rt = runtime();
    let (function, handled) = slow_consumer(&rt, "consume").await;
    let (q, dlq) = backlog();
    let mapping =
        QueueMapping::start(q.clone(), function, QueueMappingConfig::new("consume")).unwrap();
    rt.attach(mapping.clone()).unwrap();
    eventually(LIMIT, || handled.lock().len() >= 100).await;
    let report = rt.shutdown(Duration::from_millis(50)).await;
    assert_eq!(report.attachments.len(), 1);
    assert!(report.attachments[0].clean, "{:?}", report.attachments[0]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mapping.metrics().pollers, 0);
    assert!(!mapping.status().is_running());
    nothing_lost(&q, &dlq, &handled).await;
}

/// With the default batches of ten, and with batches of one record (handled by their own
/// path): each batch in flight goes back, none counted as failed.
#[tokio::test(start_paused = true)]
async fn stopping_a_queue_mapping_past_its_deadline_releases_the_batches_in_flight() {
    let rt = runtime();
    let function = rt
        .register(
            Function::new(
                "stuck",
                handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    Ok::<_, FunctionError>(BatchResponse::success())
                }),
            )
            .with_timeout(Duration::from_secs(25)),
        )
        .await
        .unwrap();
    // Five pollers, each with a batch in flight.
    for (batch_size, in_flight) in [(10, 50), (1, 5)] {
        let (q, dlq) = backlog();
        let config = QueueMappingConfig::new("stuck").with_batch_size(batch_size);
        let mapping = QueueMapping::start(q.clone(), function.clone(), config).unwrap();
        eventually(LIMIT, || mapping.metrics().concurrent_batches == 5).await;
        let stopped = tokio::time::timeout(
            Duration::from_secs(2),
            mapping.stop(Duration::from_millis(100)),
        )
        .await
        .expect("stop returns soon after its grace");
        assert!(stopped, "the in-memory queue takes releases at once");
        let m = mapping.metrics();
        assert_eq!(
            (m.released, m.failed),
            (in_flight, 0),
            "batch size {batch_size}"
        );
        assert_eq!(q.counts().in_flight, 0);
        nothing_lost(&q, &dlq, &Handled::default()).await;
    }
}

/// Counts lease acquisitions: a reader restarting in a loop shows as a climbing count.
#[derive(Debug, Default)]
struct CountingLeases {
    inner: InMemoryStreamStore,
    acquired: AtomicU64,
}

forward_checkpoints!(CountingLeases, inner);

#[async_trait]
impl LeaseStore for CountingLeases {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        self.acquired.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        self.inner.release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        self.inner.list(prefix).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_mapping_left_running_after_shutdown_stops_instead_of_spinning() {
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
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap());
    let leases = Arc::new(CountingLeases::default());
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("count"))
            .store(leases.clone())
            .start()
            .unwrap();
    stream.put("a", "1").unwrap();
    eventually(LIMIT, || mapping.metrics().records == 1).await;
    rt.shutdown(Duration::from_millis(50)).await;
    // Records arriving now cannot be handled: the readers must not restart over them.
    for i in 0..20 {
        stream.put(&format!("k{i}"), "x").unwrap();
    }
    let before = leases.acquired.load(Ordering::Relaxed);
    for _ in 0..2_000 {
        tokio::task::yield_now().await;
    }
    let spun = leases.acquired.load(Ordering::Relaxed) - before;
    assert!(spun < 10, "{spun} lease acquisitions in 2,000 yields");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let later = leases.acquired.load(Ordering::Relaxed) - before;
    assert!(later < 10, "{later} lease acquisitions in a minute");
    assert_eq!(mapping.metrics().shards_running, 0);
    assert!(matches!(mapping.status(), MappingStatus::Stopped { .. }));
}

#[tokio::test(start_paused = true)]
async fn an_attached_stream_mapping_flushes_its_checkpoints_and_gives_up_its_leases() {
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
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap());
    let leases = Arc::new(CountingLeases::default());
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("count"))
            .store(leases.clone())
            .start()
            .unwrap();
    rt.attach(mapping.clone()).unwrap();
    for i in 0..10 {
        stream.put(&format!("k{i}"), "x").unwrap();
    }
    eventually(LIMIT, || mapping.metrics().records == 10).await;
    let report = rt.shutdown(Duration::from_millis(50)).await;
    assert!(report.attachments[0].clean, "{:?}", report.attachments[0]);
    assert_eq!(mapping.metrics().shards_running, 0);
    let now = tokio::time::Instant::now();
    let held: Vec<Lease> = leases
        .list("count/")
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.expires > now)
        .collect();
    assert!(held.is_empty(), "leases still held: {held:?}");
    let before = leases.acquired.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(leases.acquired.load(Ordering::Relaxed), before);
}

/// "Nothing outlives the runtime": the long poll in flight when the runtime stops an attached
/// mapping (on a cancel-safe source) is dropped, the stop is clean, and a message sent after
/// the shutdown returned is never received by the mapping.
#[tokio::test(start_paused = true)]
async fn a_stopped_mapping_receives_nothing_after_shutdown_returns() {
    let rt = runtime();
    let (function, handled) = slow_consumer(&rt, "zombie").await;
    let q = queue(QueueConfig::default());
    let mapping = QueueMapping::start(
        q.clone(),
        function,
        QueueMappingConfig::new("zombie").with_initial_concurrency(1),
    )
    .unwrap();
    rt.attach(mapping.clone()).unwrap();
    // The poller enters its long poll on the empty queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = rt.shutdown(Duration::from_millis(50)).await;
    assert!(report.attachments[0].clean, "{report:?}");
    // Another consumer's message, sent after the runtime (and the mapping) stopped.
    q.send("late").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(mapping.metrics().received, 0, "a receive outlived shutdown");
    assert_eq!(q.counts().visible, 1);
    assert!(handled.lock().is_empty());
}

/// An instance that crashes (its backend reports it gone) fails the batch, which is received
/// again: the mapping keeps running instead of taking the crash for a function that is gone.
#[tokio::test(start_paused = true)]
async fn a_crashed_instance_fails_the_batch_and_the_mapping_runs_on() {
    use nimbus_core::util::BoxFuture;
    use nimbus_core::{Backend, Fault, InitContext, Instance};

    /// The first instance dies during its first invocation; later ones answer.
    struct CrashOnce(Arc<AtomicU64>);
    struct Answering {
        crash: bool,
        handled: Arc<AtomicU64>,
    }
    impl Instance<QueueBatch, BatchResponse> for Answering {
        fn invoke(
            &mut self,
            batch: QueueBatch,
            _ctx: Context,
        ) -> BoxFuture<'_, Result<BatchResponse, FunctionError>> {
            let crash = self.crash;
            let handled = Arc::clone(&self.handled);
            Box::pin(async move {
                if crash {
                    return Err(FunctionError::msg("the instance is gone"));
                }
                handled.fetch_add(batch.records.len() as u64, Ordering::SeqCst);
                Ok(BatchResponse::success())
            })
        }
        fn fault(&mut self) -> Option<Fault> {
            self.crash.then(|| Fault::Exited("killed".into()))
        }
    }
    #[async_trait]
    impl Backend<QueueBatch, BatchResponse> for CrashOnce {
        async fn create(
            &self,
            ctx: InitContext,
        ) -> Result<Box<dyn Instance<QueueBatch, BatchResponse>>, FunctionError> {
            Ok(Box::new(Answering {
                crash: ctx.instance_number() == 1,
                handled: Arc::clone(&self.0),
            }))
        }
    }
    let rt = runtime();
    let handled = Arc::new(AtomicU64::new(0));
    let function = rt
        .register(Function::with_backend(
            "crashy",
            CrashOnce(Arc::clone(&handled)),
        ))
        .await
        .unwrap();
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(5)));
    q.send("one").unwrap();
    let mapping = QueueMapping::start(
        q.clone(),
        function.clone(),
        QueueMappingConfig::new("crashy").with_initial_concurrency(1),
    )
    .unwrap();
    eventually(LIMIT, || handled.load(Ordering::SeqCst) == 1).await;
    assert!(matches!(mapping.status(), MappingStatus::Running));
    assert_eq!(
        function.metrics().panics,
        1,
        "the crash is counted with panics"
    );
    assert!(mapping.stop(Duration::from_secs(1)).await);
}
