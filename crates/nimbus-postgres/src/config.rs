//! Connection and naming settings.

use std::time::Duration;

/// Settings of the PostgreSQL adapters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A libpq-style connection string, e.g. `host=127.0.0.1 user=postgres dbname=test`.
    pub url: String,
    /// The queue's name: tables `<name>_queue` and `<name>_dead` (letters, digits, `_`).
    pub name: String,
    /// How long a received message stays invisible (default 30 s).
    pub visibility_timeout: Duration,
    /// Redrive to `<name>_dead` after this many receives (default none).
    pub max_receive_count: Option<u32>,
}

impl PostgresConfig {
    /// Settings for the queue `name` in the database at `url`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: None,
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

    pub(crate) fn validate(&self) -> Result<(), crate::PostgresError> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(crate::PostgresError::Config(format!(
                "name = {:?} must be 1 to 40 of [a-z0-9_]",
                self.name
            )));
        }
        if self.visibility_timeout.is_zero() {
            return Err(crate::PostgresError::Config(
                "visibility_timeout must be above 0".into(),
            ));
        }
        Ok(())
    }
}
