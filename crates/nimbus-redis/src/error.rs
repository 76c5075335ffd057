//! Errors of the Redis adapters.

use nimbus_sources::SourceError;

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// From the Redis client (connection lost, refused, a command failed).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply the adapter did not expect.
    #[error("unexpected reply: {0}")]
    Reply(String),
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<RedisError> for SourceError {
    fn from(error: RedisError) -> Self {
        SourceError::transient(error.to_string())
    }
}
