//! The proxy events of API Gateway's Lambda integration, payload 2.0 (HTTP API) and 1.0
//! (REST API), built with `aws_lambda_events`' types so that they parse as Lambda's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyRequestContext, ApiGatewayRequestAuthorizer,
    ApiGatewayRequestAuthorizerIamDescription, ApiGatewayRequestIdentity, ApiGatewayV2httpRequest,
    ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription,
};
use aws_lambda_events::query_map::QueryMap;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use nimbus_core::Principal;
use serde_json::Value;

use super::auth::{Caller, Proof};
use super::decode::{group_pairs, query_pairs};
use super::json::to_value_omitting;

/// The API id in every event (API Gateway's are 10 characters; SAM local uses this one).
pub(crate) const API_ID: &str = "1234567890";
/// The stage in every event.
pub(crate) const STAGE: &str = "$default";

/// Fields of `ApiGatewayV2httpRequest` that a 2.0 event does not have (authorizer payloads').
const V2_ABSENT: &[&str] = &[
    "type",
    "methodArn",
    "httpMethod",
    "identitySource",
    "authorizationToken",
    "resource",
    "stageVariables",
];

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What an event is built from: the request and the route that took it.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) method: &'a http::Method,
    /// The path as sent, still percent-encoded.
    pub(crate) raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub(crate) raw_query: &'a str,
    pub(crate) version: http::Version,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
    pub(crate) source_ip: String,
    pub(crate) request_id: &'a str,
    pub(crate) at: SystemTime,
    pub(crate) account_id: &'a str,
    /// `GET /orders/{id}`.
    pub(crate) route_key: &'a str,
    /// `/orders/{id}`.
    pub(crate) resource: &'a str,
    pub(crate) path_parameters: &'a [(String, String)],
    /// Who the request invokes as, and how it proved it.
    pub(crate) caller: &'a Caller,
}

