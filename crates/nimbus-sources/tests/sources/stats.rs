//! Reading a queue mapping's metrics from anywhere: a thread outside Tokio never polls the
//! source there (a broker's stats need the runtime's timers and I/O), and a background ask
//! dropped with its runtime does not stop later reads from asking again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_sources::{
    InMemoryQueue, Message, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource, QueueStats,
    Receipt, SourceError,
};

use crate::support::{queue, recording, runtime};

/// An in-memory queue whose stats, like a broker's, await the runtime (a timer) before they
/// answer, or never answer when `stall` is set; it counts the asks, and those polled where
/// no Tokio runtime is entered.
struct Broker {
    inner: Arc<InMemoryQueue>,
    stall: AtomicBool,
    asked: AtomicUsize,
    outside: AtomicUsize,
}

impl Broker {
    fn new(inner: Arc<InMemoryQueue>, stall: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            stall: AtomicBool::new(stall),
            asked: AtomicUsize::new(0),
            outside: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl QueueSource for Broker {
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
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if tokio::runtime::Handle::try_current().is_err() {
            self.outside.fetch_add(1, Ordering::SeqCst);
        }
        if self.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        // A round trip: needs the runtime's timer.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.inner.stats().await
    }
}

/// Starts a mapping over a [`Broker`] on a runtime of its own, returning both (and the
/// function's runtime, which must outlive the mapping's use).
fn mapping_on_its_own_runtime(
    stall: bool,
) -> (
    tokio::runtime::Runtime,
    nimbus_core::Runtime,
    QueueMapping,
    Arc<Broker>,
) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let probe = Broker::new(queue(QueueConfig::default()), stall);
    let (rt, mapping) = tokio.block_on(async {
        let rt = runtime();
        let (function, _seen) = recording(&rt, "stats").await;
        let mapping = QueueMapping::builder(
            probe.clone(),
            function,
            QueueMappingConfig::new("stats").with_poll_wait(Duration::from_millis(100)),
        )
        .detached()
        .start()
        .unwrap();
        (rt, mapping)
    });
    (tokio, rt, mapping, probe)
}

#[test]
fn metrics_read_outside_tokio_ask_the_source_on_the_mappings_runtime() {
    let (tokio, _rt, mapping, probe) = mapping_on_its_own_runtime(false);
    // This thread runs no Tokio runtime: reads never wait and never poll the source here.
    for _ in 0..3 {
        assert_eq!(mapping.metrics().backlog, None);
    }
    assert_eq!(
        probe.outside.load(Ordering::SeqCst),
        0,
        "polled outside Tokio"
    );
    // The ask ran on the mapping's runtime, and a later read shows its answer.
    let answered = tokio.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while mapping.metrics().backlog.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    });
    assert!(answered.is_ok(), "the background ask never answered");
    assert_eq!(probe.outside.load(Ordering::SeqCst), 0);
    tokio.block_on(mapping.stop(Duration::from_secs(1)));
}

#[test]
fn an_ask_dropped_with_its_runtime_does_not_stop_later_reads_from_asking() {
    let (tokio, _rt, mapping, probe) = mapping_on_its_own_runtime(true);
    assert_eq!(tokio.block_on(async { mapping.metrics().backlog }), None);
    assert_eq!(
        probe.asked.load(Ordering::SeqCst),
        1,
        "asked in the background"
    );
    // The runtime goes away with the ask in flight: the task is dropped, not finished.
    drop(tokio);
    probe.stall.store(false, Ordering::SeqCst);
    assert_eq!(mapping.metrics().backlog, None);
    assert_eq!(
        probe.asked.load(Ordering::SeqCst),
        2,
        "a dropped ask left the mapping waiting for it forever"
    );
    // An ask that must go to the background now is dropped at once by the dead runtime;
    // the read neither hangs nor leaves the mapping waiting.
    probe.stall.store(true, Ordering::SeqCst);
    let (done, answered) = std::sync::mpsc::channel();
    let reader = std::thread::spawn({
        let mapping = mapping.clone();
        move || {
            for _ in 0..2 {
                let _ = mapping.metrics();
            }
            let _ = done.send(());
        }
    });
    answered
        .recv_timeout(Duration::from_secs(10))
        .expect("metrics() hung after the mapping's runtime shut down");
    reader.join().unwrap();
    assert_eq!(probe.asked.load(Ordering::SeqCst), 4);
}
