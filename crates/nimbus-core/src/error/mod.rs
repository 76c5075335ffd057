//! Errors and invocation outcomes: one enum per concern, classified by type, never by string.

mod call;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

pub use call::{AsyncCallError, CallError, LookupError, Refused, RejectReason, Rejected};

/// An invalid configuration value, caught when the configuration is built.
///
/// The message names the field, the rejected value and the allowed range, e.g.
/// `invalid function config: timeout = 0ns is outside 1ms..=900s`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {scope} config: {field} = {value} is outside {allowed}")]
pub struct ConfigError {
    /// Which configuration the field belongs to (`function`, `runtime`, ...).
    pub scope: &'static str,
    /// The field's name, as spelled by its `with_*` setter.
    pub field: &'static str,
    /// The rejected value, formatted.
    pub value: String,
    /// The allowed values, e.g. `128..=10240`.
    pub allowed: String,
}

impl ConfigError {
    /// Builds an error for `field` of the configuration `scope`.
    pub fn new(
        scope: &'static str,
        field: &'static str,
        value: impl fmt::Debug,
        allowed: impl Into<String>,
    ) -> Self {
        Self {
            scope,
            field,
            value: format!("{value:?}"),
            allowed: allowed.into(),
        }
    }
}

/// What a handler may say about retrying its failure.
///
/// This is a type, so that retry logic never has to match on error strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RetryHint {
    /// Let the retry policy decide (the default).
    #[default]
    Default,
    /// Do not retry: the event goes straight to the failure path.
    Never,
    /// Retry, but not before this delay.
    After(Duration),
}

/// The error a handler returns: a function error in Lambda's terms.
///
/// [`FunctionError::msg`] builds one from text, [`FunctionError::from_error`] from any Rust
/// error (keeping it as the [`source`](std::error::Error::source)). It implements
/// `std::error::Error`, so it cannot also take every error with `?` (that blanket conversion
/// would include itself); `?` works on boxed errors and the common standard ones (I/O, JSON,
/// UTF-8, number parsing), and a handler made
/// with [`handler_fn`](crate::handler_fn) may return any error type that converts into
/// it, such as `Box<dyn std::error::Error + Send + Sync>`, to which `?` converts everything.
///
/// # Example
///
/// ```
/// use nimbus_core::FunctionError;
///
/// fn parse(s: &str) -> Result<u32, FunctionError> {
///     s.parse::<u32>().map_err(FunctionError::from_error)
/// }
/// let error = parse("x").unwrap_err();
/// assert_eq!(error.error_type(), "ParseIntError");
/// assert!(std::error::Error::source(&error).is_some());
/// ```
pub struct FunctionError {
    error_type: Cow<'static, str>,
    message: String,
    retry: RetryHint,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl FunctionError {
    /// A function error with an error type and a message (Lambda's `errorType` / `errorMessage`).
    pub fn new(error_type: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retry: RetryHint::Default,
            source: None,
        }
    }

    /// A function error of type `Error` with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new("Error", message)
    }

    /// Marks the error as not retryable: async invocations and mappings send the event to the
    /// failure path at once.
    #[must_use]
    pub fn not_retryable(mut self) -> Self {
        self.retry = RetryHint::Never;
        self
    }

    /// Asks for the next attempt to wait at least `delay`.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry = RetryHint::After(delay);
        self
    }

    /// The error type (for a converted Rust error, its type's name).
    pub fn error_type(&self) -> &str {
        &self.error_type
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the handler said about retrying.
    pub fn retry_hint(&self) -> RetryHint {
        self.retry
    }

    /// A function error made from a Rust error: its type's name is the error type (the last
    /// path segment, `ParseIntError`, as Lambda's `errorType` is), and the error is kept as the
    /// source.
    pub fn from_error<E>(error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let full = std::any::type_name::<E>();
        let short = full.rsplit("::").next().unwrap_or(full);
        Self {
            error_type: Cow::Owned(short.to_owned()),
            message: error.to_string(),
            retry: RetryHint::Default,
            source: Some(Box::new(error)),
        }
    }
}

impl std::error::Error for FunctionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Box<dyn std::error::Error + Send + Sync + 'static>> for FunctionError {
    /// A boxed function error comes back as itself; any other boxed error becomes an `Error`
    /// with its message, kept as the source.
    fn from(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        match error.downcast::<FunctionError>() {
            Ok(function_error) => *function_error,
            Err(error) => Self {
                error_type: Cow::Borrowed("Error"),
                message: error.to_string(),
                retry: RetryHint::Default,
                source: Some(error),
            },
        }
    }
}

