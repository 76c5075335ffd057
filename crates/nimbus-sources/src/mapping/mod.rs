//! The queue mapping engine (Lambda's event source mapping for SQS): pollers that receive
//! batches from a [`QueueSource`], filter them, invoke a function, and delete what succeeded.
//!
//! - **Batching**: a batch is sent when it is full, when the batching window ends, or when it
//!   reaches the payload cap.
//! - **Failures**: a batch that fails is not deleted; its messages become visible again after
//!   the visibility timeout and the queue's redrive policy sends them to the dead-letter queue
//!   after `max_receive_count` receives. A [`BatchResponse`] lists the records that failed
//!   (an unknown id fails the whole batch). With `bisect_on_error`, a failing batch is split in
//!   halves until the poison messages are isolated, so the good ones are deleted.
//! - **FIFO**: records after a failed one in the same message group are failed too, so a group
//!   is never processed out of order.
//! - **Scaling**: concurrent batches start at `initial_concurrency`, grow by one per full batch
//!   within `scale_up_per_minute`, shrink to one poller when the queue is empty, and halve on
//!   function errors and throttles. Each poller holds one batch, so prefetch is bounded by the
//!   concurrency.
//! - **Stopping**: pollers stop receiving; batches in flight finish or are made visible again.

pub(crate) mod batch;
mod config;

pub(crate) use batch::body_serde;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{Backoff, FunctionHandle, InvokeError, InvokeOptions, Invoker, TokenBucket};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use batch::{BatchResponse, QueueBatch, QueueRecord};
pub use config::QueueMappingConfig;

use crate::error::ConfigError;
use crate::filter::Filters;
use crate::queue::{Message, QueueSource, QueueStats, Receipt};

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
/// let mapping = QueueMapping::start(queue.clone(), function, QueueMappingConfig::new("consume"))?;
/// while queue.len() > 0 {
///     tokio::task::yield_now().await;
/// }
/// assert_eq!(mapping.metrics().deleted, 1);
/// mapping.stop(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct QueueMapping {
    shared: Arc<Shared>,
}

/// A snapshot of a queue mapping's metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueMappingMetrics {
    /// Messages received.
    pub received: u64,
    /// Messages deleted after successful handling.
    pub deleted: u64,
    /// Messages deleted without invoking because no filter matched.
    pub filtered: u64,
    /// Messages left to become visible again after a failure.
    pub failed: u64,
    /// Messages made visible again at once (throttled past their visibility, or stopping).
    pub released: u64,
    /// Invocations of the function.
    pub invocations: u64,
    /// Invocations that failed (function error, timeout, panic, init failure).
    pub function_errors: u64,
    /// Invocations throttled.
    pub throttles: u64,
    /// Batches split to isolate failures.
    pub bisections: u64,
    /// Errors from the source (receive or delete).
    pub source_errors: u64,
    /// Pollers running now.
    pub pollers: usize,
    /// Batches being handled now.
    pub concurrent_batches: usize,
    /// The pollers the scaler aims for.
    pub target_concurrency: usize,
    /// The largest number of batches handled at once.
    pub peak_concurrent_batches: usize,
    /// Messages the queue holds (visible, in flight, delayed), if it reports it.
    pub backlog: Option<u64>,
    /// Messages the queue has moved to its dead-letter queue, if it reports it.
    pub dead_lettered: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    deleted: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicU64,
    released: AtomicU64,
    invocations: AtomicU64,
    function_errors: AtomicU64,
    throttles: AtomicU64,
    bisections: AtomicU64,
    source_errors: AtomicU64,
    batches: AtomicUsize,
    peak_batches: AtomicUsize,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

#[derive(Debug)]
struct Scaling {
    target: usize,
    active: usize,
}

struct Shared {
    name: Arc<str>,
    config: QueueMappingConfig,
    filters: Filters,
    source: Arc<dyn QueueSource>,
    function: QueueFunction,
    counters: Counters,
    scaling: Mutex<Scaling>,
    scale_up: TokenBucket,
    cancel: CancellationToken,
    tasks: TaskTracker,
    fifo: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMapping")
            .field("name", &self.name)
            .field("scaling", &*self.scaling.lock())
            .finish_non_exhaustive()
    }
}

/// How one invocation of a sub-batch ended.
enum Invoked {
    Ok(BatchResponse),
    Failed,
    Released,
}

