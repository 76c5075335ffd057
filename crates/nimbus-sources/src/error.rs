//! Errors of sources and mappings: one enum for source operations, and config errors reused
//! from nimbus-core.

pub use nimbus_core::ConfigError;

/// A source operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source is full; the value is not taken.
    #[error("source is full ({capacity} messages)")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// A receipt that the source does not know (already acknowledged, or expired).
    #[error("unknown or expired receipt")]
    UnknownReceipt,
    /// The source is closed.
    #[error("source is closed")]
    Closed,
    /// The broker failed; worth retrying after a backoff.
    #[error("broker error: {0}")]
    Broker(String),
    /// A request the source refuses (bad argument).
    #[error("invalid request: {0}")]
    Invalid(String),
}
