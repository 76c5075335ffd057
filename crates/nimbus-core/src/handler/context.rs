//! What a handler knows about its invocation and how it acts through the runtime: [`Context`],
//! and [`InitContext`] for the init phase.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Extras;
use super::scope::{FunctionScope, InstanceScope, Services};
use super::{
    AwsCredentials, CallOrigin, Caller, ClientContext, CognitoIdentity, Principal, RuntimeServices,
};
use crate::error::{AsyncCallError, CallError, InvokeError, LookupError};
use crate::util::{aws, far_future};

/// A request id, unique within the process and very likely across processes: 64 random bits
/// chosen when the runtime starts, and a 64-bit sequence. Displayed in UUID form.
// Aligned to 8 rather than u128's 16, so that it packs with the other fields of a queued event;
// the field is private because a packed field cannot be borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, packed(8))]
pub struct RequestId(u128);

impl RequestId {
    /// The request id with this value.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// Its value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// The invocation's context, handed to the handler with its event: what the invocation is
/// (request id, deadline, attempt, principal), its cancellation token, and the way to act
/// through the runtime (invoke other functions, reach the host's resources).
///
/// # Example
///
/// A handler that calls another function; the callee sees `"orders"` as its principal.
///
/// ```
/// use nimbus_core::{handler_fn, Context, FunctionError, Principal};
///
/// let orders = handler_fn(|id: u64, ctx: Context| async move {
///     let price: u64 = ctx.invoke("price", &id).await.map_err(FunctionError::from_error)?;
///     Ok::<_, FunctionError>(price * 2)
/// });
/// let price = handler_fn(|id: u64, ctx: Context| async move {
///     assert_eq!(ctx.principal(), &Principal::Function("orders".into()));
///     Ok::<_, FunctionError>(id + 1)
/// });
/// # let _ = (orders, price);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Context {
    request_id: RequestId,
    deadline: Instant,
    attempt: u32,
    principal: Caller,
    /// The instance, and through it the function (see [`InstanceScope::function`]).
    instance: Arc<InstanceScope>,
    /// What the caller set beyond the event (trace header, client context, identity): rare.
    extras: Option<Arc<Extras>>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("request_id", &self.request_id)
            .field("function_name", &self.scope().function_name)
            .field("deadline", &self.deadline)
            .field("attempt", &self.attempt)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The context of one invocation (built by the executor).
    pub(crate) fn new(
        request_id: RequestId,
        deadline: Instant,
        attempt: u32,
        principal: Caller,
        instance: Arc<InstanceScope>,
        extras: Option<Arc<Extras>>,
    ) -> Self {
        Self {
            request_id,
            deadline,
            attempt,
            principal,
            instance,
            extras,
        }
    }

    /// A context for calling a handler directly, outside a runtime (tests, benches):
    /// request id 0, 128 MB, a deadline `timeout` from now (saturating: `Duration::MAX` is a
    /// deadline decades away), first attempt, invoked by the host, the ARN of the default
    /// region and account, no runtime to call through (see [`Context::with_services`]).
    pub fn detached(function_name: &str, timeout: Duration) -> Self {
        let now = Instant::now();
        let arn = aws::function_arn(aws::DEFAULT_REGION, aws::DEFAULT_ACCOUNT_ID, function_name);
        let function = Arc::new(FunctionScope::new(
            Arc::from(function_name),
            128,
            timeout,
            Arc::from(arn),
            None,
        ));
        Self {
            request_id: RequestId(0),
            deadline: now.checked_add(timeout).unwrap_or_else(far_future),
            attempt: 1,
            principal: Caller::default(),
            instance: Arc::new(InstanceScope::new(function, false)),
            extras: None,
        }
    }

    /// Gives a detached context a stand-in for the runtime, so that a handler's calls to other
    /// functions can be tested outside one.
    #[must_use]
    pub fn with_services(mut self, services: Arc<dyn RuntimeServices>) -> Self {
        let function = Arc::new(self.scope().with_services(Services::Given(services)));
        self.instance = Arc::new(self.instance.with_function(function));
        self
    }

    /// The function's scope, held by the instance.
    fn scope(&self) -> &FunctionScope {
        &self.instance.function
    }

    /// This invocation's request id.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The function's name.
    pub fn function_name(&self) -> &str {
        &self.scope().function_name
    }

    /// The function's memory size in MB.
    pub fn memory_mb(&self) -> u32 {
        self.scope().memory_mb
    }

