//! The JSON of a queue mapping's invocations, as Lambda writes it: a [`QueueBatch`] is an SQS
//! event (`{"Records": [...]}`) and a [`BatchResponse`] a partial batch response
//! (`{"batchItemFailures": [{"itemIdentifier": "..."}]}`), so handlers behind `invoke_json`,
//! in another language, or written for Lambda read and answer what they would there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BatchResponse, QueueBatch, QueueOrigin, QueueRecord};
use crate::queue::{Attributes, MessageId, Receipt};

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

fn millis(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string()
}

fn from_millis<E: serde::de::Error>(text: &str, field: &str) -> Result<SystemTime, E> {
    let ms: u64 = text
        .parse()
        .map_err(|_| E::custom(format!("{field}: not a number of milliseconds: {text:?}")))?;
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .ok_or_else(|| E::custom(format!("{field}: out of range: {text:?}")))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireAttributes {
    approximate_receive_count: String,
    sent_timestamp: String,
    sender_id: String,
    approximate_first_receive_timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_group_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAttribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    string_value: Option<String>,
    #[serde(default)]
    string_list_values: Vec<String>,
    #[serde(default)]
    binary_list_values: Vec<String>,
    data_type: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord {
    message_id: String,
    #[serde(default)]
    receipt_handle: String,
    #[serde(with = "body_serde")]
    body: Bytes,
    attributes: WireAttributes,
    #[serde(default)]
    message_attributes: BTreeMap<String, WireAttribute>,
    #[serde(default)]
    md5_of_body: String,
    #[serde(default)]
    event_source: String,
    #[serde(rename = "eventSourceARN", default)]
    event_source_arn: String,
    #[serde(default)]
    aws_region: String,
}

impl Serialize for QueueRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRecord {
            message_id: self.message_id.to_string(),
            receipt_handle: receipt_text(&self.receipt_handle),
            body: self.body.clone(),
            attributes: WireAttributes {
                approximate_receive_count: self.receive_count.to_string(),
                sent_timestamp: millis(self.sent_at),
                sender_id: self.origin.sender_id.clone(),
                approximate_first_receive_timestamp: millis(self.first_received_at),
                message_group_id: self.group_id.as_deref().map(str::to_owned),
            },
            message_attributes: self
                .attributes
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        WireAttribute {
                            string_value: Some(v.to_owned()),
                            string_list_values: Vec::new(),
                            binary_list_values: Vec::new(),
                            data_type: "String".to_owned(),
                        },
                    )
                })
                .collect(),
            md5_of_body: self.md5_of_body(),
            event_source: "aws:sqs".to_owned(),
            event_source_arn: self.origin.event_source_arn.clone(),
            aws_region: self.origin.aws_region.clone(),
        }
        .serialize(s)
    }
}

/// Read back: message attributes with a string value (`String` and `Number` types) are kept;
/// binary ones are skipped. `md5OfBody` and `eventSource` are not checked.
impl<'de> Deserialize<'de> for QueueRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireRecord::deserialize(d)?;
        let receive_count = wire
            .attributes
            .approximate_receive_count
            .parse()
            .map_err(|_| D::Error::custom("ApproximateReceiveCount: not a count"))?;
        let attributes: BTreeMap<String, String> = wire
            .message_attributes
            .into_iter()
            .filter_map(|(k, v)| v.string_value.map(|value| (k, value)))
            .collect();
        Ok(Self {
            message_id: MessageId::text(&wire.message_id),
            receipt_handle: Receipt::token(wire.receipt_handle),
            body: wire.body,
            attributes: Attributes::from(attributes),
            receive_count,
            sent_at: from_millis(&wire.attributes.sent_timestamp, "SentTimestamp")?,
            first_received_at: from_millis(
                &wire.attributes.approximate_first_receive_timestamp,
                "ApproximateFirstReceiveTimestamp",
            )?,
            group_id: wire.attributes.message_group_id.map(Arc::from),
            origin: Arc::new(QueueOrigin::with_values(
                wire.attributes.sender_id,
                wire.event_source_arn,
                wire.aws_region,
            )),
        })
    }
}

#[derive(Serialize)]
struct WireBatchOut<'a> {
    #[serde(rename = "Records")]
    records: &'a [QueueRecord],
}

#[derive(Deserialize)]
struct WireBatchIn {
    #[serde(rename = "Records")]
    records: Vec<QueueRecord>,
}

impl Serialize for QueueBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireBatchOut {
            records: &self.records,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for QueueBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireBatchIn::deserialize(d)?;
        let mapping = wire
            .records
            .first()
            .and_then(|r| r.origin.event_source_arn.rsplit(':').next())
            .unwrap_or_default();
        Ok(Self {
            mapping: Arc::from(mapping),
            records: wire.records,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFailure {
    item_identifier: MessageId,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    batch_item_failures: Vec<WireFailure>,
}

impl Serialize for BatchResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireResponse {
            batch_item_failures: self
                .item_failures
                .iter()
                .map(|id| WireFailure {
                    item_identifier: id.clone(),
                })
                .collect(),
        }
        .serialize(s)
    }
}

/// Read back as Lambda reads it: a missing or empty list is success; `null` too.
impl<'de> Deserialize<'de> for BatchResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Option::<WireResponse>::deserialize(d)?;
        Ok(Self {
            item_failures: wire
                .map(|w| {
                    w.batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// A receipt as `receiptHandle` text: the source's token, or `<lease>.<slot>` for one made of
/// numbers; written only when a record is serialised, never on the invocation's hot path.
fn receipt_text(receipt: &Receipt) -> String {
    match (receipt.as_token(), receipt.parts()) {
        (Some(token), _) => token.to_owned(),
        (None, Some((lease, slot))) => format!("{lease}.{slot}"),
        (None, None) => String::new(),
    }
}
