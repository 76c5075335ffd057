//! Errors of calls by name: the function could not be reached ([`LookupError`]), the call
//! failed ([`CallError`]), or an asynchronous call's event was refused ([`Rejected`],
//! [`AsyncCallError`]).

use std::fmt;

use super::{AccessDenied, InvokeError};

/// Why a function could not be reached by name. Separate from [`InvokeError`], which is the
/// outcome of an invocation that reached its function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No function is registered under this name (Lambda: `ResourceNotFoundException`).
    #[error("no function named `{0}`")]
    NotFound(String),
    /// The function exists, but with other event or output types than the caller asked for.
    #[error("function `{0}` has other event or output types")]
    WrongType(String),
    /// The function takes typed events only (it was registered without JSON).
    #[error("function `{0}` takes typed events only")]
    NotJson(String),
    /// The caller belongs to no runtime: a detached context, or a runtime already dropped.
    #[error("no runtime to reach `{0}` through")]
    NoRuntime(String),
}

/// The outcome of invoking a function by name: it was not found, or it was invoked and failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The function could not be reached.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The function was invoked and the invocation failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The event serialises to more JSON than the runtime's `payload_limits.sync_request`;
    /// the function was not invoked (Lambda: `RequestTooLargeException`, HTTP 413).
    #[error("request payload size ({size} bytes) exceeded the maximum allowed payload size ({limit} bytes)")]
    PayloadTooLarge {
        /// The event's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
}

impl CallError {
    /// The invocation's error, if the function was reached.
    pub fn invoke_error(&self) -> Option<&InvokeError> {
        match self {
            Self::Invoke(error) => Some(error),
            Self::Lookup(_) | Self::PayloadTooLarge { .. } => None,
        }
    }
}

/// Why an asynchronous invocation did not accept an event; the event is handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The function's async queue holds `capacity` pending events already.
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The runtime is shutting down.
    ShuttingDown,
    /// The function was unregistered.
    Unregistered,
    /// The event serialises to more JSON than the runtime's `payload_limits.async_request`
    /// (Lambda: `RequestTooLargeException`, HTTP 413).
    TooLarge {
        /// The event's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The function keeps `limit` failed events for the host already (no on-failure
    /// destination or dead-letter target took them): take them with
    /// `FunctionHandle::take_failed`, add an on-failure destination, or choose
    /// `UnroutedFailures::Discard`.
    KeptFailuresFull {
        /// The function's `max_kept_failures`.
        limit: usize,
    },
    /// The event comes from the failure path of an event stopped at the recursion limit (its
    /// hop count is past the limit): a loop through a destination, refused so that it ends.
    RecursiveLoop {
        /// The event's hop count.
        hops: u32,
    },
    /// The caller may not invoke the function (checked once, when the event is offered).
    AccessDenied(AccessDenied),
}

/// A synchronous invocation refused before a handler saw its event, with the event handed
/// back: whatever [`Invocation::report`](crate::Invocation::report) would be `None` for
/// (throttled, denied, a recursive loop, the function stopping or unregistered, an instance
/// that failed to start). See
/// [`FunctionHandle::try_invoke_with`](crate::FunctionHandle::try_invoke_with); an async
/// invocation's refusal is [`Rejected`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Refused<E> {
    /// The event, unchanged.
    pub event: E,
    /// Why no handler ran, as [`Invocation::result`](crate::Invocation::result) would say.
    pub error: InvokeError,
}

impl<E> fmt::Display for Refused<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<E: fmt::Debug> std::error::Error for Refused<E> {}

/// An event an asynchronous invocation did not accept, handed back to the caller with the
/// reason.
#[derive(Debug)]
pub struct Rejected<E> {
    /// The event, unchanged.
    pub event: E,
    /// Why it was refused.
    pub reason: RejectReason,
}

impl<E> fmt::Display for Rejected<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            RejectReason::QueueFull { capacity } => {
                write!(f, "async queue full ({capacity} pending events)")
            }
            RejectReason::ShuttingDown => f.write_str("runtime is shutting down"),
            RejectReason::Unregistered => f.write_str("function was unregistered"),
            RejectReason::TooLarge { size, limit } => write!(
                f,
                "request payload size ({size} bytes) exceeded the maximum allowed payload size ({limit} bytes)"
            ),
            RejectReason::RecursiveLoop { hops } => write!(
                f,
                "recursive loop: the event passed through {hops} invocations and the failure \
                 path of a stopped event led back here"
            ),
            RejectReason::KeptFailuresFull { limit } => write!(
                f,
                "{limit} failed async events are kept for the host; take them \
                 (take_failed), add an on-failure destination, or discard unrouted failures"
            ),
            RejectReason::AccessDenied(denied) => denied.fmt(f),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for Rejected<E> {}

/// Why an asynchronous invocation by name did not accept an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsyncCallError<E> {
    /// The function could not be reached.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The JSON event does not decode into the function's event type.
    #[error("payload error: {0}")]
    Payload(String),
    /// The function refused the event (queue full, too large, shutting down, unregistered); the event is
    /// handed back.
    #[error("event refused: {0}")]
    Rejected(Rejected<E>),
}

impl<E> From<Rejected<E>> for AsyncCallError<E> {
    fn from(rejected: Rejected<E>) -> Self {
        Self::Rejected(rejected)
    }
}
