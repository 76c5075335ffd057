//! The API gateway: HTTP routes to functions, as API Gateway's Lambda proxy integration.
//!
//! A request that matches a route becomes a proxy event (payload 2.0 by default, 1.0 per
//! route), and the function's answer becomes the response:
//!
//! | outcome | answer |
//! |---|---|
//! | output | the response it describes ([`PayloadVersion`]) |
//! | function error, crash, init failure, malformed output, unknown function | 502 `Internal server error` |
//! | function timeout | 504 `Endpoint request timed out` |
//! | Lambda throttle | 500 `Internal server error`, `x-amzn-ErrorType: InternalServerErrorException` |
//! | route throttle ([`Route::with_throttle`]) | 429 `Too Many Requests`, `Retry-After` |
//! | route authorization refused ([`Route::with_auth`]), or the function's policy refuses the caller | 403 (see below) |
//! | no route | 404 `Not Found`; 403 `Missing Authentication Token` when every route is 1.0 (a REST API) |
//! | body over the limit | 413 `Request Entity Too Large` |
//!
//! Every answer carries `apigw-requestid` (and `x-amzn-RequestId`); error bodies are JSON
//! `{"message": ...}`.
//!
//! # Authorization
//!
//! A route is open by default: anyone may call it, and its function is invoked as the host,
//! never checked. [`Route::with_auth`] asks for more, as a function URL's `AuthType` or a
//! REST API method's settings do:
//!
//! - [`RouteAuth::ApiKey`]: the request must carry one of the host's [`ApiKeys`]
//!   ([`HttpConfig::with_api_keys`](crate::HttpConfig::with_api_keys)) in `x-api-key`;
//!   without one, or with an unknown one, it gets 403 `{"message":"Forbidden"}` with
//!   `x-amzn-ErrorType: ForbiddenException`. The function is invoked as the key's identity.
//! - [`RouteAuth::AwsIam`]: the request must be SigV4-signed for the service `execute-api`
//!   and the runtime's region, with a key of the server's
//!   [`Credentials`](crate::Credentials) or the runtime's own; unsigned it gets 403
//!   `{"message":"Missing Authentication Token"}`, badly signed 403 with API Gateway's
//!   message (`The request signature we calculated does not match ...`). The function is
//!   invoked as the signer.
//!
//! Either way the caller is then checked against the function's policy (see
//! [`nimbus_core::permission`]) as an Invoke API caller would be; a refusal is 403
//! `{"message":"Forbidden"}` too, whatever the reason. Events carry who called: payload 1.0
//! in `requestContext.identity` (`apiKey`; `accessKey`, `accountId`, `userArn` when signed),
//! payload 2.0 in `requestContext.authorizer.iam` when signed (HTTP APIs have no API keys).
//! Requests are authenticated before a route's throttle counts them, so that callers without
//! a key do not use up a route's budget.

mod answer;
mod api_keys;
mod auth;
mod decode;
mod event;
mod json;
mod response;
mod route;
mod table;
mod template;
mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use nimbus_core::{CallError, InvokeError, InvokeOptions};

pub use api_keys::ApiKeys;
pub(crate) use auth::GatewayKeys;
pub use auth::RouteAuth;
pub use route::{PayloadVersion, Route};
pub(crate) use table::Gateway;

use crate::request_id::fresh_request_id;

/// The source IP when the server does not know the peer (a host serving the router itself).
const UNKNOWN_SOURCE_IP: &str = "127.0.0.1";

/// What the gateway's handler needs: the runtime, the route table and the keys routes check.
pub(crate) struct GatewayApi {
    pub(crate) runtime: nimbus_core::Runtime,
    pub(crate) table: Gateway,
    pub(crate) keys: GatewayKeys,
}

/// Answers a request outside the Invoke API's paths.
pub(crate) async fn serve(State(state): State<Arc<GatewayApi>>, request: Request) -> Response {
    // Boxed on its own: axum boxes the handler's future too, and the two together pass 1 KiB,
    // where every allocation made glibc's malloc consolidate its free lists (~6 % of a request).
    Box::pin(answer_request(state, request)).await
}

