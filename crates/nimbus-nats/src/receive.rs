//! Receiving from a JetStream queue: one pull request per receive, and turning deliveries into
//! messages, redriving those over the receive limit.

use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::HeaderMap;
use futures_util::StreamExt;
use nimbus_sources::{Attributes, Message, MessageId};

use crate::delivery::Delivery;
use crate::error::NatsError;
use crate::queue::NatsQueue;
use crate::receipt::{now_millis, receipt_of};
use crate::release::{is_release_header, Lineage};
use crate::setup::timed_out;
use crate::superseded::Arrival;

/// The expiry of a receive's pull request when the receive may not wait: the server then
/// answers within it whatever happens (a `no_wait` request without one may be held forever).
const MIN_EXPIRES: Duration = Duration::from_millis(1);

impl NatsQueue {
    /// Asks for up to `max` messages with one pull request, `no_wait` with `expires`: the
    /// server answers at once with what is there, or, when nothing is, holds the request until
    /// a message comes (then returns it) or `wait` passes. (Without `expires`, a `no_wait`
    /// request the consumer cannot serve because of its in-flight limit is held with no end.)
    ///
    /// Each delivery comes with the moment it arrived (see `receipt.rs`).
    pub(crate) async fn pull(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(async_nats::Message, u64)>, NatsError> {
        let wait = wait.max(MIN_EXPIRES);
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(NatsError::broker("fetch"))?;
        // The server ends the request when it expires; an answer lost with the connection
        // would leave it open.
        let deadline = tokio::time::Instant::now() + wait + self.config.request_timeout;
        let mut pulled = Vec::new();
        loop {
            let next = match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(_elapsed) if !pulled.is_empty() => break,
                Err(_elapsed) => {
                    return Err(self
                        .missing()
                        .await
                        .unwrap_or_else(|| NatsError::broker("fetch")(timed_out())))
                }
            };
            match next {
                Ok(message) => pulled.push((message.message, now_millis())),
                // Messages already here are in flight to this receiver: return them, rather
                // than leave them invisible until their ack_wait passes.
                Err(error) if !pulled.is_empty() => {
                    tracing::warn!(%error, "nats fetch ended early");
                    break;
                }
                Err(error) => {
                    return Err(self
                        .missing()
                        .await
                        .unwrap_or_else(|| NatsError::broker("fetch")(error)))
                }
            }
        }
        Ok(pulled)
    }

    /// After a fetch failed or went unanswered: whether the stream or the consumer is gone
    /// (deleted behind the adapter's back), a permanent error; a pull request to a missing
    /// consumer is not answered at all, so only asking tells it from a slow server.
    async fn missing(&self) -> Option<NatsError> {
        let stream = self
            .jetstream
            .get_stream_no_info(&self.config.stream)
            .await
            .ok()?;
        match stream.consumer_info(&self.config.consumer).await {
            Err(error)
                if matches!(
                    error.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                Some(NatsError::broker("fetch")(error))
            }
            _ => None,
        }
    }

    /// Turns deliveries into messages, redriving the ones over the receive limit.
    pub(crate) async fn sort_out(
        &self,
        pulled: Vec<(async_nats::Message, u64)>,
    ) -> Result<Vec<Message>, NatsError> {
        let mut messages = Vec::with_capacity(pulled.len());
        let mut redrive_error = None;
        for (delivered, arrived) in pulled {
            let Some(reply) = delivered.reply.clone() else {
                tracing::warn!(subject = %delivered.subject, "nats message without a reply subject");
                continue;
            };
            let Some(delivery) = Delivery::parse(&reply) else {
                tracing::warn!(%reply, "nats message with an unknown reply subject");
                continue;
            };
            // Released messages carry the receives counted before (see `release.rs`).
            let lineage = Lineage::of(delivered.headers.as_ref());
            let counted = lineage.receive_count(&delivery);
            let receive_count =
                match self
                    .superseded
                    .accept(&delivery, counted, arrived, self.ack_wait)
                {
                    Arrival::Fresh(receive_count) => receive_count,
                    Arrival::Duplicate => {
                        tracing::debug!(
                            sequence = delivery.stream_sequence,
                            delivered = delivery.delivered,
                            "nats sent a second copy of a message held here; left out"
                        );
                        continue;
                    }
                };
            if let Some(dead) = &self.dead_letters {
                if receive_count > dead.max_receive_count {
                    // A failed redrive leaves the message to come back after ack_wait, and be
                    // redriven then.
                    let redriven = self
                        .redrive(dead, &delivered, &reply, &delivery, &lineage, receive_count)
                        .await;
                    if let Err(error) = redriven {
                        tracing::warn!(%error, sequence = delivery.stream_sequence, "nats redrive failed");
                        redrive_error = Some(error);
                    }
                    continue;
                }
            }
            messages.push(
                Message::new(
                    MessageId::number(lineage.id(&delivery)),
                    delivered.payload.clone(),
                    receipt_of(reply.as_str(), arrived),
                )
                .with_receive_count(receive_count)
                .with_sent_at(lineage.sent_at(&delivery))
                .with_attributes(attributes(delivered.headers.as_ref())),
            );
        }
        match redrive_error {
            Some(error) if messages.is_empty() => Err(error),
            _ => Ok(messages),
        }
    }
}

/// A message's headers as attributes: the first value of each, the server's `Nats-*` left out.
fn attributes(headers: Option<&HeaderMap>) -> Attributes {
    let mut attributes = Attributes::new();
    for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
        let name: &str = name.as_ref();
        if name.starts_with("Nats-") || is_release_header(name) {
            continue;
        }
        if let Some(value) = values.first() {
            attributes = attributes.with(name, value.as_str());
        }
    }
    attributes
}
