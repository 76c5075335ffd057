//! The queue mapping engine (Lambda's event source mapping for SQS): pollers that receive
//! batches from a [`QueueSource`], filter them, invoke a function, and delete what succeeded.
//!
//! - **Batching**: a batch is sent when it is full, when the batching window ends, or when it
//!   reaches the payload cap.
//! - **Failures**: a batch that fails is not deleted; its messages become visible again after
//!   the visibility timeout and the queue's redrive policy sends them to the dead-letter queue
//!   after `max_receive_count` receives. A [`BatchResponse`] lists the records that failed
//!   (an unknown id fails the whole batch). With `bisect_on_error`, a failing batch is split in
//!   halves until the poison messages are isolated, so the good ones are deleted; each half
//!   that succeeds is deleted at once.
//! - **Time budget**: a receipt acknowledges only within its visibility timeout, so a batch's
//!   invocations (bisection and throttle retries included) start only while one can end, and
//!   its acknowledgement land, before the oldest receipt expires. When that time runs out, the
//!   halves split from the invocation that failed last are left to their visibility timeout
//!   (their receive counted) and the rest of the batch is released uncounted. At build time,
//!   the batching window plus the function timeout must fit in the visibility timeout with a
//!   tenth of it (at most a second) to spare.
//! - **FIFO** (a source whose [`QueueSource::is_fifo`] says so): as Lambda, the batch size is
//!   at most 10 and there is no batching window, checked at build time. Records after a failed
//!   one in the same message group are failed too (returned to the queue), even those the
//!   function reported as succeeded, so a group is never processed out of order: a stronger
//!   guarantee than Lambda's, which deletes what the function reported as done; kept on
//!   purpose. At batch size 1 they go back uncounted instead (see `singles`).
//! - **Batch size 1**: a poller whose invocations are short receives up to 10 messages at once
//!   and invokes them one by one, deleting the successes together; see `pace` and `singles`.
//! - **Scaling**: concurrent batches start at `initial_concurrency`, grow by one per full batch
//!   within `scale_up_per_minute` (a rate, as Lambda's: 300 a minute is one poller every
//!   200 ms, never 300 at once, at the start or after idle time), shrink to one poller when
//!   the queue is empty, and halve on function errors and throttles. Each poller holds one
//!   batch (up to 10 messages at batch size 1), so prefetch is bounded by the concurrency.
//!   Each change of the target is told to the source as a [demand hint](QueueSource::demand)
//!   (target × what a poller may hold; 0 when the mapping stops), for brokers that prefetch
//!   (give each mapping its own value of such a source).
//! - **Stats** ([`QueueSource::stats`]) are asked off the polling path, bounded by a timeout
//!   and guarded against panics: at every metrics snapshot from a source that answers at once,
//!   in the background at most once a second from one that asks its broker. Pollers never wait
//!   for them; the scaler goes by full and empty receives, which cost nothing.
//! - **Drained** ([`QueueMapping::drained`]): a future that resolves once the source is drained
//!   and the mapping holds nothing, so that hosts and tests need not poll metrics.
//! - **Stopping** ([`QueueMapping::stop`], or [`Runtime::shutdown`](nimbus_core::Runtime::shutdown)
//!   of a runtime it is [attached](nimbus_core::Runtime::attach) to): pollers stop receiving,
//!   batches in flight finish until the deadline, and what is left is
//!   [released](QueueSource::release) to the queue, its receive count unchanged. A mapping whose
//!   function refuses work for good (shutting down, unregistered) stops the same way, and so
//!   does one whose source fails permanently ([`MappingStatus`]); it never spins.
//! - **Receives in flight at the stop**: a source whose receive is
//!   [cancel-safe](QueueSource::receive_is_cancel_safe) has its long poll dropped at once. Any
//!   other receive in flight runs on (it may have claimed messages) and the stop waits for it
//!   until its give-up point (the deadline plus `2 × RELEASE_GRACE`, within the runtime's
//!   [`ATTACHMENT_STOP_SLACK`](nimbus_core::ATTACHMENT_STOP_SLACK)); what it brings is
//!   released at once. A receive still running then is dropped, so nothing the mapping started
//!   outlives its stop, and the stop is reported unclean: that source may strand what it had
//!   claimed until its visibility timeout.
//! - **User code is guarded**: a source that panics is a transient source error; calls made
//!   while stopping are given up on shortly after the deadline, but a call that the source
//!   answers at once (an ack, a release) always goes through, even after that.

mod access;
pub(crate) mod batch;
mod budget;
mod builder;
mod config;
mod drain;
mod invoke;
mod metrics;
mod pace;
mod poller;
mod process;
mod scale;
mod singles;
mod size;
mod stats;
mod stop;
mod wire;