    /// The function's ARN, `arn:aws:lambda:<region>:<account>:function:<name>`, in the
    /// runtime's region and account (Lambda's `invoked_function_arn`; nimbus has no
    /// qualifiers, so it is always the unqualified ARN).
    pub fn invoked_function_arn(&self) -> &str {
        &self.scope().arn
    }

    /// The version that runs: always `$LATEST` (nimbus publishes no versions).
    pub fn function_version(&self) -> &str {
        aws::FUNCTION_VERSION
    }

    /// The function's log group, `/aws/lambda/<name>`.
    pub fn log_group_name(&self) -> &str {
        &self.scope().log_group
    }

    /// The instance's log stream, `YYYY/MM/DD/[$LATEST]<32 hex>`: fixed when the instance was
    /// created, the same for every invocation it serves.
    pub fn log_stream_name(&self) -> &str {
        self.instance.log_stream()
    }

    /// The invocation's X-Ray trace header: the caller's, if it gave one
    /// ([`InvokeOptions::with_trace_id`](crate::InvokeOptions::with_trace_id)), otherwise one
    /// in Lambda's shape, `Root=1-<8 hex epoch seconds>-<24 hex>;Parent=<16 hex>;Sampled=0`,
    /// derived from the request id and the start time (the same on every call).
    pub fn xray_trace_id(&self) -> Cow<'_, str> {
        match self.extras.as_deref().and_then(|e| e.trace_id.as_deref()) {
            Some(given) => Cow::Borrowed(given),
            None => Cow::Owned(aws::trace_header(
                self.scope().started_epoch_secs(self.deadline),
                self.request_id.as_u128(),
            )),
        }
    }

    /// The client context the caller passed
    /// ([`InvokeOptions::with_client_context`](crate::InvokeOptions::with_client_context)).
    pub fn client_context(&self) -> Option<&ClientContext> {
        self.extras.as_deref()?.client_context.as_ref()
    }

    /// The Cognito identity the caller passed
    /// ([`InvokeOptions::with_identity`](crate::InvokeOptions::with_identity)).
    pub fn identity(&self) -> Option<&CognitoIdentity> {
        self.extras.as_deref()?.identity.as_ref()
    }

    /// When the invocation times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the timeout (zero once it has passed).
    pub fn remaining_time(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Which attempt this is: 1 for the first, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Who invoked the function, as the runtime established it.
    pub fn principal(&self) -> &Principal {
        self.principal.get()
    }

    /// Fires at the timeout, or when the runtime starts shutting down. Work the handler spawns
    /// should stop when it fires; the handler itself is dropped at the timeout, or at the end
    /// of the shutdown grace period.
    ///
    /// The token belongs to the instance, as a Lambda environment's lifetime does: a timed-out
    /// instance is discarded with everything it started, including work that an earlier
    /// invocation left running.
    ///
    /// Timeouts are cooperative: the runtime stops waiting for a handler at its deadline and
    /// drops its future, which takes effect at the handler's next `.await`. A handler that
    /// computes without yielding cannot be interrupted in-process; run such work with
    /// `tokio::task::spawn_blocking` (and watch this token), or on a backend that runs
    /// instances in their own processes.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.instance.cancel
    }

    /// How many invocations the work of this one passed through before it: 0 for work the
    /// host started, one more for each function it went through (see
    /// [`hops`](super::hops)).
    pub fn hop_count(&self) -> u32 {
        self.principal.hops()
    }

    /// This function as the origin of the calls it makes: work it starts carries one hop more.
    fn origin(&self) -> CallOrigin<'_> {
        CallOrigin::new(
            self.scope().as_caller.get(),
            self.hop_count().saturating_add(1),
        )
    }

    /// The runtime, or why there is none.
    fn services(&self, function: &str) -> Result<Arc<dyn RuntimeServices>, LookupError> {
        self.scope()
            .services()
            .ok_or_else(|| LookupError::NoRuntime(function.to_owned()))
    }

    /// Invokes `function` synchronously, as this function: the event is serialised to JSON
    /// and the output decoded from it, as Lambda's `Invoke` carries payloads. The callee sees
    /// this function as its [`principal`](Context::principal).
    ///
    /// # Errors
    ///
    /// [`CallError::Lookup`] if there is no such JSON function (or no runtime),
    /// [`CallError::Invoke`] with the callee's outcome otherwise; an event or output that does
    /// not convert is [`InvokeError::Payload`].
    pub async fn invoke<E, O>(&self, function: &str, event: &E) -> Result<O, CallError>
    where
        E: serde::Serialize + ?Sized,
        O: serde::de::DeserializeOwned,
    {
        let event = serde_json::to_value(event).map_err(|e| {
            InvokeError::Payload(format!("cannot encode the event for `{function}`: {e}"))
        })?;
        let output = self.invoke_json(function, event).await?;
        serde_json::from_value(output).map_err(|e| {
            InvokeError::Payload(format!("cannot decode the output of `{function}`: {e}")).into()
        })
    }

    /// Invokes `function` synchronously with a JSON event, as this function.
    ///
    /// # Errors
    ///
    /// As [`Context::invoke`].
    pub async fn invoke_json(
        &self,
        function: &str,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let services = self.services(function)?;
        services.invoke_json(self.origin(), function, event).await
    }

    /// Queues an event for asynchronous invocation of `function`, as this function; returns
    /// the request id at once.
    ///
    /// # Errors
    ///
    /// See [`AsyncCallError`]; an event the queue refuses is handed back as JSON.
    pub fn invoke_async<E>(
        &self,
        function: &str,
        event: &E,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>>
    where
        E: serde::Serialize + ?Sized,
    {
        let event = serde_json::to_value(event).map_err(|e| {
            AsyncCallError::Payload(format!("cannot encode the event for `{function}`: {e}"))
        })?;
        self.invoke_async_json(function, event)
    }

    /// Queues a JSON event for asynchronous invocation of `function`, as this function.
    ///
    /// # Errors
    ///
    /// As [`Context::invoke_async`].
    pub fn invoke_async_json(
        &self,
        function: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
        let services = self.services(function)?;
        services.invoke_async_json(self.origin(), function, event)
    }

    /// The resource the host registered under `name`
    /// ([`Runtime::provide`](crate::Runtime::provide)), if there is one of type `T`.
    pub fn resource<T: std::any::Any + Send + Sync>(&self, name: &str) -> Option<Arc<T>> {
        let services = self.services(name).ok()?;
        services.resource(self.origin(), name)?.downcast::<T>().ok()
    }
}

