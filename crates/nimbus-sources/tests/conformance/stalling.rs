//! A correct adapter on a machine that stalls: every other queue [`StallingHarness`] makes
//! pauses for longer than its visibility timeout before its first ack, release or retry (as a
//! loaded machine may), so its receipts expire first. The kit must run such a check again,
//! not fail the adapter.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_sources::conformance::{InMemoryHarness, QueueHarness, QueueProducer, QueueSpec};
use nimbus_sources::{InMemoryQueue, Message, MessageId, QueueSource, Receipt, SourceError};

/// An in-memory queue that stalls before its first ack, release or retry if `stalls`.
#[derive(Debug)]
pub(crate) struct Stalling {
    inner: InMemoryQueue,
    stall: AtomicBool,
}

impl Stalling {
    async fn maybe_stall(&self) {
        if self.stall.swap(false, Ordering::SeqCst) {
            let visibility = self.inner.visibility_timeout().unwrap_or_default();
            tokio::time::sleep(visibility + visibility / 4).await;
        }
    }
}

#[async_trait]
impl QueueSource for Stalling {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        self.inner.receive(max, wait).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.maybe_stall().await;
        self.inner.ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.maybe_stall().await;
        self.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.maybe_stall().await;
        self.inner.release(receipts).await
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
}

#[async_trait]
impl QueueProducer for Stalling {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        self.inner.produce(body).await
    }
}

/// Makes [`Stalling`] queues, every other one stalling; counts what it made and tore down.
#[derive(Debug, Default)]
pub(crate) struct StallingHarness {
    made: AtomicUsize,
    torn_down: AtomicUsize,
}

impl StallingHarness {
    /// Queues made and queues torn down.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.made.load(Ordering::SeqCst),
            self.torn_down.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl QueueHarness for StallingHarness {
    type Queue = Stalling;

    async fn make(&self, spec: QueueSpec) -> Result<Stalling, SourceError> {
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        Ok(Stalling {
            inner: InMemoryHarness.make(spec).await?,
            stall: AtomicBool::new(n % 2 == 0),
        })
    }

    async fn dead_letters(&self, queue: &Stalling) -> Result<u64, SourceError> {
        InMemoryHarness.dead_letters(&queue.inner).await
    }

    async fn teardown(&self, _queue: &Stalling) -> Result<(), SourceError> {
        self.torn_down.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