/// The payload 2.0 event (HTTP API).
pub(crate) fn v2(incoming: &Incoming<'_>) -> Result<Value, serde_json::Error> {
    let (joined, cookies) = v2_headers(incoming);
    let query: HashMap<String, String> = group_pairs(query_pairs(incoming.raw_query))
        .into_iter()
        .map(|(name, values)| (name, values.join(",")))
        .collect();
    let (body, is_base64_encoded) = body_of(incoming);

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = incoming.method.clone();
    http.path = Some(incoming.raw_path.to_owned());
    http.protocol = Some(protocol(incoming.version).to_owned());
    http.source_ip = Some(incoming.source_ip.clone());
    http.user_agent = Some(user_agent(incoming).to_owned());

    let (domain_name, domain_prefix) = domain(incoming);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(incoming.route_key.to_owned());
    context.account_id = Some(incoming.account_id.to_owned());
    context.stage = Some(STAGE.to_owned());
    context.request_id = Some(incoming.request_id.to_owned());
    context.apiid = Some(API_ID.to_owned());
    context.domain_name = Some(domain_name);
    context.domain_prefix = Some(domain_prefix);
    context.time = Some(request_time_cached(incoming.at));
    context.time_epoch = epoch_millis(incoming.at);
    context.http = http;
    context.authorizer = v2_authorizer(incoming.caller);

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(incoming.route_key.to_owned());
    event.raw_path = Some(incoming.raw_path.to_owned());
    event.raw_query_string = Some(incoming.raw_query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = joined;
    event.query_string_parameters = QueryMap::from(query);
    event.path_parameters = incoming.path_parameters.iter().cloned().collect();
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;

    to_value_omitting(&event, V2_ABSENT)
}

/// 2.0's `requestContext.authorizer`: `iam` for a signed request, as HTTP API's IAM
/// authorization fills it; nothing otherwise.
fn v2_authorizer(caller: &Caller) -> Option<ApiGatewayRequestAuthorizer> {
    let Proof::Signature(access_key) = &caller.proof else {
        return None;
    };
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.access_key = Some(access_key.clone());
    if let Principal::Identity {
        arn,
        account,
        org_id,
    } = &caller.principal
    {
        iam.account_id = Some(account.to_string());
        iam.user_arn = Some(arn.to_string());
        iam.principal_org_id = org_id.as_deref().map(str::to_owned);
    }
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.iam = Some(iam);
    Some(authorizer)
}

/// 1.0's `requestContext.identity`: the source and user agent, and what the caller proved
/// (`apiKey`; `accessKey`, `accountId` and `userArn` when signed), as REST API fills it.
fn v1_identity(incoming: &Incoming<'_>) -> ApiGatewayRequestIdentity {
    let mut identity = ApiGatewayRequestIdentity::default();
    identity.source_ip = Some(incoming.source_ip.clone());
    identity.user_agent = Some(user_agent(incoming).to_owned());
    match &incoming.caller.proof {
        Proof::Nothing => {}
        Proof::ApiKey(key) => identity.api_key = Some(key.clone()),
        Proof::Signature(access_key) => {
            identity.access_key = Some(access_key.clone());
            if let Principal::Identity { arn, account, .. } = &incoming.caller.principal {
                identity.account_id = Some(account.to_string());
                identity.user_arn = Some(arn.to_string());
            }
        }
    }
    identity
}

/// 2.0's headers, repeated ones comma-joined and without `cookie`, and its cookies.
fn v2_headers(incoming: &Incoming<'_>) -> (HeaderMap, Vec<String>) {
    let Some(mut joined) = plain_headers(incoming) else {
        return v2_headers_grouped(incoming);
    };
    let cookies = joined
        .remove(http::header::COOKIE)
        .map(|value| split_cookies(&String::from_utf8_lossy(value.as_bytes())))
        .unwrap_or_default();
    (joined, cookies)
}

/// The event's headers when every name comes once and every value is text (the common
/// case): the request's own map with the `X-Forwarded-*` headers of [`header_pairs`], no
/// regrouping needed. `None` otherwise.
fn plain_headers(incoming: &Incoming<'_>) -> Option<HeaderMap> {
    let headers = incoming.headers;
    let repeated = headers.len() != headers.keys_len();
    if repeated
        || headers
            .values()
            .any(|v| std::str::from_utf8(v.as_bytes()).is_err())
    {
        return None;
    }
    let mut plain = headers.clone();
    if !plain.contains_key(X_FORWARDED_PROTO) {
        plain.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !plain.contains_key(X_FORWARDED_PORT) {
        plain.insert(
            X_FORWARDED_PORT,
            HeaderValue::from(forwarded_port(incoming)),
        );
    }
    Some(plain)
}

/// [`v2_headers`] for requests that repeat a header or send one that is not text.
fn v2_headers_grouped(incoming: &Incoming<'_>) -> (HeaderMap, Vec<String>) {
    let headers = header_pairs(incoming);
    let cookies: Vec<String> = headers
        .iter()
        .filter(|(name, _)| name == "cookie")
        .flat_map(|(_, value)| split_cookies(value))
        .collect();
    let mut joined = HeaderMap::new();
    for (name, values) in group_pairs(headers) {
        // 2.0 moves cookies to `cookies`; other repeated headers are comma-joined.
        if name != "cookie" {
            insert(&mut joined, &name, &values.join(","));
        }
    }
    (joined, cookies)
}

/// The cookies of a `Cookie` header.
fn split_cookies(value: &str) -> Vec<String> {
    value
        .split("; ")
        .filter(|cookie| !cookie.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The payload 1.0 event (REST API).
pub(crate) fn v1(incoming: &Incoming<'_>) -> Result<Value, serde_json::Error> {
    let (headers, multi_value_headers) = match plain_headers(incoming) {
        Some(plain) => (plain.clone(), plain),
        None => v1_headers_grouped(incoming),
    };
    let query = group_pairs(query_pairs(incoming.raw_query));
    let last_values: HashMap<String, String> = query
        .iter()
        .filter_map(|(name, values)| Some((name.clone(), values.last()?.clone())))
        .collect();
    let all_values: HashMap<String, Vec<String>> = query.into_iter().collect();
    let (body, is_base64_encoded) = body_of(incoming);

    let identity = v1_identity(incoming);

    let (domain_name, domain_prefix) = domain(incoming);
    let mut context = ApiGatewayProxyRequestContext::default();
    context.account_id = Some(incoming.account_id.to_owned());
    context.resource_id = Some(resource_id(incoming.resource));
    context.stage = Some(STAGE.to_owned());
    context.domain_name = Some(domain_name);
    context.domain_prefix = Some(domain_prefix);
    context.request_id = Some(incoming.request_id.to_owned());
    context.protocol = Some(protocol(incoming.version).to_owned());
    context.identity = identity;
    context.resource_path = Some(incoming.resource.to_owned());
    context.path = Some(incoming.raw_path.to_owned());
    context.http_method = incoming.method.clone();
    context.request_time = Some(request_time_cached(incoming.at));
    context.request_time_epoch = epoch_millis(incoming.at);
    context.apiid = Some(API_ID.to_owned());

    let mut event = ApiGatewayProxyRequest::default();
    event.resource = Some(incoming.resource.to_owned());
    event.path = Some(incoming.raw_path.to_owned());
    event.http_method = incoming.method.clone();
    event.headers = headers;
    event.multi_value_headers = multi_value_headers;
    event.query_string_parameters = QueryMap::from(last_values);
    event.multi_value_query_string_parameters = QueryMap::from(all_values);
    event.path_parameters = incoming.path_parameters.iter().cloned().collect();
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;

    let mut value = to_value_omitting(&event, &[])?;
    if let Some(object) = value.as_object_mut() {
        // REST API sends null, not {}, for what the request has none of.
        for nullable in [
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "stageVariables",
        ] {
            if object
                .get(nullable)
                .and_then(Value::as_object)
                .is_some_and(serde_json::Map::is_empty)
            {
                object.insert(nullable.to_owned(), Value::Null);
            }
        }
    }
    Ok(value)
}

/// 1.0's `headers` (the last value of each) and `multiValueHeaders` (all of them).
fn v1_headers_grouped(incoming: &Incoming<'_>) -> (HeaderMap, HeaderMap) {
    let mut headers = HeaderMap::new();
    let mut multi_value_headers = HeaderMap::new();
    for (name, values) in &group_pairs(header_pairs(incoming)) {
        if let Some(last) = values.last() {
            insert(&mut headers, name, last);
        }
        for value in values {
            append(&mut multi_value_headers, name, value);
        }
    }
    (headers, multi_value_headers)
}

/// The request's headers as lowercase names and text values, in order, with the
/// `X-Forwarded-*` headers a load balancer in front would add (as SAM local does).
fn header_pairs(incoming: &Incoming<'_>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = incoming
        .headers
        .iter()
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), text)
        })
        .collect();
    if !incoming.headers.contains_key("x-forwarded-proto") {
        pairs.push(("x-forwarded-proto".to_owned(), "http".to_owned()));
    }
    if !incoming.headers.contains_key("x-forwarded-port") {
        let port = forwarded_port(incoming);
        pairs.push(("x-forwarded-port".to_owned(), port.to_string()));
    }
    pairs
}