/// `?` on the errors handlers meet most: each converts with [`FunctionError::from_error`].
macro_rules! from_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for FunctionError {
            fn from(error: $error) -> Self {
                Self::from_error(error)
            }
        }
    )*};
}

from_errors!(
    std::io::Error,
    serde_json::Error,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::str::ParseBoolError,
    std::num::TryFromIntError,
    std::fmt::Error,
);

impl From<String> for FunctionError {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

impl From<&str> for FunctionError {
    fn from(message: &str) -> Self {
        Self::msg(message)
    }
}

impl fmt::Debug for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionError")
            .field("error_type", &self.error_type)
            .field("message", &self.message)
            .field("retry", &self.retry)
            .finish()
    }
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// Why an invocation was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ThrottleReason {
    /// The function's reserved concurrency (`max_concurrency`) is in use
    /// (Lambda: `ReservedFunctionConcurrentInvocationLimitExceeded`).
    FunctionLimit,
    /// The runtime's unreserved concurrency is in use (Lambda: `ConcurrentInvocationLimitExceeded`).
    RuntimeLimit,
    /// A new instance was needed but the function's scale rate is spent for now.
    ScaleRate,
}

impl fmt::Display for ThrottleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FunctionLimit => "function concurrency limit reached",
            Self::RuntimeLimit => "runtime concurrency limit reached",
            Self::ScaleRate => "scale rate exceeded",
        })
    }
}

/// How an instance's init phase failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitFailure {
    /// The factory returned an error.
    Error {
        /// The error type.
        error_type: String,
        /// The error message.
        message: String,
    },
    /// The factory did not finish within the init timeout.
    Timeout(Duration),
    /// The factory panicked.
    Panic(String),
}

impl fmt::Display for InitFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error {
                error_type,
                message,
            } => write!(f, "{error_type}: {message}"),
            Self::Timeout(after) => write!(f, "init timed out after {after:?}"),
            Self::Panic(message) => write!(f, "init panicked: {message}"),
        }
    }
}

