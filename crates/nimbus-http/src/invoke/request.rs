//! Reading an invoke request: its headers, its body within the payload limit, and its
//! client context.

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;
use nimbus_core::ClientContext;

use super::error::AwsError;

/// The largest client context Lambda accepts, base64-encoded.
const MAX_CLIENT_CONTEXT: usize = 3583;

/// How the caller asked to invoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    pub(crate) fn parse(headers: &HeaderMap) -> Result<Self, AwsError> {
        match header(headers, "x-amz-invocation-type")? {
            None | Some("RequestResponse") => Ok(Self::RequestResponse),
            Some("Event") => Ok(Self::Event),
            Some("DryRun") => Ok(Self::DryRun),
            Some(other) => Err(AwsError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to \
                 satisfy constraint: Member must satisfy enum value set: [Event, \
                 RequestResponse, DryRun]"
            ))),
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RequestResponse => "RequestResponse",
            Self::Event => "Event",
            Self::DryRun => "DryRun",
        }
    }
}

/// A header's value as text; a value that is not visible ASCII is a bad parameter.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AwsError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| AwsError::invalid_parameter(format!("header {name} is not text")))
        })
        .transpose()
}

/// A 64-bit hash of a request body, for the retry key.
pub(crate) fn payload_hash(payload: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

/// Reads the body up to `limit` bytes; more is 413.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Bytes, AwsError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(AwsError::too_large(limit));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_long = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_long {
            AwsError::too_large(limit as u64)
        } else {
            AwsError::invalid_content(format!("could not read the request body: {e}"))
        }
    })
}

/// `X-Amz-Client-Context`: base64 of a JSON object, at most 3,583 bytes.
pub(crate) fn client_context(encoded: &str) -> Result<ClientContext, AwsError> {
    let bad =
        || AwsError::invalid_content("Client context must be a valid Base64-encoded JSON object.");
    if encoded.len() > MAX_CLIENT_CONTEXT {
        return Err(AwsError::invalid_content(format!(
            "Client context must be at most {MAX_CLIENT_CONTEXT} bytes, base64-encoded."
        )));
    }
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad())?;
    serde_json::from_slice(&json).map_err(|_| bad())
}
