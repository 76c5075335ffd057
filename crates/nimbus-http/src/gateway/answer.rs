//! The gateway's own answers (errors as API Gateway words them) and the function's replies
//! as axum responses, every one with the request id.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderName, HeaderValue, StatusCode};

use super::response::Reply;

/// `apigw-requestid`, HTTP API's request id header.
const APIGW_REQUEST_ID: HeaderName = HeaderName::from_static("apigw-requestid");
/// `x-amzn-RequestId`, REST API's.
const AMZN_REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");

/// The function's reply.
pub(crate) fn reply(reply: Reply, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    with_request_id(response, request_id)
}

/// An error of the gateway: `{"message": ...}` as JSON.
pub(crate) fn error(status: StatusCode, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_request_id(response, request_id)
}

/// 502: the function failed or its answer is not a proxy response.
pub(crate) fn internal_error(request_id: &str) -> Response {
    error(StatusCode::BAD_GATEWAY, "Internal server error", request_id)
}

/// 500 with `x-amzn-ErrorType`: Lambda throttled the invocation (REST API's answer).
pub(crate) fn lambda_throttled(request_id: &str) -> Response {
    let response = error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        request_id,
    );
    with_error_type(response, "InternalServerErrorException")
}

/// `response` with `x-amzn-ErrorType: error_type`, as API Gateway names its errors.
pub(crate) fn with_error_type(mut response: Response, error_type: &'static str) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_static(error_type),
    );
    response
}

/// 429 with `Retry-After`: the route's throttle.
pub(crate) fn route_throttled(retry_after_secs: u64, request_id: &str) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Too Many Requests",
        request_id,
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs),
    );
    response
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        let headers = response.headers_mut();
        headers.insert(APIGW_REQUEST_ID, value.clone());
        headers.insert(AMZN_REQUEST_ID, value);
    }
    response
}
