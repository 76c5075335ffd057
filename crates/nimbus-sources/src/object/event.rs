//! The change notification in S3's JSON shape: [`ObjectEvent`] (one element of `Records`,
//! event structure version 2.1) and [`S3Event`], the `{"Records": [...]}` a function receives.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::rules::{EventType, NotificationConfig};
use super::{decode_key, encode_key, ObjectInfo};

/// What a function target receives: S3's notification message, `{"Records": [...]}`, with
/// one record per invocation, as S3 sends one event per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct S3Event {
    /// The events (one, from nimbus's stores).
    #[serde(rename = "Records")]
    pub records: Vec<ObjectEvent>,
}

impl S3Event {
    /// A message of these events.
    pub fn new(records: Vec<ObjectEvent>) -> Self {
        Self { records }
    }
}

/// One change notification, in S3's JSON shape (one element of `Records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ObjectEvent {
    /// "2.1", as S3 for object creation and removal.
    pub event_version: String,
    /// "aws:s3", as S3.
    pub event_source: String,
    /// The region ([`NotificationConfig::with_region`], default `us-east-1`).
    pub aws_region: String,
    /// When the change happened, RFC 3339 in UTC with milliseconds.
    pub event_time: String,
    /// `ObjectCreated:Put`, `ObjectRemoved:Delete`, ...
    pub event_name: String,
    /// Who made the change: the account ([`NotificationConfig::with_account_id`]).
    pub user_identity: UserIdentity,
    /// Where the request came from: `127.0.0.1`, in process.
    pub request_parameters: RequestParameters,
    /// The request's ids.
    pub response_elements: ResponseElements,
    /// The bucket and object.
    pub s3: S3Entity,
}

/// Who: `{"principalId": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct UserIdentity {
    /// The principal's id.
    pub principal_id: String,
}

/// `{"sourceIPAddress": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestParameters {
    /// The address the request came from.
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: String,
}

/// `{"x-amz-request-id": ..., "x-amz-id-2": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseElements {
    /// The request's id (16 hex digits, as S3's).
    #[serde(rename = "x-amz-request-id")]
    pub request_id: String,
    /// S3's extended request id (the host that processed it); here 32 hex digits.
    #[serde(rename = "x-amz-id-2")]
    pub id_2: String,
}

/// The `s3` part of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct S3Entity {
    /// "1.0", as S3.
    pub s3_schema_version: String,
    /// The id of the rule that matched.
    pub configuration_id: String,
    /// The bucket.
    pub bucket: S3Bucket,
    /// The object.
    pub object: S3Object,
}

/// The bucket of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct S3Bucket {
    /// Its name.
    pub name: String,
    /// Its owner: the account.
    pub owner_identity: UserIdentity,
    /// `arn:aws:s3:::<name>`.
    pub arn: String,
}

/// The object of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct S3Object {
    /// The key, URL-encoded as S3 sends it (spaces as `+`).
    pub key: String,
    /// Size in bytes (0 for removals).
    pub size: u64,
    /// The content hash (empty for removals).
    pub e_tag: String,
    /// The version, in a versioned bucket; `null` otherwise (nimbus's stores do not version).
    #[serde(default)]
    pub version_id: Option<String>,
    /// Orders events for the same key: compare as strings, later is greater.
    pub sequencer: String,
}

impl ObjectEvent {
    /// The event of one change of `info`, matched by rule `rule_id`.
    pub(super) fn new(
        config: &NotificationConfig,
        event_type: EventType,
        rule_id: &str,
        info: &ObjectInfo,
        sequencer: &str,
        at: SystemTime,
    ) -> Self {
        let account = || UserIdentity {
            principal_id: config.account_id().to_owned(),
        };
        Self {
            event_version: "2.1".into(),
            event_source: "aws:s3".into(),
            aws_region: config.region().to_owned(),
            event_time: nimbus_core::util::aws::rfc3339_millis(at),
            event_name: event_type.name().into(),
            user_identity: account(),
            request_parameters: RequestParameters {
                source_ip_address: "127.0.0.1".into(),
            },
            response_elements: ResponseElements {
                request_id: format!("{:016X}", fastrand::u64(..)),
                id_2: format!("{:032x}", fastrand::u128(..)),
            },
            s3: S3Entity {
                s3_schema_version: "1.0".into(),
                configuration_id: rule_id.to_owned(),
                bucket: S3Bucket {
                    name: info.bucket.clone(),
                    owner_identity: account(),
                    arn: format!("arn:aws:s3:::{}", info.bucket),
                },
                object: S3Object {
                    key: encode_key(&info.key),
                    size: info.size,
                    e_tag: info.etag.clone(),
                    version_id: None,
                    sequencer: sequencer.to_owned(),
                },
            },
        }
    }

    /// The object's key, decoded.
    pub fn key(&self) -> String {
        decode_key(&self.s3.object.key)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.s3.bucket.name
    }

    /// The event's type.
    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.event_name)
    }
}
