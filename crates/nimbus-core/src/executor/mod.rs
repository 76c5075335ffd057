//! The executor: everything one function's invocations share, behind a small API.
//!
//! An executor owns a function's books and keeps their invariants in one place:
//!
//! - **Permits.** Every invocation holds a permit of the function's reservation or of the
//!   runtime's unreserved pool while it runs, counted in the busy gauge; the permit is returned
//!   on every path (output, error, panic, timeout, cancellation, a dropped caller), because it
//!   lives in a guard that is dropped on every path.
//! - **Instances.** A warm instance is reused (most recently used first, per thread), or a new one is
//!   created by the function's [`Backend`] if the scale rate allows,
//!   under the init timeout. An instance that timed out, panicked or faulted is discarded; idle
//!   ones are reaped down to `min_instances`.
//! - **One invocation on one instance**: the handler's future runs on the caller's task with
//!   panics caught, against the timeout and the shutdown tokens; timers are created only if it
//!   does not finish on its first poll. Timeouts are cooperative: see
//!   [`Context::cancellation`](crate::Context::cancellation).
//! - **Metering**: each invocation's duration, billed duration and outcome are counted, and a
//!   `REPORT` event is emitted at `debug` level (target `nimbus::report`).
//! - **Lifecycle**: unregister closes the function, drains it, halts what is left, and gives
//!   the reservation back with the last permit.
//!
//! Synchronous invocation runs these steps once per call; the async queue drives them one at
//! a time (permit, instance, run) to run batches of events on one instance.
//!
//! # The CPU-share governor
//!
//! Lambda gives a function CPU in proportion to its memory: `memory_mb / 1769` of one vCPU
//! (0.072 at 128 MB, a full vCPU from 1,769 MB). An in-process handler runs on the caller's
//! thread at full speed, so by default it finishes faster than it would on Lambda. With
//! [`FunctionConfig::cpu_governor`](crate::FunctionConfig::cpu_governor) on, the executor
//! approximates the share (capped at 1.0, as a handler runs on one thread at a time): it reads
//! the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) around each poll of the handler's future,
//! adds up the handler's CPU time `c`, and does not poll it again before `start + c / share`
//! (the task sleeps on a timer). When the handler completes, its output is held until then
//! too, so that the invocation's latency is what the share would give. The wait counts toward
//! the invocation's duration (and its bill) and its timeout, as Lambda's slower CPU would.
//!
//! Its limits:
//!
//! - **Overshoot of up to one poll.** A poll is measured after it ran: the handler may run
//!   ahead of its share by its longest stretch between two `.await`s that yield.
//! - **A handler that never yields** cannot be slowed mid-poll; it is only held at the end
//!   (its output waits until its CPU is paid for), which makes its latency right but not its
//!   interleaving with other work.
//! - **Other threads are not seen**: CPU burnt in `spawn_blocking`, rayon, or a backend's
//!   other process is not counted.
//! - **Idle time is credit**: the debt is counted from the invocation's start, so a handler
//!   that waited on I/O may then compute at full speed until it catches up with its share.
//! - **Cost**: two reads of the thread CPU clock per poll (~1 µs each on the VMs measured,
//!   where it is a system call) and one of the monotonic clock once the handler has used CPU,
//!   one allocation per invocation, and a timer for the invocation that must wait (even one
//!   that finished on its first poll). Off (the default), it costs nothing: the future is not
//!   wrapped and no clock is read.

mod authorize;
mod governor;
mod lease;
mod lifecycle;
mod run;
mod shared;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use lease::{readiness, Readiness};
pub use run::{Invocation, InvokeOptions};
pub(crate) use shared::Shared;

use crate::concurrency::{Limiter, Permit, TokenBucket};
use crate::config::{FunctionConfig, PayloadLimits};
use crate::error::ThrottleReason;
use crate::handler::{FunctionScope, RequestId};
use crate::instance::{Backend, Pool, DISPOSE_LIMIT};
use crate::metering::Usage;
use crate::metrics::{DurationHistogram, FunctionCounters, FunctionMetrics};
use crate::permission::FunctionAccess;
use crate::util::{aws, Padded};

/// Where unregister has got to.
#[derive(Debug, Default)]
struct Lifecycle {
    /// Set when unregister begins: new invocations are refused.
    closed: AtomicBool,
    /// Set with `hard_stop` by unregister; a plain flag for hot loops.
    halted: AtomicBool,
}

