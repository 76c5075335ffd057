//! The [`Runtime`]: the registry of functions, the runtime-wide concurrency limit and its
//! reservations, request ids, and graceful shutdown.

mod attachment;
mod config;
mod gate;
mod stop;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use attachment::{Attachment, AttachmentStop, ATTACHMENT_STOP_SLACK};
pub use config::RuntimeConfig;
pub(crate) use gate::Gate;
pub use stop::{ShutdownReport, UnregisterReport, SHUTDOWN_SLACK};

use crate::async_invoke::{HandedBack, RejectReason, Rejected};
use crate::concurrency::Limiter;
use crate::error::{ConfigError, InvokeError, RegisterError};
use crate::function::{Function, FunctionHandle, FunctionInner, JsonCodec};
use crate::handler::{Invoker, RequestId};
use crate::metering::Usage;
use crate::metrics::FunctionMetrics;
use crate::padded::Padded;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// State shared by the runtime and every function.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    /// The pool of functions without reserved concurrency.
    pub(crate) unreserved: Limiter,
    reserved_total: parking_lot::Mutex<u64>,
    pub(crate) gate: Padded<Gate>,
    /// Fires when shutdown begins: contexts' tokens fire, reapers stop.
    pub(crate) shutting_down: CancellationToken,
    /// Fires when the grace period ends: running invocations are dropped.
    pub(crate) hard_stop: CancellationToken,
    /// Set with `hard_stop`; a plain flag for hot loops (the token's check takes a lock).
    stopped: Padded<std::sync::atomic::AtomicBool>,
    pub(crate) cancelled: AtomicU64,
    request_prefix: u64,
    request_seq: Padded<AtomicU64>,
    pub(crate) tasks: TaskTracker,
    /// The Tokio runtime this one was built on, where its tasks are spawned.
    pub(crate) tokio: Option<tokio::runtime::Handle>,
}

impl Shared {
    /// Whether the shutdown grace period has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        RequestId(u128::from(self.request_prefix) << 64 | u128::from(seq))
    }

    /// Carves `amount` out of the unreserved pool, keeping the configured minimum free.
    fn reserve(&self, amount: u32) -> Result<(), ConfigError> {
        let mut reserved = self.reserved_total.lock();
        let limit = u64::from(self.config.concurrency_limit);
        let keep = u64::from(self.config.effective_min_unreserved());
        let available = limit - keep - *reserved;
        if u64::from(amount) > available {
            return Err(ConfigError::new(
                "function",
                "max_concurrency",
                amount,
                format!(
                    "0..={available} (runtime limit {limit}, {reserved} already reserved, {keep} kept unreserved)",
                    reserved = *reserved
                ),
            ));
        }
        *reserved += u64::from(amount);
        self.unreserved
            .set_limit(usize::try_from(limit - *reserved).unwrap_or(usize::MAX));
        Ok(())
    }

    pub(crate) fn unreserve(&self, amount: u32) {
        let mut reserved = self.reserved_total.lock();
        *reserved -= u64::from(amount);
        let limit = u64::from(self.config.concurrency_limit);
        self.unreserved
            .set_limit(usize::try_from(limit - *reserved).unwrap_or(usize::MAX));
    }
}

/// A reservation taken for a registration in progress; given back unless the registration
/// completes (clears `amount`).
struct Reservation<'a> {
    shared: &'a Shared,
    amount: Option<u32>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(amount) = self.amount.take() {
            self.shared.unreserve(amount);
        }
    }
}

/// What every registered function offers, whatever its event and output types.
pub(crate) trait AnyFunction: Send + Sync + 'static {
    fn invoke_json(
        &self,
        event: serde_json::Value,
        invoker: Invoker,
    ) -> BoxFuture<'_, Result<serde_json::Value, InvokeError>>;
    fn metrics(&self) -> FunctionMetrics;
    fn async_metrics(&self) -> crate::AsyncMetrics;
    fn usage(&self) -> Usage;
    /// Stops the reaper and drops idle instances (and any given back later); returns how many
    /// were dropped now.
    fn stop(&self) -> usize;
    /// Unregister begins: refuse new invocations, tell running handlers. Returns how many
    /// invocations were in flight.
    fn close(&self) -> usize;
    /// Resolves when no invocation runs and no async event is pending.
    fn drained(&self) -> BoxFuture<'_, ()>;
    /// The unregister grace has ended: cancel what runs, stop the function's tasks; the
    /// reservation returns with the last permit.
    fn halt(&self);
    /// Resolves when nothing of the function runs any more.
    fn quiesced(&self) -> BoxFuture<'_, ()>;
    /// Invocations of the function cancelled so far.
    fn cancelled(&self) -> u64;
    /// Whether the function holds no reservation any more.
    fn reservation_returned(&self) -> bool;
    fn invoke_async_json(
        self: Arc<Self>,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncInvokeError>;
    /// Resolves when no async event is pending.
    fn async_idle(&self) -> BoxFuture<'_, ()>;
    /// Takes every unfinished async event out, for the host.
    fn hand_back(&self) -> Vec<HandedBack>;
}

/// Why [`Runtime::invoke_async_json`] did not accept an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsyncInvokeError {
    /// No function is registered under this name.
    #[error("no function named `{0}`")]
    NotFound(String),
    /// The function takes typed events only.
    #[error("function `{0}` takes typed events only")]
    NotJson(String),
    /// The event does not decode into the function's event type.
    #[error("payload error: {0}")]
    Payload(String),
    /// The queue is full or the runtime is shutting down; the event is handed back.
    #[error("event refused: {reason:?}")]
    Rejected {
        /// The event, unchanged.
        event: serde_json::Value,
        /// Why it was refused.
        reason: RejectReason,
    },
}

