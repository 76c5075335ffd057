//! The function's answer as an HTTP response, read by hand: payload 2.0 is lenient (any JSON
//! without `statusCode` is a 200 body), payload 1.0 strict (anything else is a 502), as API
//! Gateway reads them.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

/// The HTTP response a function's output stands for.
#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// Why an output is not a valid proxy response (API Gateway answers 502).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Lambda proxy response: {0}")]
pub(crate) struct Malformed(pub(crate) String);

/// The keys a payload 1.0 response may have.
const V1_KEYS: [&str; 5] = [
    "statusCode",
    "headers",
    "multiValueHeaders",
    "body",
    "isBase64Encoded",
];

/// Headers about the connection, which the server sets itself.
const HOP_BY_HOP: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Reads a payload 2.0 answer.
pub(crate) fn v2(output: Value) -> Result<Reply, Malformed> {
    let object = match output {
        Value::Object(object) if object.contains_key("statusCode") => object,
        // Anything else is the body of a 200, as JSON; a string is its own content.
        Value::String(text) => return Ok(json_reply(Bytes::from(text))),
        other => return Ok(json_reply(Bytes::from(other.to_string()))),
    };
    let status = status(&object)?;
    let mut headers = Vec::new();
    // Payload 2.0 has no `multiValueHeaders`: API Gateway ignores the key.
    push_single(&mut headers, object.get("headers"))?;
    match object.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                push(&mut headers, "set-cookie", &scalar(cookie)?)?;
            }
        }
        Some(_) => return Err(Malformed("cookies must be an array of strings".into())),
    }
    let body = body(&object)?;
    Ok(finish(status, headers, body))
}

/// Reads a payload 1.0 answer.
pub(crate) fn v1(output: Value) -> Result<Reply, Malformed> {
    let Value::Object(object) = output else {
        return Err(Malformed("the output must be a JSON object".into()));
    };
    if let Some(key) = object.keys().find(|k| !V1_KEYS.contains(&k.as_str())) {
        return Err(Malformed(format!("unexpected key {key}")));
    }
    let status = status(&object)?;
    let mut headers = Vec::new();
    push_single(&mut headers, object.get("headers"))?;
    let mut multi = Vec::new();
    push_multi(&mut multi, object.get("multiValueHeaders"))?;
    // A pair in both maps is sent once.
    for pair in multi {
        if !headers.contains(&pair) {
            headers.push(pair);
        }
    }
    let body = body(&object)?;
    Ok(finish(status, headers, body))
}

fn json_reply(body: Bytes) -> Reply {
    finish(StatusCode::OK, Vec::new(), body)
}

/// Adds the default content type.
fn finish(status: StatusCode, mut headers: Vec<(HeaderName, HeaderValue)>, body: Bytes) -> Reply {
    if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn status(object: &Map<String, Value>) -> Result<StatusCode, Malformed> {
    object
        .get("statusCode")
        .and_then(Value::as_u64)
        // 1xx would make hyper switch protocols or drop the answer: not a final response.
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(u16::try_from(code).ok()?).ok())
        .ok_or_else(|| Malformed("statusCode must be an integer from 200 to 599".into()))
}

/// The body: a string (base64 when `isBase64Encoded`), or nothing.
fn body(object: &Map<String, Value>) -> Result<Bytes, Malformed> {
    let encoded = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(Malformed("isBase64Encoded must be a boolean".into())),
    };
    let text = match object.get("body") {
        None | Some(Value::Null) => return Ok(Bytes::new()),
        Some(Value::String(text)) => text,
        Some(_) => return Err(Malformed("body must be a string".into())),
    };
    if encoded {
        // Line breaks are allowed, as encoders that wrap lines write them (Python's
        // `base64.encodebytes`).
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Bytes::from)
            .map_err(|e| Malformed(format!("body is not valid base64: {e}")))
    } else {
        Ok(Bytes::from(text.clone()))
    }
}

/// `headers`: names to scalar values.
fn push_single(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    map: Option<&Value>,
) -> Result<(), Malformed> {
    match map {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => map.iter().try_for_each(|(name, value)| match value {
            Value::Null => Ok(()),
            value => push(headers, name, &scalar(value)?),
        }),
        Some(_) => Err(Malformed("headers must be an object".into())),
    }
}

/// `multiValueHeaders`: names to arrays of scalar values.
fn push_multi(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    map: Option<&Value>,
) -> Result<(), Malformed> {
    let bad = || Malformed("multiValueHeaders must map names to arrays".into());
    match map {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => map.iter().try_for_each(|(name, values)| match values {
            Value::Null => Ok(()),
            Value::Array(values) => values
                .iter()
                .try_for_each(|value| push(headers, name, &scalar(value)?)),
            _ => Err(bad()),
        }),
        Some(_) => Err(bad()),
    }
}

/// A header value from JSON: strings as they are, numbers and booleans as written.
fn scalar(value: &Value) -> Result<String, Malformed> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(value.to_string()),
        _ => Err(Malformed("header values must be strings".into())),
    }
}

fn push(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    name: &str,
    value: &str,
) -> Result<(), Malformed> {
    let name = HeaderName::try_from(name)
        .map_err(|_| Malformed(format!("{name:?} is not a header name")))?;
    if HOP_BY_HOP.contains(&name.as_str()) {
        return Ok(());
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| Malformed(format!("the value of {name} is not a header value")))?;
    headers.push((name, value));
    Ok(())
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
