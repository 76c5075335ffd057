//! The ranges every queue accepts for the settings they share — the in-memory queue and each
//! broker adapter check them with these functions, so a setting means the same everywhere.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::ConfigError;

/// Visibility timeouts: 1 ms to 12 h (SQS's upper bound). Zero is refused: a message would be
/// visible again while its receiver still holds it.
pub const VISIBILITY_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(12 * 3_600);

/// Receives before a message is moved to its dead-letter queue: 1 to 1,000 (SQS's range).
pub const MAX_RECEIVE_COUNT: RangeInclusive<u32> = 1..=1_000;

/// SQS's largest message: 1 MiB (1,048,576 bytes), body plus attribute names and values.
pub const MAX_MESSAGE_SIZE: usize = 1_048_576;

/// The range of `max_message_size`: 1 KiB to 1 MiB (SQS's `MaximumMessageSize`).
pub const MESSAGE_SIZE: RangeInclusive<usize> = 1_024..=MAX_MESSAGE_SIZE;

/// Checks a `max_message_size` against [`MESSAGE_SIZE`].
///
/// # Errors
///
/// A [`ConfigError`] of `scope` naming `max_message_size` and the range.
pub fn check_max_message_size(scope: &'static str, value: usize) -> Result<(), ConfigError> {
    if MESSAGE_SIZE.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            scope,
            "max_message_size",
            value,
            "1024..=1048576",
        ))
    }
}

/// A message's size as SQS counts it: the body plus each attribute's name and value.
pub fn message_size(body: &[u8], attributes: &crate::queue::Attributes) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
}

/// Refuses a message of `size` bytes above `limit`.
///
/// # Errors
///
/// [`SourceError::TooLarge`](crate::SourceError::TooLarge) naming both.
pub fn check_message_size(size: usize, limit: usize) -> Result<(), crate::SourceError> {
    if size > limit {
        Err(crate::SourceError::TooLarge { size, limit })
    } else {
        Ok(())
    }
}

/// Checks a visibility timeout against [`VISIBILITY_TIMEOUT`].
///
/// # Errors
///
/// A [`ConfigError`] of `scope` naming `visibility_timeout` and the range.
pub fn check_visibility_timeout(scope: &'static str, value: Duration) -> Result<(), ConfigError> {
    if VISIBILITY_TIMEOUT.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            scope,
            "visibility_timeout",
            value,
            "1ms..=12h",
        ))
    }
}

/// Checks a maximum receive count against [`MAX_RECEIVE_COUNT`].
///
/// # Errors
///
/// A [`ConfigError`] of `scope` naming `max_receive_count` and the range.
pub fn check_max_receive_count(scope: &'static str, value: u32) -> Result<(), ConfigError> {
    if MAX_RECEIVE_COUNT.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            scope,
            "max_receive_count",
            value,
            "1..=1000",
        ))
    }
}
