//! The in-memory sources pass the conformance kit that every adapter must pass, and the kit
//! catches adapters that break each rule.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_sources::conformance::QueueProducer;
use nimbus_sources::{Message, MessageId, QueueSource, Receipt, SourceError};
use parking_lot::Mutex;

use nimbus_sources::conformance;
use nimbus_sources::{
    InMemoryQueue, InMemoryStream, InMemoryStreamStore, QueueConfig, StreamConfig,
};

#[tokio::test]
async fn in_memory_queue() {
    conformance::queue(|| async {
        InMemoryQueue::new(QueueConfig::default().with_visibility_timeout(Duration::from_secs(1)))
            .unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn in_memory_stream() {
    conformance::stream(|| async {
        InMemoryStream::new(StreamConfig::default().with_shards(3)).unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn in_memory_checkpoints_and_leases() {
    conformance::checkpoints(&InMemoryStreamStore::new(), "kit")
        .await
        .unwrap();
    conformance::leases(&InMemoryStreamStore::new(), "kit/shard")
        .await
        .unwrap();
}

/// The kit notices a broken source: a queue that never redelivers fails the visibility check.
#[tokio::test]
async fn the_kit_catches_a_queue_that_loses_messages() {
    /// Deletes on receive: at-most-once, which the contract forbids.
    struct Lossy(InMemoryQueue);

    #[async_trait]
    impl QueueSource for Lossy {
        async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
            let got = self.0.receive(max, wait).await?;
            let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
            self.0.ack(&receipts).await?;
            Ok(got)
        }
        async fn ack(&self, _receipts: &[Receipt]) -> Result<(), SourceError> {
            Ok(())
        }
        async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
            self.0.release(receipts).await
        }
        async fn retry_later(
            &self,
            _receipt: &Receipt,
            _delay: Duration,
        ) -> Result<(), SourceError> {
            Ok(())
        }
        fn visibility_timeout(&self) -> Option<Duration> {
            Some(Duration::from_secs(1))
        }
    }

    #[async_trait]
    impl QueueProducer for Lossy {
        async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
            self.0.produce(body).await
        }
    }

    let violation =
        conformance::queue(|| async { Lossy(InMemoryQueue::new(QueueConfig::default()).unwrap()) })
            .await
            .unwrap_err();
    assert_eq!(violation.check, "visibility");
}

#[tokio::test]
async fn in_memory_redrive() {
    let dead = std::sync::Arc::new(InMemoryQueue::new(QueueConfig::default()).unwrap());
    let queue = InMemoryQueue::new(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(1))
            .with_redrive(dead.clone(), 2),
    )
    .unwrap();
    conformance::redrive(&queue, || async { Ok(dead.len() as u64) })
        .await
        .unwrap();
}

fn kit_queue() -> InMemoryQueue {
    InMemoryQueue::new(QueueConfig::default().with_visibility_timeout(Duration::from_secs(1)))
        .unwrap()
}

/// A broken adapter over the in-memory queue: `receive`, `retry_later` and `produce` pass
/// through, `ack` and `release` are given by the test.
macro_rules! broken {
    ($name:ident { $($field:ident: $ty:ty),* } ack($this:ident, $acked:ident) => $ack:expr, release($that:ident, $released:ident) => $release:expr $(,)?) => {
        struct $name { inner: InMemoryQueue, $($field: $ty),* }

        #[async_trait]
        impl QueueSource for $name {
            async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
                let got = self.inner.receive(max, wait).await?;
                self.received(&got);
                Ok(got)
            }
            async fn ack(&self, $acked: &[Receipt]) -> Result<(), SourceError> {
                let $this = self;
                $ack
            }
            async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
                self.inner.retry_later(receipt, delay).await
            }
            async fn release(&self, $released: &[Receipt]) -> Result<(), SourceError> {
                let $that = self;
                $release
            }
            fn visibility_timeout(&self) -> Option<Duration> {
                self.inner.visibility_timeout()
            }
        }

        #[async_trait]
        impl QueueProducer for $name {
            async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
                self.inner.produce(body).await
            }
        }
    };
}

broken!(CountingRelease {} ack(this, receipts) => this.inner.ack(receipts).await,
// Releases as a failed attempt: the receive is counted.
release(this, receipts) => {
    let mut result = Ok(());
    for receipt in receipts {
        if let Err(e) = this.inner.retry_later(receipt, Duration::ZERO).await {
            result = Err(e);
        }
    }
    result
});