pub(crate) use wire::body_serde;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{Attachment, AttachmentStop, FunctionHandle, TokenBucket};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use batch::{BatchResponse, QueueBatch, QueueOrigin, QueueRecord};
pub use builder::QueueMappingBuilder;
pub use config::QueueMappingConfig;
pub use metrics::QueueMappingMetrics;

use crate::error::{ConfigError, SourceError};
use crate::filter::Filters;
use crate::queue::{Message, QueueSource};
use crate::refusal::QUEUE_ACTIONS;
use crate::status::{settle_status, MappingStatus};
use crate::stop_signal::StopSignal;
use drain::Drain;
use metrics::{add, Counters};
use scale::Scaling;

/// The function a queue mapping invokes.
pub type QueueFunction = FunctionHandle<QueueBatch, BatchResponse>;

/// A running queue mapping.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
/// use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let function = runtime
///     .register(Function::new("consume", handler_fn(|batch: QueueBatch, _ctx: Context| async move {
///         println!("{} records", batch.records.len());
///         Ok::<_, FunctionError>(BatchResponse::success())
///     })))
///     .await?;
/// let queue = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
/// queue.send("hello")?;
/// // Attached: the runtime stops the mapping first when it shuts down.
/// let mapping = QueueMapping::builder(queue.clone(), function, QueueMappingConfig::new("consume"))
///     .attach(&runtime)
///     .start()?;
/// mapping.drained().await.expect("running");
/// assert_eq!(mapping.metrics().deleted, 1);
/// let report = runtime.shutdown(Duration::from_secs(1)).await;
/// assert!(report.attachments[0].clean);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct QueueMapping {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    config: QueueMappingConfig,
    filters: Filters,
    source: Arc<dyn QueueSource>,
    function: QueueFunction,
    counters: Counters,
    /// What `drained` needs to know.
    drain: Drain,
    /// The queue's latest counts.
    latest: Mutex<stats::Latest>,
    scaling: Mutex<Scaling>,
    /// Whether more pollers run than the target, as last set under the `scaling` lock: each
    /// poller reads it once per batch without taking the lock.
    over_target: AtomicBool,
    /// When a full batch may next add a poller, read without a lock ([`scale::Growth`]).
    growth: scale::Growth,
    scale_up: TokenBucket,
    status: Mutex<MappingStatus>,
    /// Stop receiving (stop, shutdown, a function that refuses work, a permanent error).
    /// Pollers ask whether it fired several times per batch: one atomic load.
    cancel: StopSignal,
    /// The stop deadline passed: abandon invocations in flight and release their messages.
    hard_stop: CancellationToken,
    /// Releasing took too long: give up on the source.
    abandon: CancellationToken,
    tasks: TaskTracker,
    /// Receives in flight when the mapping stopped, running out their long poll.
    draining: TaskTracker,
    /// The stop's give-up point passed (or the stop was dropped): drop draining receives.
    given_up: CancellationToken,
    /// Whether the source's receive may be dropped without stranding messages.
    cancel_safe: bool,
    /// The source's visibility timeout, read once at the start.
    visibility: Option<Duration>,
    /// The Tokio runtime the mapping was started on: background stats asks run there.
    runtime: tokio::runtime::Handle,
    fifo: bool,
    /// Whether a recursive loop was logged at warn already (once per mapping).
    loop_warned: std::sync::atomic::AtomicBool,
    /// What the records say they come from (`eventSourceARN`, `awsRegion`, `SenderId`).
    origin: Arc<QueueOrigin>,
    /// The role version last found to allow the mapping.
    role_checked: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMapping")
            .field("name", &self.name)
            .field("scaling", &*self.scaling.lock())
            .finish_non_exhaustive()
    }
}

/// A receive that owns what it borrows, so that it can be handed to a task instead of dropped.
type Receiving = Pin<Box<dyn Future<Output = Result<Vec<Message>, SourceError>> + Send>>;

impl QueueMapping {
    /// Starts a mapping from `source` to `function`, not attached to any runtime: the caller
    /// stops it ([`QueueMapping::stop`]) or attaches it ([`nimbus_core::Runtime::attach`]).
    /// [`QueueMapping::builder`] does the same with the attachment made for you, or the choice
    /// not to attach said out loud; prefer it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`]: a field out of range, a filter that does not parse, a function
    /// timeout and batching window that do not fit in the queue's visibility timeout with
    /// room for the acknowledgement, or no Tokio runtime to run on.
    pub fn start(
        source: impl QueueSource,
        function: QueueFunction,
        config: QueueMappingConfig,
    ) -> Result<Self, ConfigError> {
        let mapping = Self::prepare(source, function, config)?;
        mapping.launch();
        Ok(mapping)
    }

