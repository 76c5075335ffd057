//! Connection and naming settings.

use std::time::Duration;

use nimbus_sources::queue_limits;
use nimbus_sources::ConfigError;

/// The scope named in configuration errors: `invalid redis config: ...`.
const SCOPE: &str = "redis";
/// Bounds of `shards`.
const MAX_SHARDS: usize = 1024;

/// Settings of the Redis adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key the adapter uses (a queue's stream, a stream's shards, ...).
    pub key: String,
    /// How long a received queue message stays invisible (default 30 s, 1 ms..=12 h).
    pub visibility_timeout: Duration,
    /// Redrive to `<key>:dlq` after this many receives (default none; 1..=1000).
    pub max_receive_count: Option<u32>,
    /// Shards of a [`crate::RedisStream`] (default 1; 1..=1024).
    pub shards: usize,
    /// Largest message body a send accepts (1,024..=1,048,576 bytes, default 1 MiB, as SQS);
    /// a larger one is refused before it reaches the server.
    pub max_message_size: usize,
}

impl RedisConfig {
    /// Settings for keys under `key` on the server at `url`.
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: key.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: None,
            shards: 1,
            max_message_size: queue_limits::MAX_MESSAGE_SIZE,
        }
    }

    /// Sets the visibility timeout.
    #[must_use]
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Redrives after this many receives.
    #[must_use]
    pub fn with_max_receive_count(mut self, count: u32) -> Self {
        self.max_receive_count = Some(count);
        self
    }

    /// Sets the largest message a send accepts.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the number of stream shards.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }
}

impl RedisConfig {
    /// Checks every field; the adapters call it when they connect.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key.is_empty() {
            return Err(ConfigError::new(SCOPE, "key", &self.key, "a non-empty key"));
        }
        queue_limits::check_visibility_timeout(SCOPE, self.visibility_timeout)?;
        if let Some(count) = self.max_receive_count {
            queue_limits::check_max_receive_count(SCOPE, count)?;
        }
        queue_limits::check_max_message_size(SCOPE, self.max_message_size)?;
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(ConfigError::new(SCOPE, "shards", self.shards, "1..=1024"));
        }
        Ok(())
    }
}

/// Settings of connections used for blocking reads (`XREADGROUP BLOCK`, `XREAD BLOCK`): no
/// response timeout, since the server answers only when the block ends.
pub(crate) fn blocking() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new().set_response_timeout(None)
}

/// Settings of the shared (multiplexed, reconnecting) connections: a 5 s response timeout
/// instead of redis-rs's 500 ms, which a busy host on two cores exceeds, turning acks that
/// succeeded into errors (and their messages into duplicates).
pub(crate) fn shared() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedisConfig {
        RedisConfig::new("redis://127.0.0.1:6379", "orders")
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_range() {
        assert_eq!(config().validate(), Ok(()));
        let error = config()
            .with_visibility_timeout(Duration::MAX)
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "visibility_timeout");
        assert_eq!(error.allowed, "1ms..=12h");
        assert_eq!(
            config()
                .with_visibility_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .field,
            "visibility_timeout"
        );
        for bad in [0, 1001, u32::MAX] {
            let error = config().with_max_receive_count(bad).validate().unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("invalid redis config: max_receive_count = {bad} is outside 1..=1000")
            );
        }
        assert_eq!(
            config().with_shards(0).validate().unwrap_err().field,
            "shards"
        );
        assert_eq!(
            config().with_shards(1025).validate().unwrap_err().field,
            "shards"
        );
        assert_eq!(
            RedisConfig::new("redis://x", "")
                .validate()
                .unwrap_err()
                .field,
            "key"
        );
        assert!(config()
            .with_visibility_timeout(Duration::from_secs(12 * 3600))
            .with_max_receive_count(1000)
            .with_shards(1024)
            .validate()
            .is_ok());
    }
}
