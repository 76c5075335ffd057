//! `drained` at its edges: a receive that started before the call proves nothing about
//! messages sent since, and a mapping that stops while `drained` asks its source is reported
//! as stopped, not drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_sources::{
    InMemoryQueue, MappingStatus, Message, QueueConfig, QueueMapping, QueueMappingConfig,
    QueueSource, QueueStats, Receipt, SourceError,
};
use tokio::time::Instant;

use crate::support::{queue, recording, runtime};

/// An in-memory queue without stats whose first receive does not look: it waits out its
/// `wait` and answers nothing (as a broker's poll that read the queue before a send and is not
/// woken by it). Later receives take a round trip. Its stats, when `stall_stats` is set, never
/// answer.
struct Blind {
    inner: Arc<InMemoryQueue>,
    looked: AtomicBool,
    stall_stats: bool,
}

impl Blind {
    fn new(inner: Arc<InMemoryQueue>, stall_stats: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            looked: AtomicBool::new(false),
            stall_stats,
        })
    }
}

#[async_trait]
impl QueueSource for Blind {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if !self.looked.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        // A round trip to the broker.
        tokio::time::sleep(Duration::from_millis(10)).await;
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
        if self.stall_stats {
            std::future::pending::<()>().await;
        }
        Ok(None)
    }
}

fn one_poller(name: &str) -> QueueMappingConfig {
    QueueMappingConfig::new(name)
        .with_initial_concurrency(1)
        .with_poll_wait(Duration::from_secs(2))
}

#[tokio::test(start_paused = true)]
async fn an_empty_receive_that_began_before_the_call_does_not_make_it_drained() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "blind").await;
    let inner = queue(QueueConfig::default());
    let mapping = QueueMapping::builder(
        Blind::new(inner.clone(), false),
        function,
        one_poller("blind"),
    )
    .attach(&rt)
    .start()
    .unwrap();
    // The poller's first receive is under way (until 2 s) when a message is sent and
    // `drained` called: that receive's empty answer says nothing about the message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    inner.send("late").unwrap();
    mapping.drained().await.unwrap();
    assert!(
        inner.is_empty(),
        "drained while a message sent before was visible"
    );
    assert_eq!(seen.lock().as_slice(), [vec!["late".to_owned()]]);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_mapping_that_stops_while_drained_asks_its_source_is_reported_stopped() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "stopping").await;
    let inner = queue(QueueConfig::default());
    let mapping = QueueMapping::builder(
        Blind::new(inner.clone(), true),
        function,
        one_poller("stopping"),
    )
    .detached()
    .start()
    .unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn({
        let mapping = mapping.clone();
        async move { mapping.drained().await }
    });
    // Empty receives after the call (2 s to 4 s) make the mapping quiet, while `drained`
    // waits for stats that never come (given up after a few seconds). It stops meanwhile.
    tokio::time::sleep_until(started + Duration::from_secs(4) + Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    assert!(mapping.stop(Duration::from_secs(1)).await);
    let answer = waiting.await.unwrap();
    assert!(
        matches!(answer, Err(MappingStatus::Stopped { .. })),
        "{answer:?}"
    );
}
