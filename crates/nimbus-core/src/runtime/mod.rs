//! The [`Runtime`]: the registry of functions and of the host's resources, the runtime-wide
//! concurrency limit and its reservations, the services handlers reach through their
//! [`Context`](crate::Context), what is attached to it, and graceful shutdown.

mod access;
mod attachment;
mod registry;
mod stop;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use access::{AddedPermission, FunctionPolicy};
pub use attachment::{Attachment, AttachmentStop, ATTACHMENT_STOP_SLACK};
pub use stop::{ShutdownReport, UnregisterReport, SHUTDOWN_SLACK};

use crate::async_invoke::AsyncMetrics;
use crate::config::{FunctionConfig, RuntimeConfig};
use crate::error::{AsyncCallError, CallError, ConfigError, LookupError, RegisterError};
use crate::executor::InvokeOptions;
use crate::executor::Shared;
use crate::function::{
    AnyFunction, Function, FunctionHandle, FunctionInner, JsonCodec, JsonInvocation,
};
use crate::handler::{hops, CallOrigin, Principal, RequestId, RuntimeServices};
use crate::metering::Usage;
use crate::metrics::{DurationHistogram, FunctionMetrics};
use registry::{Entry, Registry};

/// The attachments of a runtime, in the order they were attached.
type Attachments = Vec<Arc<dyn Attachment>>;

/// The scheduler: register functions, invoke them, read their metrics, shut down.
///
/// Cloning a `Runtime` is cheap and gives another handle to the same runtime. It must be used
/// inside a Tokio runtime (it spawns the reapers of idle instances).
///
/// # Example
///
/// ```
/// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let greet = runtime
///     .register(Function::new(
///         "greet",
///         handler_fn(|name: String, _ctx: Context| async move {
///             Ok::<_, FunctionError>(format!("hello, {name}"))
///         }),
///     ))
///     .await?;
/// assert_eq!(greet.invoke("ada".to_string()).await?, "hello, ada");
///
/// // Callers that only know the name use JSON.
/// let out = runtime.invoke_json("greet", serde_json::json!("bob")).await?;
/// assert_eq!(out, "hello, bob");
/// runtime.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    registering: Arc<tokio::sync::Mutex<()>>,
    /// `None` once shutdown has taken them: no attachment is accepted after that.
    attachments: Arc<parking_lot::Mutex<Option<Attachments>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("functions", &self.registry.functions.len())
            .field("in_flight", &self.shared.gate.in_flight())
            .finish_non_exhaustive()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new(RuntimeConfig::default()).expect("the default configuration is valid")
    }
}

/// The runtime's concurrency accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencySnapshot {
    /// The runtime-wide limit.
    pub limit: usize,
    /// Capacity reserved by functions with `max_concurrency`, or set aside for the provisioned
    /// instances (`min_instances`) of functions without it.
    pub reserved: usize,
    /// The unreserved pool's size (`limit - reserved`).
    pub unreserved_limit: usize,
    /// Unreserved capacity in use now.
    pub unreserved_in_use: usize,
    /// Invocations in flight across all functions.
    pub in_flight: usize,
}

