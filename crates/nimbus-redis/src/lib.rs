//! nimbus-redis: Redis adapters for nimbus. A [`RedisQueue`] (a Redis Stream read by a
//! consumer group: `XREADGROUP BLOCK` wakes pollers, `XACK` + `XDEL` delete, `XAUTOCLAIM`
//! reclaims messages whose consumer died, after the visibility timeout, and redrives them to a
//! dead-letter stream after `max_receive_count`), a [`RedisStream`] (one Redis Stream per shard,
//! read by position), and [`RedisCheckpoints`] / [`RedisLeases`] (atomic via Lua), so that
//! several processes share queues, shards, checkpoints and leases.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use nimbus_redis::{RedisConfig, RedisQueue};
//! use nimbus_sources::QueueSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = RedisQueue::connect(RedisConfig::new("redis://127.0.0.1:6379", "orders")).await?;
//! queue.send("hello".into()).await?;
//! let batch = queue.receive(10, Duration::from_secs(1)).await?;
//! queue.ack(&batch.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod fields;
mod queue;
mod store;
mod stream;

pub use config::RedisConfig;
pub use error::RedisError;
pub use queue::RedisQueue;
pub use store::{RedisCheckpoints, RedisLeases};
pub use stream::RedisStream;