impl QueueMapping {
    /// Starts a mapping from `source` to `function`. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`]: a field out of range, a filter that does not parse, or a function
    /// timeout longer than the queue's visibility timeout.
    pub fn start(
        source: impl QueueSource,
        function: QueueFunction,
        config: QueueMappingConfig,
    ) -> Result<Self, ConfigError> {
        let filters = config.validate()?;
        if let Some(visibility) = source.visibility_timeout() {
            let timeout = function.config().timeout;
            if timeout > visibility {
                return Err(ConfigError::new(
                    "mapping",
                    "function timeout",
                    timeout,
                    format!("at most the queue's visibility timeout ({visibility:?})"),
                ));
            }
        }
        let initial = config.initial_concurrency as usize;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            fifo: source.is_fifo(),
            filters,
            source: Arc::new(source),
            function,
            counters: Counters::default(),
            scaling: Mutex::new(Scaling {
                target: initial,
                active: initial,
            }),
            scale_up: TokenBucket::new(config.scale_up_per_minute, Duration::from_secs(60)),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config,
        });
        for _ in 0..initial {
            shared.tasks.spawn(Arc::clone(&shared).poll());
        }
        Ok(Self { shared })
    }

    /// The mapping's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A snapshot of the mapping's metrics.
    pub fn metrics(&self) -> QueueMappingMetrics {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (pollers, target) = {
            let scaling = self.shared.scaling.lock();
            (scaling.active, scaling.target)
        };
        let stats: Option<QueueStats> = self.shared.source.stats();
        QueueMappingMetrics {
            received: load(&c.received),
            deleted: load(&c.deleted),
            filtered: load(&c.filtered),
            failed: load(&c.failed),
            released: load(&c.released),
            invocations: load(&c.invocations),
            function_errors: load(&c.function_errors),
            throttles: load(&c.throttles),
            bisections: load(&c.bisections),
            source_errors: load(&c.source_errors),
            pollers,
            concurrent_batches: c.batches.load(Ordering::Relaxed),
            target_concurrency: target,
            peak_concurrent_batches: c.peak_batches.load(Ordering::Relaxed),
            backlog: stats.map(|s| s.backlog()),
            dead_lettered: stats.map(|s| s.dead_lettered),
        }
    }

    /// Stops the mapping: pollers stop receiving, batches in flight finish (or are made visible
    /// again). Returns whether every poller stopped within `grace`.
    pub async fn stop(&self, grace: Duration) -> bool {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        tokio::time::timeout(grace, self.shared.tasks.wait())
            .await
            .is_ok()
    }
}

