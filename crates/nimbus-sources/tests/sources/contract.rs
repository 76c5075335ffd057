//! What a queue mapping does with the rest of the source contract: the builder, `drained`,
//! the demand hint, and stats that fail, panic or stall.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::RegisterError;
use nimbus_sources::{
    InMemoryQueue, MappingStatus, Message, QueueConfig, QueueMapping, QueueMappingConfig,
    QueueSource, QueueStats, Receipt, SourceError,
};
use parking_lot::Mutex;

use crate::support::{queue, recording, runtime};

/// How a [`Probe`]'s stats answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stats {
    /// As the inner queue does.
    Inner,
    /// It keeps none.
    None,
    /// An error.
    Fail,
    /// A panic.
    Panic,
    /// Never.
    Stall,
}

/// An in-memory queue that records the demand hints it is told and answers stats as asked.
struct Probe {
    inner: Arc<InMemoryQueue>,
    stats: Stats,
    demands: Mutex<Vec<usize>>,
    stats_asked: AtomicUsize,
    panic_on_demand: AtomicBool,
}

impl Probe {
    fn new(inner: Arc<InMemoryQueue>, stats: Stats) -> Arc<Self> {
        Arc::new(Self {
            inner,
            stats,
            demands: Mutex::default(),
            stats_asked: AtomicUsize::new(0),
            panic_on_demand: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl QueueSource for Probe {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        self.inner.receive(max, wait).await
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
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
    fn demand(&self, wanted: usize) {
        self.demands.lock().push(wanted);
        assert!(
            !self.panic_on_demand.load(Ordering::SeqCst),
            "demand panicked"
        );
    }
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        self.stats_asked.fetch_add(1, Ordering::SeqCst);
        match self.stats {
            Stats::Inner => self.inner.stats().await,
            Stats::None => Ok(None),
            Stats::Fail => Err(SourceError::transient("stats refused")),
            Stats::Panic => panic!("stats panicked"),
            Stats::Stall => std::future::pending().await,
        }
    }
}

fn visible_in(seconds: u64) -> Arc<InMemoryQueue> {
    queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(seconds)))
}

#[tokio::test(start_paused = true)]
async fn the_builder_needs_a_place_and_attaches_before_anything_starts() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "placed").await;
    let q = visible_in(30);
    q.send("one").unwrap();
    let config = QueueMappingConfig::new("placed");
    // Neither attached nor detached: refused, naming the missing choice.
    let unsaid = QueueMapping::builder(q.clone(), function.clone(), config.clone())
        .start()
        .unwrap_err();
    assert!(
        matches!(&unsaid, RegisterError::Config(e) if e.field == "runtime"),
        "{unsaid}"
    );
    // A config error is reported as before.
    let bad = QueueMapping::builder(
        q.clone(),
        function.clone(),
        config.clone().with_batch_size(0),
    )
    .detached()
    .start()
    .unwrap_err();
    assert!(matches!(&bad, RegisterError::Config(e) if e.field == "batch_size"));
    // A runtime already shutting down refuses the mapping, and nothing was received.
    let closed = runtime();
    closed.shutdown(Duration::from_secs(1)).await;
    let refused = QueueMapping::builder(q.clone(), function.clone(), config.clone())
        .attach(&closed)
        .start()
        .unwrap_err();
    assert!(matches!(refused, RegisterError::ShuttingDown));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(seen.lock().is_empty());
    assert_eq!(q.counts().visible, 1);
    // Attached: the runtime's shutdown stops it.
    let mapping = QueueMapping::builder(q.clone(), function, config)
        .attach(&rt)
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.attachments.len(), 1);
    assert!(report.attachments[0].clean);
    assert!(!mapping.status().is_running());
}

#[tokio::test]
async fn a_mapping_started_outside_tokio_is_a_config_error() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "outside").await;
    let q = visible_in(30);
    let started = std::thread::spawn(move || {
        QueueMapping::start(q, function, QueueMappingConfig::new("outside")).map(|_| ())
    })
    .join()
    .expect("no panic");
    assert_eq!(started.unwrap_err().field, "runtime");
}

