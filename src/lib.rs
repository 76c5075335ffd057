//! nimbus: an embeddable serverless scheduler. Run functions in-process with the semantics of
//! AWS Lambda: synchronous and asynchronous invocation, concurrency that scales with load and
//! down to nothing when idle, failure handling that never loses an event, and metering.
//!
//! This facade is the one front door of the workspace: a project that depends on `nimbus` alone
//! reaches everything through `nimbus::...` paths.
//!
//! - The runtime (functions, handlers, invocation, concurrency, metering, shutdown) is
//!   re-exported at the root, and as [`core`] for paths the root does not cover.
//! - Event sources and mappings (queues, streams, object stores, the conformance kit) are in
//!   [`sources`].
//! - The broker adapters are behind features, off by default: `redis` gives `nimbus::redis`,
//!   `postgres` gives `nimbus::postgres` and `nats` gives `nimbus::nats`.
//!
//! # Example
//!
//! ```
//! use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::default();
//! let hello = runtime
//!     .register(Function::new(
//!         "hello",
//!         handler_fn(|name: String, ctx: Context| async move {
//!             Ok::<_, FunctionError>(format!("hello {name} from {}", ctx.function_name()))
//!         }),
//!     ))
//!     .await?;
//! assert_eq!(hello.invoke("you".into()).await?, "hello you from hello");
//! # Ok(())
//! # }
//! ```
//!
//! Sources come from [`sources`]: an in-memory queue drained by a queue mapping.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use nimbus::sources::{
//!     BatchResponse, InMemoryQueue, Outgoing, QueueBatch, QueueConfig, QueueMapping,
//!     QueueMappingConfig,
//! };
//! use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let runtime = Runtime::default();
//! let (done, mut handled) = tokio::sync::mpsc::unbounded_channel();
//! let function = runtime
//!     .register_native(Function::new(
//!         "shout",
//!         handler_fn(move |batch: QueueBatch, _ctx: Context| {
//!             for record in &batch.records {
//!                 let _ = done.send(String::from_utf8_lossy(&record.body).to_uppercase());
//!             }
//!             async { Ok::<_, FunctionError>(BatchResponse::success()) }
//!         }),
//!     ))
//!     .await?;
//! let queue = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
//! queue.send_batch(vec![Outgoing::new("hello")])?;
//! let mapping = QueueMapping::start(Arc::clone(&queue), function, QueueMappingConfig::new("shout"))?;
//! assert_eq!(handled.recv().await.as_deref(), Some("HELLO"));
//! mapping.stop(Duration::from_secs(1)).await;
//! runtime.shutdown(Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

/// The core runtime crate, for paths that the re-exports at the root do not cover.
pub use nimbus_core as core;

pub use self::core::*;

/// Event sources: queue and stream sources, the mapping engine, in-memory sources, object
/// stores and notifications, and the conformance kit for adapters.
pub use nimbus_sources as sources;

/// Redis adapters (feature `redis`): a queue on a Redis Stream with a consumer group, a sharded
/// stream, and checkpoint and lease stores.
#[cfg(feature = "redis")]
pub use nimbus_redis as redis;

/// PostgreSQL adapters (feature `postgres`): a queue table, and checkpoint and lease tables.
#[cfg(feature = "postgres")]
pub use nimbus_postgres as postgres;

/// Functions in any language (feature `process`): child-process instances that speak the Lambda
/// Runtime API.
#[cfg(feature = "process")]
pub use nimbus_process as process;

/// nimbus over HTTP (feature `http`): the Lambda Invoke API that the AWS SDKs drive, an API
/// gateway of routes to functions, and Prometheus metrics.
#[cfg(feature = "http")]
pub use nimbus_http as http;

/// NATS JetStream adapter (feature `nats`): a queue on a work-queue stream with a durable pull
/// consumer.
#[cfg(feature = "nats")]
pub use nimbus_nats as nats;

// `nimbus serve nimbus.toml` (feature `serve`); documented in the module itself.
#[cfg(feature = "serve")]
pub mod serve;