/// One function's executor (see the module docs).
pub(crate) struct Executor<E, O> {
    name: Arc<str>,
    scope: Arc<FunctionScope>,
    config: FunctionConfig,
    /// Before the backend: fields drop in order, and a pool dropped with idle instances
    /// disposes of them while their backend still exists.
    pool: Pool<E, O>,
    backend: Arc<dyn Backend<E, O>>,
    /// The function's own limiter when it has reserved concurrency (less its provisioned
    /// permits).
    reserved: Option<Limiter>,
    /// The permits of the provisioned instances (`min_instances`), tried first; beyond them
    /// an invocation takes a permit of the reservation, or of the unreserved pool.
    provisioned: Option<Limiter>,
    /// When provisioned concurrency was enabled (registration) and disabled (the function
    /// stopped), for its capacity charge.
    provisioned_span: parking_lot::Mutex<(Option<Instant>, Option<Instant>)>,
    shared: Arc<Shared>,
    scale: TokenBucket,
    counters: FunctionCounters,
    instance_seq: AtomicU64,
    /// Fires when the function stops taking work (shutdown begins, or unregister): handlers
    /// are told, the reaper stops.
    stopped: CancellationToken,
    /// Fires when the grace period ends (the runtime's, or this function's unregister grace):
    /// running invocations are dropped, async workers, timers and deliveries stop.
    hard_stop: CancellationToken,
    /// Unregister's flags, read on every invocation and written once: on a line of their own.
    lifecycle: Padded<Lifecycle>,
    /// Notified when the last invocation leaves a closed function.
    drained: Notify,
    /// The function's own tasks (async workers, timers, reaper, disposals), also tracked by
    /// the runtime.
    tasks: TaskTracker,
    /// The reservation went back to the runtime's pool (at most once).
    reservation_returned: AtomicBool,
    /// The function's policy and role.
    access: Arc<FunctionAccess>,
}

impl<E, O> std::fmt::Debug for Executor<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl<E: Send + 'static, O: Send + 'static> Executor<E, O> {
    /// The executor of a function being registered (its reservation, if any, already taken).
    pub(crate) fn new(
        name: &str,
        config: FunctionConfig,
        backend: Arc<dyn Backend<E, O>>,
        shared: Arc<Shared>,
    ) -> Self {
        let name: Arc<str> = Arc::from(name);
        // Registration runs on a Tokio runtime: remember it for spawns from other threads.
        let _ = shared.tokio();
        let tasks = TaskTracker::new();
        let disposer = {
            let tasks = tasks.clone();
            let shared = Arc::clone(&shared);
            Box::new(move |disposal| {
                spawn_tracked(&tasks, &shared, async move {
                    if tokio::time::timeout(DISPOSE_LIMIT, disposal).await.is_err() {
                        tracing::warn!(
                            "an instance's disposal was given up after {DISPOSE_LIMIT:?}"
                        );
                    }
                });
            })
        };
        let arn = aws::function_arn(&shared.config.region, &shared.config.account_id, &name);
        let access = Arc::new(FunctionAccess::new(
            &arn,
            config.role.clone(),
            config.policy.clone(),
        ));
        Self {
            scope: Arc::new(FunctionScope::new(
                Arc::clone(&name),
                config.memory_mb,
                config.timeout,
                Arc::from(arn),
                shared.services(),
            )),
            access,
            reserved: config
                .max_concurrency
                .map(|max| Limiter::new(max.saturating_sub(config.min_instances) as usize)),
            provisioned: (config.min_instances > 0)
                .then(|| Limiter::new(config.min_instances as usize)),
            provisioned_span: parking_lot::Mutex::new((None, None)),
            scale: TokenBucket::new(config.scale_rate.instances, config.scale_rate.per),
            stopped: shared.shutting_down.child_token(),
            hard_stop: shared.hard_stop.child_token(),
            lifecycle: Padded::default(),
            drained: Notify::new(),
            pool: Pool::new(disposer),
            tasks,
            reservation_returned: AtomicBool::new(false),
            name,
            config,
            backend,
            shared,
            counters: FunctionCounters::default(),
            instance_seq: AtomicU64::new(1),
        }
    }
}

impl<E, O> Executor<E, O> {
    /// The function's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The function's configuration.
    pub(crate) fn config(&self) -> &FunctionConfig {
        &self.config
    }

    /// The runtime's limits of JSON payloads.
    pub(crate) fn payload_limits(&self) -> &PayloadLimits {
        &self.shared.config.payload_limits
    }

    /// Reserves `n` request ids (see [`Executor::request_id`]); returns the first's number.
    pub(crate) fn reserve_request_ids(&self, n: u64) -> u64 {
        self.shared.reserve_request_ids(n)
    }

    /// The request id of a number reserved by [`Executor::reserve_request_ids`].
    pub(crate) fn request_id(&self, seq: u64) -> RequestId {
        self.shared.request_id(seq)
    }

    /// Whether the runtime has begun shutting down.
    pub(crate) fn gate_closed(&self) -> bool {
        self.shared.gate.is_closed()
    }

