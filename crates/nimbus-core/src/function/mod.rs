//! Functions: the [`Function`] definition (name, backend, configuration, async handling) and
//! the [`FunctionHandle`] that invokes a registered one. A registered function is its executor
//! (sync invocations), its async queue on top of it, and the JSON codec that lets callers who
//! only know its name reach it.

mod erased;
mod handle;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use erased::AnyFunction;
pub use erased::JsonInvocation;
pub use handle::FunctionHandle;

use crate::async_invoke::{AsyncInvoker, DeadLetter, Destination, Destinations};
use crate::config::{BillingGranularity, FunctionConfig, ScaleRate, UnroutedFailures};
use crate::error::Rejected;
use crate::executor::{Executor, Shared};
use crate::handler::{Caller, CloneFactory, Handler, InstanceFactory, RequestId};
use crate::instance::{Backend, InProcess};
use crate::retry::{Backoff, Retries, RetryPolicy};
use crate::util::aws::function_arn;

/// A function to register: a name, an instance factory (the init phase) and a configuration.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::{handler_fn, Context, Function, FunctionError};
///
/// let f = Function::new("resize", handler_fn(|px: u32, _ctx: Context| async move {
///     Ok::<_, FunctionError>(px / 2)
/// }))
/// .with_timeout(Duration::from_secs(10))
/// .with_memory_mb(1024)
/// .with_max_concurrency(50);
/// assert_eq!(f.config().memory_mb, 1024);
/// ```
pub struct Function<E, O> {
    name: String,
    backend: Arc<dyn Backend<E, O>>,
    config: FunctionConfig,
    destinations: Destinations<E, O>,
    retry_policy: Option<Arc<dyn RetryPolicy>>,
}

impl<E, O> std::fmt::Debug for Function<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<E: Send + 'static, O: 'static> Function<E, O> {
    /// A function whose instances all share one stateless handler (each instance gets a clone).
    pub fn new<H>(name: impl Into<String>, handler: H) -> Self
    where
        H: Handler<E, O> + Clone + Sync,
    {
        Self::with_factory(name, CloneFactory(handler))
    }

    /// A function whose instances are built by `factory` in the init phase.
    pub fn with_factory(name: impl Into<String>, factory: impl InstanceFactory<E, O>) -> Self {
        Self::with_backend(name, InProcess(Arc::new(factory)))
    }

    /// A function whose instances are created by `backend` (see [`Backend`]); handlers in
    /// this process use [`Function::new`] or [`Function::with_factory`] instead.
    pub fn with_backend(name: impl Into<String>, backend: impl Backend<E, O>) -> Self {
        Self {
            name: name.into(),
            backend: Arc::new(backend),
            config: FunctionConfig::default(),
            destinations: Destinations::default(),
            retry_policy: None,
        }
    }
}

impl<E, O> Function<E, O> {
    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration so far.
    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// Replaces the whole configuration.
    #[must_use]
    pub fn with_config(mut self, config: FunctionConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets what happens to a recursive loop (see
    /// [`RecursiveLoop`](crate::handler::RecursiveLoop)).
    #[must_use]
    pub fn with_recursive_loop(mut self, setting: crate::handler::RecursiveLoop) -> Self {
        self.config.recursive_loop = setting;
        self
    }

    /// Sets the execution role: what the function's code may reach through its context (see
    /// [`permission`](crate::permission)).
    #[must_use]
    pub fn with_role(mut self, role: crate::permission::ExecutionRole) -> Self {
        self.config.role = Some(role);
        self
    }

    /// Adds a statement to the policy the function is registered with (who may invoke it).
    #[must_use]
    pub fn with_policy_statement(mut self, statement: crate::permission::Statement) -> Self {
        self.config.policy.push(statement);
        self
    }

    /// Sets the invocation timeout (1 ms..=900 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Turns the CPU-share governor on or off (default off): the handler gets `memory_mb / 1769`
    /// of a vCPU, approximately (see
    /// [`FunctionConfig::cpu_governor`](crate::FunctionConfig::cpu_governor)).
    #[must_use]
    pub fn with_cpu_governor(mut self, on: bool) -> Self {
        self.config.cpu_governor = on;
        self
    }

    /// Sets the memory size in MB (128..=10,240).
    #[must_use]
    pub fn with_memory_mb(mut self, memory_mb: u32) -> Self {
        self.config.memory_mb = memory_mb;
        self
    }

    /// Reserves concurrency for the function and caps it there.
    #[must_use]
    pub fn with_max_concurrency(mut self, max: u32) -> Self {
        self.config.max_concurrency = Some(max);
        self
    }

    /// Keeps this many instances initialised ahead of load.
    #[must_use]
    pub fn with_min_instances(mut self, min: u32) -> Self {
        self.config.min_instances = min;
        self
    }

    /// Sets how long idle instances stay warm.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.config.idle_timeout = idle_timeout;
        self
    }

    /// Sets the scale rate: `instances` new instances per `per`.
    #[must_use]
    pub fn with_scale_rate(mut self, instances: u32, per: Duration) -> Self {
        self.config.scale_rate = ScaleRate { instances, per };
        self
    }

    /// Sets the billing granularity.
    #[must_use]
    pub fn with_billing(mut self, billing: BillingGranularity) -> Self {
        self.config.billing = billing;
        self
    }

    /// Sets the number of retries of a failed async invocation (0..=2, default 2).
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.config.async_invoke.max_retries = max_retries;
        self
    }

