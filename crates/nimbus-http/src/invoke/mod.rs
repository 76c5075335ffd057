//! The Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations`, the
//! `ListFunctions` / `GetFunction` reads, and a function's policy (`AddPermission`,
//! `GetPolicy`, `RemovePermission`, in `policy.rs`), as the AWS SDKs speak them.
//!
//! | outcome | answer |
//! |---|---|
//! | output | 200, the output's JSON, `X-Amz-Executed-Version: $LATEST` |
//! | function error, timeout, crash, init failure, event that does not decode | 200, `X-Amz-Function-Error: Unhandled`, `{"errorType","errorMessage"}` |
//! | `Event` accepted | 202, `x-amzn-RequestId` = the async request id |
//! | `DryRun` | 204, once the caller is found to be allowed (nothing runs) |
//! | throttled (function / runtime concurrency / scale rate), async queue full | 429 `TooManyRequestsException`, `Reason`, `Retry-After` |
//! | refused by the function's policy; a read by a caller outside the runtime's account | 403 `AccessDeniedException` (a `ClientError` in boto3, whose model lacks it) |
//! | unknown function or qualifier other than `$LATEST` | 404 `ResourceNotFoundException` |
//! | malformed name | 400 `ValidationException` |
//! | bad header value | 400 `InvalidParameterValueException` |
//! | body or client context not JSON | 400 `InvalidRequestContentException` |
//! | body over 6 MB (sync) / 1 MB (`Event`) | 413 `RequestTooLargeException` |
//! | shutting down, cancelled | 500 `ServiceException` |

mod admin;
mod dry_run;
mod error;
mod functions;
mod logs;
mod name;
mod outcome;
mod policy;
mod request;
mod retry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use nimbus_core::{AsyncCallError, CallError, InvokeOptions, LookupError, Principal, UsageReport};

pub(crate) use error::AwsError;
pub use logs::{LogSource, TAIL_BYTES};
pub(crate) use outcome::request_id_header;
use outcome::{async_error, function_error, invoke_error, not_found, stored_error};
pub(crate) use request::read_body;
use request::{client_context, header, payload_hash, InvocationType};
pub(crate) use retry::RetryCache;
pub use retry::RetryCacheStats;
use retry::{Claim, RetryKey, Stored};

use crate::request_id::fresh_request_id;

/// What the Invoke API's handlers share.
pub(crate) struct InvokeApi {
    pub(crate) runtime: nimbus_core::Runtime,
    /// Where the log tails of functions with logs of their own come from.
    pub(crate) logs: HashMap<String, Arc<dyn LogSource>>,
    pub(crate) retries: RetryCache,
    /// `LastModified` of every function: when the server started.
    pub(crate) started: String,
}

/// `POST /2015-03-31/functions/{name}/invocations`.
pub(crate) async fn invoke(
    State(state): State<Arc<InvokeApi>>,
    Path(raw_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = caller(principal);
    // Boxed on its own: with axum's box around the handler the future passes 1 KiB, where
    // every allocation made glibc's malloc consolidate its free lists.
    match Box::pin(invoke_checked(
        state, caller, &raw_name, &query, &headers, body,
    ))
    .await
    {
        Ok(response) => response,
        Err(error) => {
            let mut response = error.into_response();
            let (name, value) = request_id_header(&fresh_request_id());
            response.headers_mut().insert(name, value);
            response
        }
    }
}

/// Who a request acts as: the signer or anonymous when the server has credentials (set by
/// [`crate::auth`]), otherwise the host.
pub(crate) fn caller(principal: Option<Extension<Principal>>) -> Principal {
    principal.map_or(Principal::Host, |Extension(principal)| principal)
}

/// The function a request names, checked to exist at `$LATEST`.
fn resolve(
    state: &InvokeApi,
    raw_name: &str,
    query: &HashMap<String, String>,
) -> Result<String, AwsError> {
    let function = name::parse(raw_name).map_err(|e| AwsError::validation(e.0))?;
    let qualifier = match (function.qualifier, query.get("Qualifier")) {
        (Some(a), Some(b)) if a != *b => return Err(AwsError::invalid_parameter(
            "The derived qualifier from the function name does not match the specified qualifier.",
        )),
        (Some(q), _) => Some(q),
        (None, Some(q)) if !name::is_qualifier(q) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: \
                 (|[a-zA-Z0-9$_-]+)"
            )))
        }
        (None, q) => q.cloned(),
    };
    let config = state.runtime.config();
    let mut arn =
        nimbus_core::util::aws::function_arn(&config.region, &config.account_id, &function.name);
    let known = state.runtime.function_arn(&function.name).is_some();
    let latest = qualifier.as_deref().is_none_or(|q| q == "$LATEST");
    if !known || !latest {
        if let Some(q) = &qualifier {
            arn = format!("{arn}:{q}");
        }
        return Err(AwsError::not_found(&arn));
    }
    Ok(function.name)
}

