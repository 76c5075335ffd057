//! The Runtime API's routes over one instance's [`Endpoint`]: `/next`, `/{id}/response`,
//! `/{id}/error` and `/init/error`, answered as Lambda's own Runtime API answers them.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::endpoint::{Answer, Endpoint, NextEvent};
use super::wire::{self, ErrorReport};

type Reply = Response<Full<Bytes>>;

/// Answers one request.
pub(crate) async fn handle(
    endpoint: Arc<Endpoint>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let path = request.uri().path();
    let Some(route) = path.strip_prefix(wire::PREFIX) else {
        return Ok(json(StatusCode::NOT_FOUND, wire::NOT_FOUND));
    };
    let route = route.to_owned();
    let post = request.method() == Method::POST;
    Ok(match route.as_str() {
        "invocation/next" if request.method() == Method::GET => next(&endpoint).await,
        "init/error" if post => init_error(&endpoint, request).await,
        _ => match route
            .strip_prefix("invocation/")
            .and_then(|rest| rest.rsplit_once('/'))
        {
            Some((id, "response")) if post => response(&endpoint, id, request).await,
            Some((id, "error")) if post => error(&endpoint, id, request).await,
            _ => json(StatusCode::NOT_FOUND, wire::NOT_FOUND),
        },
    })
}

/// `GET /invocation/next`: held open until the executor hands this instance an event.
async fn next(endpoint: &Endpoint) -> Reply {
    let Some(event) = endpoint.next().await else {
        // The instance is being disposed of: its process is about to be stopped, and a
        // runtime treats any answer but an event as fatal, so none is given.
        return std::future::pending().await;
    };
    let NextEvent {
        request_id,
        deadline_ms,
        function_arn,
        trace_id,
        client_context,
        identity,
        body,
    } = event;
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut set = |name: &'static str, value: String| {
        // Values come from nimbus (ids, numbers, ARNs) or from JSON it serialised, which never
        // holds a raw control character; a value that is still refused is left out.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    set(wire::REQUEST_ID, request_id);
    set(wire::DEADLINE_MS, deadline_ms.to_string());
    set(wire::FUNCTION_ARN, function_arn);
    set(wire::TRACE_ID, trace_id);
    if let Some(client_context) = client_context {
        set(wire::CLIENT_CONTEXT, client_context);
    }
    if let Some(identity) = identity {
        set(wire::COGNITO_IDENTITY, identity);
    }
    response
}

/// `POST /invocation/{id}/response`.
async fn response(endpoint: &Endpoint, id: &str, request: Request<Incoming>) -> Reply {
    if !endpoint.is_current(id) {
        return json(StatusCode::BAD_REQUEST, wire::INVALID_REQUEST_ID);
    }
    match read_body(endpoint, request).await {
        // A streamed response that failed part way says so in its trailers.
        Body::Read(_, Some(failure)) => accepted_if(endpoint.answer(id, Answer::Error(failure))),
        Body::Read(body, None) => accepted_if(endpoint.answer(id, Answer::Response(body))),
        Body::TooLarge(declared) => {
            // The invocation fails with Lambda's `Function.ResponseSizeTooLarge`; the runtime
            // is told the size was refused.
            endpoint.answer(id, Answer::TooLarge(declared));
            json(StatusCode::PAYLOAD_TOO_LARGE, wire::TOO_LARGE)
        }
        Body::Broken => json(StatusCode::BAD_REQUEST, wire::INVALID_REQUEST_ID),
    }
}

/// `POST /invocation/{id}/error`.
async fn error(endpoint: &Endpoint, id: &str, request: Request<Incoming>) -> Reply {
    if !endpoint.is_current(id) {
        return json(StatusCode::BAD_REQUEST, wire::INVALID_REQUEST_ID);
    }
    let header_type = error_type_header(&request);
    match read_body(endpoint, request).await {
        Body::Read(body, _) => {
            let report = ErrorReport::parse(&body, header_type.as_deref());
            accepted_if(endpoint.answer(id, Answer::Error(report)))
        }
        Body::TooLarge(_) => {
            let report = ErrorReport::parse(b"", header_type.as_deref());
            endpoint.answer(id, Answer::Error(report));
            json(StatusCode::PAYLOAD_TOO_LARGE, wire::TOO_LARGE)
        }
        Body::Broken => json(StatusCode::BAD_REQUEST, wire::INVALID_REQUEST_ID),
    }
}

/// `POST /init/error`.
async fn init_error(endpoint: &Endpoint, request: Request<Incoming>) -> Reply {
    if !endpoint.in_init() {
        return json(StatusCode::FORBIDDEN, wire::INVALID_STATE);
    }
    let header_type = error_type_header(&request);
    let body = match read_body(endpoint, request).await {
        Body::Read(body, _) => body,
        Body::TooLarge(_) | Body::Broken => Bytes::new(),
    };
    let report = ErrorReport::parse(&body, header_type.as_deref());
    if endpoint.init_failed(report) {
        json(StatusCode::ACCEPTED, wire::ACCEPTED)
    } else {
        json(StatusCode::FORBIDDEN, wire::INVALID_STATE)
    }
}

fn accepted_if(answered: bool) -> Reply {
    if answered {
        json(StatusCode::ACCEPTED, wire::ACCEPTED)
    } else {
        json(StatusCode::BAD_REQUEST, wire::INVALID_REQUEST_ID)
    }
}

fn error_type_header(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(wire::ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

enum Body {
    /// The body, and the failure its trailers report (a streamed response's
    /// `Lambda-Runtime-Function-Error-Type` and base64 `-Error-Body`).
    Read(Bytes, Option<ErrorReport>),
    /// Above [`wire::MAX_PAYLOAD`], with the length the client declared, if any.
    TooLarge(Option<u64>),
    /// The connection broke while the body was read.
    Broken,
}

async fn read_body(endpoint: &Endpoint, request: Request<Incoming>) -> Body {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > wire::MAX_PAYLOAD as u64) {
        return Body::TooLarge(declared);
    }
    let Ok(_reading) = endpoint.body_reads.acquire().await else {
        return Body::Broken;
    };
    match Limited::new(request.into_body(), wire::MAX_PAYLOAD)
        .collect()
        .await
    {
        Ok(collected) => {
            let failure = collected.trailers().and_then(trailer_failure);
            Body::Read(collected.to_bytes(), failure)
        }
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Body::TooLarge(declared),
        Err(_) => Body::Broken,
    }
}

fn trailer_failure(trailers: &hyper::HeaderMap) -> Option<ErrorReport> {
    use base64::Engine as _;
    let error_type = trailers.get(wire::ERROR_TYPE)?.to_str().ok()?;
    let body = trailers
        .get(wire::ERROR_BODY)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .unwrap_or_default();
    Some(ErrorReport::parse(&body, Some(error_type)))
}

fn json(status: StatusCode, body: &'static str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
