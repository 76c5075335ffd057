//! Errors of the PostgreSQL adapters, with the server's own message, and whether retrying
//! them can help.

use nimbus_sources::{ConfigError, Retry, SourceError};

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// From the database (connection lost or refused, a statement failed). The display text
    /// carries the server's message, detail and SQLSTATE code when the server sent one
    /// (`postgres: relation "orders_queue" does not exist (SQLSTATE 42P01)`), not just the
    /// client's "db error".
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
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
    /// The database answered in a way the adapter did not expect.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// The server's message, detail and code, else the client's own text (with its cause: an
/// I/O error says "connection refused").
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        text.push_str(&format!(" (SQLSTATE {})", db.code().code()));
        return text;
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// SQLSTATE classes that retrying cannot fix: `28` invalid authorization (bad password, no
/// such role), `3D` no such database, `3F` no such schema, `42` syntax or access rule
/// violation (`42P01` no such table, `42501` insufficient privilege), `0A` feature not
/// supported.
const PERMANENT_CLASSES: &[&str] = &["28", "3D", "3F", "42", "0A"];

impl PostgresError {
    /// Whether retrying can help. Permanent: the SQLSTATE classes above, an invalid
    /// connection string, invalid settings. Transient: everything else (connection refused,
    /// reset or closed, timeouts, `08` connection exceptions, `53` insufficient resources,
    /// `57P01` admin shutdown, `40001` serialization failures, ...).
    pub fn retry(&self) -> Retry {
        match self {
            Self::Postgres(error) => {
                let permanent = match error.as_db_error() {
                    Some(db) => {
                        PERMANENT_CLASSES.contains(&db.code().code().get(..2).unwrap_or(""))
                    }
                    // The client refuses a connection string it cannot parse.
                    None => error.to_string().starts_with("invalid configuration"),
                };
                if permanent {
                    Retry::Permanent
                } else {
                    Retry::Transient
                }
            }
            Self::Config(_) | Self::TooLarge { .. } => Retry::Permanent,
            Self::Unexpected(_) => Retry::Transient,
        }
    }
}

impl From<PostgresError> for SourceError {
    fn from(error: PostgresError) -> Self {
        match error {
            PostgresError::Config(e) => SourceError::Invalid(e.to_string()),
            PostgresError::TooLarge { too_large, limit } => SourceError::TooLarge {
                size: too_large.first().map_or(0, |t| t.1),
                limit,
            },
            other => SourceError::broker(other.retry(), other),
        }
    }
}
