//! Matching a parsed pattern against a record's values.

use serde_json::Value;

use super::parse::{Comparison, Condition, Node};

pub(super) fn match_node(node: &Node, value: Option<&Value>) -> bool {
    match node {
        Node::Object(keys) => {
            let object = value.and_then(Value::as_object);
            keys.iter().all(|(key, inner)| {
                let field = object.and_then(|o| o.get(key));
                match_node(inner, field)
            })
        }
        Node::Any(conditions) => conditions.iter().any(|c| match_condition(c, value)),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn match_condition(condition: &Condition, value: Option<&Value>) -> bool {
    if let Condition::Exists(should) = condition {
        return value.is_some() == *should;
    }
    let Some(value) = value else {
        return false;
    };
    if let Value::Array(items) = value {
        return items
            .iter()
            .any(|item| match_condition(condition, Some(item)));
    }
    let text = value.as_str();
    match condition {
        Condition::Equals(expected) => same(expected, value),
        Condition::EqualsIgnoreCase(expected) => {
            text.is_some_and(|s| s.to_lowercase() == expected.to_lowercase())
        }
        Condition::Prefix(p) => text.is_some_and(|s| s.starts_with(p.as_str())),
        Condition::Suffix(p) => text.is_some_and(|s| s.ends_with(p.as_str())),
        Condition::Wildcard(pieces) => text.is_some_and(|s| wildcard(pieces, s)),
        Condition::Numeric(comparisons) => value.as_f64().is_some_and(|n| {
            comparisons.iter().all(|(op, bound)| match op {
                Comparison::Lt => n < *bound,
                Comparison::Le => n <= *bound,
                Comparison::Eq => n == *bound,
                Comparison::Ge => n >= *bound,
                Comparison::Gt => n > *bound,
            })
        }),
        Condition::AnythingBut(values) => !values.iter().any(|v| same(v, value)),
        Condition::AnythingButPrefix(p) => text.is_some_and(|s| !s.starts_with(p.as_str())),
        Condition::Exists(_) => unreachable!("handled above"),
    }
}

/// Whether `text` matches the literal `pieces` of a wildcard (split at its `*`s).
fn wildcard(pieces: &[String], text: &str) -> bool {
    let [first, middle @ .., last] = pieces else {
        // No star: equality.
        return pieces.first().is_some_and(|p| p == text);
    };
    if text.len() < first.len() + last.len()
        || !text.starts_with(first.as_str())
        || !text.ends_with(last.as_str())
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for piece in middle {
        match rest.find(piece.as_str()) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}
