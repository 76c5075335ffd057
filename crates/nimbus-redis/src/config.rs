//! Connection and naming settings.

use std::time::Duration;

/// Settings of the Redis adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Prefix of every key the adapter uses (a queue's stream, a stream's shards, ...).
    pub key: String,
    /// How long a received queue message stays invisible (default 30 s).
    pub visibility_timeout: Duration,
    /// Redrive to `<key>:dlq` after this many receives (default none).
    pub max_receive_count: Option<u32>,
    /// Shards of a [`crate::RedisStream`] (default 1).
    pub shards: usize,
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

    /// Sets the number of stream shards.
    #[must_use]
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
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
