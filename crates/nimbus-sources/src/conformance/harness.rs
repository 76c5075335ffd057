//! What the queue kit needs of an adapter under test: a [`QueueHarness`] makes fresh queues
//! to a [`QueueSpec`], counts their dead letters, and removes what it made.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{fail, Violation};
use crate::error::SourceError;
use crate::queue::{InMemoryQueue, QueueConfig, QueueProducer};

/// The queue a check asks its harness for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueSpec {
    /// Its visibility timeout (the kit asks for about a second).
    pub visibility_timeout: Duration,
    /// Redrive: after this many receives a message goes to the dead-letter queue, which
    /// [`QueueHarness::dead_letters`] counts. `None`: no redrive.
    pub max_receive_count: Option<u32>,
}

impl QueueSpec {
    /// A queue with this visibility timeout and no redrive.
    pub fn new(visibility_timeout: Duration) -> Self {
        Self {
            visibility_timeout,
            max_receive_count: None,
        }
    }

    /// With redrive after `max_receive_count` receives.
    #[must_use]
    pub fn with_redrive(mut self, max_receive_count: u32) -> Self {
        self.max_receive_count = Some(max_receive_count);
        self
    }
}

/// An adapter under test, as the queue kit sees it.
///
/// Each queue [`make`](QueueHarness::make) returns is fresh and empty and its own (a unique
/// key, stream, subject or table prefix per call, so that checks can run in parallel), and
/// the kit hands every one of them to [`teardown`](QueueHarness::teardown) once its check is
/// done, whether it passed or not: a kit run leaves nothing on the broker.
///
/// # Example
///
/// [`InMemoryHarness`] is one; `examples/custom_source.rs` has another.
#[async_trait]
pub trait QueueHarness: Send + Sync {
    /// The adapter.
    type Queue: QueueProducer;

    /// A fresh, empty queue to `spec`: its visibility timeout, and redrive if asked.
    ///
    /// # Errors
    ///
    /// The queue could not be made (the kit reports it as a violation of check `setup`).
    async fn make(&self, spec: QueueSpec) -> Result<Self::Queue, SourceError>;

    /// How many messages `queue`'s dead-letter queue holds (0 without redrive).
    ///
    /// # Errors
    ///
    /// The broker could not be asked.
    async fn dead_letters(&self, queue: &Self::Queue) -> Result<u64, SourceError>;

    /// Removes from the broker everything `make` created for `queue` (its stream, keys,
    /// tables, consumer, dead-letter queue). Called once per queue.
    ///
    /// # Errors
    ///
    /// Something could not be removed (the kit reports it as a violation of check
    /// `teardown`).
    async fn teardown(&self, queue: &Self::Queue) -> Result<(), SourceError>;
}

/// The harness of the in-memory queue: a reference for adapter authors, and what the kit's
/// own tests wrap to build broken adapters.
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemoryHarness;

#[async_trait]
impl QueueHarness for InMemoryHarness {
    type Queue = InMemoryQueue;

    async fn make(&self, spec: QueueSpec) -> Result<InMemoryQueue, SourceError> {
        let mut config = QueueConfig::default().with_visibility_timeout(spec.visibility_timeout);
        if let Some(max) = spec.max_receive_count {
            let dead = InMemoryQueue::new(QueueConfig::default())
                .map_err(|e| SourceError::Invalid(e.to_string()))?;
            config = config.with_redrive(Arc::new(dead), max);
        }
        InMemoryQueue::new(config).map_err(|e| SourceError::Invalid(e.to_string()))
    }

    async fn dead_letters(&self, queue: &InMemoryQueue) -> Result<u64, SourceError> {
        Ok(queue
            .config()
            .dead_letter
            .as_ref()
            .map_or(0, |dead| dead.len() as u64))
    }

    /// Nothing outlives the queue.
    async fn teardown(&self, _queue: &InMemoryQueue) -> Result<(), SourceError> {
        Ok(())
    }
}

/// A fresh queue, or the violation `setup`.
pub(super) async fn fresh<H: QueueHarness>(
    harness: &H,
    spec: QueueSpec,
) -> Result<H::Queue, Violation> {
    harness
        .make(spec)
        .await
        .map_err(|e| fail("setup", format!("making a queue: {e}")))
}

/// Tears `queue` down and returns the check's outcome (or the violation `teardown` if the
/// check passed but the teardown failed).
pub(super) async fn done<H: QueueHarness>(
    harness: &H,
    queue: &H::Queue,
    outcome: Result<(), Violation>,
) -> Result<(), Violation> {
    let removed = harness.teardown(queue).await;
    outcome?;
    removed.map_err(|e| fail("teardown", format!("removing a queue: {e}")))
}
