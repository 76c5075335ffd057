//! Errors of the PostgreSQL adapters.

use nimbus_sources::SourceError;

/// An adapter error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// From the database (connection lost or refused, a statement failed).
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database answered in a way the adapter did not expect.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl From<PostgresError> for SourceError {
    fn from(error: PostgresError) -> Self {
        SourceError::transient(error.to_string())
    }
}
