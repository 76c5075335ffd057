//! Errors of the NATS adapter: one enum, each broker failure tagged with the operation it broke.

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::ConnectErrorKind;
use nimbus_sources::{ConfigError, Retry, SourceError};

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// An invalid setting, found before connecting.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Messages above the queue's `max_message_size`, refused before anything was sent
    /// (retrying will not help): the place in the batch (0 for a single send) and the size of
    /// each. Converts to [`SourceError::TooLarge`].
    #[error("{} message(s) above the limit of {limit} bytes (first: {} bytes at {})", too_large.len(), too_large[0].1, too_large[0].0)]
    TooLarge {
        /// (place in the batch, size in bytes) of each message refused.
        too_large: Vec<(usize, usize)>,
        /// The queue's `max_message_size`.
        limit: usize,
    },
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

impl NatsError {
    /// Whether retrying can help. Permanent: invalid settings, setup that cannot be done
    /// ([`NatsError::Setup`]), authentication or authorization refused, an unparsable server
    /// address or a TLS setup error, and the stream or consumer not found (JetStream error
    /// codes 10059 and 10014: deleted behind the adapter's back). Transient: everything else
    /// (refused or dropped connections, timeouts, no responders while the server restarts).
    pub fn retry(&self) -> Retry {
        let permanent = match self {
            Self::Config(_) | Self::Setup(_) | Self::TooLarge { .. } => true,
            Self::Connect(error) => matches!(
                error.kind(),
                ConnectErrorKind::Authentication
                    | ConnectErrorKind::AuthorizationViolation
                    | ConnectErrorKind::ServerParse
                    | ConnectErrorKind::Tls
            ),
            Self::Broker { source, .. } => not_found(source.as_ref()),
        };
        if permanent {
            Retry::Permanent
        } else {
            Retry::Transient
        }
    }
}

/// Whether an error (or one of its causes) says the stream or the consumer does not exist.
fn not_found(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(info) =
            error.downcast_ref::<async_nats::jetstream::context::ConsumerInfoError>()
        {
            if matches!(
                info.kind(),
                ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
            ) {
                return true;
            }
        }
        if let Some(js) = error.downcast_ref::<async_nats::jetstream::Error>() {
            if matches!(
                js.error_code(),
                ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND
            ) {
                return true;
            }
        }
        next = error.source();
    }
    false
}

impl From<NatsError> for SourceError {
    fn from(error: NatsError) -> Self {
        match error {
            NatsError::Config(e) => SourceError::Invalid(e.to_string()),
            NatsError::TooLarge { too_large, limit } => SourceError::TooLarge {
                size: too_large.first().map_or(0, |t| t.1),
                limit,
            },
            other => SourceError::broker(other.retry(), other),
        }
    }
}
