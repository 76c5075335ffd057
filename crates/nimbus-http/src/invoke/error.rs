//! Errors of the Invoke API in the shapes the AWS SDKs parse: a status, `x-amzn-ErrorType`,
//! and a JSON body whose message key has the case of the exception's model.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use nimbus_core::{AccessDenied, ThrottleReason};

/// An error answer of the Invoke API.
#[derive(Debug, Clone)]
pub(crate) struct AwsError {
    status: StatusCode,
    code: &'static str,
    message: String,
    reason: Option<&'static str>,
    retry_after_secs: Option<u64>,
}

impl AwsError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            reason: None,
            retry_after_secs: None,
        }
    }

    /// 404 `ResourceNotFoundException`, "Function not found: <arn>".
    pub(crate) fn not_found(arn: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: {arn}"),
        )
    }

    /// 404 `ResourceNotFoundException` with `message` (a policy or a statement not found).
    pub(crate) fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 409 `ResourceConflictException`: a statement id already taken.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// 412 `PreconditionFailedException`: a `RevisionId` that is not the current one.
    pub(crate) fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            message,
        )
    }

    /// 400 `ValidationException`: a malformed name or parameter.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// 400 `InvalidParameterValueException`.
    pub(crate) fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 400 `InvalidRequestContentException`.
    pub(crate) fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// 413 `RequestTooLargeException`.
    pub(crate) fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        )
    }

    /// 429 `TooManyRequestsException` with Lambda's reason for the throttle.
    pub(crate) fn throttled(reason: ThrottleReason) -> Self {
        let reason = match reason {
            ThrottleReason::FunctionLimit => "ReservedFunctionConcurrentInvocationLimitExceeded",
            ThrottleReason::RuntimeLimit => "ConcurrentInvocationLimitExceeded",
            _ => "FunctionInvocationRateLimitExceeded",
        };
        Self::too_many(reason, "Rate Exceeded.")
    }

    /// 429 `TooManyRequestsException` with `reason`.
    pub(crate) fn too_many(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason),
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                message,
            )
        }
    }

    /// 500 `ServiceException`.
    pub(crate) fn service(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            message,
        )
    }

    /// 403 `AccessDeniedException`: the function's policy does not let the caller in. The
    /// message names the caller, the action and the function, never a statement.
    pub(crate) fn access_denied(denied: &AccessDenied) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            denied.to_string(),
        )
    }

    /// 403 `UnrecognizedClientException`: an access key the server does not know.
    pub(crate) fn unrecognized_client() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    /// 403 `InvalidSignatureException`: a signature that does not verify, or has expired.
    pub(crate) fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "InvalidSignatureException", message)
    }

    /// 400 `IncompleteSignatureException`: an `Authorization` header missing a part.
    pub(crate) fn incomplete_signature(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IncompleteSignatureException",
            message,
        )
    }

    /// 400 `RecursiveInvocationException`.
    pub(crate) fn recursive(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "RecursiveInvocationException",
            message,
        )
    }

    /// The message's key: the case each exception's model uses.
    fn message_key(&self) -> &'static str {
        match self.code {
            "ResourceNotFoundException" | "ServiceException" | "RecursiveInvocationException" => {
                "Message"
            }
            _ => "message",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl AwsError {
    /// The JSON body: `Type`, the message under its modelled key, and `Reason` for throttles.
    pub(crate) fn body(&self) -> String {
        let mut body = serde_json::Map::new();
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        body.insert("Type".into(), kind.into());
        body.insert(self.message_key().into(), self.message.clone().into());
        if let Some(reason) = self.reason {
            body.insert("Reason".into(), reason.into());
        }
        serde_json::Value::Object(body).to_string()
    }

    /// The headers: the error code the SDKs map to an exception class, and `Retry-After`.
    pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-amzn-errortype"),
                HeaderValue::from_static(self.code),
            ),
        ];
        if let Some(secs) = self.retry_after_secs {
            headers.push((http::header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        headers
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
        response
    }
}
