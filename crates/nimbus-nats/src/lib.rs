//! nimbus-nats: a NATS JetStream queue source for nimbus. A [`NatsQueue`] is a stream with
//! work-queue retention read by one durable pull consumer with explicit acks, which every process
//! of the queue shares, so that they compete for its messages as SQS consumers do.
//!
//! How SQS semantics map onto JetStream:
//!
//! | SQS / nimbus | JetStream |
//! |---|---|
//! | `ReceiveMessage` with `WaitTimeSeconds` | one pull request, `no_wait` with `expires` = the wait: answered at once with what is there, else held until a message comes or it expires |
//! | `DeleteMessage` ([`QueueSource::ack`](nimbus_sources::QueueSource::ack)) | `+ACK`, sent as a request so the server confirms it before `ack` returns; the work-queue stream then deletes the message |
//! | `ChangeMessageVisibility` ([`retry_later`](nimbus_sources::QueueSource::retry_later)) | `-NAK {"delay":<ns>}` (plain `-NAK` for no delay) |
//! | visibility timeout | the consumer's `ack_wait` |
//! | message id, receive count, sent time | stream sequence, delivery count, stored time, all read from the delivery's reply subject |
//! | receipt handle | the reply subject (`$JS.ACK.<stream>.<consumer>...`) and when the delivery arrived: past `ack_wait`, or while a later delivery this process received runs, the adapter refuses it, since JetStream would still honour it |
//! | redrive after `maxReceiveCount` | the adapter publishes the message to a dead-letter subject, captured by a `<stream>_dead` stream, then terminates it (`+TERM`) |
//!
//! JetStream itself only *announces* a message that reached the consumer's `max_deliver` (an
//! advisory) and then stops delivering it; nothing moves it anywhere. So the consumer delivers
//! without limit and the adapter redrives: a delivery whose count exceeds `max_receive_count`
//! is published to the dead-letter subject (with the original's stream, subject, sequence and
//! receive count in `Nimbus-Dead-Letter-*` headers, see [`dead_letter_headers`]), stored, and
//! only then terminated, and it is not returned to the caller. A redrive interrupted between the
//! two steps is repeated on the next delivery, and the dead-letter stream's duplicate window
//! (keyed by the original's stream and sequence) keeps the copy single.
//!
//! The client reconnects by itself after a connection drops; meanwhile receives and acks fail
//! with [`SourceError::Broker`](nimbus_sources::SourceError::Broker), which a mapping retries
//! with backoff, and an answer lost with the connection is given up on after
//! [`NatsConfig::request_timeout`]. Messages received but not acknowledged come back after
//! `ack_wait`: nothing is lost, some may be handled twice (at least once, as SQS).
//!
//! JetStream servers from before a 2024 fix (nats-server pull request 5305; the 2.9 servers
//! have the bug) may send a message again with delivery count 1 while a redelivery of it is
//! held, after a delivery to a pull request that had ended. The adapter leaves such a copy out
//! while the held delivery's `ack_wait` runs, unless that delivery was let go with
//! `retry_later` (the copy stays pending on the server, so nothing is lost), and while it
//! remembers a message's last delivery it reports no lower receive count than that one's. The
//! guard is per process: a copy another process pulls is handed out there.
//!
//! # Wire format
//!
//! Any NATS client can produce to the queue: a message is the payload of a publish to the
//! queue's subject, which its stream captures. For a [`NatsConfig`]:
//!
//! - the stream `<stream>` (work-queue retention) captures `<subject>` (default: the stream's
//!   name); the durable pull consumer `<consumer>` (default `nimbus`, explicit acks,
//!   `ack_wait` = the visibility timeout) is shared by every process of the queue;
//! - a message's body is the payload as published, byte for byte (one published by
//!   [`NatsQueue::send`] from inside an invocation has the header `nimbus-hops`, its work's hop
//!   count for recursive loop detection); its headers are its attributes (the first value of
//!   each), except the server's `Nats-*` headers and the
//!   adapter's own [`release_headers`]; its id is its stream sequence, its send time the time
//!   the stream stored it, its receive count JetStream's delivery count. No header is required;
//! - a released message is stored again with the [`release_headers`] `Nimbus-Receive-Base`,
//!   `Nimbus-Message-Id` and `Nimbus-Sent-At` (see below), which keep its receive count, id
//!   and send time;
//! - redriven messages are published to `<subject>.dead` (or the configured dead-letter
//!   subject), captured by the stream `<stream>_dead`, with the original's headers plus the
//!   [`dead_letter_headers`] `Nimbus-Dead-Letter-Stream`, `Nimbus-Dead-Letter-Subject`,
//!   `Nimbus-Dead-Letter-Sequence` and `Nimbus-Receive-Count`.
//!
//! ```text
//! nats pub orders.new '{"order":42}' -H kind:order     # body {"order":42}, attribute kind=order
//! nats stream view ORDERS_dead                         # the dead letters
//! ```
//!
//! (A plain core publish is stored as [`NatsQueue::send`]'s JetStream publish is; the latter
//! also waits for the stream's acknowledgement.)
//!
//! # Release
//!
//! JetStream's delivery count cannot be decremented, so
//! [`release`](nimbus_sources::QueueSource::release) stores a copy of the message carrying the
//! receives counted so far (`Nimbus-Receive-Base`) and then acknowledges the delivery; receives
//! report that base plus the copy's delivery count, and redrive on it. The count travels with
//! the message, so this holds across processes and restarts. A released message goes to the
//! back of the queue, and keeps its id (`Nimbus-Message-Id`). If the acknowledgement fails after
//! the copy was stored, the original comes back after `ack_wait` too: one duplicate, never a
//! loss.
//!
//! Tested against a real server (`NIMBUS_NATS_URL`, default `nats://127.0.0.1:4222`, with
//! JetStream enabled, 2.9 or later): the queue conformance kit, redrive, receipts, stats, the
//! in-flight limit, a mapping end to end, and a connection cut in the middle of a mapping's run.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use nimbus_nats::{NatsConfig, NatsQueue};
//! use nimbus_sources::QueueSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NatsConfig::new("nats://127.0.0.1:4222", "ORDERS")
//!     .with_subject("orders.new")
//!     .with_ack_wait(Duration::from_secs(60))
//!     .with_max_receive_count(5);
//! let queue = NatsQueue::connect(config).await?;
//! queue.send("hello".into()).await?;
//! let batch = queue.receive(10, Duration::from_secs(1)).await?;
//! queue.ack(&batch.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod delivery;
mod error;
mod queue;
mod receipt;
mod receive;
mod redrive;
mod release;
mod setup;
mod superseded;

pub use config::NatsConfig;
pub use error::NatsError;
pub use queue::NatsQueue;
pub use redrive::dead_letter_headers;
pub use release::release_headers;
