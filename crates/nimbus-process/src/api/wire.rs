//! The Runtime API's wire facts: paths, header names, the payload limit, the answers real
//! clients expect, and how an error report of any shape becomes a function error.

use nimbus_core::FunctionError;

/// The API version prefix every path starts with.
pub(crate) const PREFIX: &str = "/2018-06-01/runtime/";

/// The largest request or response body, as Lambda's own Runtime API allows: 6 MiB + 100 bytes.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024 + 100;

pub(crate) const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
pub(crate) const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
pub(crate) const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
pub(crate) const TRACE_ID: &str = "lambda-runtime-trace-id";
pub(crate) const CLIENT_CONTEXT: &str = "lambda-runtime-client-context";
pub(crate) const COGNITO_IDENTITY: &str = "lambda-runtime-cognito-identity";
pub(crate) const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
/// A streamed response's trailer with the failure's JSON, base64-encoded.
pub(crate) const ERROR_BODY: &str = "lambda-runtime-function-error-body";

/// `202 {"status":"OK"}`: a response or error report accepted.
pub(crate) const ACCEPTED: &str = r#"{"status":"OK"}"#;
/// `400`: the request id is unknown or was already answered.
pub(crate) const INVALID_REQUEST_ID: &str =
    r#"{"errorType":"InvalidRequestID","errorMessage":"Invalid request ID"}"#;
/// `413`: a body above [`MAX_PAYLOAD`].
pub(crate) const TOO_LARGE: &str = r#"{"errorType":"RequestEntityTooLarge","errorMessage":"Exceeded maximum allowed payload size (6291556 bytes)."}"#;
/// `404`: not a Runtime API path.
pub(crate) const NOT_FOUND: &str =
    r#"{"errorType":"NotFound","errorMessage":"not a Runtime API path"}"#;
/// `403`: an init error reported after init ended.
pub(crate) const INVALID_STATE: &str = r#"{"errorType":"InvalidStateTransition","errorMessage":"init/error is only valid during init"}"#;

/// What a runtime reported about a failure (`/error` or `/init/error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorReport {
    pub(crate) error_type: String,
    pub(crate) message: String,
}

impl ErrorReport {
    /// Reads a report of any shape: `{"errorType","errorMessage"}` with `stackTrace`, `trace` or
    /// nothing else (the three clients differ), a JSON value of another shape, or not JSON at
    /// all. The type comes from the body, else from the `Lambda-Runtime-Function-Error-Type`
    /// header as Lambda reads it (informative: never a reason to refuse the report).
    pub(crate) fn parse(body: &[u8], header_type: Option<&str>) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|v| v.get(name))
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let error_type = field("errorType").unwrap_or_else(|| normalised(header_type).to_owned());
        let message =
            field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        Self {
            error_type,
            message,
        }
    }

    pub(crate) fn into_error(self) -> FunctionError {
        FunctionError::new(self.error_type, self.message)
    }
}

/// The error-type header as Lambda keeps it: `Runtime.Xxx` or `Function.Xxx` as sent, any other
/// `Function.` value as `Function.Unknown`, anything else (Rust's `unhandled`, say) as
/// `Runtime.Unknown`.
fn normalised(header: Option<&str>) -> &str {
    let Some(value) = header else {
        return "Runtime.Unknown";
    };
    let well_formed = |rest: &str| {
        let mut chars = rest.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.all(|c| c.is_ascii_alphabetic())
    };
    match value.split_once('.') {
        Some(("Runtime" | "Function", rest)) if well_formed(rest) => value,
        Some(("Function", _)) => "Function.Unknown",
        _ => "Runtime.Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_shape_gives_its_type_and_message() {
        let python = br#"{"errorMessage":"bad order","errorType":"OrderError","requestId":"x","stackTrace":["  File \"app.py\""]}"#;
        let node = br#"{"errorType":"OrderError","errorMessage":"bad order","trace":["OrderError: bad order"]}"#;
        let rust = br#"{"errorType":"&str","errorMessage":"bad order"}"#;
        for (body, error_type) in [
            (&python[..], "OrderError"),
            (node, "OrderError"),
            (rust, "&str"),
        ] {
            let report = ErrorReport::parse(body, Some("unhandled"));
            assert_eq!(report.error_type, error_type);
            assert_eq!(report.message, "bad order");
        }
    }

    #[test]
    fn a_report_without_type_takes_the_header_then_a_default() {
        let report =
            ErrorReport::parse(br#"{"errorMessage":"m"}"#, Some("Runtime.HandlerNotFound"));
        assert_eq!(report.error_type, "Runtime.HandlerNotFound");
        let report = ErrorReport::parse(b"plain text", Some("unhandled"));
        assert_eq!(report.error_type, "Runtime.Unknown");
        assert_eq!(report.message, "plain text");
        let report = ErrorReport::parse(b"", Some("Function.bad-name"));
        assert_eq!(report.error_type, "Function.Unknown");
        let report = ErrorReport::parse(b"", Some(""));
        assert_eq!(report.error_type, "Runtime.Unknown");
        assert_eq!(report.message, "");
    }
}
