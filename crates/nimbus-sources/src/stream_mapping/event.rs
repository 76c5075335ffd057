//! A [`StreamBatch`] as JSON: Lambda's Kinesis event, field for field, with the fields of
//! its tumbling-window event when the mapping has windows.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nimbus_core::util::aws;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{StreamBatch, TumblingWindow};
use crate::stream::{Sequence, StreamRecord};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "Records")]
    records: Vec<EventRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<Bounds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard_id: Option<String>,
    #[serde(
        default,
        rename = "eventSourceARN",
        skip_serializing_if = "Option::is_none"
    )]
    event_source_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_final_invoke_for_window: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_window_terminated_early: Option<bool>,
}

#[derive(Serialize, Deserialize)]
struct Bounds {
    #[serde(with = "window_time")]
    start: SystemTime,
    #[serde(with = "window_time")]
    end: SystemTime,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord {
    kinesis: Kinesis,
    event_source: String,
    event_version: String,
    #[serde(rename = "eventID")]
    event_id: String,
    event_name: String,
    invoke_identity_arn: String,
    aws_region: String,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kinesis {
    kinesis_schema_version: String,
    partition_key: String,
    sequence_number: Sequence,
    data: String,
    approximate_arrival_timestamp: f64,
}

/// Window bounds as Lambda writes them: `2020-12-09T07:04:00Z`, milliseconds only when
/// there are some.
mod window_time {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let text = nimbus_core::util::aws::rfc3339_millis(*at);
        let whole = at
            .duration_since(UNIX_EPOCH)
            .map_or(true, |d| d.subsec_millis() == 0);
        match text.strip_suffix(".000Z") {
            Some(seconds) if whole => s.serialize_str(&format!("{seconds}Z")),
            _ => s.serialize_str(&text),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        crate::aws_time::millis::deserialize(d)
    }
}

/// The region and account of a stream ARN, or the defaults.
pub(super) fn region_and_account(stream_arn: &str) -> (&str, &str) {
    let mut parts = stream_arn.split(':').skip(3);
    let region = parts.next().filter(|r| !r.is_empty());
    let account = parts.next().filter(|a| !a.is_empty());
    (
        region.unwrap_or(aws::DEFAULT_REGION),
        account.unwrap_or(aws::DEFAULT_ACCOUNT_ID),
    )
}

/// `arn:aws:iam::<account>:role/<mapping>`: Lambda names the function's execution role here;
/// nimbus has none and names the mapping.
pub(super) fn identity_arn(account: &str, mapping: &str) -> String {
    format!("arn:aws:iam::{account}:role/{mapping}")
}

fn seconds(at: SystemTime) -> f64 {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    ms as f64 / 1_000.0
}

fn from_seconds(secs: f64) -> SystemTime {
    let ms = (secs * 1_000.0).round();
    if ms.is_finite() && ms > 0.0 {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(ms as u64))
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
    }
}

impl Serialize for StreamBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (region, account) = region_and_account(&self.stream_arn);
        let identity = identity_arn(account, &self.mapping);
        let records = self
            .records
            .iter()
            .map(|r| EventRecord {
                kinesis: Kinesis {
                    kinesis_schema_version: "1.0".into(),
                    partition_key: r.partition_key.to_string(),
                    sequence_number: r.sequence.clone(),
                    data: base64::engine::general_purpose::STANDARD.encode(&r.data),
                    approximate_arrival_timestamp: seconds(r.arrived_at),
                },
                event_source: "aws:kinesis".into(),
                event_version: "1.0".into(),
                event_id: format!("{}:{}", self.shard_id, r.sequence),
                event_name: "aws:kinesis:record".into(),
                invoke_identity_arn: identity.clone(),
                aws_region: region.to_owned(),
                event_source_arn: self.stream_arn.to_string(),
            })
            .collect();
        let window = self.window.as_ref();
        Event {
            records,
            window: window.map(|w| Bounds {
                start: w.start,
                end: w.end,
            }),
            state: window.map(|w| w.state.clone()),
            shard_id: window.map(|_| self.shard_id.to_string()),
            event_source_arn: window.map(|_| self.stream_arn.to_string()),
            is_final_invoke_for_window: window.map(|w| w.is_final),
            is_window_terminated_early: window.map(|w| w.terminated_early),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StreamBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let event = Event::deserialize(d)?;
        let first = event.records.first();
        let shard_id = event
            .shard_id
            .clone()
            .or_else(|| {
                first.and_then(|r| {
                    r.event_id
                        .rsplit_once(':')
                        .map(|(shard, _)| shard.to_owned())
                })
            })
            .unwrap_or_default();
        let stream_arn = event
            .event_source_arn
            .clone()
            .or_else(|| first.map(|r| r.event_source_arn.clone()))
            .unwrap_or_default();
        let mapping = first
            .and_then(|r| r.invoke_identity_arn.rsplit_once(":role/"))
            .map(|(_, role)| role.to_owned())
            .unwrap_or_default();
        let records = event
            .records
            .into_iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r.kinesis.data.as_bytes())
                    .map_err(|e| serde::de::Error::custom(format!("data is not base64: {e}")))?;
                Ok(StreamRecord::new(
                    r.kinesis.partition_key,
                    r.kinesis.sequence_number,
                    data,
                    from_seconds(r.kinesis.approximate_arrival_timestamp),
                ))
            })
            .collect::<Result<Vec<_>, D::Error>>()?;
        let window = event.window.map(|bounds| TumblingWindow {
            start: bounds.start,
            end: bounds.end,
            state: event.state.unwrap_or(serde_json::Value::Null),
            is_final: event.is_final_invoke_for_window.unwrap_or(false),
            terminated_early: event.is_window_terminated_early.unwrap_or(false),
        });
        Ok(Self {
            mapping: Arc::from(mapping),
            shard_id: Arc::from(shard_id),
            stream_arn: Arc::from(stream_arn),
            records,
            window,
        })
    }
}