/// What the init phase knows: the function it builds an instance of, and the instance.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitContext {
    /// The instance being built, and through it the function.
    instance: Arc<InstanceScope>,
    instance_number: u64,
    provisioned: bool,
}

impl InitContext {
    pub(crate) fn new(
        instance: Arc<InstanceScope>,
        instance_number: u64,
        provisioned: bool,
    ) -> Self {
        Self {
            instance,
            instance_number,
            provisioned,
        }
    }

    /// The function's scope, held by the instance.
    fn scope(&self) -> &FunctionScope {
        &self.instance.function
    }

    /// The function's name.
    pub fn function_name(&self) -> &str {
        &self.scope().function_name
    }

    /// The function's memory size in MB.
    pub fn memory_mb(&self) -> u32 {
        self.scope().memory_mb
    }

    /// The function's ARN in the runtime's region and account.
    pub fn function_arn(&self) -> &str {
        &self.scope().arn
    }

    /// The version that runs: always `$LATEST`.
    pub fn function_version(&self) -> &str {
        aws::FUNCTION_VERSION
    }

    /// The function's log group, `/aws/lambda/<name>`.
    pub fn log_group_name(&self) -> &str {
        &self.scope().log_group
    }

    /// The log stream of the instance being built; its invocations see the same one.
    pub fn log_stream_name(&self) -> &str {
        self.instance.log_stream()
    }

    /// A number counting the function's instances from 1.
    pub fn instance_number(&self) -> u64 {
        self.instance_number
    }

    /// Whether this instance is provisioned ahead of load (`min_instances`) rather than a cold start.
    pub fn provisioned(&self) -> bool {
        self.provisioned
    }

    /// The credentials the instance's code signs AWS SDK calls with (Lambda puts its role's in
    /// the environment); the runtime maps them back to this function, so those calls are
    /// checked by its role. `None` outside a runtime.
    pub fn credentials(&self) -> Option<AwsCredentials> {
        let origin = CallOrigin::new(self.scope().as_caller.get(), 0);
        self.scope().services()?.credentials(origin)
    }

    /// The URL of the runtime's Lambda Invoke API, if the host serves one.
    pub fn lambda_endpoint(&self) -> Option<String> {
        self.scope().services()?.lambda_endpoint()
    }
}
