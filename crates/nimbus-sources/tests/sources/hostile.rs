//! Hostile input: durations at their limits, out-of-range configuration, and object names that
//! try to leave their store. Errors, never panics.

use std::time::Duration;

use nimbus_core::Backoff;
use nimbus_sources::{
    InMemoryObjectStore, InMemoryStream, InMemoryStreamStore, LeaseStore, NotificationConfig,
    ObjectStore, Outgoing, Position, QueueConfig, QueueMappingConfig, QueueSource, SourceError,
    StreamConfig, StreamSource,
};

use crate::support::queue;

#[tokio::test(start_paused = true)]
async fn a_delay_beyond_fifteen_minutes_is_refused_naming_the_field() {
    let q = queue(QueueConfig::default());
    for delay in [Duration::MAX, Duration::from_secs(901)] {
        let refused = q
            .send_message(Outgoing::new("late").with_delay(delay))
            .unwrap_err();
        match &refused.error {
            SourceError::Invalid(text) => assert!(text.contains("delay"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(&refused.message.body[..], b"late", "handed back");
    }
    assert!(q.is_empty());
    q.send_message(Outgoing::new("ok").with_delay(Duration::from_secs(900)))
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn durations_at_their_limit_do_not_panic_sources() {
    let q = queue(QueueConfig::default());
    q.send("x").unwrap();
    let got = q.receive(1, Duration::MAX).await.unwrap();
    q.retry_later(&got[0].receipt, Duration::MAX).await.unwrap();
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());

    let stream = InMemoryStream::new(StreamConfig::default()).unwrap();
    let (shard, _) = stream.put("k", "v").unwrap();
    let read = stream
        .read(&shard, Position::TrimHorizon, 1, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(read.records.len(), 1);

    let leases = InMemoryStreamStore::new();
    assert!(leases
        .acquire("key", "owner", Duration::MAX)
        .await
        .unwrap()
        .is_some());
}

#[test]
fn backoffs_that_would_break_at_run_time_are_config_errors() {
    // Backoff's constructors refuse these, so no mapping can be given one.
    assert_eq!(Backoff::fixed(Duration::MAX).unwrap_err().field, "delay");
    assert_eq!(Backoff::fixed(Duration::ZERO).unwrap_err().field, "delay");
    // The queue mapping's ranges hold at their limits.
    let err = QueueMappingConfig::new("q")
        .with_poll_wait(Duration::MAX)
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "poll_wait");
}

#[tokio::test]
async fn bucket_and_key_names_are_checked_as_s3_does() {
    let store = InMemoryObjectStore::new(NotificationConfig::default());
    store.create_bucket("good-bucket.1").await.unwrap();
    for bucket in [
        "..",
        "../../../..",
        "ab",
        "Upper",
        "-dash",
        "dash-",
        "a..b",
        "a/b",
    ] {
        assert!(store.create_bucket(bucket).await.is_err(), "{bucket}");
        assert!(store.get(bucket, "key").await.is_err(), "{bucket}");
        assert!(
            store.put(bucket, "key", "x".into()).await.is_err(),
            "{bucket}"
        );
    }
    for key in ["", "/abs", "a/../b", "./a", "a/.", "nul\0byte"] {
        assert!(
            store.put("good-bucket.1", key, "x".into()).await.is_err(),
            "{key:?}"
        );
        assert!(store.get("good-bucket.1", key).await.is_err(), "{key:?}");
    }
    let long = "k".repeat(1_025);
    assert!(store.put("good-bucket.1", &long, "x".into()).await.is_err());
}

#[cfg(feature = "directory")]
mod directory {
    use std::path::PathBuf;
    use std::time::Duration;

    use nimbus_sources::{DirectoryConfig, DirectoryStore, NotificationConfig, ObjectStore};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "nimbus-{name}-{}-{:x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bucket_names_cannot_leave_the_root() {
        let dir = TempDir::new("escape");
        let root = dir.0.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.0.join("secret.txt"), "outside").unwrap();
        let store =
            DirectoryStore::open(DirectoryConfig::new(&root, NotificationConfig::default()))
                .await
                .unwrap();
        assert!(store.get("..", "secret.txt").await.is_err());
        assert!(store.get("../../../..", "etc/hostname").await.is_err());
        assert!(store.head("..", "secret.txt").await.is_err());
        assert!(store.put("..", "planted.txt", "x".into()).await.is_err());
        assert!(!dir.0.join("planted.txt").exists());
        assert!(store.delete("..", "secret.txt").await.is_err());
        assert!(dir.0.join("secret.txt").exists());
        assert!(store.list("..", "").await.is_err());
        assert!(store.create_bucket("..").await.is_err());
        // Ordinary use still works, and head reports what get does.
        store.create_bucket("inbox").await.unwrap();
        let put = store.put("inbox", "a/b.txt", "hello".into()).await.unwrap();
        let head = store.head("inbox", "a/b.txt").await.unwrap().unwrap();
        assert_eq!((head.size, &head.etag), (put.size, &put.etag));
        let (got, data) = store.get("inbox", "a/b.txt").await.unwrap().unwrap();
        assert_eq!((&got.etag, &data[..]), (&put.etag, &b"hello"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_settle_time_out_of_range_is_refused_at_open() {
        let dir = TempDir::new("settle");
        let error = DirectoryStore::open(
            DirectoryConfig::new(&dir.0, NotificationConfig::default()).with_settle(Duration::MAX),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("settle"), "{error}");
    }
}

/// Acks through to the queue, then answers with a refusal naming the same receipt three times
/// and a position past the end: a malformed answer from an adapter.
struct RepeatsRefusals(std::sync::Arc<nimbus_sources::InMemoryQueue>);

#[nimbus_sources::async_trait]
impl QueueSource for RepeatsRefusals {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<nimbus_sources::Message>, SourceError> {
        self.0.receive(max, wait).await
    }
    async fn ack(&self, receipts: &[nimbus_sources::Receipt]) -> Result<(), SourceError> {
        self.0.ack(receipts).await?;
        Err(SourceError::Refused {
            positions: vec![0, 0, 0, 5_000],
        })
    }
    async fn retry_later(
        &self,
        receipt: &nimbus_sources::Receipt,
        delay: Duration,
    ) -> Result<(), SourceError> {
        self.0.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[nimbus_sources::Receipt]) -> Result<(), SourceError> {
        self.0.release(receipts).await
    }
    async fn stats(&self) -> Result<Option<nimbus_sources::QueueStats>, SourceError> {
        self.0.stats().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_refusal_that_repeats_receipts_counts_each_receipt_once() {
    let rt = crate::support::runtime();
    let (function, seen) = crate::support::recording(&rt, "repeats").await;
    let inner = queue(QueueConfig::default());
    inner.send("only").unwrap();
    let mapping = nimbus_sources::QueueMapping::builder(
        RepeatsRefusals(inner.clone()),
        function,
        QueueMappingConfig::new("repeats"),
    )
    .detached()
    .start()
    .unwrap();
    // Before, the count of refused receipts (3) was taken from the batch's size (1) and the
    // poller panicked on the overflow, so the batch never ended and drained() never resolved.
    tokio::time::timeout(Duration::from_secs(60), mapping.drained())
        .await
        .expect("the batch ended")
        .unwrap();
    assert_eq!(seen.lock().len(), 1);
    let metrics = mapping.metrics();
    assert_eq!((metrics.deleted, metrics.refused_receipts), (0, 1));
    mapping.stop(Duration::from_secs(1)).await;
}

/// A source that answers its first receive from a queue and every later one at once with
/// nothing, whatever the wait asked: the batching window's loop must still see a stop.
struct Impatient {
    inner: std::sync::Arc<nimbus_sources::InMemoryQueue>,
    received: std::sync::atomic::AtomicBool,
}

#[nimbus_sources::async_trait]
impl QueueSource for Impatient {
    async fn receive(
        &self,
        max: usize,
        _wait: Duration,
    ) -> Result<Vec<nimbus_sources::Message>, SourceError> {
        if self
            .received
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Vec::new());
        }
        self.inner.receive(max, Duration::ZERO).await
    }

    async fn ack(&self, receipts: &[nimbus_sources::Receipt]) -> Result<(), SourceError> {
        self.inner.ack(receipts).await
    }

    async fn release(&self, receipts: &[nimbus_sources::Receipt]) -> Result<(), SourceError> {
        self.inner.release(receipts).await
    }

    async fn retry_later(
        &self,
        receipt: &nimbus_sources::Receipt,
        delay: Duration,
    ) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_a_batching_window_fed_by_a_source_that_never_waits() {
    use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
    use nimbus_sources::{BatchResponse, QueueBatch, QueueMapping};

    let inner = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(60)));
    inner.send("only").unwrap();
    let source = Impatient {
        inner: std::sync::Arc::clone(&inner),
        received: std::sync::atomic::AtomicBool::new(false),
    };
    let runtime = Runtime::default();
    let function = runtime
        .register(Function::new(
            "never-called",
            handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
                Ok::<_, FunctionError>(BatchResponse::success())
            }),
        ))
        .await
        .unwrap();
    let config = QueueMappingConfig::new("window")
        .with_batch_size(10)
        .with_batching_window(Duration::from_secs(30))
        .with_initial_concurrency(1);
    let mapping = QueueMapping::start(source, function, config).unwrap();
    // The one message is received; the poller then waits out its window on empty answers.
    while inner.counts().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        mapping.stop(Duration::from_secs(1)),
    )
    .await
    .expect("the stop ends well before the 30 s window");
    assert!(stopped, "the batch went back in time");
    assert_eq!(inner.counts().visible, 1, "released, not left in flight");
    runtime.shutdown(Duration::from_secs(1)).await;
}
