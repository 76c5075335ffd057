//! Errors of the NATS adapter: one enum, each broker failure tagged with the operation it broke.

use nimbus_sources::{ConfigError, SourceError};

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// An invalid setting, found before connecting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not be reached (refused, unknown host, TLS or authentication failed).
    #[error("nats connect: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// A JetStream request failed: the connection is down, the server refused it, or did not
    /// answer in time.
    #[error("nats {operation}: {source}")]
    Broker {
        /// What the adapter was doing (`publish`, `fetch`, `create stream`, ...).
        operation: &'static str,
        /// The client's error.
        source: async_nats::Error,
    },
    /// The stream, consumer or dead-letter stream does not exist, and `create_if_missing` is
    /// off; or it exists with settings the adapter cannot work with.
    #[error("nats setup: {0}")]
    Setup(String),
}

impl NatsError {
    /// A closure tagging a client error with `operation`, for `map_err`.
    pub(crate) fn broker<E: Into<async_nats::Error>>(
        operation: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |source| Self::Broker {
            operation,
            source: source.into(),
        }
    }
}

impl From<NatsError> for SourceError {
    fn from(error: NatsError) -> Self {
        match error {
            NatsError::Config(e) => SourceError::Invalid(e.to_string()),
            other => SourceError::transient(other.to_string()),
        }
    }
}
