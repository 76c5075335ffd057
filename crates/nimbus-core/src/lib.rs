//! nimbus-core: run functions in-process with the execution model of AWS Lambda.
//!
//! A [`Runtime`] holds named [`Function`]s. Each function runs on *instances* (Lambda's
//! execution environments) built by an async factory in the init phase, reused warm (most
//! recently used first), reaped when idle down to `min_instances`, and discarded after a panic
//! or a timeout. Concurrency is capped per function (`max_concurrency`, reserved out of the
//! runtime-wide limit) and across the runtime; new instances are rate-limited by a token bucket.
//! A synchronous [`FunctionHandle::invoke`] returns the output or a typed [`InvokeError`] —
//! function error, timeout, panic, init failure, throttle — and never hangs. Every invocation is
//! metered ([`UsageReport`]) and counted ([`FunctionMetrics`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nimbus_core::{handler_fn, Context, Function, FunctionError, InvokeError, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::default();
//! let square = runtime
//!     .register(
//!         Function::new("square", handler_fn(|n: i64, _ctx: Context| async move {
//!             if n.abs() > 1_000_000 {
//!                 return Err(FunctionError::msg("too large").not_retryable());
//!             }
//!             Ok(n * n)
//!         }))
//!         .with_timeout(Duration::from_secs(1))
//!         .with_max_concurrency(10),
//!     )
//!     .await?;
//!
//! assert_eq!(square.invoke(12).await?, 144);
//! assert!(matches!(square.invoke(i64::MAX).await, Err(InvokeError::Function(_))));
//! assert_eq!(square.metrics().successes, 1);
//!
//! let report = runtime.shutdown(Duration::from_secs(1)).await;
//! assert_eq!(report.cancelled, 0);
//! # Ok(())
//! # }
//! ```

//! # Layout
//!
//! The modules form one dependency order, leaf to root; none reaches one above it (a test,
//! `tests/layers.rs`, enforces it):
//!
//! [`util`] → [`error`] → [`handler`] → [`permission`] → [`retry`] → [`config`] →
//! [`metering`] → [`metrics`] → [`concurrency`] → [`instance`] → [`executor`] →
//! [`async_invoke`] → [`function`] → [`runtime`].
//!
//! The items users need are re-exported at the root; the modules are public so that their
//! explanations (how retries, async guarantees, backends and the executor work) are in the
//! docs.
//!
//! # Timeouts are cooperative
//!
//! An in-process handler runs on the caller's task. At its deadline the runtime stops waiting
//! and drops the handler's future, which takes effect at its next `.await`: a handler that
//! computes for a long time without yielding cannot be interrupted in-process. Run such work
//! with `tokio::task::spawn_blocking` and watch [`Context::cancellation`], or on an instance
//! [`Backend`] that runs instances in their own processes.

pub mod async_invoke;
pub mod concurrency;
pub mod config;
pub mod error;
pub mod executor;
pub mod function;
pub mod handler;
pub mod instance;
pub mod metering;
pub mod metrics;
pub mod permission;
pub mod retry;
pub mod runtime;
pub mod util;

pub use async_invoke::{
    destination_fn, AsyncMetrics, Condition, DeadLetter, DeadLetterAttributes, DeadLetterMessage,
    DeliveryError, Destination, DestinationFn, DestinationTarget, ErrorInfo, HandedBack,
    InvocationRecord,
};
pub use concurrency::TokenBucket;
pub use config::{
    limits, AsyncConfig, BillingGranularity, FunctionConfig, PayloadLimits, Prices, RuntimeConfig,
    ScaleRate, UnroutedFailures,
};
pub use error::{
    AccessDenied, AsyncCallError, CallError, ConfigError, FunctionError, InitFailure, InvokeError,
    LookupError, OutcomeKind, Refused, RegisterError, RejectReason, Rejected, RetryHint,
    ThrottleReason,
};
pub use executor::{Invocation, InvokeOptions};
pub use function::{Function, FunctionHandle, JsonInvocation};
pub use handler::{
    handler_fn, init_fn, AwsCredentials, CallOrigin, ClientApplication, ClientContext,
    CognitoIdentity, Context, Handler, HandlerFn, InitContext, InitFn, InstanceFactory, Principal,
    RecursiveLoop, RequestId, RuntimeServices,
};
pub use instance::{Backend, Fault, Instance};
pub use metering::{Usage, UsageReport};
pub use metrics::{DurationHistogram, FunctionMetrics};
pub use retry::{Backoff, Retries, RetryPolicy};
pub use runtime::{
    Attachment, AttachmentStop, ConcurrencySnapshot, Runtime, ShutdownReport, UnregisterReport,
    ATTACHMENT_STOP_SLACK, SHUTDOWN_SLACK,
};

/// Re-exported so that implementations of nimbus's traits need no dependency of their own:
/// write `#[nimbus_core::async_trait]` (or `use nimbus_core::async_trait;`).
pub use async_trait::async_trait;

/// Re-exported so that handlers can use the context's token without naming tokio-util.
pub use tokio_util::sync::CancellationToken;
