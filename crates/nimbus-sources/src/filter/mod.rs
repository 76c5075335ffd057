//! Filter patterns, in the syntax of Lambda event filtering (EventBridge patterns): a message
//! is handed to the function only if it matches one of the mapping's patterns; the others are
//! deleted without invoking.
//!
//! A pattern is a JSON object whose leaves are arrays of conditions, OR-ed:
//!
//! ```json
//! {"body": {"type": ["order", "refund"],
//!           "amount": [{"numeric": [">", 100, "<=", 1000]}],
//!           "sku": [{"prefix": "BK-"}], "file": [{"suffix": ".png"}],
//!           "coupon": [{"exists": false}], "region": [{"anything-but": ["test"]}]},
//!  "attributes": {"source": ["web"]}}
//! ```
//!
//! Keys of one object are AND-ed. `body` is matched against the message body parsed as JSON
//! (a body that is not JSON matches no `body` pattern); `attributes` against the message's
//! string attributes. Values must match in type: `[5]` does not match `"5"`. When the event's
//! value is an array, the condition matches if any element does.

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Patterns per mapping (Lambda allows 5, or 10 on request).
pub const MAX_PATTERNS: usize = 10;
/// Longest pattern text (Lambda: 4,096 characters).
pub const MAX_PATTERN_LEN: usize = 4_096;

/// One parsed filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Every key must match.
    Object(Vec<(String, Node)>),
    /// Any condition must match.
    Any(Vec<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Equals(Value),
    Prefix(String),
    Suffix(String),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

fn invalid(pattern: &str, why: impl std::fmt::Display) -> ConfigError {
    let shown: String = pattern.chars().take(80).collect();
    ConfigError::new(
        "mapping",
        "filter",
        shown,
        format!("a valid filter pattern ({why})"),
    )
}

impl FilterPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on field `filter` saying what is wrong.
    ///
    /// # Example
    ///
    /// ```
    /// use nimbus_sources::FilterPattern;
    ///
    /// let p = FilterPattern::parse(r#"{"body": {"kind": ["order"], "n": [{"numeric": [">=", 3]}]}}"#).unwrap();
    /// assert!(p.matches_json(Some(&serde_json::json!({"kind": "order", "n": 3})), None));
    /// assert!(!p.matches_json(Some(&serde_json::json!({"kind": "order", "n": "3"})), None));
    /// assert!(FilterPattern::parse(r#"{"body": {"n": [{"numeric": ["~", 1]}]}}"#).is_err());
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, ConfigError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(invalid(
                pattern,
                format!("at most {MAX_PATTERN_LEN} characters"),
            ));
        }
        let value: Value = serde_json::from_str(pattern)
            .map_err(|e| invalid(pattern, format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(invalid(pattern, "the pattern must be a JSON object"));
        };
        for key in map.keys() {
            if key != "body" && key != "attributes" {
                return Err(invalid(
                    pattern,
                    format!("top-level key `{key}` is not `body` or `attributes`"),
                ));
            }
        }
        let root = parse_object(&map).map_err(|why| invalid(pattern, why))?;
        Ok(Self { root })
    }

    /// Whether a message with this JSON body (`None`: not JSON) and these attributes matches.
    pub fn matches_json(
        &self,
        body: Option<&Value>,
        attributes: Option<&crate::queue::Attributes>,
    ) -> bool {
        let Node::Object(keys) = &self.root else {
            return false;
        };
        keys.iter().all(|(key, node)| match key.as_str() {
            // A body that is not JSON matches no body pattern, as in Lambda.
            "body" => body.is_some() && match_node(node, body),
            "attributes" => {
                let attributes = attributes.map(|a| {
                    Value::Object(
                        a.iter()
                            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                            .collect(),
                    )
                });
                match_node(node, attributes.as_ref())
            }
            _ => false,
        })
    }
}

fn parse_object(map: &Map<String, Value>) -> Result<Node, String> {
    if map.is_empty() {
        return Err("an empty object matches nothing useful".into());
    }
    let mut keys = Vec::with_capacity(map.len());
    for (key, value) in map {
        let node = match value {
            Value::Object(inner) => parse_object(inner)?,
            Value::Array(conditions) => {
                if conditions.is_empty() {
                    return Err(format!("`{key}` has an empty list of conditions"));
                }
                Node::Any(
                    conditions
                        .iter()
                        .map(|c| parse_condition(key, c))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => {
                return Err(format!(
                    "`{key}` must be an object or an array of conditions, not {other}"
                ))
            }
        };
        keys.push((key.clone(), node));
    }
    Ok(Node::Object(keys))
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

fn match_node(node: &Node, value: Option<&Value>) -> bool {
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
    match condition {
        Condition::Equals(expected) => match (expected, value) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        },
        Condition::Prefix(p) => value.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Condition::Suffix(p) => value.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Condition::Numeric(comparisons) => value.as_f64().is_some_and(|n| {
            comparisons.iter().all(|(op, bound)| match op {
                Comparison::Lt => n < *bound,
                Comparison::Le => n <= *bound,
                Comparison::Eq => n == *bound,
                Comparison::Ge => n >= *bound,
                Comparison::Gt => n > *bound,
            })
        }),
        Condition::AnythingBut(values) => !values.iter().any(|v| match (v, value) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (a, b) => a == b,
        }),
        Condition::AnythingButPrefix(p) => {
            value.as_str().is_some_and(|s| !s.starts_with(p.as_str()))
        }
        Condition::Exists(_) => unreachable!("handled above"),
    }
}

/// The patterns of one mapping, OR-ed. No pattern: every message matches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    patterns: Vec<FilterPattern>,
}

impl Filters {
    /// Parses up to [`MAX_PATTERNS`] patterns.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for too many patterns or one that does not parse.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ConfigError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(ConfigError::new(
                "mapping",
                "filters",
                patterns.len(),
                format!("0..={MAX_PATTERNS} patterns"),
            ));
        }
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| FilterPattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether there are no patterns (everything matches).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a message with this body and these attributes matches any pattern.
    pub fn matches(&self, body: &[u8], attributes: &crate::queue::Attributes) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let json: Option<Value> = serde_json::from_slice(body).ok();
        self.patterns
            .iter()
            .any(|p| p.matches_json(json.as_ref(), Some(attributes)))
    }
}
