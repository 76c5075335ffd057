//! The conformance kit (feature `conformance`): reusable checks of the source contracts, for
//! the in-memory sources and for every adapter, against the real broker.
//!
//! The queue suites take a [`QueueHarness`]: it makes a fresh, empty queue to a
//! [`QueueSpec`] for each check (use a unique key, stream, subject or table prefix per call,
//! so that suites can run in parallel), counts its dead letters, and tears it down after the
//! check, pass or fail, so that a kit run leaves nothing on the broker. The stream suites
//! take a factory. Each suite returns the first broken rule as a [`Violation`]. The suites
//! run in real time, with short timeouts: the kit asks for queues with a visibility timeout
//! of one second. A queue check measures how long things took, and one that sees a wrong
//! answer at a moment when a stall of the machine past that second could explain it (a
//! receipt refused once it may have expired, a message back once its receipt may have)
//! runs again on a fresh queue, up to three times: a loaded machine slows the kit down but
//! neither fails a correct adapter nor passes a broken one.
//!
//! - [`queue`]: the whole queue contract (see its list), redrive and a failing handler
//!   included;
//! - [`mapping_survives`]: a mapping over the adapter through a disruption the caller
//!   causes (a killed connection), with a bound on duplicates;
//! - [`stream`], [`checkpoints`], [`leases`]: the stream contracts.
//!
//! # Example
//!
//! ```
//! use nimbus_sources::conformance::{self, InMemoryHarness};
//!
//! # #[tokio::main]
//! # async fn main() {
//! let report = conformance::queue(&InMemoryHarness).await;
//! assert!(report.is_ok(), "{report:?}");
//! # }
//! ```

mod harness;
mod mapping;
mod queue;
mod receipts;
mod redrive;
mod stall;
mod stream;

use crate::error::SourceError;

pub use harness::{InMemoryHarness, QueueHarness, QueueSpec};
pub use mapping::{mapping_survives, max_duplicates};
pub use queue::queue;
pub use redrive::{handler_failures, redrive};
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
