//! Filter patterns, in the syntax of Lambda event filtering (EventBridge patterns): a record
//! is handed to the function only if it matches one of the mapping's patterns; the others are
//! deleted (queues) or skipped (streams) without invoking.
//!
//! A pattern is a JSON object whose leaves are arrays of conditions, OR-ed:
//!
//! ```json
//! {"body": {"type": ["order", "refund"],
//!           "amount": [{"numeric": [">", 100, "<=", 1000]}],
//!           "sku": [{"prefix": "BK-"}], "file": [{"suffix": ".png"}],
//!           "name": [{"equals-ignore-case": "alice"}], "path": [{"wildcard": "logs/*.txt"}],
//!           "coupon": [{"exists": false}], "region": [{"anything-but": ["test"]}]},
//!  "attributes": {"source": ["web"]}}
//! ```
//!
//! Keys of one object are AND-ed. The payload key (`body` on a queue, `data` on a stream) is
//! matched as Lambda does: a payload that is JSON is matched as that JSON value; one that is
//! not is a string, which a list of conditions (`{"body": [{"prefix": "ERROR"}]}`) matches and
//! an object pattern (`{"body": {"level": ["ERROR"]}}`) never does. On a queue, `attributes`
//! is matched against the message's string attributes. Values must match in type: `[5]` does
//! not match `"5"`. When the event's value is an array, the condition matches if any element
//! does.

mod matching;
mod parse;

use serde_json::Value;

use crate::error::ConfigError;
use matching::match_node;
use parse::Node;

/// Patterns per mapping (Lambda allows 5, or 10 on request).
pub const MAX_PATTERNS: usize = 10;
/// Longest pattern text (Lambda: 4,096 characters).
pub const MAX_PATTERN_LEN: usize = 4_096;

/// Which records a pattern applies to: the key of their payload and their other keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shape {
    /// Whose configuration the pattern is part of (for errors).
    owner: &'static str,
    /// The key of the payload (`body`, `data`).
    payload: &'static str,
    /// The other top-level keys allowed.
    metadata: &'static [&'static str],
}

/// Queue messages: `body` and `attributes`.
pub(crate) const QUEUE: Shape = Shape {
    owner: "mapping",
    payload: "body",
    metadata: &["attributes"],
};

/// Stream records: `data` (as on Lambda's Kinesis mappings).
pub(crate) const STREAM: Shape = Shape {
    owner: "stream mapping",
    payload: "data",
    metadata: &[],
};

/// One parsed filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    /// The top-level keys and their patterns.
    keys: Vec<(String, Node)>,
    payload: &'static str,
}

fn invalid(shape: &Shape, pattern: &str, why: impl std::fmt::Display) -> ConfigError {
    let shown: String = pattern.chars().take(80).collect();
    ConfigError::new(
        shape.owner,
        "filter",
        shown,
        format!("a valid filter pattern ({why})"),
    )
}

/// A record's payload, as the patterns see it.
enum Payload {
    /// It is JSON: this value.
    Json(Value),
    /// It is not: this text (a string value).
    Text(Value),
}

impl Payload {
    fn decode(bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(json) => Self::Json(json),
            Err(_) => Self::Text(Value::String(String::from_utf8_lossy(bytes).into_owned())),
        }
    }
}

impl FilterPattern {
    /// Parses a pattern for a queue mapping (keys `body` and `attributes`).
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
    ///
    /// let text = FilterPattern::parse(r#"{"body": [{"prefix": "ERROR"}]}"#).unwrap();
    /// assert!(text.matches(b"ERROR: disk full", None));
    /// assert!(!text.matches(b"INFO: fine", None));
    /// ```
    pub fn parse(pattern: &str) -> Result<Self, ConfigError> {
        Self::parse_for(pattern, &QUEUE)
    }

