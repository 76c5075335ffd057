//! Queue sources (SQS semantics): the [`QueueSource`] contract, [`Message`]s with receipts,
//! [`QueueStats`], and the in-memory [`InMemoryQueue`].
//!
//! The trait is the common core of SQS (`ReceiveMessage` with `WaitTimeSeconds`,
//! `DeleteMessageBatch`, `ChangeMessageVisibility`), Redis (`XREADGROUP BLOCK`, `XACK`,
//! `XAUTOCLAIM`), PostgreSQL (`SELECT ... FOR UPDATE SKIP LOCKED`, `DELETE`, `visible_at`)
//! and NATS JetStream (pull `fetch` with `expires`, `ack`, `nak` with delay): receive a batch
//! with a long poll, acknowledge a set, make one visible again after a delay. Redrive to a
//! dead-letter queue after `max_receive_count` is the queue's own business, as it is in SQS.
//! [`QueueSource`]'s documentation is the contract in full.

mod config;
pub mod limits;
mod memory;
mod message;
mod source;
mod stats;

pub use config::{Outgoing, QueueConfig, SendBatchError, SendError};
pub use memory::InMemoryQueue;
pub use message::{Attributes, Message, MessageId, Receipt};
pub use source::{QueueProducer, QueueSource};
pub use stats::QueueStats;