async fn answer_request(state: Arc<GatewayApi>, request: Request) -> Response {
    let request_id = fresh_request_id();
    let (parts, body) = request.into_parts();
    let gateway = &state.table;
    let Some(matched) = gateway.find(&parts.method, parts.uri.path()) else {
        return if gateway.is_rest_api() {
            answer::error(
                StatusCode::FORBIDDEN,
                "Missing Authentication Token",
                &request_id,
            )
        } else {
            answer::error(StatusCode::NOT_FOUND, "Not Found", &request_id)
        };
    };
    let body = match read_body(&parts.headers, body, gateway.max_request_bytes()).await {
        Ok(body) => body,
        Err(status) => {
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "Request Entity Too Large"
            } else {
                "Bad Request"
            };
            return answer::error(status, message, &request_id);
        }
    };
    let route = matched.route;
    // Before the throttle: a caller without a key does not use up the route's budget.
    let caller = match auth::authenticate(route.auth(), &state.keys, &state.runtime, &parts, &body)
    {
        Ok(caller) => caller,
        Err(refusal) => return refusal.answer(&request_id),
    };
    if let Some(throttle) = matched.throttle {
        if let Err(retry_after) = throttle.admit() {
            return answer::route_throttled(retry_after, &request_id);
        }
    }
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| UNKNOWN_SOURCE_IP.to_owned(), |c| c.0.ip().to_string());
    let incoming = event::Incoming {
        method: &parts.method,
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query().unwrap_or_default(),
        version: parts.version,
        headers: &parts.headers,
        body: &body,
        source_ip,
        request_id: &request_id,
        at: SystemTime::now(),
        account_id: &state.runtime.config().account_id,
        route_key: route.key(),
        resource: route.path(),
        path_parameters: &matched.params,
        caller: &caller,
    };
    let payload = route.payload();
    let event = match payload {
        PayloadVersion::V1 => event::v1(&incoming),
        PayloadVersion::V2 => event::v2(&incoming),
    };
    let event = match event {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(%error, "the gateway could not encode a proxy event");
            return answer::internal_error(&request_id);
        }
    };
    // A client that goes away does not cancel the invocation. An open route's caller is
    // the host, never checked; any other is checked against the function's policy.
    let invocation = {
        let state = Arc::clone(&state);
        let function = route.function().to_owned();
        let principal = caller.principal;
        crate::detach::outliving(async move {
            state
                .runtime
                .invoke_json_as(principal, &function, event, InvokeOptions::default())
                .await
        })
    };
    let result = invocation.await.result;
    outcome(route.function(), payload, result, &request_id)
}

/// The answer to an invocation's outcome.
fn outcome(
    function: &str,
    payload: PayloadVersion,
    result: Result<serde_json::Value, CallError>,
    request_id: &str,
) -> Response {
    let output = match result {
        Ok(output) => output,
        Err(CallError::Invoke(InvokeError::Timeout(_))) => {
            return answer::error(
                StatusCode::GATEWAY_TIMEOUT,
                "Endpoint request timed out",
                request_id,
            )
        }
        Err(CallError::Invoke(InvokeError::Throttled(_))) => {
            return answer::lambda_throttled(request_id)
        }
        // Never why: the caller learns only that it may not.
        Err(CallError::Invoke(InvokeError::AccessDenied(_))) => {
            return auth::Refusal::forbidden().answer(request_id)
        }
        Err(CallError::PayloadTooLarge { .. }) => {
            return answer::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large",
                request_id,
            )
        }
        Err(error) => {
            tracing::debug!(function, %error, "gateway invocation failed");
            return answer::internal_error(request_id);
        }
    };
    let reply = match payload {
        PayloadVersion::V1 => response::v1(output),
        PayloadVersion::V2 => response::v2(output),
    };
    match reply {
        Ok(reply) => answer::reply(reply, request_id),
        Err(error) => {
            tracing::warn!(function, %error, "gateway answers 502");
            answer::internal_error(request_id)
        }
    }
}

/// The body; 413 if it is longer than `limit`, 400 if it cannot be read.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, StatusCode> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_long = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_long {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        }
    })
}

#[cfg(test)]
mod future_size {
    use axum::body::Body;
    use axum::extract::{Path, Query, Request, State};

    use crate::server::AppState;

    /// axum boxes every handler's future; one of 1 KiB or more made each request's allocation
    /// consolidate glibc's free lists (a quarter of the gateway's time in process).
    #[tokio::test]
    async fn handler_futures_stay_well_under_a_kibibyte() {
        let state = AppState::for_tests(nimbus_core::Runtime::default());
        let gateway = super::serve(State(state.gateway), Request::new(Body::empty()));
        assert!(std::mem::size_of_val(&gateway) <= 512);
        let invoke = crate::invoke::invoke(
            State(state.invoke),
            Path("f".into()),
            Query(Default::default()),
            None,
            Default::default(),
            Body::empty(),
        );
        assert!(std::mem::size_of_val(&invoke) <= 512);
    }
}
