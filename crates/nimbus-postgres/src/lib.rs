//! nimbus-postgres: PostgreSQL adapters for nimbus. A [`PostgresQueue`] on a table (receive
//! with `FOR UPDATE SKIP LOCKED`, visibility by a `visible_at` column, `LISTEN/NOTIFY` to wake
//! pollers, redrive to a dead-letter table after `max_receive_count`), and
//! [`PostgresCheckpoints`] / [`PostgresLeases`] tables. The schema is created by the embedded
//! migrations when an adapter connects.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use nimbus_postgres::{PostgresConfig, PostgresQueue};
//! use nimbus_sources::QueueSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = PostgresConfig::new("host=127.0.0.1 user=postgres dbname=test", "orders");
//! let queue = PostgresQueue::connect(config).await?;
//! queue.send(b"hello").await?;
//! let batch = queue.receive(10, Duration::from_secs(1)).await?;
//! queue.ack(&batch.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod db;
mod error;
mod queue;
mod store;

pub use config::PostgresConfig;
pub use error::PostgresError;
pub use queue::PostgresQueue;
pub use store::{PostgresCheckpoints, PostgresLeases};