impl CountingRelease {
    fn received(&self, _got: &[Message]) {}
}

#[tokio::test]
async fn the_kit_catches_a_release_that_counts_the_receive() {
    let violation = conformance::queue(|| async { CountingRelease { inner: kit_queue() } })
        .await
        .unwrap_err();
    assert_eq!(violation.check, "release", "{violation}");
}

broken!(AllOrNothingAck {}
    // Stops at the first unknown receipt, leaving the rest unacknowledged.
    ack(this, receipts) => {
        for receipt in receipts {
            this.inner.ack(std::slice::from_ref(receipt)).await?;
        }
        Ok(())
    },
    release(this, receipts) => this.inner.release(receipts).await);

impl AllOrNothingAck {
    fn received(&self, _got: &[Message]) {}
}

#[tokio::test]
async fn the_kit_catches_an_ack_that_gives_up_at_the_first_stale_receipt() {
    let violation = conformance::queue(|| async { AllOrNothingAck { inner: kit_queue() } })
        .await
        .unwrap_err();
    assert_eq!(violation.check, "partial ack", "{violation}");
}

broken!(StaleAckUndoes {
        latest: Mutex<HashMap<MessageId, Receipt>>,
        owner: Mutex<HashMap<Receipt, MessageId>>
    }
    // An ack with an old receipt makes the current delivery visible again.
    ack(this, receipts) => {
        let mut fine = Vec::new();
        for receipt in receipts {
            let id = this.owner.lock().get(receipt).cloned();
            let current = id.and_then(|id| this.latest.lock().get(&id).cloned());
            match current {
                Some(current) if current != *receipt => {
                    this.inner.retry_later(&current, Duration::ZERO).await?;
                }
                _ => fine.push(receipt.clone()),
            }
        }
        this.inner.ack(&fine).await
    },
    release(this, receipts) => this.inner.release(receipts).await);

impl StaleAckUndoes {
    fn received(&self, got: &[Message]) {
        for m in got {
            self.latest.lock().insert(m.id.clone(), m.receipt.clone());
            self.owner.lock().insert(m.receipt.clone(), m.id.clone());
        }
    }
}

#[tokio::test]
async fn the_kit_catches_a_stale_receipt_that_disturbs_a_newer_delivery() {
    let violation = conformance::queue(|| async {
        StaleAckUndoes {
            inner: kit_queue(),
            latest: Mutex::default(),
            owner: Mutex::default(),
        }
    })
    .await
    .unwrap_err();
    assert_eq!(violation.check, "stale receipt", "{violation}");
}

/// The kit notices a checkpoint store that does not fence: one that writes whatever lease the
/// writer holds fails the fencing check.
#[tokio::test]
async fn the_kit_catches_a_checkpoint_store_that_ignores_leases() {
    use nimbus_sources::{Checkpoint, CheckpointStore, Lease, LeaseStore};

    /// Leases in an in-memory store; checkpoints beside them, forward only, lease unchecked.
    #[derive(Debug, Default)]
    struct Unfenced {
        leases: InMemoryStreamStore,
        checkpoints: Mutex<HashMap<(String, String), Checkpoint>>,
    }

    #[async_trait]
    impl LeaseStore for Unfenced {
        async fn acquire(
            &self,
            key: &str,
            owner: &str,
            ttl: Duration,
        ) -> Result<Option<Lease>, SourceError> {
            self.leases.acquire(key, owner, ttl).await
        }
        async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
            self.leases.release(key, owner).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
            self.leases.list(prefix).await
        }
    }

    #[async_trait]
    impl CheckpointStore for Unfenced {
        async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
            let key = (mapping.to_owned(), shard.to_owned());
            Ok(self.checkpoints.lock().get(&key).cloned())
        }
        async fn put(
            &self,
            mapping: &str,
            shard: &str,
            checkpoint: Checkpoint,
            _lease: &Lease,
        ) -> Result<(), SourceError> {
            let mut checkpoints = self.checkpoints.lock();
            let stored = checkpoints.entry((mapping.to_owned(), shard.to_owned()));
            let stored = stored.or_insert_with(|| checkpoint.clone());
            if checkpoint < *stored {
                return Err(SourceError::Invalid("would move back".into()));
            }
            *stored = checkpoint;
            Ok(())
        }
    }

    let violation = conformance::checkpoints(&Unfenced::default(), "kit")
        .await
        .unwrap_err();
    assert_eq!(violation.check, "fencing", "{violation}");
}