    /// Sets the maximum age of an async event (60 s..=6 h, default 6 h).
    #[must_use]
    pub fn with_max_event_age(mut self, max_event_age: Duration) -> Self {
        self.config.async_invoke.max_event_age = max_event_age;
        self
    }

    /// Sets how many async events may be pending at once (default 100,000).
    #[must_use]
    pub fn with_async_queue_capacity(mut self, capacity: usize) -> Self {
        self.config.async_invoke.queue_capacity = capacity;
        self
    }

    /// Sets the waits between async attempts (default: 1 min, then 2 min).
    #[must_use]
    pub fn with_retry_backoff(mut self, backoff: Backoff) -> Self {
        self.config.async_invoke.retry_backoff = backoff;
        self
    }

    /// Sets the waits after a throttle (default: 1 s doubling to 5 min).
    #[must_use]
    pub fn with_throttle_backoff(mut self, backoff: Backoff) -> Self {
        self.config.async_invoke.throttle_backoff = backoff;
        self
    }

    /// Sets how long a destination or dead-letter target may take to answer before the
    /// delivery counts as refused (1 ms..=15 min, default 30 s).
    #[must_use]
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.config.async_invoke.delivery_timeout = timeout;
        self
    }

    /// Sets what becomes of a failed async event that no on-failure destination or dead-letter
    /// target took: kept for the host (the default) or, as Lambda does, logged and dropped.
    #[must_use]
    pub fn with_unrouted_failures(mut self, unrouted: UnroutedFailures) -> Self {
        self.config.async_invoke.unrouted_failures = unrouted;
        self
    }

    /// Sets how many failed async events are kept for the host at most (1..=10,000,000,
    /// default 10,000); while that many are, `invoke_async` hands new events back.
    #[must_use]
    pub fn with_max_kept_failures(mut self, max: usize) -> Self {
        self.config.async_invoke.max_kept_failures = max;
        self
    }

    /// Replaces the default retry policy (`max_retries` with `retry_backoff`) of async
    /// invocations.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: impl RetryPolicy) -> Self {
        self.retry_policy = Some(Arc::new(policy));
        self
    }

    /// Sends a record of every successful async invocation here.
    #[must_use]
    pub fn with_on_success(mut self, destination: impl Destination<E, O>) -> Self {
        self.destinations.on_success = Some(Arc::new(destination));
        self
    }

    /// Sends a record of every async invocation that failed for good here.
    #[must_use]
    pub fn with_on_failure(mut self, destination: impl Destination<E, O>) -> Self {
        self.destinations.on_failure = Some(Arc::new(destination));
        self
    }

    /// Sends the original event of every async invocation that failed for good here (after the
    /// on-failure destination, or instead of it when it refuses).
    #[must_use]
    pub fn with_dead_letter(mut self, dead_letter: impl DeadLetter<E>) -> Self {
        self.destinations.dead_letter = Some(Arc::new(dead_letter));
        self
    }

    pub(crate) fn into_parts(self) -> Parts<E, O> {
        Parts {
            name: self.name,
            backend: self.backend,
            config: self.config,
            destinations: self.destinations,
            retry_policy: self.retry_policy,
        }
    }
}

