//! A queue on a Redis Stream read by a consumer group.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_sources::{
    Attributes, Message, MessageId, QueueSource, QueueStats, Receipt, SourceError,
};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::Value;

use crate::config::RedisConfig;
use crate::error::RedisError;
use crate::fields::{queue_body, Fields};
use crate::stream::{block_millis, entries, parse_id, MAX_WAIT};

/// Hands received messages back without counting the receive: for each id still pending for
/// this consumer, one fewer delivery (`RETRYCOUNT`), and idle for the visibility timeout
/// (`IDLE`), so that the next `XAUTOCLAIM` takes it at once and counts that delivery again.
/// Only the delivery a receipt names is taken back: the entry must be pending for this
/// consumer with the delivery count the receipt was made with (else it is stale).
/// KEYS[1] = the stream; ARGV = group, consumer, idle ms, then id and count pairs. Returns how
/// many it released.
const RELEASE: &str = r"
local group, consumer, idle = ARGV[1], ARGV[2], ARGV[3]
local released = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local entry = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  if entry and entry[2] == consumer and tonumber(entry[4]) == tonumber(ARGV[i + 1]) then
    local count = tonumber(entry[4]) - 1
    if count < 0 then count = 0 end
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', idle, 'RETRYCOUNT', count, 'JUSTID')
    released = released + 1
  end
end
return released
";