struct Entry {
    function: Arc<dyn AnyFunction>,
    typed: Arc<dyn Any + Send + Sync>,
}

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
    functions: Arc<DashMap<Arc<str>, Entry>>,
    registering: Arc<tokio::sync::Mutex<()>>,
    /// `None` once shutdown has taken them: no attachment is accepted after that.
    attachments: Arc<parking_lot::Mutex<Option<Attachments>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("functions", &self.functions.len())
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
    /// Capacity reserved by functions with `max_concurrency`.
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
        let limit = usize::try_from(config.concurrency_limit).unwrap_or(usize::MAX);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                unreserved: Limiter::new(limit),
                reserved_total: parking_lot::Mutex::new(0),
                gate: Padded::default(),
                shutting_down: CancellationToken::new(),
                hard_stop: CancellationToken::new(),
                stopped: Padded(std::sync::atomic::AtomicBool::new(false)),
                cancelled: AtomicU64::new(0),
                request_prefix: fastrand::u64(..),
                request_seq: Padded(AtomicU64::new(1)),
                tasks: TaskTracker::new(),
                tokio: tokio::runtime::Handle::try_current().ok(),
            }),
            functions: Arc::new(DashMap::new()),
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
        let _serial = self.registering.lock().await;
        if self.shared.gate.is_closed() {
            return Err(RegisterError::ShuttingDown);
        }
        if self.functions.contains_key(name.as_str()) {
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
        let mut reservation = Reservation {
            shared: &self.shared,
            amount: None,
        };
        if let Some(amount) = parts.config.max_concurrency {
            self.shared.reserve(amount)?;
            reservation.amount = Some(amount);
        }
        let inner = Arc::new(FunctionInner::new(parts, Arc::clone(&self.shared), json));
        if let Err(failure) = inner.provision().await {
            return Err(RegisterError::Provisioning { name, failure });
        }
        reservation.amount = None;
        inner.start_reaper();
        self.functions.insert(
            Arc::from(name.as_str()),
            Entry {
                function: inner.clone(),
                typed: inner.clone(),
            },
        );
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

    /// A typed handle to the function `name`: the fast way to invoke it repeatedly.
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotFound`], or [`InvokeError::WrongType`] if the function has other types.
    pub fn function<E, O>(&self, name: &str) -> Result<FunctionHandle<E, O>, InvokeError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        let entry = self
            .functions
            .get(name)
            .ok_or_else(|| InvokeError::NotFound(name.to_owned()))?;
        let typed = Arc::clone(&entry.typed)
            .downcast::<FunctionInner<E, O>>()
            .map_err(|_| InvokeError::WrongType(name.to_owned()))?;
        Ok(FunctionHandle::new(typed))
    }

    /// Invokes `name` synchronously with a typed event.
    ///
    /// # Errors
    ///
    /// Every outcome but success; see [`InvokeError`].
    pub async fn invoke<E, O>(&self, name: &str, event: E) -> Result<O, InvokeError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        self.function::<E, O>(name)?.invoke(event).await
    }

    /// Invokes `name` synchronously with a JSON event, for callers that only know the name.
    ///
    /// # Errors
    ///
    /// Every outcome but success; a payload that does not decode is [`InvokeError::Payload`].
    pub async fn invoke_json(
        &self,
        name: &str,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, InvokeError> {
        let function = self
            .functions
            .get(name)
            .map(|entry| Arc::clone(&entry.function))
            .ok_or_else(|| InvokeError::NotFound(name.to_owned()))?;
        function.invoke_json(event, Invoker::Host).await
    }

    /// Queues a typed event for asynchronous invocation of `name`.
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotFound`] / [`InvokeError::WrongType`] in the outer result; the inner
    /// [`Rejected`] hands the event back when the queue is full or the runtime is shutting down.
    pub fn invoke_async<E, O>(
        &self,
        name: &str,
        event: E,
    ) -> Result<Result<RequestId, Rejected<E>>, InvokeError>
    where
        E: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        Ok(self.function::<E, O>(name)?.invoke_async(event))
    }

    /// Queues a JSON event for asynchronous invocation of `name`, for callers that only know
    /// the name. Returns the request id at once.
    ///
    /// # Errors
    ///
    /// See [`AsyncInvokeError`]; a refused event is handed back.
    pub fn invoke_async_json(
        &self,
        name: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncInvokeError> {
        let function = self
            .functions
            .get(name)
            .map(|entry| Arc::clone(&entry.function))
            .ok_or_else(|| AsyncInvokeError::NotFound(name.to_owned()))?;
        function.invoke_async_json(event)
    }

    /// A snapshot of one function's async queue.
    pub fn async_metrics(&self, name: &str) -> Option<crate::AsyncMetrics> {
        self.functions.get(name).map(|e| e.function.async_metrics())
    }

    /// Names of the registered functions, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.iter().map(|e| e.key().to_string()).collect();
        names.sort();
        names
    }

    /// A snapshot of one function's metrics.
    pub fn metrics(&self, name: &str) -> Option<FunctionMetrics> {
        self.functions.get(name).map(|e| e.function.metrics())
    }

    /// One function's accumulated usage and estimated cost.
    pub fn usage(&self, name: &str) -> Option<Usage> {
        self.functions.get(name).map(|e| e.function.usage())
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

/// An instant about thirty years from now: "never" for deadlines from unbounded durations.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
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
