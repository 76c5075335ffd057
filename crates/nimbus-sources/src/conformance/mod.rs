//! The conformance kit (feature `conformance`): reusable checks of the source contracts, for
//! the in-memory sources and for every adapter, against the real broker.
//!
//! Each suite takes a factory that makes a fresh, empty source (use a unique key, stream,
//! subject or table prefix per call, so that suites can run in parallel and leave nothing
//! behind) and returns the first broken rule as a [`Violation`]. The suites run in real time,
//! with short timeouts: a queue made by the factory should have a visibility timeout of about
//! one second.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nimbus_sources::conformance;
//! use nimbus_sources::{InMemoryQueue, QueueConfig};
//!
//! # #[tokio::main]
//! # async fn main() {
//! let report = conformance::queue(|| async {
//!     InMemoryQueue::new(QueueConfig::default().with_visibility_timeout(Duration::from_secs(1))).unwrap()
//! })
//! .await;
//! assert!(report.is_ok(), "{report:?}");
//! # }
//! ```

mod mapping;
mod queue;
mod stream;

use crate::error::SourceError;

pub use mapping::mapping_survives;
pub use queue::{queue, redrive};
pub use stream::{checkpoints, leases, stream};

/// A broken rule of a source contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct Violation {
    /// Which check failed.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

fn fail(check: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        check,
        detail: detail.into(),
    }
}

fn source(check: &'static str) -> impl Fn(SourceError) -> Violation {
    move |e| fail(check, format!("source error: {e}"))
}

pub use crate::{QueueProducer, StreamProducer};
