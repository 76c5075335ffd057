//! What a finished async invocation leaves behind, in Lambda's shapes: the [`InvocationRecord`]
//! a destination receives (serialised field for field as Lambda's invocation record), and the
//! [`DeadLetterAttributes`] a dead letter carries beside the event (Lambda's `RequestID`,
//! `ErrorCode` and `ErrorMessage` message attributes).

use std::sync::Arc;
use std::time::SystemTime;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{InvokeError, OutcomeKind};
use crate::handler::RequestId;
use crate::util::aws::{parse_rfc3339, rfc3339_millis};

/// The version every record names: nimbus has no published versions.
const LATEST: &str = "$LATEST";

/// Lambda keeps the first kilobyte of an error message in a dead letter's `ErrorMessage`.
const ERROR_MESSAGE_LIMIT: usize = 1_024;

/// The status of an attempt that answered (success or function error), as Lambda's
/// `responseContext.statusCode` and a dead letter's `ErrorCode` say.
const ANSWERED: u16 = 200;
/// The status of an event that never ran (no capacity until it expired, or a reserved
/// concurrency of 0): Lambda's throttle status.
const NEVER_RAN: u16 = 429;

/// Why an async invocation ended where it did (Lambda's `requestContext.condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Condition {
    /// The function returned its output.
    Success,
    /// Every attempt failed and the retry policy gave up.
    RetriesExhausted,
    /// The event grew older than the function's `max_event_age` before it could succeed.
    EventAgeExceeded,
    /// The handler marked its error as not retryable (or the failure is never retried).
    /// Lambda has no such condition; records name it as it is.
    NotRetryable,
    /// The function's reserved concurrency is 0: it is never invoked (as Lambda does). Lambda
    /// documents no condition for it; records name it as it is.
    ZeroReservedConcurrency,
}

/// The error of the last attempt, as recorded for destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// The error type (Lambda's `errorType`).
    pub error_type: String,
    /// The error message.
    pub message: String,
    /// The outcome class (error, timeout, panic, init failure, ...).
    pub kind: OutcomeKind,
}

impl From<&InvokeError> for ErrorInfo {
    fn from(error: &InvokeError) -> Self {
        let message = match error {
            InvokeError::Function(e) => e.message().to_owned(),
            other => other.to_string(),
        };
        Self {
            error_type: error.error_type().to_owned(),
            message,
            kind: error.kind(),
        }
    }
}

impl ErrorInfo {
    /// The kind of a failure read back from its error type (Lambda's records do not carry it).
    fn kind_of(error_type: &str) -> OutcomeKind {
        match error_type {
            "Timeout" | "Sandbox.Timedout" => OutcomeKind::Timeout,
            "Panic" | "Runtime.ExitError" => OutcomeKind::Panic,
            "InitFailure" | "Runtime.InitError" => OutcomeKind::InitFailure,
            _ => OutcomeKind::Error,
        }
    }
}

/// What a destination receives about one async invocation: Lambda's invocation record.
///
/// Serialised (and read back) as Lambda writes it:
///
/// ```json
/// {"version":"1.0","timestamp":"2019-11-14T18:16:05.568Z",
///  "requestContext":{"requestId":"…","functionArn":"arn:aws:lambda:…:function:orders:$LATEST",
///                    "condition":"RetriesExhausted","approximateInvokeCount":3},
///  "requestPayload":{…},
///  "responseContext":{"statusCode":200,"executedVersion":"$LATEST","functionError":"Unhandled"},
///  "responsePayload":{"errorMessage":"…","errorType":"…","stackTrace":[]}}
/// ```
///
/// On success `responsePayload` is the output and there is no `functionError`. An event that
/// never ran (it expired waiting for capacity, or the reserved concurrency is 0) has status
/// 429 and no `responsePayload`. The error's [`ErrorInfo::kind`] is not written; read back,
/// it is inferred from the error type.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InvocationRecord<E, O> {
    /// The request id returned by `invoke_async` (`requestContext.requestId`).
    pub request_id: RequestId,
    /// The function's name.
    pub function: Arc<str>,
    /// The function's unqualified ARN, in its runtime's region and account
    /// (`requestContext.functionArn` adds the `$LATEST` qualifier, as Lambda writes it).
    pub function_arn: Arc<str>,
    /// When the record was made.
    pub timestamp: SystemTime,
    /// Why the invocation ended here.
    pub condition: Condition,
    /// How many times the function was invoked for this event (throttles not counted).
    pub approximate_invoke_count: u32,
    /// The original event (`requestPayload`).
    pub request: E,
    /// The output, on success (`responsePayload`).
    pub response: Option<O>,
    /// The last attempt's error, on failure (`responsePayload`).
    pub error: Option<ErrorInfo>,
}

