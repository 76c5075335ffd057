//! The in-memory sources pass the conformance kit that every adapter must pass.

use std::time::Duration;

use nimbus_sources::conformance;
use nimbus_sources::{
    InMemoryCheckpoints, InMemoryLeases, InMemoryQueue, InMemoryStream, QueueConfig, StreamConfig,
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
    conformance::checkpoints(&InMemoryCheckpoints::new(), "kit")
        .await
        .unwrap();
    conformance::leases(&InMemoryLeases::new(), "kit/shard")
        .await
        .unwrap();
}

/// The kit notices a broken source: a queue that never redelivers fails the visibility check.
#[tokio::test]
async fn the_kit_catches_a_queue_that_loses_messages() {
    use async_trait::async_trait;
    use bytes::Bytes;
    use nimbus_sources::conformance::QueueProducer;
    use nimbus_sources::{Message, MessageId, QueueSource, Receipt, SourceError};

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
        async fn release(&self, _receipts: &[Receipt]) -> Result<(), SourceError> {
            Err(SourceError::Invalid(
                "release is not implemented yet".into(),
            ))
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