impl Runtime {
    /// A runtime with this configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the configuration is invalid.
    pub fn new(config: RuntimeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let shared = Arc::new(Shared::new(config));
        let registry = Arc::new(Registry::default());
        let services: Arc<dyn RuntimeServices> = registry.clone();
        shared.set_services(Arc::downgrade(&services));
        Ok(Self {
            shared,
            registry,
            registering: Arc::new(tokio::sync::Mutex::new(())),
            attachments: Arc::new(parking_lot::Mutex::new(Some(Vec::new()))),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Registers a function whose events and outputs are also reachable as JSON through
    /// [`Runtime::invoke_json`]. Its `min_instances` are initialised before this returns.
    ///
    /// # Errors
    ///
    /// An invalid config or name, a duplicate name, a reservation that would leave too little
    /// unreserved capacity, or a failed provisioned init.
    pub async fn register<E, O>(
        &self,
        function: Function<E, O>,
    ) -> Result<FunctionHandle<E, O>, RegisterError>
    where
        E: DeserializeOwned + Clone + Send + Sync + 'static,
        O: Serialize + Send + 'static,
    {
        self.register_with(function, Some(JsonCodec::new())).await
    }

    /// Registers a function that takes typed events only (for event types without serde).
    ///
    /// # Errors
    ///
    /// As [`Runtime::register`].
    pub async fn register_native<E, O>(
        &self,
        function: Function<E, O>,
    ) -> Result<FunctionHandle<E, O>, RegisterError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        self.register_with(function, None).await
    }

    async fn register_with<E, O>(
        &self,
        function: Function<E, O>,
        json: Option<JsonCodec<E, O>>,
    ) -> Result<FunctionHandle<E, O>, RegisterError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        let parts = function.into_parts();
        let name = parts.name.clone();
        validate_name(&name)?;
        parts.config.validate()?;
        access::check_destinations(&parts.config, &parts.destinations.targets(), self.config())?;
        let _serial = self.registering.lock().await;
        if self.shared.gate.is_closed() {
            return Err(RegisterError::ShuttingDown);
        }
        if self.registry.functions.contains_key(name.as_str()) {
            return Err(RegisterError::Duplicate(name));
        }
        let limit = self.shared.config.concurrency_limit;
        if parts.config.max_concurrency.is_none() && parts.config.min_instances > limit {
            return Err(ConfigError::new(
                "function",
                "min_instances",
                parts.config.min_instances,
                format!("0..=concurrency_limit ({limit}) without max_concurrency"),
            )
            .into());
        }
        // Returned if registration fails or its future is dropped (a caller's timeout).
        let field = if parts.config.max_concurrency.is_some() {
            "max_concurrency"
        } else {
            "min_instances"
        };
        let reservation = match parts.config.reserved_concurrency() {
            Some(amount) => Some(self.shared.reserve(amount, field)?),
            None => None,
        };
        let inner = Arc::new(FunctionInner::new(parts, Arc::clone(&self.shared), json)?);
        let exec = inner.executor();
        // Before the provisioned instances start: their init reads the function's credentials.
        // Revoked if the registration fails or is cancelled.
        let issued = self.registry.issue_for_registration(&name);
        if let Err(failure) = exec.provision().await {
            // The instances provisioned before the failure are disposed of.
            exec.stop_instances();
            drop(issued);
            return Err(RegisterError::Provisioning { name, failure });
        }
        if let Some(reservation) = reservation {
            reservation.keep();
        }
        exec.provisioned_enabled();
        exec.start_reaper();
        self.registry.functions.insert(
            Arc::from(name.as_str()),
            Entry {
                function: inner.clone(),
                typed: inner.clone(),
            },
        );
        issued.keep();
        Ok(FunctionHandle::new(inner))
    }

    /// Attaches a mapping (or any [`Attachment`]) to this runtime: [`Runtime::shutdown`] stops it
    /// before the functions it feeds, and unregistering its function stops it too.
    ///
    /// # Errors
    ///
    /// [`RegisterError::ShuttingDown`] once shutdown has begun; the attachment is handed back
    /// unstarted in spirit (the caller still owns its handle and should stop it).
    pub fn attach(&self, attachment: impl Attachment) -> Result<(), RegisterError> {
        self.attach_arc(Arc::new(attachment))
    }

    /// As [`Runtime::attach`], for an attachment already shared.
    ///
    /// # Errors
    ///
    /// As [`Runtime::attach`].
    pub fn attach_arc(&self, attachment: Arc<dyn Attachment>) -> Result<(), RegisterError> {
        match &mut *self.attachments.lock() {
            Some(attachments) => {
                attachments.push(attachment);
                Ok(())
            }
            None => Err(RegisterError::ShuttingDown),
        }
    }

    /// A typed handle to the function `name`: the fast way to invoke it repeatedly. It
    /// invokes as the host.
    ///
    /// # Errors
    ///
    /// [`LookupError::NotFound`], or [`LookupError::WrongType`] if the function has other types.
    pub fn function<E, O>(&self, name: &str) -> Result<FunctionHandle<E, O>, LookupError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        self.registry.typed(name).map(FunctionHandle::new)
    }

