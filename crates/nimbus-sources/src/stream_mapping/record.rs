//! What the on-failure destination receives: [`StreamFailure`], written as Lambda's
//! invocation record for a Kinesis event source mapping, plus the records themselves.

use std::sync::Arc;
use std::time::SystemTime;

use nimbus_core::util::aws;
use nimbus_core::{ErrorInfo, FunctionError, InvokeError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::StreamCondition;
use crate::stream::{Sequence, ShardId, StreamRecord};

/// What the on-failure destination receives about records a stream mapping gave up on.
///
/// In JSON it is Lambda's invocation record for Kinesis, field for field:
///
/// ```json
/// {"requestContext": {"requestId": "…", "functionArn": "arn:aws:lambda:…:function:f",
///                     "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
///  "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
///  "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
///  "KinesisBatchInfo": {"shardId": "…", "startSequenceNumber": "…", "endSequenceNumber": "…",
///                       "approximateArrivalOfFirstRecord": "…", "approximateArrivalOfLastRecord": "…",
///                       "batchSize": 2, "streamArn": "arn:aws:kinesis:…:stream/…"},
///  "nimbus": {"mapping": "…", "error": {"errorType": "…", "errorMessage": "…"}, "records": [ … ]}}
/// ```
///
/// The `nimbus` field is a deliberate addition: Lambda sends only the batch's coordinates
/// and leaves the records to be read again from the stream before they expire; nimbus hands
/// them over too (an in-memory stream cannot be read back by a later consumer), with the last
/// attempt's error. Reading accepts Lambda's record without it (no records, no error). A
/// destination that cannot take the full record (a queue's 1 MiB limit) sends
/// [`StreamFailure::without_records`] instead, as the example of [`FailureDestination`]
/// does: a refusal is retried until the destination takes the record.
///
/// [`FailureDestination`]: crate::FailureDestination
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamFailure {
    /// The request id of the last invocation of these records (`None`: never invoked, as when
    /// they were too old before the first attempt).
    pub request_id: Option<String>,
    /// The function's ARN ([`nimbus_core::FunctionHandle::arn`]).
    pub function_arn: Arc<str>,
    /// The function's name.
    pub function: Arc<str>,
    /// Why.
    pub condition: StreamCondition,
    /// How many times the function was invoked with these records (throttles not counted).
    pub approximate_invoke_count: u32,
    /// When.
    pub timestamp: SystemTime,
    /// The shard.
    pub shard_id: ShardId,
    /// The first record's sequence number.
    pub first_sequence: Sequence,
    /// The last record's sequence number.
    pub last_sequence: Sequence,
    /// When the first record arrived in the stream.
    pub first_arrival: SystemTime,
    /// When the last record arrived in the stream.
    pub last_arrival: SystemTime,
    /// How many records.
    pub batch_size: usize,
    /// The stream's ARN (`arn:aws:kinesis:<region>:<account>:stream/<name>`).
    pub stream_arn: Arc<str>,
    /// The mapping (nimbus addition).
    pub mapping: Arc<str>,
    /// The last attempt's error, if the last attempt failed (nimbus addition; Lambda says only
    /// `functionError: "Unhandled"`). Read back from JSON as a function error of that type
    /// and message.
    pub error: Option<ErrorInfo>,
    /// The records (nimbus addition); empty in Lambda's own record
    /// ([`StreamFailure::without_records`]).
    pub records: Vec<StreamRecord>,
}

impl StreamFailure {
    /// A record about `records` (at least one) of `shard_id`, for destinations and tests
    /// built outside this crate; the other facts are set with the public fields.
    ///
    /// # Panics
    ///
    /// If `records` is empty.
    pub fn new(
        function_arn: impl Into<Arc<str>>,
        stream_arn: impl Into<Arc<str>>,
        shard_id: ShardId,
        condition: StreamCondition,
        records: Vec<StreamRecord>,
    ) -> Self {
        let (first, last) = match (records.first(), records.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => panic!("a StreamFailure needs at least one record"),
        };
        let function_arn = function_arn.into();
        Self {
            request_id: None,
            function: Arc::from(function_arn.rsplit(':').next().unwrap_or_default()),
            function_arn,
            condition,
            approximate_invoke_count: 0,
            timestamp: crate::stream::stream_now(),
            shard_id,
            first_sequence: first.sequence.clone(),
            last_sequence: last.sequence.clone(),
            first_arrival: first.arrived_at,
            last_arrival: last.arrived_at,
            batch_size: records.len(),
            stream_arn: stream_arn.into(),
            mapping: Arc::from(""),
            error: None,
            records,
        }
    }
}

impl StreamFailure {
    /// Lambda's own record: the same facts (the batch's coordinates, `batchSize`, the error)
    /// without `nimbus.records`, for a destination that refuses the full record as too large.
    /// The records stay readable from the stream, at the sequence numbers it names, until
    /// they expire.
    #[must_use]
    pub fn without_records(mut self) -> Self {
        self.records = Vec::new();
        self
    }
}

/// The error type nimbus records when the function answered with failed items.
pub(super) const PARTIAL_BATCH_FAILURE: &str = "PartialBatchFailure";

/// `arn:aws:kinesis:<region>:<account>:stream/<name>`, in the region and account of the
/// function's ARN (the runtime's), or the defaults of [`nimbus_core::util::aws`].
pub(super) fn stream_arn(function_arn: &str, stream: &str) -> String {
    let mut parts = function_arn.split(':').skip(3);
    let region = parts
        .next()
        .filter(|r| !r.is_empty())
        .unwrap_or(aws::DEFAULT_REGION);
    let account = parts
        .next()
        .filter(|a| !a.is_empty())
        .unwrap_or(aws::DEFAULT_ACCOUNT_ID);
    aws::resource_arn("kinesis", region, account, &format!("stream/{stream}"))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    request_context: RequestContext,
    response_context: ResponseContext,
    version: String,
    #[serde(with = "crate::aws_time::millis")]
    timestamp: SystemTime,
    #[serde(rename = "KinesisBatchInfo")]
    kinesis_batch_info: BatchInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nimbus: Option<Addition>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext {
    request_id: Option<String>,
    function_arn: String,
    condition: StreamCondition,
    approximate_invoke_count: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseContext {
    status_code: u16,
    executed_version: String,
    #[serde(default)]
    function_error: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchInfo {
    shard_id: String,
    start_sequence_number: Sequence,
    end_sequence_number: Sequence,
    #[serde(with = "crate::aws_time::millis")]
    approximate_arrival_of_first_record: SystemTime,
    #[serde(with = "crate::aws_time::millis")]
    approximate_arrival_of_last_record: SystemTime,
    batch_size: usize,
    stream_arn: String,
}

#[derive(Serialize, Deserialize)]
struct Addition {
    mapping: String,
    error: Option<WireError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    records: Vec<StreamRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireError {
    error_type: String,
    error_message: String,
}

impl Serialize for StreamFailure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            request_context: RequestContext {
                request_id: self.request_id.clone(),
                function_arn: self.function_arn.to_string(),
                condition: self.condition,
                approximate_invoke_count: self.approximate_invoke_count,
            },
            response_context: ResponseContext {
                status_code: 200,
                executed_version: "$LATEST".to_owned(),
                // Lambda's word for any error of the function (its own, a timeout, a crash);
                // none when the function answered with failed items.
                function_error: self
                    .error
                    .as_ref()
                    .filter(|e| e.error_type != PARTIAL_BATCH_FAILURE)
                    .map(|_| "Unhandled".to_owned()),
            },
            version: "1.0".to_owned(),
            timestamp: self.timestamp,
            kinesis_batch_info: BatchInfo {
                shard_id: self.shard_id.to_string(),
                start_sequence_number: self.first_sequence.clone(),
                end_sequence_number: self.last_sequence.clone(),
                approximate_arrival_of_first_record: self.first_arrival,
                approximate_arrival_of_last_record: self.last_arrival,
                batch_size: self.batch_size,
                stream_arn: self.stream_arn.to_string(),
            },
            nimbus: Some(Addition {
                mapping: self.mapping.to_string(),
                error: self.error.as_ref().map(|e| WireError {
                    error_type: e.error_type.clone(),
                    error_message: e.message.clone(),
                }),
                records: self.records.clone(),
            }),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StreamFailure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let info = wire.kinesis_batch_info;
        let addition = wire.nimbus.unwrap_or(Addition {
            mapping: String::new(),
            error: None,
            records: Vec::new(),
        });
        let function_arn = wire.request_context.function_arn;
        Ok(Self {
            request_id: wire.request_context.request_id,
            function: Arc::from(function_arn.rsplit(':').next().unwrap_or_default()),
            function_arn: Arc::from(function_arn),
            condition: wire.request_context.condition,
            approximate_invoke_count: wire.request_context.approximate_invoke_count,
            timestamp: wire.timestamp,
            shard_id: Arc::from(info.shard_id),
            first_sequence: info.start_sequence_number,
            last_sequence: info.end_sequence_number,
            first_arrival: info.approximate_arrival_of_first_record,
            last_arrival: info.approximate_arrival_of_last_record,
            batch_size: info.batch_size,
            stream_arn: Arc::from(info.stream_arn),
            mapping: Arc::from(addition.mapping),
            error: addition.error.map(|e| {
                ErrorInfo::from(&InvokeError::Function(FunctionError::new(
                    e.error_type,
                    e.error_message,
                )))
            }),
            records: addition.records,
        })
    }
}