/// A queue with SQS semantics on a Redis Stream and a consumer group.
pub struct RedisQueue {
    config: RedisConfig,
    client: redis::Client,
    manager: ConnectionManager,
    /// Connections for blocking reads, which must not share a multiplexed connection.
    blocking: parking_lot::Mutex<Vec<MultiplexedConnection>>,
    /// When the next `XAUTOCLAIM` is due. Pending messages become claimable only after the
    /// visibility timeout, so scanning the pending list on every receive (as each poller of a
    /// busy mapping would) costs much and finds nothing.
    next_reclaim: parking_lot::Mutex<tokio::time::Instant>,
    /// Where the next `XAUTOCLAIM` scan starts: each call looks at a slice of the pending list
    /// and returns where to go on; `0-0` starts over.
    reclaim_cursor: parking_lot::Mutex<String>,
    group: String,
    consumer: String,
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
            config,
        })
    }

    /// Sends a message; returns its id.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn send(&self, body: Bytes) -> Result<MessageId, RedisError> {
        let mut con = self.manager.clone();
        let id: String = redis::cmd("XADD")
            .arg(&self.config.key)
            .arg("*")
            .arg("b")
            .arg(body.as_ref())
            .query_async(&mut con)
            .await?;
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

    fn dlq(&self) -> String {
        format!("{}:dlq", self.config.key)
    }

    /// How often pending messages are looked at: a tenth of the visibility timeout, within
    /// 10 ms..=1 s, so a message whose consumer died returns soon after its timeout.
    fn reclaim_every(&self) -> Duration {
        (self.config.visibility_timeout / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Takes the next reclaim slot if it is due (one poller at a time does the scan).
    fn reclaim_due(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut next = self.next_reclaim.lock();
        if now < *next {
            return false;
        }
        *next = now + self.reclaim_every();
        true
    }

    /// Claims messages idle longer than the visibility timeout (their consumer did not
    /// acknowledge them in time, or died), redriving those over the receive limit.
    async fn reclaim(&self, max: usize) -> Result<Vec<Message>, RedisError> {
        let mut con = self.manager.clone();
        let start = self.reclaim_cursor.lock().clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.config.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.config.visibility_timeout.as_millis() as u64)
            .arg(start)
            .arg("COUNT")
            .arg(max)
            .query_async(&mut con)
            .await?;
        let claimed = match &reply {
            Value::Array(parts) if parts.len() >= 2 => entries(&parts[1]),
            _ => Vec::new(),
        };
        let cursor = match &reply {
            Value::Array(parts) => parts.first().and_then(|c| match c {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                Value::SimpleString(text) => Some(text.clone()),
                _ => None,
            }),
            _ => None,
        }
        .unwrap_or_else(|| "0-0".to_owned());
        if claimed.len() >= max || cursor != "0-0" {
            // A full batch, or the scan is not through the pending list: go on at once.
            *self.next_reclaim.lock() = tokio::time::Instant::now();
        }
        *self.reclaim_cursor.lock() = cursor;
        let mut messages = Vec::new();
        let mut dead = Vec::new();
        for (id, fields) in claimed {
            let count = self.delivery_count(&id).await?;
            if let Some(max) = self.config.max_receive_count.filter(|max| count > *max) {
                let reason = format!("received {count} times, over max_receive_count = {max}");
                dead.push((id, fields, reason));
                continue;
            }
            match queue_body(fields) {
                Ok((body, attributes)) => messages.push(self.message(&id, body, attributes, count)),
                Err((fields, reason)) => dead.push((id, fields, reason)),
            }
        }
        // A failed move leaves those entries pending, to be tried again at a later scan; the
        // messages claimed with them are returned meanwhile.
        if let Err(error) = self.dead_letter(dead).await {
            if messages.is_empty() {
                return Err(error);
            }
            tracing::warn!(%error, "redis dead-letter move failed; retried at a later scan");
        }
        Ok(messages)
    }

    /// Moves entries to the dead-letter stream, each in one transaction with its removal from
    /// the queue: the entry's own fields, then `id` (its id in the queue) and `reason`.
    async fn dead_letter(&self, dead: Vec<(String, Fields, String)>) -> Result<(), RedisError> {
        if dead.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, fields, reason) in &dead {
            tracing::warn!(key = %self.config.key, %id, %reason, "redis message dead-lettered");
            let add = pipe.cmd("XADD").arg(self.dlq()).arg("*");
            for (name, value) in fields {
                add.arg(name).arg(value.as_slice());
            }
            add.arg("id").arg(id).arg("reason").arg(reason).ignore();
            pipe.cmd("XACK")
                .arg(&self.config.key)
                .arg(&self.group)
                .arg(id)
                .ignore();
            pipe.cmd("XDEL").arg(&self.config.key).arg(id).ignore();
        }
        let mut con = self.manager.clone();
        let () = pipe.query_async(&mut con).await?;
        Ok(())
    }

    async fn delivery_count(&self, id: &str) -> Result<u32, RedisError> {
        let mut con = self.manager.clone();
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.config.key)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut con)
            .await?;
        if let Value::Array(rows) = reply {
            if let Some(Value::Array(row)) = rows.first() {
                if let Some(Value::Int(count)) = row.get(3) {
                    return Ok(u32::try_from(*count).unwrap_or(u32::MAX));
                }
            }
        }
        Ok(1)
    }

    fn message(&self, id: &str, body: Vec<u8>, attributes: Attributes, count: u32) -> Message {
        let sent_at = parse_id(id).map_or(SystemTime::now(), |(ms, _)| {
            UNIX_EPOCH + Duration::from_millis(ms)
        });
        // The receipt names the delivery: `<id>` for a first delivery (every new message, so
        // the hot path allocates nothing more), `<id>:<count>` for later ones.
        let receipt = if count == 1 {
            Receipt::token(id)
        } else {
            Receipt::token(format!("{id}:{count}"))
        };
        let message = Message::new(MessageId::text(id), body, receipt)
            .with_receive_count(count)
            .with_sent_at(sent_at);
        if attributes.is_empty() {
            message
        } else {
            message.with_attributes(attributes)
        }
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if let Some(con) = self.blocking.lock().pop() {
            return Ok(con);
        }
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&crate::config::blocking())
            .await?)
    }

    async fn read_new(&self, max: usize, block: Duration) -> Result<Vec<Message>, RedisError> {
        let mut con = self.blocking_connection().await?;
        let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(block_millis(block))
            .arg("STREAMS")
            .arg(&self.config.key)
            .arg(">")
            .query_async(&mut con)
            .await;
        // A connection that failed is dropped; the next read makes a new one.
        let reply = reply?;
        self.blocking.lock().push(con);
        let mut messages = Vec::new();
        let mut dead = Vec::new();
        if let Value::Array(streams) = reply {
            for stream in streams {
                if let Value::Array(parts) = stream {
                    if let Some(list) = parts.get(1) {
                        for (id, fields) in entries(list) {
                            match queue_body(fields) {
                                Ok((body, attributes)) => {
                                    messages.push(self.message(&id, body, attributes, 1));
                                }
                                Err((fields, reason)) => dead.push((id, fields, reason)),
                            }
                        }
                    }
                }
            }
        }
        // Entries without a body are never delivered (as an empty body, to be acknowledged
        // and lost). If moving them fails they stay pending, and the reclaim scan tries again
        // after the visibility timeout; the good messages are returned meanwhile.
        if let Err(error) = self.dead_letter(dead).await {
            if messages.is_empty() {
                return Err(error);
            }
            tracing::warn!(%error, "redis dead-letter move failed; retried after the visibility timeout");
        }
        Ok(messages)
    }
}

