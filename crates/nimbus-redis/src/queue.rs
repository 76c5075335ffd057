//! A queue on a Redis Stream read by a consumer group: the [`RedisQueue`] and its side of the
//! [`QueueSource`] contract. Reading is in `reading.rs`, receipts and their scripts in
//! `receipt.rs`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::handler::hops;
use nimbus_sources::{Message, MessageId, QueueSource, QueueStats, Receipt, SourceError};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::Value;

use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::receipt::{delivery_of, Deliveries, Scripts};
use crate::stream::MAX_WAIT;

/// A queue with SQS semantics on a Redis Stream and a consumer group.
pub struct RedisQueue {
    pub(crate) config: RedisConfig,
    pub(crate) client: redis::Client,
    pub(crate) manager: ConnectionManager,
    /// Connections for blocking reads, which must not share a multiplexed connection.
    pub(crate) blocking: parking_lot::Mutex<Vec<MultiplexedConnection>>,
    /// When the next `XAUTOCLAIM` is due. Pending messages become claimable only after the
    /// visibility timeout, so scanning the pending list on every receive (as each poller of a
    /// busy mapping would) costs much and finds nothing.
    pub(crate) next_reclaim: parking_lot::Mutex<tokio::time::Instant>,
    /// Where the next `XAUTOCLAIM` scan starts: each call looks at a slice of the pending list
    /// and returns where to go on; `0-0` starts over.
    pub(crate) reclaim_cursor: parking_lot::Mutex<String>,
    pub(crate) group: String,
    pub(crate) consumer: String,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("key", &self.config.key)
            .finish_non_exhaustive()
    }
}

const GROUP: &str = "nimbus";