async fn invoke_checked(
    state: Arc<InvokeApi>,
    caller: Principal,
    raw_name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AwsError> {
    let name = resolve(&state, raw_name, query)?;
    let invocation_type = InvocationType::parse(headers)?;
    let tail = match header(headers, "x-amz-log-type")? {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(AwsError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy \
                 constraint: Member must satisfy enum value set: [Tail, None]"
            )))
        }
    };
    let limits = state.runtime.config().payload_limits;
    let limit = match invocation_type {
        InvocationType::Event => limits.async_request,
        _ => limits.sync_request,
    };
    let payload = read_body(headers, body, limit).await?;
    if invocation_type == InvocationType::DryRun {
        dry_run::authorize(&state, &caller, &name)?;
        let (name, value) = request_id_header(&fresh_request_id());
        return Ok((StatusCode::NO_CONTENT, [(name, value)]).into_response());
    }
    let event: serde_json::Value = if payload.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&payload).map_err(|e| {
            AwsError::invalid_content(format!("Could not parse request body into json: {e}"))
        })?
    };
    let mut options = InvokeOptions::default();
    if let Some(trace) = header(headers, "x-amzn-trace-id")? {
        options = options.with_trace_id(trace);
    }
    if invocation_type == InvocationType::RequestResponse {
        if let Some(context) = header(headers, "x-amz-client-context")? {
            options = options.with_client_context(client_context(context)?);
        }
    }
    // An SDK's id is a UUID, the same on every attempt of one call; a hash of the payload
    // guards against a client that reuses one id for different calls.
    let key = header(headers, "amz-sdk-invocation-id")?
        .filter(|id| !id.trim().is_empty())
        .map(|id| RetryKey {
            // Another caller's retry is another call: it must not get this caller's answer.
            caller: caller.clone(),
            function: name.clone(),
            invocation_type: invocation_type.as_str(),
            invocation_id: id.to_owned(),
            payload: payload_hash(&payload),
        });
    let keep_for = state
        .runtime
        .function_config(&name)
        .map_or(Duration::from_secs(3), |c| c.timeout);
    if invocation_type == InvocationType::Event {
        let accept = |state: &InvokeApi| queue_event(state, caller, &name, event);
        return Ok(match key.map(|k| state.retries.claim(k)) {
            None => accept(&state).0.to_response(),
            Some(Claim::Answer(stored)) => stored.to_response(),
            Some(Claim::Wait(waiter)) => answer_of(waiter).await,
            Some(Claim::Run(guard)) => {
                let (stored, keep) = accept(&state);
                let stored = Arc::new(stored);
                guard.finish(Arc::clone(&stored), keep.then_some(keep_for));
                stored.to_response()
            }
        });
    }
    // A caller that disconnects (an SDK's read timeout) does not cancel a sync invocation,
    // and its retry attaches to it.
    let run = {
        let state = Arc::clone(&state);
        let name = name.clone();
        move || async move { run_sync(&state, caller, &name, event, options, tail).await }
    };
    Ok(match key.map(|k| state.retries.claim(k)) {
        None => crate::detach::outliving(run()).await.0.to_response(),
        Some(Claim::Answer(stored)) => stored.to_response(),
        Some(Claim::Wait(waiter)) => answer_of(waiter).await,
        Some(Claim::Run(guard)) => {
            let stored = crate::detach::outliving(async move {
                let (stored, keep) = run().await;
                let stored = Arc::new(stored);
                guard.finish(Arc::clone(&stored), keep.then_some(keep_for));
                stored
            })
            .await;
            stored.to_response()
        }
    })
}

async fn answer_of(waiter: retry::Waiter) -> Response {
    match waiter.answer().await {
        Some(stored) => stored.to_response(),
        None => AwsError::service("the invocation's task failed").into_response(),
    }
}

/// Queues an `Event` invoke; the answer and whether it may be kept for retries.
fn queue_event(
    state: &InvokeApi,
    caller: Principal,
    name: &str,
    event: serde_json::Value,
) -> (Stored, bool) {
    match state.runtime.invoke_async_json_as(caller, name, event) {
        Ok(id) => {
            let stored = Stored {
                status: StatusCode::ACCEPTED,
                headers: vec![request_id_header(&id.to_string())],
                body: Bytes::new(),
            };
            (stored, true)
        }
        Err(error) => (
            stored_error(async_error(name, &state.runtime, error)),
            false,
        ),
    }
}