/// Every way an invocation can fail. A function error is one outcome among others, not a crash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The handler returned an error.
    #[error("function error: {0}")]
    Function(#[source] FunctionError),
    /// The handler did not finish within the function's timeout; the instance was discarded.
    #[error("function timed out after {0:?}")]
    Timeout(Duration),
    /// The handler panicked; the instance was discarded.
    #[error("function panicked: {0}")]
    Panic(String),
    /// The instance died during the invocation (a process that exited, a backend that lost
    /// it); it was discarded. Counted with panics.
    #[error("instance crashed: {0}")]
    Crashed(String),
    /// The instance ran out of memory (its process was killed at the memory limit); it was
    /// discarded. Counted with panics.
    #[error("instance ran out of memory: {0}")]
    OutOfMemory(String),
    /// A new instance was needed and its init phase failed.
    #[error("instance init failed: {0}")]
    Init(InitFailure),
    /// No capacity: answered at once, never queued.
    #[error("throttled: {0}")]
    Throttled(ThrottleReason),
    /// The JSON payload could not be decoded into the function's event type, or its output
    /// could not be encoded.
    #[error("payload error: {0}")]
    Payload(String),
    /// The runtime is shutting down and accepts no new invocations.
    #[error("runtime is shutting down")]
    ShuttingDown,
    /// The invocation was still running when the shutdown grace period ended (or the grace
    /// of the function's unregister).
    #[error("cancelled by shutdown")]
    Cancelled,
    /// The function was unregistered: a handle kept from before refuses new invocations.
    #[error("function `{0}` was unregistered")]
    Unregistered(String),
    /// The output of a call by name serialises to more JSON than the runtime's
    /// `payload_limits.sync_response` (Lambda's `Function.ResponseSizeTooLarge`). The handler
    /// ran; its output is dropped.
    #[error("response payload size ({size} bytes) exceeded the maximum allowed payload size ({limit} bytes)")]
    ResponseTooLarge {
        /// The output's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The work had passed through `hops` invocations, the recursion limit: the function is in
    /// a loop and was not run (Lambda's `RecursiveInvocationException`). Never retried.
    #[error("recursive loop stopped: the work passed through {hops} invocations")]
    RecursiveLoop {
        /// The work's hop count.
        hops: u32,
    },
    /// The caller may not invoke the function: its policy, or the calling function's role,
    /// does not allow it (Lambda's `AccessDeniedException`, HTTP 403). The function did not
    /// run. Never retried.
    #[error(transparent)]
    AccessDenied(AccessDenied),
}

/// A refused request: who asked for which action on which resource. It never says which
/// statement refused, so a caller learns nothing of the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{principal} is not authorized to perform: {action} on resource: {resource}")]
#[non_exhaustive]
pub struct AccessDenied {
    /// Who asked (`host`, `function:orders`, an IAM ARN, `anonymous`).
    pub principal: String,
    /// The action, as `lambda:InvokeFunction`.
    pub action: String,
    /// The resource's ARN.
    pub resource: String,
}

impl AccessDenied {
    /// `principal` may not perform `action` on `resource`.
    pub fn new(
        principal: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        Self {
            principal: principal.into(),
            action: action.into(),
            resource: resource.into(),
        }
    }
}

impl InvokeError {
    /// The outcome class, for metrics and retry decisions.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Function(_) => OutcomeKind::Error,
            Self::Timeout(_) => OutcomeKind::Timeout,
            Self::Panic(_) | Self::Crashed(_) | Self::OutOfMemory(_) => OutcomeKind::Panic,
            Self::Init(_) => OutcomeKind::InitFailure,
            Self::Throttled(_) => OutcomeKind::Throttled,
            Self::Payload(_) | Self::RecursiveLoop { .. } | Self::AccessDenied(_) => {
                OutcomeKind::Rejected
            }
            Self::ResponseTooLarge { .. } => OutcomeKind::Error,
            Self::ShuttingDown | Self::Cancelled | Self::Unregistered(_) => OutcomeKind::Cancelled,
        }
    }

    /// A short machine-readable error type: Lambda's `errorType` (or error code) where Lambda
    /// has one.
    ///
    /// | error | type |
    /// |---|---|
    /// | `Function` | the handler's own type |
    /// | `Timeout` | `Sandbox.Timedout` |
    /// | `Panic`, `Crashed` | `Runtime.ExitError`: the instance is discarded, as Lambda's environment is when its runtime exits; the variant and message tell a panic from a crash |
    /// | `OutOfMemory` | `Runtime.OutOfMemory` |
    /// | `Init` | the factory's error type, or `Runtime.InitError` for an init that timed out or panicked |
    /// | `Throttled` | `TooManyRequestsException` |
    /// | `ResponseTooLarge` | `Function.ResponseSizeTooLarge` |
    /// | `Unregistered` | `ResourceNotFoundException` |
    /// | `RecursiveLoop` | `RecursiveInvocationException` |
    /// | `AccessDenied` | `AccessDeniedException` |
    /// | `Payload` | `InvalidPayload` (nimbus's: no one Lambda name covers an event that does not decode and an output that does not encode) |
    /// | `ShuttingDown`, `Cancelled` | `ShuttingDown`, `Cancelled` (nimbus's: Lambda has no such outcome) |
    pub fn error_type(&self) -> &str {
        match self {
            Self::Function(e) => e.error_type(),
            Self::Timeout(_) => "Sandbox.Timedout",
            Self::Panic(_) | Self::Crashed(_) => "Runtime.ExitError",
            Self::OutOfMemory(_) => "Runtime.OutOfMemory",
            Self::Init(InitFailure::Error { error_type, .. }) => error_type,
            Self::Init(InitFailure::Timeout(_) | InitFailure::Panic(_)) => "Runtime.InitError",
            Self::Throttled(_) => "TooManyRequestsException",
            Self::Payload(_) => "InvalidPayload",
            Self::ShuttingDown => "ShuttingDown",
            Self::Cancelled => "Cancelled",
            Self::Unregistered(_) => "ResourceNotFoundException",
            Self::ResponseTooLarge { .. } => "Function.ResponseSizeTooLarge",
            Self::RecursiveLoop { .. } => "RecursiveInvocationException",
            Self::AccessDenied(_) => "AccessDeniedException",
        }
    }
}

/// The class of an invocation's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The handler returned its output.
    Success,
    /// The handler returned an error.
    Error,
    /// The handler timed out.
    Timeout,
    /// The handler panicked, or its instance crashed.
    Panic,
    /// The instance's init failed.
    InitFailure,
    /// No capacity.
    Throttled,
    /// Rejected before running: a payload that does not decode.
    Rejected,
    /// Refused or cancelled by shutdown, or refused after unregister.
    Cancelled,
}

/// Errors from registering a function.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The function's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A function with this name is already registered.
    #[error("a function named `{0}` is already registered")]
    Duplicate(String),
    /// Initialising the provisioned (`min_instances`) instances failed.
    #[error("provisioning `{name}` failed: {failure}")]
    Provisioning {
        /// The function's name.
        name: String,
        /// The init failure.
        failure: InitFailure,
    },
    /// The runtime is shutting down.
    #[error("runtime is shutting down")]
    ShuttingDown,
}
