//! Stopping a queue mapping with receives in flight: a long poll that may have claimed
//! messages is waited for until the stop gives up, what it brings goes back uncounted (even
//! after the stop abandoned a source that hangs elsewhere), and nothing receives after the
//! stop returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_sources::{
    InMemoryQueue, Message, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource, Receipt,
    SourceError,
};

use crate::support::{eventually, queue, recording, runtime};

const LIMIT: Duration = Duration::from_secs(600);

/// An in-memory queue seen through a source that does not claim its receive is cancel-safe,
/// and whose first ack never answers when `hang_first_ack` is set (a broker that hangs).
struct Wrapped {
    inner: Arc<InMemoryQueue>,
    hang_first_ack: AtomicBool,
}

impl Wrapped {
    fn new(inner: Arc<InMemoryQueue>, hang_first_ack: bool) -> Self {
        Self {
            inner,
            hang_first_ack: AtomicBool::new(hang_first_ack),
        }
    }
}

#[async_trait]
impl QueueSource for Wrapped {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        if self.hang_first_ack.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
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
}

/// One poller handles m1 and hangs in its ack; the other long-polls. The stop abandons the
/// source 200 ms after its deadline; m2, sent after that but before the stop gives up, is
/// taken by the draining receive and must go back at once, its receive uncounted. (An
/// unbiased select against the abandoned token skipped that release about half the time,
/// and with `max_receive_count` 1 the next receive dead-lettered m2 unseen.)
#[tokio::test(start_paused = true)]
async fn a_receive_draining_after_the_source_was_abandoned_still_releases_what_it_brings() {
    for _trial in 0..8 {
        let rt = runtime();
        let (function, seen) = recording(&rt, "drain").await;
        let dlq = queue(QueueConfig::default());
        let q = queue(
            QueueConfig::default()
                .with_visibility_timeout(Duration::from_secs(30))
                .with_redrive(dlq.clone(), 1),
        );
        let mapping = QueueMapping::start(
            Wrapped::new(q.clone(), true),
            function,
            QueueMappingConfig::new("drain").with_initial_concurrency(2),
        )
        .unwrap();
        q.send("m1").unwrap();
        eventually(LIMIT, || !seen.lock().is_empty()).await;
        let stopping = tokio::spawn({
            let mapping = mapping.clone();
            async move { mapping.stop(Duration::from_millis(50)).await }
        });
        // Past deadline + 200 ms (the source is abandoned), before deadline + 400 ms.
        tokio::time::sleep(Duration::from_millis(320)).await;
        q.send("m2").unwrap();
        let clean = stopping.await.unwrap();
        assert!(!clean, "the hung ack makes the stop unclean");
        assert_eq!(
            mapping.metrics().received,
            2,
            "the draining receive took m2"
        );
        // m1's ack was abandoned (in flight until its timeout: expected); m2 is back.
        assert_eq!(q.counts().in_flight, 1, "m2 stranded, its receive counted");
        let back = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].receive_count, 1);
        assert_eq!(dlq.len(), 0);
        assert_eq!(seen.lock().len(), 1, "m2 was never handed to the function");
        let _ = rt.shutdown(Duration::from_millis(10)).await;
    }
}

/// A receive that may have claimed messages is not dropped at the deadline: one that brings
/// a message shortly after it has that message released, and the stop is clean.
#[tokio::test(start_paused = true)]
async fn a_receive_that_ends_before_the_give_up_point_is_waited_for_and_released() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "wait").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    let mapping = QueueMapping::start(
        Wrapped::new(q.clone(), false),
        function,
        QueueMappingConfig::new("wait").with_initial_concurrency(1),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stopping = tokio::spawn({
        let mapping = mapping.clone();
        async move { mapping.stop(Duration::from_millis(50)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    q.send("late").unwrap();
    assert!(stopping.await.unwrap(), "the receive ended in time");
    assert_eq!(mapping.metrics().received, 1);
    assert_eq!(mapping.metrics().released, 1);
    let back = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].receive_count, 1);
    assert!(seen.lock().is_empty());
}

/// A long poll still running when the stop gives up is dropped: the stop returns a little
/// past its deadline, says it is not clean, and the mapping never receives again.
#[tokio::test(start_paused = true)]
async fn a_receive_still_running_at_the_give_up_point_is_dropped_and_reported() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "idle").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    let mapping = QueueMapping::start(
        Wrapped::new(q.clone(), false),
        function,
        QueueMappingConfig::new("idle").with_initial_concurrency(1),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let clean = mapping.stop(Duration::from_millis(50)).await;
    let took = started.elapsed();
    assert!(
        !clean,
        "a dropped receive that may have claimed messages is not clean"
    );
    assert!(
        took >= Duration::from_millis(400) && took < nimbus_core::ATTACHMENT_STOP_SLACK,
        "{took:?}"
    );
    q.send("after").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(mapping.metrics().received, 0, "received after the stop");
    assert_eq!(q.counts().visible, 1);
    assert!(seen.lock().is_empty());
}
