//! Small utilities every layer may use: cache-line padding, catching panics of user code, time
//! helpers, and AWS-shaped names and timestamps ([`aws`]). The bottom of the module order: this
//! module imports nothing of the crate.

pub mod aws;
mod padded;
mod unwind;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use padded::{Padded, Striped};
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

/// Serialises a duration as whole microseconds.
pub(crate) fn serialize_us<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