    pub(crate) fn parse_for(pattern: &str, shape: &Shape) -> Result<Self, ConfigError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(invalid(
                shape,
                pattern,
                format!("at most {MAX_PATTERN_LEN} characters"),
            ));
        }
        let value: Value = serde_json::from_str(pattern)
            .map_err(|e| invalid(shape, pattern, format!("not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(invalid(shape, pattern, "the pattern must be a JSON object"));
        };
        if map.is_empty() {
            return Err(invalid(
                shape,
                pattern,
                "an empty object matches nothing useful",
            ));
        }
        let mut keys = Vec::with_capacity(map.len());
        for (key, value) in &map {
            if key != shape.payload && !shape.metadata.contains(&key.as_str()) {
                let allowed: Vec<&str> = std::iter::once(shape.payload)
                    .chain(shape.metadata.iter().copied())
                    .collect();
                return Err(invalid(
                    shape,
                    pattern,
                    format!("top-level key `{key}` is not one of {allowed:?}"),
                ));
            }
            let node =
                parse::parse_value(key, value).map_err(|why| invalid(shape, pattern, why))?;
            keys.push((key.clone(), node));
        }
        Ok(Self {
            keys,
            payload: shape.payload,
        })
    }

    /// Whether a message with this JSON body (`None`: not JSON, which matches no body
    /// pattern here; see [`FilterPattern::matches`] for text) and these attributes matches.
    pub fn matches_json(
        &self,
        body: Option<&Value>,
        attributes: Option<&crate::queue::Attributes>,
    ) -> bool {
        match body {
            Some(json) => self.matches_payload(Some(&Payload::Json(json.clone())), attributes),
            None => self.matches_payload(None, attributes),
        }
    }

    /// Whether a record with this payload (JSON matched as JSON, anything else as a string)
    /// and these attributes matches.
    pub fn matches(&self, payload: &[u8], attributes: Option<&crate::queue::Attributes>) -> bool {
        self.matches_payload(Some(&Payload::decode(payload)), attributes)
    }

    fn matches_payload(
        &self,
        payload: Option<&Payload>,
        attributes: Option<&crate::queue::Attributes>,
    ) -> bool {
        self.keys.iter().all(|(key, node)| {
            if key == self.payload {
                return match (payload, node) {
                    (Some(Payload::Json(json)), _) => match_node(node, Some(json)),
                    // Conditions on the whole payload match a text payload as a string.
                    (Some(Payload::Text(text)), Node::Any(_)) => match_node(node, Some(text)),
                    // A JSON pattern never matches a payload that is not JSON (Lambda drops
                    // the message); nor does anything match a missing payload.
                    (Some(Payload::Text(_)), Node::Object(_)) | (None, _) => false,
                };
            }
            // `attributes`, the only other key (queues).
            let attributes = attributes.map(|a| {
                Value::Object(
                    a.iter()
                        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                        .collect(),
                )
            });
            match_node(node, attributes.as_ref())
        })
    }
}

/// The patterns of one mapping, OR-ed. No pattern: every message matches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    patterns: Vec<FilterPattern>,
}

impl Filters {
    /// Parses up to [`MAX_PATTERNS`] patterns for a queue mapping.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for too many patterns or one that does not parse.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ConfigError> {
        Self::parse_for(patterns, &QUEUE)
    }

    /// Parses up to [`MAX_PATTERNS`] patterns for a stream mapping (key `data`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for too many patterns or one that does not parse.
    pub fn parse_for_streams<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ConfigError> {
        Self::parse_for(patterns, &STREAM)
    }

    fn parse_for<S: AsRef<str>>(patterns: &[S], shape: &Shape) -> Result<Self, ConfigError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(ConfigError::new(
                shape.owner,
                "filters",
                patterns.len(),
                format!("0..={MAX_PATTERNS} patterns"),
            ));
        }
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| FilterPattern::parse_for(p.as_ref(), shape))
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
        let payload = Payload::decode(body);
        self.patterns
            .iter()
            .any(|p| p.matches_payload(Some(&payload), Some(attributes)))
    }

    /// Whether a stream record with this data matches any pattern.
    pub fn matches_data(&self, data: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let payload = Payload::decode(data);
        self.patterns
            .iter()
            .any(|p| p.matches_payload(Some(&payload), None))
    }
}