/// Runs a sync invocation; the answer and whether it may be kept for retries (only answers
/// the function produced).
async fn run_sync(
    state: &InvokeApi,
    caller: Principal,
    name: &str,
    event: serde_json::Value,
    options: InvokeOptions,
    tail: bool,
) -> (Stored, bool) {
    let invocation = state
        .runtime
        .invoke_json_as(caller, name, event, options)
        .await;
    let report = invocation.report;
    let request_id = report
        .as_ref()
        .map_or_else(fresh_request_id, |r| r.request_id.to_string());
    let mut headers = vec![request_id_header(&request_id)];
    let (status, body, function_error) = match invocation.result {
        Ok(output) => (StatusCode::OK, output.to_string(), None),
        Err(CallError::Invoke(error)) => match function_error(&error, &request_id) {
            Some(body) => (StatusCode::OK, body.to_string(), Some(body)),
            None => {
                return (
                    stored_error(invoke_error(name, &state.runtime, &error)),
                    false,
                )
            }
        },
        Err(CallError::Lookup(LookupError::NotFound(_))) => {
            return (
                stored_error(async_error(
                    name,
                    &state.runtime,
                    AsyncCallError::Lookup(LookupError::NotFound(name.to_owned())),
                )),
                false,
            )
        }
        Err(CallError::PayloadTooLarge { limit, .. }) => {
            return (stored_error(AwsError::too_large(limit)), false)
        }
        Err(other) => {
            return (
                stored_error(AwsError::invalid_parameter(other.to_string())),
                false,
            )
        }
    };
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    headers.push((
        HeaderName::from_static("x-amz-executed-version"),
        HeaderValue::from_static("$LATEST"),
    ));
    if function_error.is_some() {
        headers.push((
            HeaderName::from_static("x-amz-function-error"),
            HeaderValue::from_static("Unhandled"),
        ));
    }
    if tail {
        if let Some(log) = log_of(state, name, report.as_ref(), function_error.as_ref()) {
            if let Ok(value) = HeaderValue::from_str(&logs::encode_tail(&log)) {
                headers.push((HeaderName::from_static("x-amz-log-result"), value));
            }
        }
    }
    let stored = Stored {
        status,
        headers,
        body: Bytes::from(body),
    };
    (stored, true)
}

/// The invocation's log: from the function's log source, else the framing lines.
fn log_of(
    state: &InvokeApi,
    name: &str,
    report: Option<&UsageReport>,
    error: Option<&serde_json::Value>,
) -> Option<String> {
    let report = report?;
    if let Some(source) = state.logs.get(name) {
        if let Some(log) = source.tail(report.request_id) {
            return Some(log);
        }
    }
    let error = error.map(|e| {
        (
            e["errorType"].as_str().unwrap_or_default(),
            e["errorMessage"].as_str().unwrap_or_default(),
        )
    });
    Some(logs::framing(report, error))
}

/// Query of `ListFunctions`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<String>,
}

/// `GET /2015-03-31/functions`.
pub(crate) async fn list_functions(
    State(state): State<Arc<InvokeApi>>,
    Query(query): Query<ListQuery>,
    principal: Option<Extension<Principal>>,
) -> Response {
    if let Err(denied) = admin::authorize(&state, &caller(principal), None, "lambda:ListFunctions")
    {
        return denied.into_response();
    }
    let max_items = match query.max_items.as_deref().map(str::parse::<usize>) {
        None => 50,
        Some(Ok(n)) if (1..=10_000).contains(&n) => n,
        Some(_) => {
            return AwsError::invalid_parameter("MaxItems must be between 1 and 10000")
                .into_response()
        }
    };
    let body = functions::list(
        &state.runtime,
        query.marker.as_deref(),
        max_items,
        &state.started,
    );
    axum::Json(body).into_response()
}

/// `GET /2015-03-31/functions/{name}`.
pub(crate) async fn get_function(
    State(state): State<Arc<InvokeApi>>,
    Path(raw_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let caller = caller(principal);
    describe(&state, &caller, &raw_name, &query, |name, arn, config| {
        functions::get(&state.runtime, name, arn, config, &state.started)
    })
}

/// `GET /2015-03-31/functions/{name}/configuration`.
pub(crate) async fn get_configuration(
    State(state): State<Arc<InvokeApi>>,
    Path(raw_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let caller = caller(principal);
    describe(&state, &caller, &raw_name, &query, |name, arn, config| {
        functions::configuration(&state.runtime, name, arn, config, &state.started)
    })
}

fn describe(
    state: &InvokeApi,
    caller: &Principal,
    raw_name: &str,
    query: &HashMap<String, String>,
    shape: impl FnOnce(&str, &str, &nimbus_core::FunctionConfig) -> serde_json::Value,
) -> Response {
    let allowed = admin::authorize(state, caller, Some(raw_name), "lambda:GetFunction");
    let found = allowed
        .and_then(|()| resolve(state, raw_name, query))
        .and_then(|name| {
            match (
                state.runtime.function_config(&name),
                state.runtime.function_arn(&name),
            ) {
                (Some(config), Some(arn)) => Ok(shape(&name, &arn, &config)),
                _ => Err(not_found(&state.runtime, &name)),
            }
        });
    match found {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

pub(crate) use functions::last_modified;
pub(crate) use policy::{add_permission, get_policy, remove_permission};