/// The port of the Host header, 80 without one.
fn forwarded_port(incoming: &Incoming<'_>) -> u16 {
    host(incoming)
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or(80)
}

fn insert(map: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
        map.insert(name, value);
    }
}

fn append(map: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
        map.append(name, value);
    }
}

/// The body as the event carries it: text as is, anything else base64.
fn body_of(incoming: &Incoming<'_>) -> (Option<String>, bool) {
    if incoming.body.is_empty() {
        return (None, false);
    }
    let content_type = incoming
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if is_text(content_type) {
        if let Ok(text) = std::str::from_utf8(incoming.body) {
            return (Some(text.to_owned()), false);
        }
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(incoming.body);
    (Some(encoded), true)
}

/// Whether a body of this content type goes to the function as text.
pub(crate) fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media.is_empty()
        || media.starts_with("text/")
        || media.ends_with("+json")
        || media.ends_with("+xml")
        || matches!(
            media.as_str(),
            "application/json" | "application/xml" | "application/x-www-form-urlencoded"
        )
}

fn host<'a>(incoming: &Incoming<'a>) -> Option<&'a str> {
    incoming
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
}

/// The domain name (the Host without its port) and its first label.
fn domain(incoming: &Incoming<'_>) -> (String, String) {
    let host = host(incoming).unwrap_or("localhost");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    let prefix = name.split('.').next().unwrap_or(name);
    (name.to_owned(), prefix.to_owned())
}

fn user_agent<'a>(incoming: &Incoming<'a>) -> &'a str {
    incoming
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A stable id per resource, as REST API's `resourceId` is (6 characters).
fn resource_id(resource: &str) -> String {
    let hash = resource.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{:06x}", hash & 0xff_ffff)
}

fn epoch_millis(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// [`request_time`], formatted once a second (per thread) rather than per request.
fn request_time_cached(at: SystemTime) -> String {
    thread_local! {
        static LAST: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let second = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != second || last.1.is_empty() {
            *last = (second, request_time(at));
        }
        last.1.clone()
    })
}

/// `12/Mar/2020:19:03:58 +0000`, the CLF time of API Gateway's events.
pub(crate) fn request_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `2020-03-12T19:03:58.000Z`, rearranged.
    let iso = nimbus_core::util::aws::rfc3339_millis(at);
    let field = |range: std::ops::Range<usize>| iso.get(range).unwrap_or_default();
    let month = field(5..7)
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{}/{month}/{}:{} +0000",
        field(8..10),
        field(0..4),
        field(11..19)
    )
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