impl<E, O> InvocationRecord<E, O> {
    /// The status Lambda writes in `responseContext.statusCode`: 200 for an attempt that
    /// answered, 429 for an event that never ran.
    pub fn status_code(&self) -> u16 {
        if self.response.is_some() || self.error.is_some() {
            ANSWERED
        } else {
            NEVER_RAN
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext {
    request_id: String,
    function_arn: String,
    condition: Condition,
    approximate_invoke_count: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseContext {
    status_code: u16,
    executed_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_error: Option<&'static str>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorPayload {
    error_message: String,
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    stack_trace: Vec<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponsePayload<'a, O> {
    Output(&'a O),
    Error(ErrorPayload),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a, E, O> {
    version: &'static str,
    timestamp: String,
    request_context: RequestContext,
    request_payload: &'a E,
    response_context: ResponseContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_payload: Option<ResponsePayload<'a, O>>,
}

impl<E: Serialize, O: Serialize> Serialize for InvocationRecord<E, O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let response_payload = match (&self.response, &self.error) {
            (Some(output), _) => Some(ResponsePayload::Output(output)),
            (None, Some(error)) => Some(ResponsePayload::Error(ErrorPayload {
                error_message: error.message.clone(),
                error_type: error.error_type.clone(),
                stack_trace: Vec::new(),
            })),
            (None, None) => None,
        };
        WireOut {
            version: "1.0",
            timestamp: rfc3339_millis(self.timestamp),
            request_context: RequestContext {
                request_id: self.request_id.to_string(),
                function_arn: format!("{}:{LATEST}", self.function_arn),
                condition: self.condition,
                approximate_invoke_count: self.approximate_invoke_count,
            },
            request_payload: &self.request,
            response_context: ResponseContext {
                status_code: self.status_code(),
                executed_version: LATEST,
                function_error: self.error.as_ref().map(|_| "Unhandled"),
            },
            response_payload,
        }
        .serialize(serializer)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn<E> {
    timestamp: String,
    request_context: RequestContext,
    request_payload: E,
    #[serde(default)]
    response_payload: Option<serde_json::Value>,
}

impl<'de, E, O> Deserialize<'de> for InvocationRecord<E, O>
where
    E: Deserialize<'de>,
    O: serde::de::DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireIn::<E>::deserialize(deserializer)?;
        let context = wire.request_context;
        let timestamp = parse_rfc3339(&wire.timestamp).ok_or_else(|| {
            D::Error::custom(format!("timestamp {:?} is not RFC 3339", wire.timestamp))
        })?;
        let request_id = parse_request_id(&context.request_id).ok_or_else(|| {
            D::Error::custom(format!("requestId {:?} is not a UUID", context.request_id))
        })?;
        let (function_arn, function) =
            parse_function_arn(&context.function_arn).ok_or_else(|| {
                D::Error::custom(format!(
                    "functionArn {:?} is not a Lambda function ARN",
                    context.function_arn
                ))
            })?;
        let payload = wire.response_payload.unwrap_or(serde_json::Value::Null);
        let (response, error) = if context.condition == Condition::Success {
            (
                Some(O::deserialize(payload).map_err(D::Error::custom)?),
                None,
            )
        } else if payload.is_null() {
            (None, None)
        } else {
            let payload = ErrorPayload::deserialize(payload).map_err(D::Error::custom)?;
            let kind = ErrorInfo::kind_of(&payload.error_type);
            let error = ErrorInfo {
                error_type: payload.error_type,
                message: payload.error_message,
                kind,
            };
            (None, Some(error))
        };
        Ok(Self {
            request_id,
            function: Arc::from(function),
            function_arn: Arc::from(function_arn),
            timestamp,
            condition: context.condition,
            approximate_invoke_count: context.approximate_invoke_count,
            request: wire.request_payload,
            response,
            error,
        })
    }
}

/// A request id written as a UUID.
fn parse_request_id(text: &str) -> Option<RequestId> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    u128::from_str_radix(&hex, 16)
        .ok()
        .map(RequestId::from_u128)
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`: the unqualified ARN and
/// the name.
fn parse_function_arn(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(8, ':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name, ..] if !name.is_empty() => {
            let end = parts[..7].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
            Some((&arn[..end], name))
        }
        _ => None,
    }
}

/// What Lambda sends with a dead letter, as the message attributes `RequestID`, `ErrorCode`
/// and `ErrorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetterAttributes {
    /// The request id returned by `invoke_async` (`RequestID`).
    #[serde(
        rename = "RequestID",
        serialize_with = "crate::util::serialize_display"
    )]
    pub request_id: RequestId,
    /// The HTTP status code (`ErrorCode`): 200 when the last attempt answered with an error,
    /// 429 when the event never ran (it expired waiting for capacity, or the reserved
    /// concurrency is 0).
    #[serde(rename = "ErrorCode")]
    pub error_code: u16,
    /// The first kilobyte of the error message (`ErrorMessage`); for an event that never ran,
    /// why.
    #[serde(rename = "ErrorMessage")]
    pub error_message: String,
}

impl DeadLetterAttributes {
    /// Attributes of a dead letter.
    pub fn new(request_id: RequestId, error_code: u16, error_message: impl Into<String>) -> Self {
        let mut error_message = error_message.into();
        if error_message.len() > ERROR_MESSAGE_LIMIT {
            let mut end = ERROR_MESSAGE_LIMIT;
            while !error_message.is_char_boundary(end) {
                end -= 1;
            }
            error_message.truncate(end);
        }
        Self {
            request_id,
            error_code,
            error_message,
        }
    }

    /// The attributes of an event that failed for good with `condition`, the last attempt's
    /// error if it ran.
    pub(super) fn of(
        request_id: RequestId,
        condition: Condition,
        error: Option<&ErrorInfo>,
    ) -> Self {
        match error {
            Some(error) => Self::new(request_id, ANSWERED, error.message.as_str()),
            None => Self::new(
                request_id,
                NEVER_RAN,
                match condition {
                    Condition::ZeroReservedConcurrency => {
                        "the function's reserved concurrency is 0: it is never invoked"
                    }
                    _ => "the event passed its maximum age before it could run",
                },
            ),
        }
    }
}

/// A dead letter as a queue would hold it: the event as the body, and Lambda's attributes.
/// A channel of these is a dead-letter target that keeps both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetterMessage<E> {
    /// The original event.
    pub event: E,
    /// `RequestID`, `ErrorCode`, `ErrorMessage`.
    pub attributes: DeadLetterAttributes,
}

impl<E> DeadLetterMessage<E> {
    /// A dead letter of `event`.
    pub fn new(event: E, attributes: DeadLetterAttributes) -> Self {
        Self { event, attributes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_with_huge_years_are_no_time() {
        assert_eq!(parse_rfc3339("1000000000000000-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("-5-01-01T00:00:00Z"), None);
        assert!(parse_rfc3339("2019-11-14T18:16:05.568Z").is_some());
    }

    #[test]
    fn times_round_trip() {
        for ms in [0u64, 1_573_755_365_568, 951_782_400_000, 4_102_444_800_999] {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339_millis(at)), Some(at), "{ms}");
        }
        assert_eq!(
            parse_rfc3339("2019-11-14T18:16:05Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_573_755_365))
        );
        for bad in [
            "",
            "2019-11-14",
            "2019-13-14T18:16:05Z",
            "2019-11-14T18:16:05.5x Z",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn arns_and_ids_parse() {
        assert_eq!(
            parse_function_arn(
                "arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST"
            ),
            Some((
                "arn:aws:lambda:us-east-1:123456789012:function:my-function",
                "my-function"
            ))
        );
        assert_eq!(
            parse_function_arn("arn:aws:lambda:us-east-1:123456789012:function:f"),
            Some(("arn:aws:lambda:us-east-1:123456789012:function:f", "f"))
        );
        assert_eq!(
            parse_function_arn("arn:aws:sqs:us-east-1:123456789012:q"),
            None
        );
        let id = RequestId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(parse_request_id(&id.to_string()), Some(id));
        assert_eq!(
            parse_request_id("e4b46cbf-b738-xmpl-8880-a18cdf61200e"),
            None
        );
    }

    #[test]
    fn error_messages_keep_their_first_kilobyte() {
        let id = RequestId::from_u128(1);
        let long = "é".repeat(600); // 1,200 bytes
        let attributes = DeadLetterAttributes::new(id, 200, long);
        assert_eq!(attributes.error_message.len(), 1_024);
        assert!(attributes.error_message.chars().all(|c| c == 'é'));
    }
}
