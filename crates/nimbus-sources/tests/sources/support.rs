//! Helpers shared by the queue tests.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};
use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueFunction};
use parking_lot::Mutex;

pub(crate) fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("valid runtime config")
}

pub(crate) fn queue(config: QueueConfig) -> Arc<InMemoryQueue> {
    Arc::new(InMemoryQueue::new(config).expect("valid queue config"))
}

/// Waits, on the paused test clock, until `condition` holds: each step lets ready tasks run
/// and then advances virtual time by 1 ms (instantly; nothing sleeps for real). Panics after
/// `limit` of virtual time, so a broken condition fails the test instead of hanging it.
pub(crate) async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition not reached within {limit:?} of test-clock time"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Bodies of every batch the function saw, in invocation order.
pub(crate) type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A queue function that records its batches and fails by body: `fail*` records are reported
/// as item failures, a `poison*` record fails the whole batch, `panic` panics.
pub(crate) async fn recording(rt: &Runtime, name: &str) -> (QueueFunction, Seen) {
    let seen: Seen = Arc::default();
    let handle = rt
        .register(
            Function::new(
                name,
                handler_fn({
                    let seen = seen.clone();
                    move |batch: QueueBatch, _ctx: Context| {
                        let seen = seen.clone();
                        async move {
                            let bodies: Vec<String> = batch
                                .records
                                .iter()
                                .map(|r| r.body_str().unwrap_or("<bytes>").to_owned())
                                .collect();
                            seen.lock().push(bodies.clone());
                            if bodies.iter().any(|b| b == "panic") {
                                panic!("handler panicked");
                            }
                            if bodies.iter().any(|b| b.starts_with("poison")) {
                                return Err(FunctionError::msg("poison in batch"));
                            }
                            Ok::<_, FunctionError>(BatchResponse::failures(
                                batch
                                    .records
                                    .iter()
                                    .filter(|r| r.body_str().is_ok_and(|b| b.starts_with("fail")))
                                    .map(|r| r.message_id.clone()),
                            ))
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("register");
    (handle, seen)
}

/// Implements `LeaseStore` for a test wrapper around an `InMemoryStreamStore` (the field
/// named), forwarding every call: for wrappers that change checkpoint writes only.
macro_rules! forward_leases {
    ($wrapper:ty, $field:tt) => {
        #[nimbus_sources::async_trait]
        impl nimbus_sources::LeaseStore for $wrapper {
            async fn acquire(
                &self,
                key: &str,
                owner: &str,
                ttl: std::time::Duration,
            ) -> Result<Option<nimbus_sources::Lease>, nimbus_sources::SourceError> {
                self.$field.acquire(key, owner, ttl).await
            }
            async fn release(
                &self,
                key: &str,
                owner: &str,
            ) -> Result<(), nimbus_sources::SourceError> {
                self.$field.release(key, owner).await
            }
            async fn list(
                &self,
                prefix: &str,
            ) -> Result<Vec<nimbus_sources::Lease>, nimbus_sources::SourceError> {
                self.$field.list(prefix).await
            }
        }
    };
}

/// Implements `CheckpointStore` for a test wrapper around an `InMemoryStreamStore` (the field
/// named), forwarding every call: for wrappers that change leases only.
macro_rules! forward_checkpoints {
    ($wrapper:ty, $field:tt) => {
        #[nimbus_sources::async_trait]
        impl nimbus_sources::CheckpointStore for $wrapper {
            async fn get(
                &self,
                mapping: &str,
                shard: &str,
            ) -> Result<Option<nimbus_sources::Checkpoint>, nimbus_sources::SourceError> {
                self.$field.get(mapping, shard).await
            }
            async fn put(
                &self,
                mapping: &str,
                shard: &str,
                checkpoint: nimbus_sources::Checkpoint,
                lease: &nimbus_sources::Lease,
            ) -> Result<(), nimbus_sources::SourceError> {
                self.$field.put(mapping, shard, checkpoint, lease).await
            }
        }
    };
}

pub(crate) use {forward_checkpoints, forward_leases};
