//! What a queue mapping hands to its function: a [`QueueBatch`] of [`QueueRecord`]s, and the
//! [`BatchResponse`] through which the function reports partial failures. Their JSON is
//! Lambda's (see `wire`).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::queue::{Attributes, Message, MessageId};

/// The records of one invocation by a queue mapping (Lambda's `SQSEvent`). Serialised as
/// Lambda's SQS event, `{"Records": [...]}` (see [`QueueRecord`]), and read back from it;
/// `mapping` is not part of that JSON (read back, it is the queue name at the end of the
/// first record's `eventSourceARN`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueBatch {
    /// The mapping's name.
    pub mapping: Arc<str>,
    /// The records, in the order received (per message group, on a FIFO queue).
    pub records: Vec<QueueRecord>,
}

impl QueueBatch {
    /// A batch of these records, for tests and hosts that build events themselves.
    pub fn new(mapping: impl Into<Arc<str>>, records: Vec<QueueRecord>) -> Self {
        Self {
            mapping: mapping.into(),
            records,
        }
    }
}

/// One message in a [`QueueBatch`]. Serialised as a record of Lambda's SQS event:
///
/// ```json
/// {"messageId": "1", "receiptHandle": "...", "body": "text",
///  "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "<ms>",
///                 "SenderId": "<account>", "ApproximateFirstReceiveTimestamp": "<ms>",
///                 "MessageGroupId": "<group, FIFO only>"},
///  "messageAttributes": {"name": {"stringValue": "v", "stringListValues": [],
///                                  "binaryListValues": [], "dataType": "String"}},
///  "md5OfBody": "<hex MD5 of the body>", "eventSource": "aws:sqs",
///  "eventSourceARN": "arn:aws:sqs:<region>:<account>:<queue>", "awsRegion": "<region>"}
/// ```
///
/// A body that is not UTF-8 (SQS bodies always are) is written as an array of byte values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueRecord {
    /// The message id: what [`BatchResponse::item_failures`] lists.
    pub message_id: MessageId,
    /// This delivery's receipt as text (`receiptHandle`): the source's token, or
    /// `<lease>.<slot>` for a receipt made of numbers. Informational: the mapping
    /// acknowledges the message.
    pub receipt_handle: String,
    /// The body.
    pub body: Bytes,
    /// String attributes (`messageAttributes`, each of data type `String`).
    pub attributes: Attributes,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// `ApproximateFirstReceiveTimestamp`: when the mapping handed it over this time (nimbus
    /// queues do not keep the time of the first receive).
    pub first_received_at: SystemTime,
    /// Its message group, on a FIFO queue.
    pub group_id: Option<Arc<str>>,
    /// `SenderId`: the runtime's account id.
    pub sender_id: Arc<str>,
    /// `eventSourceARN`: `arn:aws:sqs:<region>:<account>:<queue>`.
    pub event_source_arn: Arc<str>,
    /// `awsRegion`: the runtime's region.
    pub aws_region: Arc<str>,
}

/// Where a mapping's records come from, as its records name it.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) sender_id: Arc<str>,
    pub(crate) event_source_arn: Arc<str>,
    pub(crate) aws_region: Arc<str>,
}

impl Origin {
    /// The queue `queue` in the region and account of the function whose ARN is
    /// `function_arn` (`arn:aws:lambda:<region>:<account>:function:<name>`); nimbus's
    /// defaults when that ARN is not of this form.
    pub(crate) fn new(function_arn: &str, queue: &str) -> Self {
        let parts: Vec<&str> = function_arn.split(':').collect();
        let (region, account) = match parts.as_slice() {
            ["arn", _, "lambda", region, account, ..] => (*region, *account),
            _ => (
                nimbus_core::util::aws::DEFAULT_REGION,
                nimbus_core::util::aws::DEFAULT_ACCOUNT_ID,
            ),
        };
        Self {
            sender_id: Arc::from(account),
            event_source_arn: Arc::from(nimbus_core::util::aws::resource_arn(
                "sqs", region, account, queue,
            )),
            aws_region: Arc::from(region),
        }
    }
}

impl QueueRecord {
    pub(crate) fn from_message(message: &Message, origin: &Origin, now: SystemTime) -> Self {
        let receipt_handle = match (message.receipt.as_token(), message.receipt.parts()) {
            (Some(token), _) => token.to_owned(),
            (None, Some((lease, slot))) => format!("{lease}.{slot}"),
            (None, None) => String::new(),
        };
        Self {
            message_id: message.id.clone(),
            receipt_handle,
            body: message.body.clone(),
            attributes: message.attributes.clone(),
            receive_count: message.receive_count,
            sent_at: message.sent_at,
            first_received_at: now,
            group_id: message.group_id.clone(),
            sender_id: Arc::clone(&origin.sender_id),
            event_source_arn: Arc::clone(&origin.event_source_arn),
            aws_region: Arc::clone(&origin.aws_region),
        }
    }

    /// A record of a message with this id and body from the queue `queue`, in nimbus's
    /// default region and account, received once now: for tests and hosts that build events.
    pub fn new(message_id: MessageId, body: impl Into<Bytes>, queue: &str) -> Self {
        let origin = Origin::new("", queue);
        let now = SystemTime::now();
        Self {
            message_id,
            receipt_handle: String::new(),
            body: body.into(),
            attributes: Attributes::default(),
            receive_count: 1,
            sent_at: now,
            first_received_at: now,
            group_id: None,
            sender_id: origin.sender_id,
            event_source_arn: origin.event_source_arn,
            aws_region: origin.aws_region,
        }
    }

    /// The hex MD5 of the body (`md5OfBody`).
    pub fn md5_of_body(&self) -> String {
        use md5::Digest;
        md5::Md5::digest(&self.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
/// the whole batch succeeded; an id that is not in the batch fails the whole batch. Its JSON
/// is Lambda's: `{"batchItemFailures": [{"itemIdentifier": "<message id>"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