impl Shared {
    async fn poll(self: Arc<Self>) {
        let mut source_failures = 0u32;
        // Scale-in decisions count the poller out under the lock; other exits count it here.
        let retired = loop {
            if self.cancel.is_cancelled() {
                break false;
            }
            if self.retire_if_over_target() {
                break true;
            }
            let messages = match self.gather().await {
                Ok(messages) => {
                    source_failures = 0;
                    messages
                }
                Err(()) => {
                    source_failures += 1;
                    let delay = Backoff::throttles()
                        .delay(source_failures)
                        .min(Duration::from_secs(30));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = self.cancel.cancelled() => break false,
                    }
                }
            };
            if messages.is_empty() {
                if self.cancel.is_cancelled() {
                    break false;
                }
                if self.retire_if_idle() {
                    break true;
                }
                continue;
            }
            let full = messages.len() >= self.config.batch_size;
            add(&self.counters.received, messages.len());
            let now = self.counters.batches.fetch_add(1, Ordering::Relaxed) + 1;
            self.counters.peak_batches.fetch_max(now, Ordering::Relaxed);
            self.process(messages).await;
            self.counters.batches.fetch_sub(1, Ordering::Relaxed);
            if full {
                self.grow();
            }
        };
        if !retired {
            self.scaling.lock().active -= 1;
        }
    }

    /// Receives one batch: a long poll for the first messages, then more until the batch is
    /// full, the window ends or the payload cap is reached. `Err` after a source error.
    async fn gather(&self) -> Result<Vec<Message>, ()> {
        let size = self.config.batch_size;
        let first = tokio::select! {
            received = self.source.receive(size, self.config.poll_wait) => received,
            () = self.cancel.cancelled() => return Ok(Vec::new()),
        };
        let mut batch = first.map_err(|e| self.source_error(&e))?;
        if batch.is_empty() || self.config.batching_window.is_zero() {
            return Ok(batch);
        }
        let until = Instant::now() + self.config.batching_window;
        let mut bytes: usize = batch.iter().map(|m| m.body.len()).sum();
        while batch.len() < size && bytes < self.config.max_batch_bytes {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = tokio::select! {
                received = self.source.receive(size - batch.len(), left) => received,
                () = self.cancel.cancelled() => break,
            };
            match more {
                Ok(more) => {
                    bytes += more.iter().map(|m| m.body.len()).sum::<usize>();
                    batch.extend(more);
                }
                Err(e) => {
                    // Keep what we have; the next receive reports the failure again if it lasts.
                    self.source_error(&e);
                    break;
                }
            }
        }
        Ok(batch)
    }

    fn source_error(&self, error: &crate::SourceError) {
        add(&self.counters.source_errors, 1);
        tracing::warn!(mapping = %self.name, %error, "queue source error");
    }

    fn retire_if_over_target(&self) -> bool {
        let mut scaling = self.scaling.lock();
        if scaling.active > scaling.target {
            scaling.active -= 1;
            return true;
        }
        false
    }

    /// An empty receive: scale in, keeping one poller to notice new messages.
    fn retire_if_idle(&self) -> bool {
        let mut scaling = self.scaling.lock();
        if scaling.active > 1 {
            scaling.active -= 1;
            scaling.target = scaling.target.min(scaling.active).max(1);
            return true;
        }
        false
    }

    /// A full batch: there is backlog, so add a poller if the scale-up rate allows.
    fn grow(self: &Arc<Self>) {
        let spawn = {
            let mut scaling = self.scaling.lock();
            if scaling.target < self.config.max_concurrency as usize && self.scale_up.try_take() {
                scaling.target += 1;
            }
            let spawn = scaling.active < scaling.target && !self.cancel.is_cancelled();
            if spawn {
                scaling.active += 1;
            }
            spawn
        };
        if spawn {
            self.tasks.spawn(Arc::clone(self).poll());
        }
    }

    /// Function errors and throttles: halve the concurrency.
    fn back_off(&self) {
        let mut scaling = self.scaling.lock();
        scaling.target = (scaling.target / 2).max(1);
    }

    async fn process(&self, messages: Vec<Message>) {
        let (matching, filtered): (Vec<Message>, Vec<Message>) = if self.filters.is_empty() {
            (messages, Vec::new())
        } else {
            messages
                .into_iter()
                .partition(|m| self.filters.matches(&m.body, &m.attributes))
        };
        if !filtered.is_empty() {
            add(&self.counters.filtered, filtered.len());
            let receipts: Vec<Receipt> = filtered.iter().map(|m| m.receipt.clone()).collect();
            if let Err(e) = self.source.ack(&receipts).await {
                self.source_error(&e);
            }
        }
        if matching.is_empty() {
            return;
        }

        #[derive(Clone, Copy, PartialEq)]
        enum Verdict {
            Pending,
            Succeeded,
            Failed,
            Released,
        }
        let mut verdicts = vec![Verdict::Pending; matching.len()];
        // Message groups with a failed record in this batch (FIFO): later records of those
        // groups must not be handled ahead of it.
        let mut blocked: HashSet<Arc<str>> = HashSet::new();
        let mut work: VecDeque<Vec<usize>> = VecDeque::from([(0..matching.len()).collect()]);
        while let Some(indices) = work.pop_front() {
            let group_of = |i: usize| matching[i].group_id.clone();
            let (runnable, held): (Vec<usize>, Vec<usize>) = if self.fifo {
                indices
                    .into_iter()
                    .partition(|&i| group_of(i).is_none_or(|g| !blocked.contains(&g)))
            } else {
                (indices, Vec::new())
            };
            for i in held {
                verdicts[i] = Verdict::Failed;
            }
            if runnable.is_empty() {
                continue;
            }
            match self.invoke(&matching, &runnable).await {
                Invoked::Ok(response) => {
                    let failed = self.failed_indices(&matching, &runnable, &response);
                    for &i in &runnable {
                        let fails = failed.contains(&i)
                            || (self.fifo && group_of(i).is_some_and(|g| blocked.contains(&g)));
                        if fails {
                            verdicts[i] = Verdict::Failed;
                            if let Some(group) = group_of(i) {
                                blocked.insert(group);
                            }
                        } else {
                            verdicts[i] = Verdict::Succeeded;
                        }
                    }
                }
                Invoked::Failed if self.config.bisect_on_error && runnable.len() > 1 => {
                    add(&self.counters.bisections, 1);
                    let mut first = runnable;
                    let second = first.split_off(first.len() / 2);
                    work.push_front(second);
                    work.push_front(first);
                }
                Invoked::Failed => {
                    for &i in &runnable {
                        verdicts[i] = Verdict::Failed;
                        if let Some(group) = group_of(i) {
                            blocked.insert(group);
                        }
                    }
                }
                Invoked::Released => {
                    for &i in &runnable {
                        verdicts[i] = Verdict::Released;
                    }
                }
            }
        }

        let receipts = |verdict: Verdict| -> Vec<Receipt> {
            matching
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == verdict)
                .map(|(m, _)| m.receipt.clone())
                .collect()
        };
        let succeeded = receipts(Verdict::Succeeded);
        if !succeeded.is_empty() {
            match self.source.ack(&succeeded).await {
                Ok(()) => add(&self.counters.deleted, succeeded.len()),
                Err(e) => self.source_error(&e),
            }
        }
        // Failed messages stay invisible until their visibility timeout, as in SQS.
        let failed = verdicts.iter().filter(|v| **v == Verdict::Failed).count();
        add(&self.counters.failed, failed);
        // Released ones go back at once; last first, so a FIFO group keeps its order.
        let released = receipts(Verdict::Released);
        for receipt in released.iter().rev() {
            if let Err(e) = self.source.retry_later(receipt, Duration::ZERO).await {
                self.source_error(&e);
            }
        }
        add(&self.counters.released, released.len());
    }

    /// The indices a response reports as failed; every index if an id is unknown.
    fn failed_indices(
        &self,
        messages: &[Message],
        indices: &[usize],
        response: &BatchResponse,
    ) -> HashSet<usize> {
        if !self.config.report_batch_item_failures || response.item_failures.is_empty() {
            return HashSet::new();
        }
        let mut failed = HashSet::new();
        for id in &response.item_failures {
            match indices.iter().find(|&&i| messages[i].id == *id) {
                Some(&i) => {
                    failed.insert(i);
                }
                None => {
                    tracing::warn!(mapping = %self.name, %id, "item failure names an id not in the batch; failing the batch");
                    return indices.iter().copied().collect();
                }
            }
        }
        failed
    }

    /// Invokes the function with the records at `indices`, retrying throttles with backoff
    /// while the messages stay invisible.
    async fn invoke(&self, messages: &[Message], indices: &[usize]) -> Invoked {
        let started = Instant::now();
        let visibility = self.source.visibility_timeout();
        let timeout = self.function.config().timeout;
        let mut throttled = 0u32;
        loop {
            let batch = QueueBatch {
                mapping: Arc::clone(&self.name),
                records: indices
                    .iter()
                    .map(|&i| QueueRecord::from_message(&messages[i]))
                    .collect(),
            };
            add(&self.counters.invocations, 1);
            let options =
                InvokeOptions::default().with_invoker(Invoker::EventSource(Arc::clone(&self.name)));
            let invocation = self.function.invoke_with(batch, options).await;
            match invocation.result {
                Ok(response) => return Invoked::Ok(response),
                Err(InvokeError::Throttled(_)) => {
                    add(&self.counters.throttles, 1);
                    self.back_off();
                    throttled += 1;
                    let delay = Backoff::throttles().delay(throttled);
                    // Give up once a retry could not finish before the messages reappear.
                    let too_late =
                        visibility.is_some_and(|v| started.elapsed() + delay + timeout >= v);
                    if too_late {
                        return Invoked::Released;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => return Invoked::Released,
                    }
                }
                Err(InvokeError::ShuttingDown | InvokeError::Cancelled) => {
                    return Invoked::Released
                }
                Err(error) => {
                    add(&self.counters.function_errors, 1);
                    tracing::debug!(mapping = %self.name, %error, records = indices.len(), "batch failed");
                    self.back_off();
                    return Invoked::Failed;
                }
            }
        }
    }
}
