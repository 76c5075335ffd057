//! What mappings share about their lifecycle and the user code they call: the
//! [`MappingStatus`] a mapping reports, guards that turn a panic in a source or store into a
//! transient [`SourceError`], and backoff arithmetic that cannot overflow.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use nimbus_core::Backoff;

use crate::error::{ConfigError, SourceError};

/// Where a mapping is in its life.
///
/// # Example
///
/// ```
/// use nimbus_sources::{MappingStatus, SourceError};
///
/// let failed = MappingStatus::Failed { error: SourceError::permanent("no such queue") };
/// assert!(!failed.is_running());
/// assert!(MappingStatus::Running.is_running());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MappingStatus {
    /// Receiving and invoking.
    Running,
    /// Stopped: by `stop`, by the runtime's shutdown, or because its function is shutting
    /// down or gone. What it held went back to its source.
    Stopped {
        /// Why it stopped.
        reason: String,
    },
    /// Stopped by a permanent source error (a missing queue, bad credentials): retrying
    /// would not help.
    Failed {
        /// The error.
        error: SourceError,
    },
}

impl MappingStatus {
    /// Whether the mapping is still running.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

/// Sets `status` to `next` unless the mapping has already stopped (the first reason wins).
pub(crate) fn settle_status(status: &parking_lot::Mutex<MappingStatus>, next: MappingStatus) {
    let mut status = status.lock();
    if status.is_running() {
        *status = next;
    }
}

/// Awaits a call into a source or store, turning a panic into a transient error, so that user
/// code cannot kill the task that called it.
pub(crate) async fn guarded<T>(
    what: &'static str,
    call: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(SourceError::transient(format!(
            "{what} panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}

/// The longest wait any mapping backoff produces; longer delays are cut to it.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(86_400);

/// `backoff.delay(attempt)`, never panicking and at most [`MAX_BACKOFF`] (a backoff built
/// without validation can hold a delay too large to compute).
pub(crate) fn delay_of(backoff: &Backoff, attempt: u32) -> Duration {
    std::panic::catch_unwind(|| backoff.delay(attempt))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// Checks that a backoff's delays lie within the ranges [`Backoff::validate`] allows (1 ms
/// to 24 h), so that a retry loop neither spins nor overflows the clock; the error names the
/// mapping's field.
pub(crate) fn check_backoff(
    scope: &'static str,
    field: &'static str,
    backoff: &Backoff,
) -> Result<(), ConfigError> {
    backoff.validate().map_err(|e| {
        ConfigError::new(
            scope,
            field,
            backoff,
            format!("a valid backoff ({}: {})", e.field, e.allowed),
        )
    })
}
