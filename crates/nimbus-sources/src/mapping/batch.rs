//! What a queue mapping hands to its function: a [`QueueBatch`] of [`QueueRecord`]s, and the
//! [`BatchResponse`] through which the function reports partial failures. Their JSON is
//! Lambda's (see `wire`).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::queue::{Attributes, Message, MessageId, Receipt};

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
    /// This delivery's receipt (`receiptHandle`, written as the source's token, or
    /// `<lease>.<slot>` for a receipt made of numbers). Informational: the mapping
    /// acknowledges the message.
    pub receipt_handle: Receipt,
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
    /// Where it comes from (`SenderId`, `eventSourceARN`, `awsRegion`): one shared value for
    /// every record of a mapping.
    pub origin: Arc<QueueOrigin>,
}

/// Where a queue mapping's records come from, as Lambda's SQS records name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueOrigin {
    /// `SenderId`: the runtime's account id.
    pub sender_id: String,
    /// `eventSourceARN`: `arn:aws:sqs:<region>:<account>:<queue>`.
    pub event_source_arn: String,
    /// `awsRegion`: the runtime's region.
    pub aws_region: String,
}

impl QueueOrigin {
    /// An origin with these values, for tests and hosts that build events.
    pub fn with_values(
        sender_id: impl Into<String>,
        event_source_arn: impl Into<String>,
        aws_region: impl Into<String>,
    ) -> Self {
        Self {
            sender_id: sender_id.into(),
            event_source_arn: event_source_arn.into(),
            aws_region: aws_region.into(),
        }
    }

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
            sender_id: account.to_owned(),
            event_source_arn: nimbus_core::util::aws::resource_arn("sqs", region, account, queue),
            aws_region: region.to_owned(),
        }
    }
}

impl QueueRecord {
    /// The record of `message`, handed over at `now`. `take` moves its body and attributes
    /// into the record instead of copying them (leaving them empty in `message`): for an
    /// invocation after which no other can need them. Inlined, so that the record is built
    /// in its place in the batch rather than copied there.
    #[inline]
    pub(crate) fn from_message(
        message: &mut Message,
        take: bool,
        origin: &Arc<QueueOrigin>,
        now: SystemTime,
    ) -> Self {
        let (body, attributes) = if take {
            (
                std::mem::take(&mut message.body),
                std::mem::take(&mut message.attributes),
            )
        } else {
            (message.body.clone(), message.attributes.clone())
        };
        Self {
            message_id: message.id.clone(),
            receipt_handle: message.receipt.clone(),
            body,
            attributes,
            receive_count: message.receive_count,
            sent_at: message.sent_at,
            first_received_at: now,
            group_id: message.group_id.clone(),
            origin: Arc::clone(origin),
        }
    }

    /// A record of a message with this id and body from the queue `queue`, in nimbus's
    /// default region and account, received once now: for tests and hosts that build events.
    pub fn new(message_id: MessageId, body: impl Into<Bytes>, queue: &str) -> Self {
        let origin = Arc::new(QueueOrigin::new("", queue));
        let now = SystemTime::now();
        Self {
            message_id,
            receipt_handle: Receipt::token(""),
            body: body.into(),
            attributes: Attributes::default(),
            receive_count: 1,
            sent_at: now,
            first_received_at: now,
            group_id: None,
            origin,
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
