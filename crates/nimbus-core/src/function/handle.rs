//! [`FunctionHandle`]: the typed handle that invokes a registered function, as the principal
//! it was made for.

use std::future::Future;
use std::sync::Arc;

use super::FunctionInner;
use crate::async_invoke::{AsyncMetrics, InvocationRecord};
use crate::config::FunctionConfig;
use crate::error::{InvokeError, Refused, Rejected};
use crate::executor::{Invocation, InvokeOptions};
use crate::handler::{Caller, Principal, RequestId};
use crate::metering::Usage;
use crate::metrics::FunctionMetrics;

/// A typed handle to a registered function; cloning it is cheap.
///
/// A handle from [`Runtime::register`](crate::Runtime::register) or
/// [`Runtime::function`](crate::Runtime::function) invokes as the host
/// ([`Principal::Host`]); one from [`FunctionHandle::for_event_source`] as that mapping.
pub struct FunctionHandle<E, O> {
    inner: Arc<FunctionInner<E, O>>,
    principal: Caller,
}

impl<E, O> Clone for FunctionHandle<E, O> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            principal: self.principal.clone(),
        }
    }
}

impl<E, O> std::fmt::Debug for FunctionHandle<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionHandle")
            .field("name", self.inner.exec.name())
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl<E: Send + 'static, O: Send + 'static> FunctionHandle<E, O> {
    /// A handle invoking as the host.
    pub(crate) fn new(inner: Arc<FunctionInner<E, O>>) -> Self {
        Self {
            inner,
            principal: Caller::default(),
        }
    }

    /// A handle to the same function that invokes as the event source mapping `mapping`
    /// (its handlers see [`Principal::EventSource`]). Mapping engines, nimbus's and a host's
    /// own, invoke through one. The host owns its mappings, so this grants nothing beyond
    /// the host's own trust; a handle can only ever narrow to a mapping, never become another
    /// function or an outside caller.
    #[must_use]
    pub fn for_event_source(&self, mapping: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            principal: Caller::from(Principal::EventSource(Arc::from(mapping))),
        }
    }

    /// A handle invoking as `principal`: checked against the function's policy on every
    /// invocation (see [`permission`](crate::permission)), as a front end that authenticated
    /// its caller invokes. The host is trusted; this is how it speaks for someone else. A
    /// [`Principal::Function`] is refused here (its role is not visible to a handle): invoke as
    /// a function with [`Runtime::invoke_json_as`](crate::Runtime::invoke_json_as).
    #[must_use]
    pub fn acting_as(&self, principal: Principal) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            principal: Caller::from(principal),
        }
    }

    /// Who invokes through this handle.
    pub fn principal(&self) -> &Principal {
        self.principal.get()
    }

    /// The function's ARN, `arn:aws:lambda:<region>:<account>:function:<name>`, in the region
    /// and account of its runtime's config.
    pub fn arn(&self) -> &str {
        self.inner.arn()
    }

    /// Whether the function's execution role allows `actions` (as `sqs:ReceiveMessage`) on the
    /// source `source_arn`: what a mapping that polls checks when it is attached, and again
    /// after every change of the role (see [`role_version`](Self::role_version)).
    ///
    /// # Errors
    ///
    /// [`AccessDenied`](crate::error::AccessDenied) naming the role, the action and the source.
    pub fn authorize_source(
        &self,
        actions: &[&str],
        source_arn: &str,
    ) -> Result<(), crate::error::AccessDenied> {
        self.inner.exec.authorize_source(actions, source_arn)
    }

    /// A number that changes whenever the function's execution role does
    /// ([`Runtime::set_role`](crate::Runtime::set_role)).
    pub fn role_version(&self) -> u64 {
        self.inner.exec.access().role_version()
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        self.inner.exec.name()
    }

    /// The function's configuration.
    pub fn config(&self) -> &FunctionConfig {
        self.inner.exec.config()
    }

    /// Invokes the function synchronously (Lambda's `RequestResponse`): runs the event on a warm
    /// or new instance and returns the output. No capacity is [`InvokeError::Throttled`] at once.
    ///
    /// The handler runs on the caller's task. Dropping this future cancels the invocation and
    /// discards its instance.
    ///
    /// # Errors
    ///
    /// Every outcome but success; see [`InvokeError`]. A handle kept after the function was
    /// unregistered answers [`InvokeError::Unregistered`].
    //
    // These return the executor's future itself rather than an `async fn`'s around it: a
    // nested future is copied into its parent and dropped with it on every invocation. The
    // executor takes the hop count to pass on when the future is first polled, as an `async fn`
    // would.
    pub fn invoke(&self, event: E) -> impl Future<Output = Result<O, InvokeError>> + Send + '_ {
        self.inner.exec.invoke_then(
            event,
            self.principal.clone(),
            InvokeOptions::default(),
            |_, error| Err(error),
            |invocation| invocation.result,
        )
    }

    /// Invokes with options, returning the outcome and its usage report.
    pub fn invoke_with(
        &self,
        event: E,
        options: InvokeOptions,
    ) -> impl Future<Output = Invocation<O>> + Send + '_ {
        self.inner
            .exec
            .invoke(event, self.principal.clone(), options)
    }

    /// As [`FunctionHandle::invoke_with`], handing the event back when the invocation is
    /// refused before a handler sees it, so that a caller that retries a throttle needs no
    /// copy of the event: whatever [`Invocation::report`] would be `None` for (throttled,
    /// denied, a recursive loop, stopping, unregistered, an instance that failed to start)
    /// comes back as [`Refused`].
    ///
    /// # Errors
    ///
    /// [`Refused`] holds the event and the [`InvokeError`] `invoke_with` would have answered.
    pub fn try_invoke_with(
        &self,
        event: E,
        options: InvokeOptions,
    ) -> impl Future<Output = Result<Invocation<O>, Refused<E>>> + Send + '_ {
        self.inner
            .exec
            .try_invoke(event, self.principal.clone(), options)
    }

    /// A snapshot of the function's metrics.
    pub fn metrics(&self) -> FunctionMetrics {
        self.inner.exec.metrics()
    }

    /// A snapshot of the function's async queue.
    pub fn async_metrics(&self) -> AsyncMetrics {
        self.inner.queue.metrics()
    }

    /// Resolves when none of the function's async events is pending: queued, waiting for a
    /// retry, running or being delivered. Failed events kept for the host are not pending.
    pub async fn async_idle(&self) {
        self.inner.queue.until_idle().await;
    }

    /// The function's accumulated usage and estimated cost.
    pub fn usage(&self) -> Usage {
        self.inner.exec.usage()
    }
}

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
        self.inner
            .queue
            .invoke_async(event, self.principal.clone().inheriting())
    }

    /// Takes the async events that failed for good and that no on-failure destination or
    /// dead-letter target took, kept for the host (`UnroutedFailures::Keep`, the default), as
    /// the records an on-failure destination would have received. Taking them makes room
    /// under `max_kept_failures`; what is not taken is handed back at shutdown.
    pub fn take_failed(&self) -> Vec<InvocationRecord<E, O>> {
        self.inner.queue.take_failed()
    }
}
