//! Redrive: a message delivered more than `max_receive_count` times is published to the
//! dead-letter subject, stored, and only then terminated.

use async_nats::jetstream::AckKind;
use async_nats::{HeaderMap, Subject};

use crate::delivery::Delivery;
use crate::error::NatsError;
use crate::queue::NatsQueue;
use crate::release::{is_release_header, Lineage};

/// Headers a dead letter carries, besides the original message's own.
pub mod dead_letter_headers {
    /// The stream the message was redriven from.
    pub const STREAM: &str = "Nimbus-Dead-Letter-Stream";
    /// The subject it was published to.
    pub const SUBJECT: &str = "Nimbus-Dead-Letter-Subject";
    /// Its sequence number in that stream (its [`nimbus_sources::MessageId`]).
    pub const SEQUENCE: &str = "Nimbus-Dead-Letter-Sequence";
    /// How many times it had been delivered.
    pub const RECEIVE_COUNT: &str = "Nimbus-Receive-Count";
}

/// Where redriven messages go.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    pub(crate) max_receive_count: u32,
    pub(crate) subject: Subject,
    /// The stream that captures `subject`, for counting.
    pub(crate) stream: String,
}

impl NatsQueue {
    /// Publishes a copy to the dead-letter subject, stored before the original is terminated.
    /// The copy's `Nats-Msg-Id` is the original's stream and sequence, so that a redrive
    /// repeated after a failed terminate is dropped by the dead-letter stream's duplicate
    /// window: one dead letter per message.
    pub(crate) async fn redrive(
        &self,
        dead: &DeadLetters,
        delivered: &async_nats::Message,
        reply: &Subject,
        delivery: &Delivery<'_>,
        lineage: &Lineage,
        receive_count: u32,
    ) -> Result<(), NatsError> {
        use dead_letter_headers as h;
        let mut headers = HeaderMap::new();
        if let Some(original) = &delivered.headers {
            for (name, values) in original.iter() {
                // The server's own headers (`Nats-Msg-Id`, `Nats-Expected-*`) would make the
                // dead-letter stream drop or refuse the copy.
                let text: &str = name.as_ref();
                if !text.starts_with("Nats-") && !is_release_header(text) {
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
        }
        let stored_at = delivery.stream_sequence;
        headers.insert("Nats-Msg-Id", format!("{}:{stored_at}", delivery.stream));
        headers.insert(h::STREAM, delivery.stream);
        headers.insert(h::SUBJECT, delivered.subject.as_str());
        headers.insert(h::SEQUENCE, lineage.id(delivery).to_string());
        headers.insert(h::RECEIVE_COUNT, receive_count.to_string());
        self.jetstream()
            .publish_with_headers(dead.subject.clone(), headers, delivered.payload.clone())
            .await
            .map_err(NatsError::broker("dead-letter publish"))?
            .await
            .map_err(NatsError::broker("dead-letter publish"))?;
        self.confirm(reply.clone(), AckKind::Term)
            .await
            .map_err(NatsError::broker("terminate"))?;
        tracing::info!(
            stream = delivery.stream,
            sequence = delivery.stream_sequence,
            receive_count,
            subject = %dead.subject,
            "nats message redriven to the dead-letter subject"
        );
        Ok(())
    }
}
