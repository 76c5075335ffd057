//! Errors of sources and mappings: one enum for source operations, and config errors reused
//! from nimbus-core.
//!
//! A broker error is classified when it is made: [`Retry::Transient`] errors (a dropped
//! connection, a timeout, a busy server) are retried by mappings with backoff, and
//! [`Retry::Permanent`] ones (bad credentials, a queue or table that does not exist, a
//! malformed request the broker refuses) stop the mapping with a status that says why, rather
//! than retrying forever. The underlying error is kept and reachable through
//! [`std::error::Error::source`].

use std::sync::Arc;

pub use nimbus_core::ConfigError;

/// Whether a broker error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Retry {
    /// Worth retrying after a backoff (connection lost, timeout, server busy).
    Transient,
    /// Retrying will not help (bad credentials, missing queue, refused request).
    Permanent,
}

/// The error a broker client returned, shared so that [`SourceError`] stays `Clone`.
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A source operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source is full; the value is not taken.
    #[error("source is full ({capacity} messages)")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// A receipt that the source does not know (already acknowledged, or expired): what
    /// `retry_later` answers for a receipt that is not current.
    #[error("unknown or expired receipt")]
    UnknownReceipt,
    /// Receipts of an `ack` or a `release` that were not current (unknown, expired, handed
    /// back): they changed nothing, and every other receipt given was acknowledged (or
    /// released). Build it with [`SourceError::refusing`].
    #[error("{} of the receipts given were unknown or expired", positions.len())]
    Refused {
        /// Where the refused receipts were in the slice given: ascending, each once.
        positions: Vec<usize>,
    },
    /// The source is closed.
    #[error("source is closed")]
    Closed,
    /// The broker (or the store behind the source) failed.
    #[error("broker error: {message}")]
    Broker {
        /// Whether to retry.
        retry: Retry,
        /// What failed, with the server's own message when it gave one.
        message: String,
        /// The client's error, if there was one.
        #[source]
        source: Option<BoxError>,
    },
    /// A message above the queue's largest message size (SQS: 1 MiB, body plus attribute
    /// names and values), refused when sent.
    #[error("message of {size} bytes is above the queue's limit of {limit} bytes")]
    TooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The queue's `max_message_size`.
        limit: usize,
    },
    /// A request the source refuses (bad argument).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A checkpoint write made under a lease that has expired or passed to another owner (or
    /// counter): the writer no longer owns the shard, and the checkpoint did not move. A stream
    /// mapping stops that shard's reader, as for a lost lease.
    #[error("fenced: the lease {lease} {detail}; the checkpoint did not move")]
    Fenced {
        /// The lease's key.
        lease: Box<str>,
        /// What changed.
        detail: Box<str>,
    },
}

impl SourceError {
    /// A transient broker error described by `message`.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Broker {
            retry: Retry::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A permanent broker error described by `message`.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Broker {
            retry: Retry::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// A broker error wrapping the client's `error`, classified as `retry`. The message is the
    /// error's display text; the error itself stays reachable through `source()`.
    pub fn broker<E>(retry: Retry, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::Broker {
            retry,
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// A write refused because its lease on `lease` (the key) has expired or moved; `detail`
    /// says which.
    pub fn fenced(lease: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Fenced {
            lease: lease.into().into_boxed_str(),
            detail: detail.into().into_boxed_str(),
        }
    }

    /// Replaces the message of a broker error (to add the server's detail or some context);
    /// other variants are returned unchanged.
    #[must_use]
    pub fn with_message(self, message: impl Into<String>) -> Self {
        match self {
            Self::Broker { retry, source, .. } => Self::Broker {
                retry,
                message: message.into(),
                source,
            },
            other => other,
        }
    }

    /// What an `ack` or a `release` answers when the receipts at `positions` (in the slice it
    /// was given) were not current: `Ok` when there are none, else [`SourceError::Refused`]
    /// with the positions sorted and each once.
    ///
    /// # Errors
    ///
    /// [`SourceError::Refused`] when `positions` is not empty.
    ///
    /// # Example
    ///
    /// ```
    /// use nimbus_sources::SourceError;
    ///
    /// assert_eq!(SourceError::refusing(vec![]), Ok(()));
    /// assert_eq!(
    ///     SourceError::refusing(vec![3, 0, 3]),
    ///     Err(SourceError::Refused { positions: vec![0, 3] })
    /// );
    /// ```
    pub fn refusing(mut positions: Vec<usize>) -> Result<(), Self> {
        if positions.is_empty() {
            return Ok(());
        }
        positions.sort_unstable();
        positions.dedup();
        Err(Self::Refused { positions })
    }

    /// Whether retrying cannot help: a permanent broker error, or a closed source. A mapping
    /// stops on such an error; it retries every other one with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Broker {
                retry: Retry::Permanent,
                ..
            } | Self::Closed
        )
    }
}

/// Two errors are equal when they are the same kind with the same text; the sources are not
/// compared.
impl PartialEq for SourceError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Full { capacity: a }, Self::Full { capacity: b }) => a == b,
            (Self::TooLarge { size: a, limit: m }, Self::TooLarge { size: b, limit: n }) => {
                a == b && m == n
            }
            (Self::UnknownReceipt, Self::UnknownReceipt) | (Self::Closed, Self::Closed) => true,
            (
                Self::Broker {
                    retry: a,
                    message: m,
                    ..
                },
                Self::Broker {
                    retry: b,
                    message: n,
                    ..
                },
            ) => a == b && m == n,
            (Self::Invalid(a), Self::Invalid(b)) => a == b,
            (
                Self::Fenced {
                    lease: a,
                    detail: m,
                },
                Self::Fenced {
                    lease: b,
                    detail: n,
                },
            ) => a == b && m == n,
            (Self::Refused { positions: a }, Self::Refused { positions: b }) => a == b,
            _ => false,
        }
    }
}

impl Eq for SourceError {}

/// A handler that reads an object store or a queue can use `?` on what they answer.
impl From<SourceError> for nimbus_core::FunctionError {
    fn from(error: SourceError) -> Self {
        Self::from_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn broker_errors_keep_their_source_and_class() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = SourceError::broker(Retry::Transient, io);
        assert!(!error.is_permanent());
        assert_eq!(error.to_string(), "broker error: reset by peer");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("reset by peer")
        );
        assert!(SourceError::permanent("no such queue").is_permanent());
        assert!(SourceError::Closed.is_permanent());
    }
}