#[tokio::test(start_paused = true)]
async fn drained_waits_for_failed_messages_to_come_back_and_be_dead_lettered() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "drain").await;
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(10))
            .with_redrive(dlq.clone(), 2),
    );
    for body in ["ok-1", "fail-1", "ok-2"] {
        q.send(body).unwrap();
    }
    let started = tokio::time::Instant::now();
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("drain"))
        .attach(&rt)
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    // fail-1 failed twice, each time back only after the visibility timeout, then went to
    // the dead-letter queue: drained waited for all of it.
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert!(q.is_empty());
    assert_eq!(dlq.len(), 1);
    assert_eq!(seen.lock().len(), 2, "fail-1 reached the function twice");
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.failed, m.backlog), (2, 2, Some(0)));
    // Drained again at once, with nothing sent since.
    mapping.drained().await.unwrap();
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn drained_without_stats_waits_for_an_empty_receive_after_failures_return() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "statless").await;
    let inner = visible_in(10);
    for body in ["ok-1", "fail-1", "ok-2"] {
        inner.send(body).unwrap();
    }
    let probe = Probe::new(inner.clone(), Stats::None);
    let started = tokio::time::Instant::now();
    let mapping = QueueMapping::builder(
        probe.clone(),
        function,
        QueueMappingConfig::new("statless").with_poll_wait(Duration::from_secs(2)),
    )
    .attach(&rt)
    .start()
    .unwrap();
    // fail-1 fails every time, so the queue never drains; but without stats, drained goes by
    // what the mapping sees: it must at least wait out the failed message's visibility
    // timeout and see it again.
    tokio::time::timeout(Duration::from_secs(15), mapping.drained())
        .await
        .expect_err("not drained while a failed message is due back");
    assert!(
        seen.lock().len() >= 2,
        "fail-1 came back: {:?}",
        seen.lock()
    );
    assert!(started.elapsed() >= Duration::from_secs(15));
    assert!(mapping.metrics().backlog.is_none());
    rt.shutdown(Duration::from_secs(1)).await;

    // A queue that does drain: drained resolves after an empty receive.
    let rt = runtime();
    let (function, _seen) = recording(&rt, "statless-ok").await;
    let inner = visible_in(10);
    for body in ["ok-1", "ok-2"] {
        inner.send(body).unwrap();
    }
    let probe = Probe::new(inner.clone(), Stats::None);
    let mapping = QueueMapping::builder(
        probe,
        function,
        QueueMappingConfig::new("statless-ok").with_poll_wait(Duration::from_secs(2)),
    )
    .attach(&rt)
    .start()
    .unwrap();
    mapping.drained().await.unwrap();
    assert!(inner.is_empty());
    assert_eq!(mapping.metrics().deleted, 2);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn drained_reports_a_mapping_that_stops_first() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "stops").await;
    let q = visible_in(30);
    q.send("poison").unwrap();
    let mapping = QueueMapping::builder(q, function, QueueMappingConfig::new("stops"))
        .detached()
        .start()
        .unwrap();
    let waiting = tokio::spawn({
        let mapping = mapping.clone();
        async move { mapping.drained().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);
    let status = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(status, MappingStatus::Stopped { .. }),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_source_is_told_the_demand_as_the_mapping_scales_and_nothing_once_stopped() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "demand").await;
    let inner = visible_in(30);
    for i in 0..200 {
        inner.send(format!("m{i}")).unwrap();
    }
    let probe = Probe::new(inner.clone(), Stats::Inner);
    let mapping = QueueMapping::builder(
        probe.clone(),
        function,
        QueueMappingConfig::new("demand")
            .with_initial_concurrency(2)
            .with_max_concurrency(4),
    )
    .attach(&rt)
    .start()
    .unwrap();
    // The scale-up budget fills at its rate from the start: time before the first batch lets
    // the mapping grow.
    tokio::time::advance(Duration::from_secs(1)).await;
    mapping.drained().await.unwrap();
    rt.shutdown(Duration::from_secs(1)).await;
    let demands = probe.demands.lock().clone();
    // Told at start (2 batches of 10), on each change as it grew and shrank, 0 at the stop.
    assert_eq!(demands.first(), Some(&20), "{demands:?}");
    assert!(demands.iter().any(|d| *d > 20), "it grew: {demands:?}");
    assert_eq!(demands.last(), Some(&0), "{demands:?}");
    assert!(
        demands.windows(2).all(|w| w[0] != w[1]),
        "only changes: {demands:?}"
    );
    assert!(
        demands.iter().all(|d| *d <= 40),
        "at most 4 × 10: {demands:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_demand_hint_harms_nothing() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "panicky").await;
    let inner = visible_in(30);
    for i in 0..100 {
        inner.send(format!("m{i}")).unwrap();
    }
    let probe = Probe::new(inner.clone(), Stats::Inner);
    probe.panic_on_demand.store(true, Ordering::SeqCst);
    let mapping =
        QueueMapping::builder(probe.clone(), function, QueueMappingConfig::new("panicky"))
            .attach(&rt)
            .start()
            .unwrap();
    mapping.drained().await.unwrap();
    assert_eq!(mapping.metrics().deleted, 100);
    assert!(rt.shutdown(Duration::from_secs(1)).await.attachments[0].clean);
}

#[tokio::test(start_paused = true)]
async fn stats_that_fail_panic_or_stall_break_neither_metrics_nor_the_mapping() {
    for stats in [Stats::Fail, Stats::Panic, Stats::Stall] {
        let rt = runtime();
        let (function, _seen) = recording(&rt, "stats").await;
        let inner = visible_in(30);
        for i in 0..50 {
            inner.send(format!("m{i}")).unwrap();
        }
        let probe = Probe::new(inner.clone(), stats);
        let mapping = QueueMapping::builder(
            probe.clone(),
            function,
            QueueMappingConfig::new("stats").with_poll_wait(Duration::from_secs(1)),
        )
        .attach(&rt)
        .start()
        .unwrap();
        // Metrics never wait, and say nothing of a backlog they could not learn.
        for _ in 0..3 {
            assert_eq!(mapping.metrics().backlog, None, "{stats:?}");
        }
        assert_eq!(mapping.queue_stats().await, None, "{stats:?}");
        // drained falls back on what the mapping sees.
        mapping.drained().await.unwrap();
        assert!(inner.is_empty(), "{stats:?}");
        assert_eq!(mapping.metrics().deleted, 50, "{stats:?}");
        assert!(
            rt.shutdown(Duration::from_secs(1)).await.attachments[0].clean,
            "{stats:?}"
        );
        assert!(probe.stats_asked.load(Ordering::SeqCst) >= 1, "{stats:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_of_an_immediate_source_are_fresh_and_kept_after_the_stop() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "fresh").await;
    let q = visible_in(30);
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("fresh"))
        .attach(&rt)
        .start()
        .unwrap();
    assert_eq!(mapping.metrics().backlog, Some(0));
    // No time passes: an in-memory queue's counts are read on every snapshot.
    q.send_message(nimbus_sources::Outgoing::new("later").with_delay(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(mapping.metrics().backlog, Some(1));
    rt.shutdown(Duration::from_secs(1)).await;
    // Stopped, the mapping asks its source nothing more, but keeps what it saw last.
    q.send("after").unwrap();
    assert_eq!(mapping.metrics().backlog, Some(1));
}

/// An in-memory queue whose first ack of a `stale` message makes that receipt not current
/// first (as a visibility timeout passing would; the message returns a minute later), then
/// acknowledges as the queue does.
struct Staling {
    inner: Arc<InMemoryQueue>,
    stale: Mutex<Vec<Receipt>>,
    staled: AtomicBool,
}

#[async_trait]
impl QueueSource for Staling {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let messages = self.inner.receive(max, wait).await?;
        let stale = messages.iter().filter(|m| &m.body[..] == b"stale");
        self.stale.lock().extend(stale.map(|m| m.receipt.clone()));
        Ok(messages)
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let stale: Vec<Receipt> = self.stale.lock().clone();
        for receipt in receipts.iter().filter(|r| stale.contains(r)) {
            if !self.staled.swap(true, Ordering::SeqCst) {
                self.inner
                    .retry_later(receipt, Duration::from_secs(60))
                    .await?;
            }
        }
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
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        self.inner.stats().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_partly_refused_ack_counts_the_deleted_ones_and_the_refused_one() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "refused").await;
    let inner = visible_in(30);
    for body in ["a", "stale", "b"] {
        inner.send(body).unwrap();
    }
    let q = Arc::new(Staling {
        inner: inner.clone(),
        stale: Mutex::default(),
        staled: AtomicBool::new(false),
    });
    let mapping = QueueMapping::builder(q, function, QueueMappingConfig::new("refused"))
        .attach(&rt)
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    assert!(inner.is_empty());
    // a and b were deleted by the first ack, stale by the second, after it came back.
    assert_eq!(seen.lock().len(), 2, "{:?}", seen.lock());
    let m = mapping.metrics();
    assert_eq!(
        (m.deleted, m.refused_receipts, m.source_errors),
        (3, 1, 0),
        "{m:?}"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}
