//! What a queue mapping hands to its function: a [`QueueBatch`] of [`QueueRecord`]s, and the
//! [`BatchResponse`] through which the function reports partial failures.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::queue::{Attributes, Message, MessageId};

/// The records of one invocation by a queue mapping (Lambda's `SQSEvent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueBatch {
    /// The mapping's name.
    pub mapping: Arc<str>,
    /// The records, in the order received (per message group, on a FIFO queue).
    pub records: Vec<QueueRecord>,
}

/// One message in a [`QueueBatch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueRecord {
    /// The message id: what [`BatchResponse::item_failures`] lists.
    pub message_id: MessageId,
    /// The body (serialised as a string when it is UTF-8).
    #[serde(with = "body_serde")]
    pub body: Bytes,
    /// String attributes.
    pub attributes: Attributes,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// Its message group, on a FIFO queue.
    pub group_id: Option<Arc<str>>,
}

impl QueueRecord {
    pub(crate) fn from_message(message: &Message) -> Self {
        Self {
            message_id: message.id.clone(),
            body: message.body.clone(),
            attributes: message.attributes.clone(),
            receive_count: message.receive_count,
            sent_at: message.sent_at,
            group_id: message.group_id.clone(),
        }
    }

    /// The body as text.
    ///
    /// # Errors
    ///
    /// The body is not UTF-8.
    pub fn body_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The body decoded from JSON.
    ///
    /// # Errors
    ///
    /// The body is not JSON of type `T`; the error says where (report the record as failed).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A queue handler's answer: which records failed (Lambda's `batchItemFailures`). Empty means
/// the whole batch succeeded; an id that is not in the batch fails the whole batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchResponse {
    /// Message ids of the records that failed.
    pub item_failures: Vec<MessageId>,
}

impl BatchResponse {
    /// Every record succeeded.
    pub fn success() -> Self {
        Self::default()
    }

    /// These records failed; the others succeeded.
    pub fn failures(ids: impl IntoIterator<Item = MessageId>) -> Self {
        Self {
            item_failures: ids.into_iter().collect(),
        }
    }
}

/// Bodies as strings when they are UTF-8 (as SQS bodies are), as byte arrays otherwise.
pub(crate) mod body_serde {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(body),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Raw(Vec<u8>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Ok(match Either::deserialize(d)? {
            Either::Text(text) => Bytes::from(text),
            Either::Raw(raw) => Bytes::from(raw),
        })
    }
}
