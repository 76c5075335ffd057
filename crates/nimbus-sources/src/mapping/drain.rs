//! Telling when a queue mapping is drained: [`QueueMapping::drained`], and the bookkeeping the
//! pollers keep for it (whether the last receive found nothing; the batches in hand are the
//! metrics' count).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{QueueMapping, Shared};
use crate::status::MappingStatus;

/// The longest pause between two looks of a waiting [`QueueMapping::drained`]; it looks at
/// once whenever the mapping lets go of its last message or finds the queue empty.
const MAX_LOOK_PAUSE: Duration = Duration::from_secs(1);

/// What the pollers tell [`QueueMapping::drained`].
#[derive(Debug, Default)]
pub(super) struct Drain {
    /// Bumped by each `drained` call as it starts.
    epoch: AtomicU64,
    /// The epoch read as the sole poller's last receive began, if that receive found the
    /// queue empty while the mapping held nothing (0: messages were received since).
    quiet: AtomicU64,
    /// When a message last failed: it stays in flight in the source until its visibility
    /// timeout, unseen by a receive.
    last_failure: Mutex<Option<Instant>>,
    /// `drained` futures waiting, so that the pollers notify only when someone listens.
    waiters: AtomicUsize,
    changed: Notify,
}

impl Drain {
    /// Messages were received: the queue was not empty after all.
    pub(super) fn received(&self) {
        // Read first: on the hot path the flag is almost always clear, and a load of a line
        // nobody writes costs nothing.
        if self.quiet.load(Ordering::Relaxed) != 0 {
            self.quiet.store(0, Ordering::SeqCst);
        }
    }

    /// The epoch now: read by a poller before each receive.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Messages failed: they return after the visibility timeout.
    pub(super) fn failed(&self) {
        *self.last_failure.lock() = Some(Instant::now());
    }

    fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// Counts a waiting `drained` future out when it ends or is dropped.
struct Waiting<'a>(&'a Drain);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// A batch finished with: its messages acknowledged, failed or handed back, and its
    /// metrics counted (released to whoever reads the count with `Acquire`).
    pub(super) fn batch_done(&self) {
        if self.counters.batches.fetch_sub(1, Ordering::Release) == 1 {
            self.drain.wake();
        }
    }

    /// No batch in hand.
    fn holds_nothing(&self) -> bool {
        self.counters.batches.load(Ordering::Acquire) == 0
    }

    /// The sole poller's receive, begun at `epoch`, found nothing: the mapping is quiet (for
    /// `drained` calls made by then) if it holds nothing and no failed message is still to
    /// come back.
    pub(super) fn found_nothing(&self, epoch: u64) {
        let drain = &self.drain;
        if !self.holds_nothing() {
            return;
        }
        if let (Some(failed), Some(visibility)) =
            (*drain.last_failure.lock(), self.source.visibility_timeout())
        {
            if failed.elapsed() < visibility {
                return;
            }
        }
        drain.quiet.store(epoch, Ordering::SeqCst);
        drain.wake();
    }

    /// Whether the source is drained and the mapping holds nothing, for a `drained` call made
    /// at `epoch`.
    async fn is_drained(&self, epoch: u64) -> bool {
        if !self.holds_nothing() {
            return false;
        }
        let source_drained = match self.stats_now().await {
            Some(stats) => stats.backlog() == 0,
            // No answer because the mapping stops: not drained, stopped (the caller says so).
            None if self.cancel.is_cancelled() => return false,
            None => self.drain.quiet.load(Ordering::SeqCst) >= epoch,
        };
        // Again after the source: a batch received since the first look is either in flight
        // in the source (seen there) or in hand now (seen here), and one acknowledged since
        // has been counted in the metrics once its count is back to none.
        source_drained && self.holds_nothing()
    }
}

impl QueueMapping {
    /// Resolves once the mapping's source is drained and the mapping holds nothing, so that
    /// hosts and tests need not poll metrics: every message sent before the call has been
    /// acknowledged, filtered or dead-lettered.
    ///
    /// - A source with [stats](crate::QueueSource::stats): they count nothing visible, in
    ///   flight or delayed (failed messages waiting for their visibility timeout are in
    ///   flight), while the mapping holds no message. Asked when the mapping lets go of its
    ///   last message or finds the queue empty, and at most a second apart otherwise.
    /// - A source without (or whose stats fail): a receive of the mapping's only poller that
    ///   began after this call found nothing, while the mapping held nothing and no failed
    ///   message was still to come back (within the visibility timeout). That can take up to
    ///   twice the mapping's `poll_wait`. A source with neither stats nor a visibility timeout
    ///   cannot say when its failed messages return; they are not waited for.
    ///
    /// Messages sent after the call may or may not be waited for.
    ///
    /// # Errors
    ///
    /// The mapping's status, if it stops (or has stopped) first.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
    /// use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::default();
    /// let function = runtime
    ///     .register(Function::new("consume", handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
    ///         Ok::<_, FunctionError>(BatchResponse::success())
    ///     })))
    ///     .await?;
    /// let queue = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
    /// for body in ["a", "b", "c"] {
    ///     queue.send(body)?;
    /// }
    /// let mapping = QueueMapping::builder(queue.clone(), function, QueueMappingConfig::new("consume"))
    ///     .attach(&runtime)
    ///     .start()?;
    /// mapping.drained().await.expect("running");
    /// assert_eq!(mapping.metrics().deleted, 3);
    /// assert!(queue.is_empty());
    /// runtime.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn drained(&self) -> Result<(), MappingStatus> {
        let shared = &self.shared;
        let drain = &shared.drain;
        drain.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(drain);
        let epoch = drain.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let mut pause = Duration::from_millis(5);
        loop {
            let changed = drain.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let status = self.status();
            if !status.is_running() {
                return Err(status);
            }
            if shared.is_drained(epoch).await {
                return Ok(());
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(pause) => pause = (pause * 2).min(MAX_LOOK_PAUSE),
                () = shared.cancel.cancelled() => {}
            }
        }
    }
}
