//! Functions: the [`Function`] definition, its validated [`FunctionConfig`], and the
//! [`FunctionHandle`] that invokes it.

mod config;
mod invoke;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

pub use config::{limits, BillingGranularity, FunctionConfig, ScaleRate};
pub use invoke::{Invocation, InvokeOptions};

use crate::concurrency::{Limiter, TokenBucket};
use crate::error::{InitFailure, InvokeError};
use crate::handler::{CloneFactory, Handler, InstanceFactory, Invoker};
use crate::instance::Pool;
use crate::metering::{Usage, UsageTotals};
use crate::metrics::{FunctionCounters, FunctionMetrics};
use crate::runtime::{AnyFunction, BoxFuture, Shared};
use tokio_util::sync::CancellationToken;

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
    factory: Arc<dyn InstanceFactory<E, O>>,
    config: FunctionConfig,
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
        Self {
            name: name.into(),
            factory: Arc::new(factory),
            config: FunctionConfig::default(),
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

    /// Sets the invocation timeout (1 ms..=900 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
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

    pub(crate) fn into_parts(self) -> (String, Arc<dyn InstanceFactory<E, O>>, FunctionConfig) {
        (self.name, self.factory, self.config)
    }
}

/// Converts events and outputs to and from JSON, for functions registered with serde types.
pub(crate) struct JsonCodec<E, O> {
    decode: fn(serde_json::Value) -> Result<E, serde_json::Error>,
    encode: fn(O) -> Result<serde_json::Value, serde_json::Error>,
}

impl<E, O> JsonCodec<E, O>
where
    E: serde::de::DeserializeOwned,
    O: serde::Serialize,
{
    pub(crate) fn new() -> Self {
        Self {
            decode: serde_json::from_value::<E>,
            encode: serde_json::to_value::<O>,
        }
    }
}

/// A registered function's state, shared by its handles and the registry.
pub(crate) struct FunctionInner<E, O> {
    pub(crate) name: Arc<str>,
    pub(crate) config: FunctionConfig,
    pub(crate) factory: Arc<dyn InstanceFactory<E, O>>,
    /// The function's own limiter when it has reserved concurrency.
    pub(crate) reserved: Option<Limiter>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Pool<E, O>,
    pub(crate) scale: TokenBucket,
    pub(crate) counters: FunctionCounters,
    pub(crate) usage: UsageTotals,
    pub(crate) instance_seq: AtomicU64,
    pub(crate) stopped: CancellationToken,
    json: Option<JsonCodec<E, O>>,
}

impl<E, O> FunctionInner<E, O> {
    pub(crate) fn new(
        name: Arc<str>,
        factory: Arc<dyn InstanceFactory<E, O>>,
        config: FunctionConfig,
        shared: Arc<Shared>,
        json: Option<JsonCodec<E, O>>,
    ) -> Self {
        Self {
            reserved: config.max_concurrency.map(|max| Limiter::new(max as usize)),
            scale: TokenBucket::new(config.scale_rate.instances, config.scale_rate.per),
            stopped: shared.shutting_down.child_token(),
            name,
            config,
            factory,
            shared,
            pool: Pool::default(),
            counters: FunctionCounters::default(),
            usage: UsageTotals::default(),
            instance_seq: AtomicU64::new(1),
            json,
        }
    }
}

impl<E: Send + 'static, O: Send + 'static> FunctionInner<E, O> {
    /// Initialises the provisioned instances.
    pub(crate) async fn provision(&self) -> Result<(), InitFailure> {
        for _ in 0..self.config.min_instances {
            match self.init_instance(true).await {
                Ok((instance, _)) => self.pool.add_idle(instance),
                Err(InvokeError::Init(failure)) => return Err(failure),
                Err(other) => {
                    return Err(InitFailure::Error {
                        error_type: other.error_type().to_owned(),
                        message: other.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    pub(crate) fn start_reaper(self: &Arc<Self>) {
        let this = Arc::clone(self);
        self.shared.tasks.spawn(async move {
            let min = this.config.min_instances as usize;
            this.pool
                .reap(min, this.config.idle_timeout, &this.stopped)
                .await;
        });
    }
}

impl<E: Send + 'static, O: Send + 'static> AnyFunction for FunctionInner<E, O> {
    fn config(&self) -> &FunctionConfig {
        &self.config
    }

    fn invoke_json(
        &self,
        event: serde_json::Value,
        invoker: Invoker,
    ) -> BoxFuture<'_, Result<serde_json::Value, InvokeError>> {
        Box::pin(async move {
            let Some(codec) = &self.json else {
                return Err(InvokeError::NotJson(self.name.to_string()));
            };
            let event = (codec.decode)(event).map_err(|e| {
                InvokeError::Payload(format!("cannot decode the event for `{}`: {e}", self.name))
            })?;
            let output = self
                .invoke(event, InvokeOptions::default().with_invoker(invoker))
                .await
                .result?;
            (codec.encode)(output).map_err(|e| {
                InvokeError::Payload(format!("cannot encode the output of `{}`: {e}", self.name))
            })
        })
    }

    fn metrics(&self) -> FunctionMetrics {
        self.counters.snapshot(self.pool.live(), self.pool.idle())
    }

    fn usage(&self) -> Usage {
        self.usage
            .snapshot(self.config.memory_mb, &self.shared.config.prices)
    }

    fn stop(&self) -> usize {
        self.stopped.cancel();
        self.pool.clear()
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
    /// Every outcome but success; see [`InvokeError`].
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

    /// The function's accumulated usage and estimated cost.
    pub fn usage(&self) -> Usage {
        self.inner.usage()
    }
}