    /// Whether the grace period of the runtime, or of this function's unregister, has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.shared.is_stopped() || self.lifecycle.halted.load(Ordering::Acquire)
    }

    /// Whether unregister has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.lifecycle.closed.load(Ordering::Acquire)
    }

    /// Fires when the grace period ends.
    pub(crate) fn hard_stop(&self) -> &CancellationToken {
        &self.hard_stop
    }

    /// A permit of the function's provisioned concurrency, else of its reservation, else of
    /// the runtime's unreserved pool.
    pub(crate) fn try_permit(&self) -> Result<Permit<'_>, ThrottleReason> {
        if let Some(permit) = self.provisioned.as_ref().and_then(Limiter::try_acquire) {
            return Ok(permit);
        }
        match &self.reserved {
            Some(limiter) => limiter.try_acquire().ok_or(ThrottleReason::FunctionLimit),
            None => self
                .shared
                .unreserved
                .try_acquire()
                .ok_or(ThrottleReason::RuntimeLimit),
        }
    }

    /// Resolves when a permit of the pool that throttled for `reason` has been returned (it is
    /// not kept: the caller tries again); never for the scale rate.
    pub(crate) async fn permit_returned(&self, reason: ThrottleReason) {
        let limiter = match (&self.reserved, reason) {
            (_, ThrottleReason::ScaleRate) => None,
            (Some(limiter), _) => Some(limiter),
            (None, _) => Some(&self.shared.unreserved),
        };
        match (limiter, &self.provisioned) {
            (Some(limiter), Some(provisioned)) => tokio::select! {
                permit = limiter.acquire() => drop(permit),
                permit = provisioned.acquire() => drop(permit),
            },
            (Some(limiter), None) => drop(limiter.acquire().await),
            (None, _) => std::future::pending().await,
        }
    }

    /// How many invocations may run at once now: the provisioned permits, and the
    /// reservation or the unreserved pool.
    pub(crate) fn concurrency_cap(&self) -> usize {
        let provisioned = self.provisioned.as_ref().map_or(0, Limiter::limit);
        provisioned
            + match &self.reserved {
                Some(limiter) => limiter.limit(),
                None => self.shared.unreserved.limit(),
            }
    }

    /// Provisioned concurrency is enabled from now (registration completed).
    pub(crate) fn provisioned_enabled(&self) {
        if self.config.min_instances > 0 {
            self.provisioned_span.lock().0 = Some(Instant::now());
        }
    }

    /// Provisioned concurrency is disabled from now (the function stops), once.
    pub(crate) fn provisioned_disabled(&self) {
        let mut span = self.provisioned_span.lock();
        if span.0.is_some() && span.1.is_none() {
            span.1 = Some(Instant::now());
        }
    }

    /// How long provisioned concurrency has been enabled.
    fn provisioned_for(&self) -> std::time::Duration {
        match *self.provisioned_span.lock() {
            (Some(since), Some(until)) => until.saturating_duration_since(since),
            (Some(since), None) => since.elapsed(),
            (None, _) => std::time::Duration::ZERO,
        }
    }

    /// Counts a throttle of the function.
    pub(crate) fn count_throttle(&self, reason: ThrottleReason) {
        self.counters.throttled(reason);
    }

    /// Spawns a task of this function, tracked by the function and by the runtime.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        spawn_tracked(&self.tasks, &self.shared, task);
    }

    /// A snapshot of the function's metrics.
    pub(crate) fn metrics(&self) -> FunctionMetrics {
        self.counters.snapshot(self.pool.live(), self.pool.idle())
    }

    /// The durations of the function's invocations.
    pub(crate) fn durations(&self) -> DurationHistogram {
        self.counters.durations()
    }

    /// The function's accumulated usage and estimated cost.
    pub(crate) fn usage(&self) -> Usage {
        let capacity = self.config.min_instances as usize;
        self.counters.usage(
            self.config.memory_mb,
            &self.shared.config.prices,
            capacity,
            self.provisioned_for(),
        )
    }
}

/// Spawns `task` tracked by `tasks` and by the runtime: on the current Tokio runtime, or from a
/// thread without one (a plain thread calling `invoke_async`), on the one the nimbus runtime
/// was built on.
fn spawn_tracked<F>(tasks: &TaskTracker, shared: &Shared, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let task = tasks.track_future(task);
    match (tokio::runtime::Handle::try_current(), shared.tokio()) {
        (Ok(_), _) => drop(shared.tasks.spawn(task)),
        (Err(_), Some(handle)) => drop(shared.tasks.spawn_on(task, handle)),
        // No Tokio runtime to run it on (the nimbus runtime was built outside one, and this
        // thread has none): the task is dropped, as it would be when its runtime went away.
        (Err(_), None) => tracing::warn!("no Tokio runtime to spawn a task of the function on"),
    }
}

#[cfg(test)]
mod tests;
