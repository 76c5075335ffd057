//! Functions: the [`Function`] definition, its validated [`FunctionConfig`], and the
//! [`FunctionHandle`] that invokes it.

mod config;
mod erased;
mod handle;
mod invoke;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use config::{limits, AsyncConfig, BillingGranularity, FunctionConfig, ScaleRate};
pub use handle::FunctionHandle;
pub(crate) use invoke::{panic_message, CatchUnwind};
pub use invoke::{Invocation, InvokeOptions};

use crate::async_invoke::{AsyncState, DeadLetter, Destination, Destinations, Rejected};
use crate::concurrency::{Limiter, TokenBucket};
use crate::error::{InitFailure, InvokeError};
use crate::handler::RequestId;
use crate::handler::{CloneFactory, Handler, InstanceFactory};
use crate::instance::Pool;
use crate::metrics::FunctionCounters;
use crate::padded::Padded;
use crate::retry::{Backoff, Retries, RetryPolicy};
use crate::runtime::Shared;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        Self {
            name: name.into(),
            factory: Arc::new(factory),
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
            factory: self.factory,
            config: self.config,
            destinations: self.destinations,
            retry_policy: self.retry_policy,
        }
    }
}

/// A [`Function`] taken apart for registration.
pub(crate) struct Parts<E, O> {
    pub(crate) name: String,
    pub(crate) factory: Arc<dyn InstanceFactory<E, O>>,
    pub(crate) config: FunctionConfig,
    pub(crate) destinations: Destinations<E, O>,
    pub(crate) retry_policy: Option<Arc<dyn RetryPolicy>>,
}

/// Converts events and outputs to and from JSON, for functions registered with serde types.
pub(crate) struct JsonCodec<E, O> {
    decode: fn(&serde_json::Value) -> Result<E, serde_json::Error>,
    encode: fn(O) -> Result<serde_json::Value, serde_json::Error>,
    invoke_async: AsyncEntry<E, O>,
}

type AsyncEntry<E, O> = fn(&Arc<FunctionInner<E, O>>, E) -> Result<RequestId, Rejected<E>>;

impl<E, O> JsonCodec<E, O>
where
    E: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    O: serde::Serialize + Send + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            decode: |value| E::deserialize(value),
            encode: serde_json::to_value::<O>,
            invoke_async: |inner, event| inner.invoke_async(event),
        }
    }
}

/// Where unregister has got to.
#[derive(Debug, Default)]
struct Lifecycle {
    /// Set when unregister begins: new invocations are refused.
    closed: AtomicBool,
    /// Set with `hard_stop` by unregister; a plain flag for hot loops.
    halted: AtomicBool,
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
    pub(crate) instance_seq: AtomicU64,
    /// Fires when the function stops taking work (shutdown begins, or unregister): handlers
    /// are told, the reaper stops.
    pub(crate) stopped: CancellationToken,
    /// Fires when the grace period ends (the runtime's, or this function's unregister grace):
    /// running invocations are dropped, async workers, timers and deliveries stop.
    pub(crate) hard_stop: CancellationToken,
    /// Unregister's flags, read on every invocation and written once: on a line of their own.
    lifecycle: Padded<Lifecycle>,
    /// Notified when the last invocation leaves a closed function.
    drained: Notify,
    /// The function's own tasks (async workers, timers, reaper), also tracked by the runtime.
    tasks: TaskTracker,
    /// The reservation went back to the runtime's pool (at most once).
    reservation_returned: AtomicBool,
    pub(crate) async_state: AsyncState<E, O>,
    json: Option<JsonCodec<E, O>>,
}

impl<E, O> FunctionInner<E, O> {
    pub(crate) fn new(
        parts: Parts<E, O>,
        shared: Arc<Shared>,
        json: Option<JsonCodec<E, O>>,
    ) -> Self {
        let Parts {
            name,
            factory,
            config,
            destinations,
            retry_policy,
        } = parts;
        let retry = retry_policy.unwrap_or_else(|| {
            Arc::new(
                Retries::new(
                    config.async_invoke.max_retries,
                    config.async_invoke.retry_backoff,
                )
                .expect("max_retries was validated"),
            )
        });
        Self {
            async_state: AsyncState::new(destinations, retry),
            reserved: config.max_concurrency.map(|max| Limiter::new(max as usize)),
            scale: TokenBucket::new(config.scale_rate.instances, config.scale_rate.per),
            stopped: shared.shutting_down.child_token(),
            hard_stop: shared.hard_stop.child_token(),
            lifecycle: Padded::default(),
            drained: Notify::new(),
            tasks: TaskTracker::new(),
            reservation_returned: AtomicBool::new(false),
            name: Arc::from(name.as_str()),
            config,
            factory,
            shared,
            pool: Pool::default(),
            counters: FunctionCounters::default(),
            instance_seq: AtomicU64::new(1),
            json,
        }
    }
}

impl<E, O> FunctionInner<E, O> {
    /// Whether the grace period of the runtime, or of this function's unregister, has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.shared.is_stopped() || self.lifecycle.halted.load(Ordering::Acquire)
    }

    /// Whether unregister has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.lifecycle.closed.load(Ordering::Acquire)
    }

    /// Spawns a task of this function, tracked by the function and by the runtime.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = self.tasks.track_future(task);
        // On the current Tokio runtime; from a thread without one (a plain thread calling
        // `invoke_async`), on the runtime the nimbus runtime was built on.
        match (tokio::runtime::Handle::try_current(), &self.shared.tokio) {
            (Err(_), Some(handle)) => self.shared.tasks.spawn_on(task, handle),
            _ => self.shared.tasks.spawn(task),
        };
    }

    /// The last invocation left a closed function; `flags` are those it found.
    pub(crate) fn last_out(&self, flags: usize) {
        self.drained.notify_waiters();
        if flags & crate::metrics::RETIRED != 0 {
            self.return_reservation();
        }
    }

    /// Gives the function's reservation back to the runtime's pool, once.
    fn return_reservation(&self) {
        if let Some(amount) = self.config.max_concurrency {
            if !self.reservation_returned.swap(true, Ordering::AcqRel) {
                self.shared.unreserve(amount);
            }
        }
    }

    /// Waits until no invocation is counted in (only once the function is closed).
    async fn until_not_busy(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counters.busy() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl<E: Send + 'static, O: Send + 'static> FunctionInner<E, O> {
    /// Initialises the provisioned instances, yielding between them so that a caller's
    /// timeout can fire however many there are.
    pub(crate) async fn provision(&self) -> Result<(), InitFailure> {
        for _ in 0..self.config.min_instances {
            tokio::task::yield_now().await;
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
        self.spawn(async move {
            let min = this.config.min_instances as usize;
            this.pool
                .reap(min, this.config.idle_timeout, &this.stopped)
                .await;
        });
    }
}