/// The entry id and delivery count a receipt names (see [`RedisQueue`]'s `message`).
fn delivery_of(receipt: &Receipt) -> Option<(&str, u32)> {
    let token = receipt.as_token()?;
    match token.split_once(':') {
        None => Some((token, 1)),
        Some((id, count)) => Some((id, count.parse().ok()?)),
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

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = receipts
            .iter()
            .map(|r| {
                delivery_of(r)
                    .map(|(id, _)| id)
                    .ok_or(SourceError::UnknownReceipt)
            })
            .collect::<Result<_, _>>()?;
        let mut con = self.manager.clone();
        let (acked, _deleted): (i64, i64) = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.config.key)
            .arg(&self.group)
            .arg(&ids)
            .cmd("XDEL")
            .arg(&self.config.key)
            .arg(&ids)
            .query_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        if usize::try_from(acked).unwrap_or(0) < ids.len() {
            return Err(SourceError::UnknownReceipt);
        }
        Ok(())
    }

    /// Visible again at once, the receive not counted: one script sets each message's
    /// delivery count back by one (`XCLAIM ... RETRYCOUNT`) and its idle time to the
    /// visibility timeout (`IDLE`), so the next reclaim scan, which this queue runs at once,
    /// delivers it again with the count it had. Other processes of the queue find it on their
    /// next scan (within a second). Stale receipts (the message acknowledged, or delivered
    /// again since, here or to another process, after the visibility timeout) are left alone
    /// and reported as [`SourceError::UnknownReceipt`].
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        if receipts.is_empty() {
            return Ok(());
        }
        // Each delivery once: the script takes one receive back per pair it is given.
        let mut deliveries: Vec<(&str, u32)> = receipts.iter().filter_map(delivery_of).collect();
        deliveries.sort_unstable();
        deliveries.dedup();
        let pairs: Vec<String> = deliveries
            .iter()
            .flat_map(|(id, count)| [(*id).to_owned(), count.to_string()])
            .collect();
        let mut con = self.manager.clone();
        let released: i64 = redis::Script::new(RELEASE)
            .key(&self.config.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.config.visibility_timeout.as_millis() as u64)
            .arg(&pairs)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        if released > 0 {
            // Scan the pending list from its start at the next receive.
            *self.reclaim_cursor.lock() = "0-0".to_owned();
            *self.next_reclaim.lock() = tokio::time::Instant::now();
        }
        // Every receipt one of this queue's (a token), and every message still pending here.
        let known = receipts.iter().all(|r| delivery_of(r).is_some());
        if !known || usize::try_from(released).unwrap_or(0) < deliveries.len() {
            return Err(SourceError::UnknownReceipt);
        }
        Ok(())
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        let (id, _) = delivery_of(receipt).ok_or(SourceError::UnknownReceipt)?;
        // Reclaimable once idle for the visibility timeout: set the idle time so that this
        // happens after `delay`. JUSTID keeps the delivery count.
        let idle = self.config.visibility_timeout.saturating_sub(delay);
        // Not past the visibility timeout (12 h at most): the reclaim slot below adds it to now.
        let delay = delay.min(self.config.visibility_timeout);
        let mut con = self.manager.clone();
        let claimed: Value = redis::cmd("XCLAIM")
            .arg(&self.config.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(id)
            .arg("IDLE")
            .arg(idle.as_millis() as u64)
            .arg("JUSTID")
            .query_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        match claimed {
            Value::Array(ids) if !ids.is_empty() => {
                // Look for it when it is due, not only at the next regular scan.
                let due = tokio::time::Instant::now() + delay;
                let mut next = self.next_reclaim.lock();
                *next = (*next).min(due);
                Ok(())
            }
            _ => Err(SourceError::UnknownReceipt),
        }
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(self.config.visibility_timeout)
    }

    fn stats(&self) -> Option<QueueStats> {
        None
    }
}

#[async_trait]
impl nimbus_sources::QueueProducer for RedisQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        Ok(self.send(body).await?)
    }
}
