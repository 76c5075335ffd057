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

mod async_invoke;
mod concurrency;
mod error;
mod function;
mod handler;
mod instance;
mod metering;
mod metrics;
mod padded;
mod retry;
mod runtime;

pub use async_invoke::{
    destination_fn, AsyncMetrics, Condition, DeadLetter, DeliveryError, Destination, DestinationFn,
    ErrorInfo, HandedBack, InvocationRecord, RejectReason, Rejected,
};
pub use concurrency::TokenBucket;
pub use error::{
    ConfigError, FunctionError, InitFailure, InvokeError, OutcomeKind, RegisterError, RetryHint,
    ThrottleReason,
};
pub use function::{
    limits, AsyncConfig, BillingGranularity, Function, FunctionConfig, FunctionHandle, Invocation,
    InvokeOptions, ScaleRate,
};
pub use handler::{
    handler_fn, init_fn, Context, Handler, HandlerFn, InitContext, InitFn, InstanceFactory,
    Invoker, RequestId,
};
pub use metering::{Prices, Usage, UsageReport};
pub use metrics::FunctionMetrics;
pub use retry::{Backoff, Retries, RetryPolicy};
pub use runtime::{
    AsyncInvokeError, Attachment, AttachmentStop, ConcurrencySnapshot, Runtime, RuntimeConfig,
    ShutdownReport, UnregisterReport, ATTACHMENT_STOP_SLACK, SHUTDOWN_SLACK,
};

/// Re-exported so that implementations of nimbus's traits need no dependency of their own.
pub use async_trait::async_trait;

/// Re-exported so that handlers can use the context's token without naming tokio-util.
pub use tokio_util::sync::CancellationToken;