    /// Invokes `name` synchronously with a typed event, as the host.
    ///
    /// # Errors
    ///
    /// [`CallError::Lookup`] if there is no such function; [`CallError::Invoke`] with every
    /// outcome but success otherwise.
    pub async fn invoke<E, O>(&self, name: &str, event: E) -> Result<O, CallError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        Ok(self.function::<E, O>(name)?.invoke(event).await?)
    }

    /// Invokes `name` synchronously with a JSON event, as the host, for callers that only
    /// know the name.
    ///
    /// # Errors
    ///
    /// As [`Runtime::invoke`]; a payload that does not decode is [`InvokeError::Payload`](crate::InvokeError::Payload).
    pub async fn invoke_json(
        &self,
        name: &str,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        self.registry.invoke_json(host_origin(), name, event).await
    }

    /// As [`Runtime::invoke_json`], with options: what a caller passes beyond the event (trace
    /// header, client context, identity, attempt), as an HTTP or Runtime API front end does.
    ///
    /// # Errors
    ///
    /// As [`Runtime::invoke_json`].
    pub async fn invoke_json_with(
        &self,
        name: &str,
        event: serde_json::Value,
        options: InvokeOptions,
    ) -> Result<serde_json::Value, CallError> {
        self.invoke_json_reported(name, event, options).await.result
    }

    /// As [`Runtime::invoke_json_with`], and also what the invocation used (its request id,
    /// duration and memory), as a front end needs to answer with the request id or a log tail.
    pub async fn invoke_json_reported(
        &self,
        name: &str,
        event: serde_json::Value,
        options: InvokeOptions,
    ) -> JsonInvocation {
        self.invoke_json_as(Principal::Host, name, event, options)
            .await
    }

    /// A function's configuration, whatever its types; `None` if there is no such function.
    pub fn function_config(&self, name: &str) -> Option<FunctionConfig> {
        self.registry.any(name).map(|f| f.config().clone())
    }

    /// A function's unqualified ARN, whatever its types; `None` if there is no such function.
    pub fn function_arn(&self, name: &str) -> Option<String> {
        self.registry.any(name).map(|f| f.arn().to_owned())
    }

    /// Queues a typed event for asynchronous invocation of `name`, as the host.
    ///
    /// # Errors
    ///
    /// [`AsyncCallError::Lookup`] if there is no such function; [`AsyncCallError::Rejected`]
    /// hands the event back when the queue is full or the runtime is shutting down.
    pub fn invoke_async<E, O>(&self, name: &str, event: E) -> Result<RequestId, AsyncCallError<E>>
    where
        E: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        Ok(self.function::<E, O>(name)?.invoke_async(event)?)
    }

    /// Queues a JSON event for asynchronous invocation of `name`, as the host, for callers
    /// that only know the name. Returns the request id at once.
    ///
    /// # Errors
    ///
    /// See [`AsyncCallError`]; a refused event is handed back.
    pub fn invoke_async_json(
        &self,
        name: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
        self.registry.invoke_async_json(host_origin(), name, event)
    }

    /// Registers a resource under `name` for handlers to reach with
    /// [`Context::resource`](crate::Context::resource) (a client, a pool, a cache), replacing
    /// any resource of that name; returns the one replaced.
    pub fn provide<T: std::any::Any + Send + Sync>(
        &self,
        name: impl Into<String>,
        resource: Arc<T>,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        self.registry.resources.insert(name.into(), resource)
    }

    /// A snapshot of one function's async queue.
    pub fn async_metrics(&self, name: &str) -> Option<AsyncMetrics> {
        self.registry.any(name).map(|f| f.async_metrics())
    }

    /// Names of the registered functions, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .registry
            .functions
            .iter()
            .map(|e| e.key().to_string())
            .collect();
        names.sort();
        names
    }

    /// A snapshot of one function's metrics.
    pub fn metrics(&self, name: &str) -> Option<FunctionMetrics> {
        self.registry.any(name).map(|f| f.metrics())
    }

    /// The durations of one function's invocations (those that ran a handler), for exporters
    /// that publish a histogram.
    pub fn duration_histogram(&self, name: &str) -> Option<DurationHistogram> {
        self.registry.any(name).map(|f| f.durations())
    }

    /// One function's accumulated usage and estimated cost.
    pub fn usage(&self, name: &str) -> Option<Usage> {
        self.registry.any(name).map(|f| f.usage())
    }

    /// The runtime's concurrency accounts.
    pub fn concurrency(&self) -> ConcurrencySnapshot {
        let limit = self.shared.config.concurrency_limit as usize;
        let unreserved_limit = self.shared.unreserved.limit();
        ConcurrencySnapshot {
            limit,
            reserved: limit - unreserved_limit,
            unreserved_limit,
            unreserved_in_use: self.shared.unreserved.in_use(),
            in_flight: self.shared.gate.in_flight(),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.gate.is_closed()
    }
}

/// Function names follow Lambda's rule: 1 to 64 letters, digits, hyphens or underscores.
fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "function",
            "name",
            name,
            "1 to 64 characters of [A-Za-z0-9_-]",
        ))
    }
}

/// The host as the origin of a call by name: work it starts from inside a handler carries that
/// invocation's hop count on (see [`hops`](crate::handler::hops)).
fn host_origin() -> CallOrigin<'static> {
    static HOST: Principal = Principal::Host;
    CallOrigin::new(&HOST, hops::outgoing().unwrap_or(0))
}
