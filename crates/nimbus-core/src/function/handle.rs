//! [`FunctionHandle`]: the typed handle that invokes a registered function.

use std::sync::Arc;

use super::{FunctionConfig, FunctionInner, Invocation, InvokeOptions};
use crate::async_invoke::{AsyncMetrics, Rejected};
use crate::error::InvokeError;
use crate::handler::RequestId;
use crate::metering::Usage;
use crate::metrics::FunctionMetrics;
use crate::runtime::AnyFunction;

impl<E, O> FunctionHandle<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Invokes the function asynchronously (Lambda's `Event` type): the event is queued and the
    /// request id returned at once. Failed attempts are retried; the outcome goes to the
    /// destinations configured on the function.
    ///
    /// # Errors
    ///
    /// [`Rejected`] hands the event back when the queue is full, the runtime is shutting down,
    /// or the function was unregistered.
    pub fn invoke_async(&self, event: E) -> Result<RequestId, Rejected<E>> {
        self.inner.invoke_async(event)
    }
}

/// A typed handle to a registered function; cloning it is cheap.
pub struct FunctionHandle<E, O> {
    inner: Arc<FunctionInner<E, O>>,
}

impl<E, O> Clone for FunctionHandle<E, O> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E, O> std::fmt::Debug for FunctionHandle<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHandle")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<E: Send + 'static, O: Send + 'static> FunctionHandle<E, O> {
    pub(crate) fn new(inner: Arc<FunctionInner<E, O>>) -> Self {
        Self { inner }
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The function's configuration.
    pub fn config(&self) -> &FunctionConfig {
        &self.inner.config
    }

    /// Invokes the function synchronously (Lambda's `RequestResponse`): runs the event on a warm
    /// or new instance and returns the output. No capacity is [`InvokeError::Throttled`] at once.
    ///
    /// The handler runs on the caller's task. Dropping this future cancels the invocation and
    /// discards its instance.
    ///
    /// # Errors
    ///
    /// Every outcome but success; see [`InvokeError`]. A handle kept after
    /// [`crate::Runtime::unregister`] answers [`InvokeError::Unregistered`].
    pub async fn invoke(&self, event: E) -> Result<O, InvokeError> {
        self.inner
            .invoke(event, InvokeOptions::default())
            .await
            .result
    }

    /// Invokes with options, returning the outcome and its usage report.
    pub async fn invoke_with(&self, event: E, options: InvokeOptions) -> Invocation<O> {
        self.inner.invoke(event, options).await
    }

    /// A snapshot of the function's metrics.
    pub fn metrics(&self) -> FunctionMetrics {
        self.inner.metrics()
    }

    /// A snapshot of the function's async queue.
    pub fn async_metrics(&self) -> AsyncMetrics {
        self.inner.async_state.metrics()
    }

    /// The function's accumulated usage and estimated cost.
    pub fn usage(&self) -> Usage {
        self.inner.usage()
    }
}