/// A [`Function`] taken apart for registration.
pub(crate) struct Parts<E, O> {
    pub(crate) name: String,
    pub(crate) backend: Arc<dyn Backend<E, O>>,
    pub(crate) config: FunctionConfig,
    pub(crate) destinations: Destinations<E, O>,
    pub(crate) retry_policy: Option<Arc<dyn RetryPolicy>>,
}

/// Converts events and outputs to and from JSON, for functions registered with serde types.
pub(crate) struct JsonCodec<E, O> {
    decode: fn(&serde_json::Value) -> Result<E, serde_json::Error>,
    /// As `decode`, consuming the JSON: free when the event type is `Value` itself.
    decode_owned: fn(serde_json::Value) -> Result<E, serde_json::Error>,
    encode: fn(O) -> Result<serde_json::Value, serde_json::Error>,
    invoke_async: AsyncEntry<E, O>,
}

/// `value` as an `E`: moved as it is when `E` is `Value` (a front end's JSON functions), else
/// deserialised.
fn decode_owned<E: serde::de::DeserializeOwned + 'static>(
    value: serde_json::Value,
) -> Result<E, serde_json::Error> {
    let mut slot = Some(value);
    if let Some(same) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<E>>() {
        if let Some(event) = same.take() {
            return Ok(event);
        }
    }
    match slot {
        Some(value) => serde_json::from_value(value),
        None => Err(serde::de::Error::custom("the event was taken")),
    }
}

/// `output` as JSON: moved as it is when `O` is `Value`, else serialised.
fn encode<O: serde::Serialize + 'static>(
    output: O,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut slot = Some(output);
    if let Some(same) =
        (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<serde_json::Value>>()
    {
        if let Some(value) = same.take() {
            return Ok(value);
        }
    }
    match slot {
        Some(output) => serde_json::to_value(output),
        None => Err(serde::ser::Error::custom("the output was taken")),
    }
}

type AsyncEntry<E, O> = fn(&Arc<AsyncInvoker<E, O>>, E, Caller) -> Result<RequestId, Rejected<E>>;

impl<E, O> JsonCodec<E, O>
where
    E: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    O: serde::Serialize + Send + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            decode: |value| E::deserialize(value),
            decode_owned: decode_owned::<E>,
            encode: encode::<O>,
            invoke_async: |queue, event, principal| queue.invoke_async(event, principal),
        }
    }
}

/// A registered function's state, shared by its handles and the registry.
pub(crate) struct FunctionInner<E, O> {
    /// Lambda's unqualified function ARN, in the runtime's region and account.
    arn: Arc<str>,
    exec: Arc<Executor<E, O>>,
    queue: Arc<AsyncInvoker<E, O>>,
    json: Option<JsonCodec<E, O>>,
}

impl<E: Send + 'static, O: Send + 'static> FunctionInner<E, O> {
    /// Builds a function's executor and queue against the runtime's shared state (the
    /// reservation, if any, already taken).
    pub(crate) fn new(
        parts: Parts<E, O>,
        shared: Arc<Shared>,
        json: Option<JsonCodec<E, O>>,
    ) -> Result<Self, crate::error::ConfigError> {
        let Parts {
            name,
            backend,
            config,
            destinations,
            retry_policy,
        } = parts;
        let retry: Arc<dyn RetryPolicy> = match retry_policy {
            Some(policy) => policy,
            None => Arc::new(Retries::new(
                config.async_invoke.max_retries,
                config.async_invoke.retry_backoff,
            )?),
        };
        let arn: Arc<str> = Arc::from(function_arn(
            &shared.config.region,
            &shared.config.account_id,
            &name,
        ));
        let exec = Arc::new(Executor::new(&name, config, backend, shared));
        let queue = Arc::new(AsyncInvoker::new(
            Arc::clone(&exec),
            Arc::clone(&arn),
            destinations,
            retry,
        ));
        Ok(Self {
            arn,
            exec,
            queue,
            json,
        })
    }

    /// The function's ARN.
    pub(crate) fn arn(&self) -> &Arc<str> {
        &self.arn
    }

    /// The function's executor.
    pub(crate) fn executor(&self) -> &Arc<Executor<E, O>> {
        &self.exec
    }
}
