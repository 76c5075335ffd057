//! Errors of the Redis adapters, and whether retrying them can help.

use nimbus_sources::{ConfigError, Retry, SourceError};

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// From the Redis client (connection lost, refused, a command failed). The display text
    /// carries the server's error code and message (`NOGROUP ...`, `WRONGPASS ...`).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply the adapter did not expect.
    #[error("unexpected reply: {0}")]
    Reply(String),
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
    /// An invalid setting, found before connecting.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Server error codes that retrying cannot fix: bad or missing credentials, missing
/// permissions, a stream or consumer group that does not exist (deleted behind the adapter's
/// back), a key of another type.
const PERMANENT_CODES: &[&str] = &["NOAUTH", "WRONGPASS", "NOPERM", "NOGROUP", "WRONGTYPE"];

impl RedisError {
    /// Whether retrying can help. Transient: the connection refused, dropped or timed out, and
    /// every server error not known to be permanent (`LOADING`, `BUSY`, `MASTERDOWN`, too many
    /// clients, ...). Permanent: authentication failed (`NOAUTH`, `WRONGPASS`), missing
    /// permissions (`NOPERM`), a missing stream or group (`NOGROUP`), `WRONGTYPE`, an invalid
    /// client configuration (a bad URL), and invalid settings.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Redis(error) => {
                let permanent = matches!(
                    error.kind(),
                    redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::InvalidClientConfig
                ) || error
                    .code()
                    .is_some_and(|code| PERMANENT_CODES.contains(&code));
                if permanent {
                    Retry::Permanent
                } else {
                    Retry::Transient
                }
            }
            Self::Reply(_) => Retry::Transient,
            Self::Config(_) | Self::TooLarge { .. } => Retry::Permanent,
        }
    }
}

impl From<RedisError> for SourceError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Config(e) => SourceError::Invalid(e.to_string()),
            RedisError::TooLarge { too_large, limit } => SourceError::TooLarge {
                size: too_large.first().map_or(0, |t| t.1),
                limit,
            },
            other => SourceError::broker(other.retry(), other),
        }
    }
}