impl RedisQueue {
    /// Connects and creates the stream and its consumer group if needed.
    ///
    /// # Errors
    ///
    /// An invalid config ([`RedisError::Config`]: `visibility_timeout` outside 1ms..=12h,
    /// `max_receive_count` outside 1..=1000), or the server cannot be reached, or refuses the
    /// group.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())?;
        let mut manager = client
            .get_connection_manager_with_config(crate::config::shared())
            .await?;
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&config.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut manager)
            .await;
        if let Err(e) = created {
            if !e.to_string().contains("BUSYGROUP") {
                return Err(e.into());
            }
        }
        Ok(Self {
            consumer: format!("nimbus-{:016x}", fastrand::u64(..)),
            group: GROUP.to_owned(),
            client,
            manager,
            blocking: parking_lot::Mutex::new(Vec::new()),
            next_reclaim: parking_lot::Mutex::new(tokio::time::Instant::now()),
            reclaim_cursor: parking_lot::Mutex::new("0-0".to_owned()),
            scripts: Scripts::new(),
            config,
        })
    }

    /// The settings the queue was connected with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Sends a message; returns its id.
    ///
    /// # Errors
    ///
    /// [`RedisError::TooLarge`] for a body above `max_message_size` (nothing is sent); a
    /// Redis error.
    pub async fn send(&self, body: Bytes) -> Result<MessageId, RedisError> {
        let limit = self.config.max_message_size;
        if body.len() > limit {
            return Err(RedisError::TooLarge {
                too_large: vec![(0, body.len())],
                limit,
            });
        }
        let mut con = self.manager.clone();
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.config.key)
            .arg("*")
            .arg("b")
            .arg(body.as_ref());
        // Sent by an invocation: the hop count of its work, for recursive loop detection.
        if let Some(hops) = hops::outgoing() {
            xadd.arg(hops::ATTRIBUTE).arg(hops);
        }
        let id: String = xadd.query_async(&mut con).await?;
        Ok(MessageId::text(&id))
    }

    /// Messages in the dead-letter stream (`<key>:dlq`): redriven after too many receives, or
    /// moved there at once for having no body field.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn dead_letters(&self) -> Result<u64, RedisError> {
        let mut con = self.manager.clone();
        Ok(redis::cmd("XLEN")
            .arg(self.dlq())
            .query_async(&mut con)
            .await?)
    }

    /// Counts from the server, in one round trip: `in_flight` = entries delivered and not
    /// acknowledged (the group's pending list, which holds messages waiting for a
    /// `retry_later` delay too), `visible` = the other entries of the stream (acknowledged and
    /// dead-lettered entries are deleted from it), `dead_lettered` = entries of `<key>:dlq`.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn queue_stats(&self) -> Result<QueueStats, RedisError> {
        let mut con = self.manager.clone();
        let (length, pending, dead): (u64, Value, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(&self.config.key)
            .cmd("XPENDING")
            .arg(&self.config.key)
            .arg(&self.group)
            .cmd("XLEN")
            .arg(self.dlq())
            .query_async(&mut con)
            .await?;
        // The summary form: [count, smallest id, greatest id, consumers].
        let in_flight = match pending {
            Value::Array(summary) => match summary.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        };
        let mut stats = QueueStats::default();
        stats.visible = length.saturating_sub(in_flight);
        stats.in_flight = in_flight;
        stats.dead_lettered = dead;
        Ok(stats)
    }

    pub(crate) fn visibility_millis(&self) -> u64 {
        u64::try_from(self.config.visibility_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn dlq(&self) -> String {
        format!("{}:dlq", self.config.key)
    }

    /// The hash of receives handed back uncounted, per entry id (see `receipt.rs`).
    pub(crate) fn released(&self) -> String {
        format!("{}:released", self.config.key)
    }
}

#[async_trait]
impl QueueSource for RedisQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let give_up = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            if self.reclaim_due() {
                let reclaimed = self.reclaim(max).await?;
                if !reclaimed.is_empty() {
                    return Ok(reclaimed);
                }
            }
            let now = tokio::time::Instant::now();
            let left = give_up.saturating_duration_since(now);
            if left.is_zero() {
                // One non-blocking look for new messages.
                let fresh = self.read_new(max, Duration::from_millis(1)).await?;
                return Ok(fresh);
            }
            // Block for new messages, but not past the visibility timeout, so that messages
            // whose consumer died are reclaimed in time.
            let until_reclaim = self.next_reclaim.lock().saturating_duration_since(now);
            let fresh = self
                .read_new(max, left.min(until_reclaim.max(Duration::from_millis(1))))
                .await?;
            if !fresh.is_empty() {
                return Ok(fresh);
            }
        }
    }

    /// Deletes each current delivery (`XACK` + `XDEL`, in one script): still pending with the
    /// delivery count its receipt names and idle for less than the visibility timeout on the
    /// server's clock. A receipt whose timeout passed deletes nothing, even before another
    /// receive reclaimed its message.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let deliveries = Deliveries::of(receipts);
        if deliveries.is_empty() {
            return SourceError::refusing((0..receipts.len()).collect());
        }
        let mut con = self.manager.clone();
        let done: Vec<i64> = self
            .scripts
            .ack
            .key(&self.config.key)
            .key(self.released())
            .arg(&self.group)
            .arg(self.visibility_millis())
            .arg(
                deliveries
                    .range
                    .as_ref()
                    .map_or(("", ""), |(lo, hi)| (lo, hi)),
            )
            .arg(&deliveries.args)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        SourceError::refusing(deliveries.refused(&done))
    }

    /// Visible again at once, the receive not counted: one script sets each message's idle
    /// time to the visibility timeout (`XCLAIM ... IDLE`) and counts the receive handed back
    /// in `<key>:released`, so the next reclaim scan, which this queue runs at once, delivers
    /// it again reporting the receive count it had (with a new receipt: the group's delivery
    /// count still grows, and names the delivery). Other processes of the queue find it on their
    /// next scan (within a second). Receipts that are not current (acknowledged, expired, or
    /// delivered again since, here or in another process) are left alone and reported as
    /// [`SourceError::Refused`].
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let deliveries = Deliveries::of(receipts);
        if deliveries.is_empty() {
            return SourceError::refusing((0..receipts.len()).collect());
        }
        let mut con = self.manager.clone();
        let done: Vec<i64> = self
            .scripts
            .release
            .key(&self.config.key)
            .key(self.released())
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.visibility_millis())
            .arg(&deliveries.args)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        if done.contains(&1) {
            // Scan the pending list from its start at the next receive.
            *self.reclaim_cursor.lock() = "0-0".to_owned();
            *self.next_reclaim.lock() = tokio::time::Instant::now();
        }
        SourceError::refusing(deliveries.refused(&done))
    }

    /// Visible again once `delay` has passed: the message's idle time is set to the
    /// visibility timeout less the delay, so the reclaim scan takes it then, and a reclaim is
    /// scheduled for that moment. The receive counts. A delay longer than the visibility
    /// timeout is cut to it (Redis cannot make an entry less idle than just delivered).
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        let (id, count) = delivery_of(receipt).ok_or(SourceError::UnknownReceipt)?;
        let delay = delay.min(self.config.visibility_timeout);
        let idle = self.config.visibility_timeout.saturating_sub(delay);
        let mut con = self.manager.clone();
        let done: i64 = self
            .scripts
            .retry_later
            .key(&self.config.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.visibility_millis())
            .arg(id)
            .arg(count)
            .arg(idle.as_millis() as u64)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        if done == 0 {
            return Err(SourceError::UnknownReceipt);
        }
        // Look for it when it is due, not only at the next regular scan. (The delay is at
        // most the visibility timeout, 12 h at most.)
        let due = tokio::time::Instant::now() + delay;
        let mut next = self.next_reclaim.lock();
        *next = (*next).min(due);
        Ok(())
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(self.config.visibility_timeout)
    }

    /// Asks the server (see [`RedisQueue::queue_stats`]).
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        Ok(Some(self.queue_stats().await?))
    }
}

#[async_trait]
impl nimbus_sources::QueueProducer for RedisQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        Ok(self.send(body).await?)
    }
}
