//! Connection and naming settings.

use std::time::Duration;

use nimbus_sources::queue_limits;
use nimbus_sources::ConfigError;

/// The scope named in configuration errors: `invalid postgres config: ...`.
const SCOPE: &str = "postgres";
/// Longest queue name: `<name>_queue_notify`, the longest object made from it, stays within
/// PostgreSQL's 63-byte identifiers.
const MAX_NAME_LEN: usize = 40;

/// Settings of the PostgreSQL adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A libpq-style connection string, e.g. `host=127.0.0.1 user=postgres dbname=test`.
    pub url: String,
    /// The queue's name: tables `<name>_queue` and `<name>_dead` (1 to 40 of `a-z 0-9 _`).
    pub name: String,
    /// How long a received message stays invisible (default 30 s, 1 ms..=12 h).
    pub visibility_timeout: Duration,
    /// Redrive to `<name>_dead` after this many receives (default none; 1..=1000).
    pub max_receive_count: Option<u32>,
    /// Largest message body a send accepts (1,024..=1,048,576 bytes, default 1 MiB, as SQS);
    /// a larger one is refused before it reaches the server.
    pub max_message_size: usize,
}

impl PostgresConfig {
    /// Settings for the queue `name` in the database at `url`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: None,
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

    /// Checks every field; the adapters call it when they connect.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(ConfigError::new(
                SCOPE,
                "name",
                &self.name,
                "1 to 40 of a-z 0-9 _",
            ));
        }
        queue_limits::check_visibility_timeout(SCOPE, self.visibility_timeout)?;
        queue_limits::check_max_message_size(SCOPE, self.max_message_size)?;
        if let Some(count) = self.max_receive_count {
            queue_limits::check_max_receive_count(SCOPE, count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PostgresConfig {
        PostgresConfig::new("host=127.0.0.1", "orders")
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_range() {
        assert_eq!(config().validate(), Ok(()));
        for bad in [
            Duration::ZERO,
            Duration::from_secs(12 * 3600 + 1),
            Duration::MAX,
        ] {
            let error = config()
                .with_visibility_timeout(bad)
                .validate()
                .unwrap_err();
            assert_eq!(
                (error.field, error.allowed.as_str()),
                ("visibility_timeout", "1ms..=12h")
            );
        }
        for bad in [0, 1001, u32::MAX] {
            let error = config().with_max_receive_count(bad).validate().unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("invalid postgres config: max_receive_count = {bad} is outside 1..=1000")
            );
        }
        for bad in ["", "Orders", "a-b", "a;drop", &"x".repeat(41)] {
            let error = PostgresConfig::new("", bad).validate().unwrap_err();
            assert_eq!(error.field, "name", "{bad:?}");
        }
        assert!(config()
            .with_visibility_timeout(Duration::from_secs(12 * 3600))
            .with_max_receive_count(1000)
            .validate()
            .is_ok());
    }
}
