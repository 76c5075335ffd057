//! Reading a Redis queue: new entries (`XREADGROUP`), entries whose visibility timeout
//! passed (`XAUTOCLAIM`, in slices, at most every tenth of the timeout), and the dead-letter
//! moves of entries over the receive limit or without a body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_sources::{Attributes, Message, MessageId};
use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::error::RedisError;
use crate::fields::{queue_body, Fields};
use crate::queue::RedisQueue;
use crate::receipt::receipt_of;
use crate::stream::{block_millis, entries, parse_id};

impl RedisQueue {
    /// How often pending messages are looked at: a tenth of the visibility timeout, within
    /// 10 ms..=1 s, so a message whose consumer died returns soon after its timeout.
    fn reclaim_every(&self) -> Duration {
        (self.config.visibility_timeout / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Takes the next reclaim slot if it is due (one poller at a time does the scan).
    pub(crate) fn reclaim_due(&self) -> bool {
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
    pub(crate) async fn reclaim(&self, max: usize) -> Result<Vec<Message>, RedisError> {
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
            let (delivery, count) = self.delivery_count(&id).await?;
            if let Some(max) = self.config.max_receive_count.filter(|max| count > *max) {
                let reason = format!("received {count} times, over max_receive_count = {max}");
                dead.push((id, fields, reason));
                continue;
            }
            match queue_body(fields) {
                Ok((body, attributes)) => {
                    messages.push(self.message(&id, body, attributes, delivery, count));
                }
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
            pipe.cmd("HDEL").arg(self.released()).arg(id).ignore();
        }
        let mut con = self.manager.clone();
        let () = pipe.query_async(&mut con).await?;
        Ok(())
    }

    /// The entry's delivery count (which names the delivery) and its receive count (the
    /// delivery count less the receives released uncounted), in one round trip.
    async fn delivery_count(&self, id: &str) -> Result<(u32, u32), RedisError> {
        let mut con = self.manager.clone();
        let (pending, released): (Value, Option<u32>) = redis::pipe()
            .cmd("XPENDING")
            .arg(&self.config.key)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .cmd("HGET")
            .arg(self.released())
            .arg(id)
            .query_async(&mut con)
            .await?;
        let mut delivery = 1;
        if let Value::Array(rows) = pending {
            if let Some(Value::Array(row)) = rows.first() {
                if let Some(Value::Int(count)) = row.get(3) {
                    delivery = u32::try_from(*count).unwrap_or(u32::MAX);
                }
            }
        }
        let receives = delivery.saturating_sub(released.unwrap_or(0)).max(1);
        Ok((delivery, receives))
    }

    fn message(
        &self,
        id: &str,
        body: Vec<u8>,
        attributes: Attributes,
        delivery: u32,
        receives: u32,
    ) -> Message {
        let sent_at = parse_id(id).map_or(SystemTime::now(), |(ms, _)| {
            UNIX_EPOCH + Duration::from_millis(ms)
        });
        let message = Message::new(MessageId::text(id), body, receipt_of(id, delivery))
            .with_receive_count(receives)
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

    pub(crate) async fn read_new(
        &self,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Message>, RedisError> {
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
                                    messages.push(self.message(&id, body, attributes, 1, 1));
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