    /// Checks the configuration and builds the mapping, without starting anything.
    fn prepare(
        source: impl QueueSource,
        function: QueueFunction,
        config: QueueMappingConfig,
    ) -> Result<Self, ConfigError> {
        let filters = config.validate()?;
        if source.is_fifo() {
            config.check_fifo()?;
        }
        let visibility = source.visibility_timeout();
        if let Some(visibility) = visibility {
            budget::check(
                visibility,
                function.config().timeout,
                config.batching_window,
            )?;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(ConfigError::new(
                "mapping",
                "runtime",
                "none",
                "started inside a Tokio runtime",
            ));
        };
        let origin = Arc::new(QueueOrigin::new(
            function.arn(),
            config.queue_name.as_deref().unwrap_or(&config.name),
        ));
        // Before anything starts: a mapping its function's role does not allow is refused.
        let role_checked = AtomicU64::new(function.role_version());
        crate::refusal::check_on_attach(&function, &QUEUE_ACTIONS, &origin.event_source_arn)?;
        let initial = config.initial_concurrency as usize;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            fifo: source.is_fifo(),
            loop_warned: std::sync::atomic::AtomicBool::new(false),
            origin,
            role_checked,
            filters,
            given_up: CancellationToken::new(),
            cancel_safe: source.receive_is_cancel_safe(),
            visibility,
            runtime,
            source: Arc::new(source),
            // Its handlers see this mapping as the principal.
            function: function.for_event_source(&config.name),
            counters: Counters::default(),
            drain: Drain::default(),
            latest: Mutex::default(),
            scaling: Mutex::new(Scaling {
                target: initial,
                active: initial,
            }),
            over_target: AtomicBool::new(false),
            growth: scale::Growth::default(),
            // Paced: the pollers grow at the rate, never by a minute's worth at once.
            scale_up: TokenBucket::paced(config.scale_up_per_minute, Duration::from_secs(60)),
            status: Mutex::new(MappingStatus::Running),
            cancel: StopSignal::default(),
            hard_stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            tasks: TaskTracker::new(),
            draining: TaskTracker::new(),
            config,
        });
        Ok(Self { shared })
    }

    /// Tells the source the initial demand and starts the pollers, unless the mapping was
    /// stopped already (a runtime that shut down as it was attached).
    fn launch(&self) {
        let shared = &self.shared;
        let scaling = shared.scaling.lock();
        if shared.cancel.is_cancelled() {
            return;
        }
        shared.demand(scaling.target.saturating_mul(shared.held_per_poller()));
        for _ in 0..scaling.active {
            shared.tasks.spawn(Arc::clone(shared).poll());
        }
    }

    /// The mapping's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the mapping runs, or why it stopped.
    pub fn status(&self) -> MappingStatus {
        self.shared.status.lock().clone()
    }

    /// A snapshot of the mapping's metrics.
    pub fn metrics(&self) -> QueueMappingMetrics {
        let (pollers, target) = {
            let scaling = self.shared.scaling.lock();
            (scaling.active, scaling.target)
        };
        let stats = self.shared.stats_for_metrics();
        self.shared.counters.snapshot(pollers, target, stats)
    }

    /// The queue's counts now, asked of the source (bounded by a few seconds); `None` when it
    /// keeps none, fails or does not answer in time, or the mapping has stopped.
    pub async fn queue_stats(&self) -> Option<crate::queue::QueueStats> {
        self.shared.stats_now().await
    }

    /// Stops the mapping: pollers stop receiving, batches in flight finish within `grace`,
    /// and what is left is released to the queue (its receive count unchanged). A receive in
    /// flight on a source that is not [cancel-safe](QueueSource::receive_is_cancel_safe) is
    /// waited for a little past `grace` and what it brings released; one still running then
    /// is dropped (its source may strand what it claimed until the visibility timeout). Once
    /// this returns, the mapping calls its source no more. Returns whether everything finished
    /// or went back in time, and no receive had to be dropped.
    pub async fn stop(&self, grace: Duration) -> bool {
        let deadline = Instant::now()
            .checked_add(grace)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        self.stop_by(deadline).await.clean
    }
}

/// The runtime's handle on the mapping: [`nimbus_core::Runtime::shutdown`] stops it before
/// the function, and unregistering the function stops it.
#[nimbus_core::async_trait]
impl Attachment for QueueMapping {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn function(&self) -> &str {
        self.shared.function.name()
    }

    async fn stop(&self, deadline: Instant) -> AttachmentStop {
        self.stop_by(deadline).await
    }
}

impl Shared {
    /// Stops the whole mapping (every poller) with this status.
    fn halt(&self, status: MappingStatus) {
        settle_status(&self.status, status);
        self.cancel.cancel();
        self.want_nothing();
    }

    fn source_error(&self, error: &SourceError) {
        add(&self.counters.source_errors, 1);
        tracing::warn!(mapping = %self.name, %error, "queue source error");
    }
}
