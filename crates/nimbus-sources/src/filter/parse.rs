//! Parsing a filter pattern's JSON into the condition tree that [`super::matching`] walks.

use serde_json::{Map, Value};

/// A parsed (sub)pattern.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// Every key must match.
    Object(Vec<(String, Node)>),
    /// Any condition must match.
    Any(Vec<Condition>),
}

/// One condition of a list.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Condition {
    Equals(Value),
    EqualsIgnoreCase(String),
    Prefix(String),
    Suffix(String),
    /// Literal pieces between `*`s: the text starts with the first, ends with the last, and
    /// holds the others in order.
    Wildcard(Vec<String>),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Comparison {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

pub(super) fn parse_object(map: &Map<String, Value>) -> Result<Node, String> {
    if map.is_empty() {
        return Err("an empty object matches nothing useful".into());
    }
    let mut keys = Vec::with_capacity(map.len());
    for (key, value) in map {
        keys.push((key.clone(), parse_value(key, value)?));
    }
    Ok(Node::Object(keys))
}

/// The pattern under `key`: an object of further keys, or a list of conditions.
pub(super) fn parse_value(key: &str, value: &Value) -> Result<Node, String> {
    match value {
        Value::Object(inner) => parse_object(inner),
        Value::Array(conditions) => {
            if conditions.is_empty() {
                return Err(format!("`{key}` has an empty list of conditions"));
            }
            Ok(Node::Any(
                conditions
                    .iter()
                    .map(|c| parse_condition(key, c))
                    .collect::<Result<_, _>>()?,
            ))
        }
        other => Err(format!(
            "`{key}` must be an object or an array of conditions, not {other}"
        )),
    }
}

fn parse_condition(key: &str, value: &Value) -> Result<Condition, String> {
    let Value::Object(op) = value else {
        // A literal: equality (null matches null, "" matches "").
        return Ok(Condition::Equals(value.clone()));
    };
    if op.len() != 1 {
        return Err(format!(
            "`{key}`: a condition object has exactly one operator"
        ));
    }
    let (name, arg) = op.iter().next().expect("one entry");
    match (name.as_str(), arg) {
        ("prefix", Value::String(p)) => Ok(Condition::Prefix(p.clone())),
        ("suffix", Value::String(s)) => Ok(Condition::Suffix(s.clone())),
        ("equals-ignore-case", Value::String(s)) => Ok(Condition::EqualsIgnoreCase(s.clone())),
        ("wildcard", Value::String(w)) => parse_wildcard(key, w),
        ("exists", Value::Bool(b)) => Ok(Condition::Exists(*b)),
        ("numeric", Value::Array(parts)) => parse_numeric(key, parts),
        ("anything-but", Value::Array(values)) => {
            if values.iter().any(|v| v.is_object() || v.is_array()) {
                return Err(format!("`{key}`: anything-but takes plain values"));
            }
            Ok(Condition::AnythingBut(values.clone()))
        }
        ("anything-but", Value::Object(inner)) => match inner.get("prefix") {
            Some(Value::String(p)) if inner.len() == 1 => {
                Ok(Condition::AnythingButPrefix(p.clone()))
            }
            _ => Err(format!(
                "`{key}`: anything-but takes values or {{\"prefix\": text}}"
            )),
        },
        ("anything-but", plain) if !plain.is_array() => {
            Ok(Condition::AnythingBut(vec![plain.clone()]))
        }
        (name, arg) => Err(format!("`{key}`: unknown operator `{name}` with {arg}")),
    }
}

/// `*` matches any run of characters, `\*` a star and `\\` a backslash (EventBridge's
/// wildcard). Two stars in a row, or a pattern of stars only, are refused (EventBridge refuses
/// consecutive stars; a lone `*` is `{"exists": true}` on a string, said more plainly).
fn parse_wildcard(key: &str, pattern: &str) -> Result<Condition, String> {
    let mut pieces = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('*' | '\\')) => pieces.last_mut().expect("one").push(escaped),
                _ => {
                    return Err(format!(
                        "`{key}`: in a wildcard, `\\` escapes only `*` or `\\`"
                    ))
                }
            },
            '*' => {
                if pieces.len() > 1 && pieces.last().is_some_and(String::is_empty) {
                    return Err(format!("`{key}`: a wildcard has no consecutive `*`"));
                }
                pieces.push(String::new());
            }
            c => pieces.last_mut().expect("one").push(c),
        }
    }
    if pieces.len() > 1 && pieces.iter().all(String::is_empty) {
        return Err(format!(
            "`{key}`: a wildcard of `*` only; use {{\"exists\": true}}"
        ));
    }
    Ok(Condition::Wildcard(pieces))
}

fn parse_numeric(key: &str, parts: &[Value]) -> Result<Condition, String> {
    if parts.is_empty() || parts.len() % 2 != 0 || parts.len() > 4 {
        return Err(format!(
            "`{key}`: numeric takes one or two (operator, number) pairs"
        ));
    }
    let mut comparisons = Vec::new();
    for pair in parts.chunks(2) {
        let op = match pair[0].as_str() {
            Some("<") => Comparison::Lt,
            Some("<=") => Comparison::Le,
            Some("=") => Comparison::Eq,
            Some(">=") => Comparison::Ge,
            Some(">") => Comparison::Gt,
            other => return Err(format!("`{key}`: unknown numeric operator {other:?}")),
        };
        let n = pair[1]
            .as_f64()
            .ok_or_else(|| format!("`{key}`: numeric needs a number after {:?}", pair[0]))?;
        comparisons.push((op, n));
    }
    Ok(Condition::Numeric(comparisons))
}
