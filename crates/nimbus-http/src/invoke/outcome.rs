//! How outcomes become answers: the error JSON of an outcome the function produced (a 200
//! with `X-Amz-Function-Error`), and the AWS error of one it did not (a throttle, a refusal,
//! nothing found).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use nimbus_core::{AsyncCallError, InvokeError, LookupError, RejectReason, Runtime};

use super::error::AwsError;
use super::retry::Stored;
use crate::request_id::fresh_request_id;

/// The `x-amzn-RequestId` header.
pub(crate) fn request_id_header(id: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("0")),
    )
}

/// The answer to an async invoke the runtime refused, or to a call by name that found nothing.
pub(crate) fn async_error(
    name: &str,
    runtime: &Runtime,
    error: AsyncCallError<serde_json::Value>,
) -> AwsError {
    match error {
        AsyncCallError::Lookup(LookupError::NotFound(_)) => not_found(runtime, name),
        AsyncCallError::Lookup(other) => AwsError::invalid_parameter(other.to_string()),
        AsyncCallError::Payload(message) => AwsError::invalid_content(message),
        AsyncCallError::Rejected(rejected) => match rejected.reason {
            RejectReason::TooLarge { limit, .. } => AwsError::too_large(limit),
            RejectReason::QueueFull { capacity } => AwsError::too_many(
                "ConcurrentInvocationLimitExceeded",
                format!("the function's async queue holds {capacity} events already"),
            ),
            RejectReason::KeptFailuresFull { limit } => AwsError::too_many(
                "ConcurrentInvocationLimitExceeded",
                format!("the function keeps {limit} failed events for the host already"),
            ),
            RejectReason::RecursiveLoop { hops } => AwsError::recursive(format!(
                "the event passed through {hops} invocations: a recursive loop"
            )),
            RejectReason::Unregistered => not_found(runtime, name),
            RejectReason::AccessDenied(denied) => AwsError::access_denied(&denied),
            other => AwsError::service(format!("{other:?}")),
        },
        other => AwsError::service(other.to_string()),
    }
}

/// 404 for `name`, named by its ARN as Lambda names it.
pub(crate) fn not_found(runtime: &Runtime, name: &str) -> AwsError {
    let config = runtime.config();
    AwsError::not_found(&nimbus_core::util::aws::function_arn(
        &config.region,
        &config.account_id,
        name,
    ))
}

/// An error answer as kept, with a request id of its own (SDKs show it to users).
pub(crate) fn stored_error(error: AwsError) -> Stored {
    let mut headers = error.headers();
    headers.push(request_id_header(&fresh_request_id()));
    Stored {
        status: error.status(),
        headers,
        body: Bytes::from(error.body()),
    }
}

/// The error JSON of an outcome the function produced, or `None` for one it did not.
pub(crate) fn function_error(error: &InvokeError, request_id: &str) -> Option<serde_json::Value> {
    let message = match error {
        InvokeError::Function(e) => e.message().to_owned(),
        InvokeError::Timeout(after) => format!(
            "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
            after.as_secs_f64()
        ),
        InvokeError::Panic(_)
        | InvokeError::Crashed(_)
        | InvokeError::OutOfMemory(_)
        | InvokeError::Init(_)
        | InvokeError::Payload(_)
        | InvokeError::ResponseTooLarge { .. } => error.to_string(),
        _ => return None,
    };
    Some(serde_json::json!({
        "errorType": error.error_type(),
        "errorMessage": message,
    }))
}

/// The error answer of an outcome the function did not produce.
pub(crate) fn invoke_error(name: &str, runtime: &Runtime, error: &InvokeError) -> AwsError {
    match error {
        InvokeError::Throttled(reason) => AwsError::throttled(*reason),
        InvokeError::RecursiveLoop { .. } => AwsError::recursive(error.to_string()),
        InvokeError::AccessDenied(denied) => AwsError::access_denied(denied),
        InvokeError::Unregistered(_) => async_error(
            name,
            runtime,
            AsyncCallError::Lookup(LookupError::NotFound(name.to_owned())),
        ),
        other => AwsError::service(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use nimbus_core::{AccessDenied, Rejected};
    use serde_json::{json, Value};

    use super::*;

    fn denied() -> AccessDenied {
        AccessDenied::new(
            "arn:aws:iam::111122223333:user/ana",
            "lambda:InvokeFunction",
            "arn:aws:lambda:us-east-1:000000000000:function:orders",
        )
    }

    fn answer(error: &AwsError) -> (StatusCode, String, Value) {
        let headers = error.headers();
        let code = headers
            .iter()
            .find(|(name, _)| name == "x-amzn-errortype")
            .and_then(|(_, value)| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            error.status(),
            code,
            serde_json::from_str(&error.body()).unwrap(),
        )
    }

    #[test]
    fn a_refused_invoke_is_a_403_access_denied_naming_no_statement() {
        let runtime = Runtime::default();
        let expected = json!({"Type": "User", "message": denied().to_string()});
        let sync = invoke_error("orders", &runtime, &InvokeError::AccessDenied(denied()));
        assert_eq!(
            answer(&sync),
            (
                StatusCode::FORBIDDEN,
                "AccessDeniedException".into(),
                expected.clone()
            )
        );
        let refused = AsyncCallError::Rejected(Rejected {
            event: json!({}),
            reason: RejectReason::AccessDenied(denied()),
        });
        let queued = async_error("orders", &runtime, refused);
        assert_eq!(
            answer(&queued),
            (
                StatusCode::FORBIDDEN,
                "AccessDeniedException".into(),
                expected
            )
        );
    }
}
