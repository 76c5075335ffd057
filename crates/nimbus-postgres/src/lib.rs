//! nimbus-postgres: PostgreSQL adapters for nimbus. A [`PostgresQueue`] on a table (receive
//! with `FOR UPDATE SKIP LOCKED`, visibility by a `visible_at` column, `LISTEN/NOTIFY` to wake
//! pollers, redrive to a dead-letter table after `max_receive_count`), and a
//! [`PostgresStreamStore`] of stream leases and checkpoints (a checkpoint write checks its
//! writer's lease in the same statement). The schema is created by the embedded migrations
//! when an adapter connects.
//!
//! # Wire format
//!
//! Any client can produce to the queue with a plain `INSERT`. For a [`PostgresConfig`] named
//! `<name>` the migration creates (if missing; idempotent, under an advisory lock):
//!
//! - the table `<name>_queue`, one row per message:
//!   - `id BIGSERIAL PRIMARY KEY`: the message id;
//!   - `body BYTEA NOT NULL`: the body (any bytes; a row without one is refused by the server,
//!     so a malformed message cannot be written);
//!   - `receive_count INT NOT NULL DEFAULT 0`: receives so far;
//!   - `sent_at TIMESTAMPTZ NOT NULL DEFAULT now()`: the send time;
//!   - `visible_at TIMESTAMPTZ NOT NULL DEFAULT now()`: when it may be received (a later value
//!     delays it; while received, the end of its visibility timeout);
//!   - `receipt BIGINT NOT NULL DEFAULT 0`: the nonce of the current receive, which its
//!     receipt must match (0: none);
//!   - `hops INT` (nullable, added to older tables): the hop count of a message sent from
//!     inside an invocation, read back as the `nimbus-hops` attribute (recursive loop
//!     detection);
//!
//!   and the index `<name>_queue_visible` on `(visible_at, id)`;
//! - the trigger `<name>_queue_notify`, `AFTER INSERT ... FOR EACH STATEMENT`, calling the
//!   function `<name>_queue_notify()`, which runs `pg_notify('<name>_queue', '')`: every
//!   adapter `LISTEN`s on the channel `<name>_queue`, so a row inserted by any client wakes
//!   the waiting pollers at once (one notification per statement);
//! - the dead-letter table `<name>_dead` (`id`, `body`, `receive_count`, `sent_at`, `dead_at`,
//!   `hops`),
//!   where a message goes, in one statement with its deletion from the queue, when a receive
//!   finds it over `max_receive_count`;
//! - the shared tables `nimbus_checkpoints (mapping, shard, value)` and `nimbus_leases (key,
//!   owner, expires, counter)`: a checkpoint's `value` is text that sorts, under the `C`
//!   collation, as checkpoints do (a sequence number of up to 39 digits zero-padded to 39, a
//!   longer one as `:`, its digit count in three digits and the digits, `~` for a finished
//!   shard); a lease's `counter` rises with every change of owner.
//!
//! ```text
//! psql -c "INSERT INTO orders_queue (body) VALUES (convert_to('{\"order\":42}', 'UTF8'))"
//! psql -c "INSERT INTO orders_queue (body, visible_at) VALUES ('hello', now() + interval '5 minutes')"
//! psql -c "INSERT INTO orders_queue (body) VALUES (NULL)"   # refused: null value in column "body"
//! ```
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
mod receipt;
mod store;

pub use config::PostgresConfig;
pub use error::PostgresError;
pub use queue::PostgresQueue;
pub use store::PostgresStreamStore;
