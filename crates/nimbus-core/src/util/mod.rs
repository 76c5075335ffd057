//! Small utilities every layer may use: cache-line padding, catching panics of user code, time
//! helpers, and AWS-shaped names and timestamps ([`aws`]). The bottom of the module order: this
//! module imports nothing of the crate.

pub mod aws;
mod padded;
mod secure;
mod unwind;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

pub use padded::{Padded, Striped};
pub(crate) use secure::secure_random;
pub(crate) use unwind::{guarded, panic_message, CatchUnwind};

/// A boxed, sendable future: what the object-safe traits of the crate return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An instant about thirty years from now: "never" for deadlines from unbounded durations.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// Serializes a value by its `Display` form (request ids as UUID strings).
pub(crate) fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The length in bytes of `value`'s compact JSON, counted without building the string.
pub fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a value that fails to serialise counts what it wrote.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Whether `value`'s compact JSON is longer than `limit` bytes. A walk that only adds up
/// lengths comes first: when even the longest JSON the value could have (every character
/// escaped as `\u00XX`) fits, nothing is serialised; else the exact length decides.
pub fn json_exceeds(value: &serde_json::Value, limit: u64) -> Option<u64> {
    if json_upper_bound(value) <= limit {
        return None;
    }
    let size = json_len(value);
    (size > limit).then_some(size)
}

/// At least the length of `value`'s compact JSON: every string as if each byte were escaped
/// (6 bytes).
fn json_upper_bound(value: &serde_json::Value) -> u64 {
    use serde_json::Value;
    let string = |s: &str| 6 * s.len() as u64 + 2;
    match value {
        Value::Null | Value::Bool(_) => 5,
        // A number's JSON is its display; counted, as serde_json's `arbitrary_precision`
        // (which another crate may turn on) makes it any length.
        Value::Number(n) => display_len(n),
        Value::String(s) => string(s),
        // Brackets and a comma per item.
        Value::Array(items) => 2 + items.iter().map(|v| json_upper_bound(v) + 1).sum::<u64>(),
        // Braces, and per member a colon and a comma.
        Value::Object(members) => {
            2 + members
                .iter()
                .map(|(k, v)| string(k) + json_upper_bound(v) + 2)
                .sum::<u64>()
        }
    }
}

/// The length of `value`'s display, counted without building it.
fn display_len(value: &impl std::fmt::Display) -> u64 {
    struct Count(u64);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len() as u64;
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut count, format_args!("{value}"));
    count.0
}

/// Serialises a duration as whole microseconds.
pub(crate) fn serialize_us<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(Value::from(-2.2250738585072014e-308)),
            prop::collection::vec(0u8..0x20, 0..16)
                .prop_map(|b| Value::String(b.into_iter().map(char::from).collect())),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_bound_is_never_below_the_length_and_the_check_agrees_with_it(
            value in arbitrary_json(),
            limit in 0u64..4096,
        ) {
            let len = json_len(&value);
            prop_assert!(json_upper_bound(&value) >= len);
            prop_assert_eq!(json_exceeds(&value, limit), (len > limit).then_some(len));
        }
    }
}
