//! The queue of one function's async events: ready and delayed events, events kept for the
//! host, the pending count that bounds them, the failed events kept for the host (bounded on
//! their own), and the hand-back at the end.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::{Deref, DerefMut, Range};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::gauge;
use super::ready::Ready;
use super::{AsyncMetrics, Condition, Destinations, ErrorInfo, HandedBack, Queued};
use crate::executor::Executor;
use crate::handler::RequestId;
use crate::retry::RetryPolicy;
use crate::util::Padded;

/// An event waiting for its retry.
pub(super) struct Delayed<E> {
    pub(super) due: Instant,
    pub(super) seq: u64,
    pub(super) queued: Queued<E>,
}

impl<E> PartialEq for Delayed<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl<E> Eq for Delayed<E> {}
impl<E> PartialOrd for Delayed<E> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Delayed<E> {
    /// Reversed, so that the max-heap pops the earliest due first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Request ids an arrival takes from the executor at a time: one atomic add on a line every
/// function's invocations share, per this many events, instead of one per event.
const ID_BLOCK: u64 = 64;

/// The ready events, and what an arrival counts while it holds their lock: it is queued
/// with one atomic operation fewer for each (a locked add costs about as much as the lock).
pub(super) struct Intake<E> {
    pub(super) events: Ready<Queued<E>>,
    /// Events accepted (`AsyncMetrics::accepted`).
    pub(super) accepted: u64,
    /// Request ids reserved for arrivals and not given out yet (sequence numbers).
    ids: Range<u64>,
}

impl<E> Intake<E> {
    /// Counts an arrival in and gives it a request id.
    pub(super) fn admit<O>(&mut self, exec: &Executor<E, O>) -> RequestId {
        self.accepted += 1;
        let seq = self.ids.next().unwrap_or_else(|| {
            let first = exec.reserve_request_ids(ID_BLOCK);
            self.ids = first + 1..first + ID_BLOCK;
            first
        });
        exec.request_id(seq)
    }
}

impl<E> Deref for Intake<E> {
    type Target = Ready<Queued<E>>;

    fn deref(&self) -> &Self::Target {
        &self.events
    }
}

impl<E> DerefMut for Intake<E> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.events
    }
}

/// Counters of the async path (`accepted` is the intake's).
#[derive(Debug, Default)]
pub(crate) struct AsyncCounters {
    pub(crate) retries: AtomicU64,
    pub(crate) throttles: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) delivery_failures: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

/// The async queue of one function.
pub(crate) struct AsyncState<E, O> {
    /// Locked with [`AsyncState::lock_ready`], which first moves in what `overflow` holds.
    pub(super) ready: Padded<Mutex<Intake<E>>>,
    /// Arrivals that found `ready` locked: pushed here rather than waiting for the lock (a
    /// worker holding it may have lost its thread for a while), and moved to the back of
    /// `ready`, in order, by whoever locks it next. Not counted in `accepted` until then.
    pub(super) overflow: SegQueue<Queued<E>>,
    /// Arrivals between their look at `sealed` and the end of their push into `overflow`:
    /// the hand-back waits for them (see `hand_back`).
    pub(super) overflowing: AtomicUsize,
    pub(super) delayed: Mutex<BinaryHeap<Delayed<E>>>,
    pub(super) delayed_changed: Notify,
    pub(super) timer_started: AtomicBool,
    pub(super) delay_seq: AtomicU64,
    /// Accepted and not finished: ready + delayed + running + being delivered.
    pub(super) pending: Padded<AtomicUsize>,
    pub(super) idle: Notify,
    pub(super) workers: AtomicUsize,
    /// Workers (counted in `workers`) waiting a moment for the next event after the queue
    /// emptied, holding no permit and no instance (see `worker.rs`).
    pub(super) parked: AtomicUsize,
    /// Wakes a parked worker when events are pushed into the ready queue (`wake_parked`).
    pub(super) unpark: Notify,
    /// A wake-up was sent and no parked worker has taken it yet: a push meanwhile need not
    /// send another, as the worker that takes it looks at the queue after (see `wake_parked`).
    pub(super) waking: AtomicBool,
    /// Workers awaiting a handler that did not finish on its first poll.
    pub(super) slow: AtomicUsize,
    /// Workers running events on the CPU: holding a permit and an instance, and not waiting
    /// for a slow handler or a delivery (see `gauge.rs`).
    pub(super) on_cpu: AtomicUsize,
    /// The Tokio runtime's worker threads when the function was registered: no more workers
    /// than this run on the CPU at once, when the caller is outside any runtime (its workers
    /// then run on that one).
    pub(super) threads: usize,
    /// A delayed look at the backlog is scheduled (`kick_soon`).
    pub(super) kick_scheduled: AtomicBool,
    /// Events kept for the host at the end: stopped by the end of the grace period, or by a
    /// panic. Handed back at shutdown; they count as pending.
    pub(super) kept: Mutex<Vec<Kept<E>>>,
    /// Events that failed for good with no target that would take them, kept for the host
    /// (`UnroutedFailures::Keep`): taken by `take_failed`, handed back at shutdown. Finished,
    /// so not pending; bounded by `max_kept_failures` instead.
    pub(super) failed: Mutex<Vec<KeptFailure<E>>>,
    /// `failed.len()`, read without the lock by `invoke_async`.
    pub(super) kept_failures: AtomicUsize,
    /// The first kept failure was logged at `warn`.
    pub(super) warned_kept: AtomicBool,
    /// Set (under the `ready` lock) when the queue is handed back: later arrivals are refused.
    pub(super) sealed: AtomicBool,
    /// The function's `max_event_age`.
    pub(super) max_event_age: Duration,
    /// The instant expiry deadlines are counted from.
    pub(super) age_epoch: Instant,
    /// When the age timer wakes next, in nanoseconds from `age_epoch`; `u64::MAX` when no age
    /// timer runs (see `expiry.rs`).
    pub(super) age_deadline: AtomicU64,
    /// Wakes the age timer when an earlier deadline was set.
    pub(super) age_changed: Notify,
    pub(crate) destinations: Destinations<E, O>,
    pub(crate) retry: Arc<dyn RetryPolicy>,
    pub(crate) counters: AsyncCounters,
}

impl<E, O> AsyncState<E, O> {
    pub(crate) fn new(
        destinations: Destinations<E, O>,
        retry: Arc<dyn RetryPolicy>,
        max_event_age: Duration,
        threads: usize,
    ) -> Self {
        Self {
            ready: Padded(Mutex::new(Intake {
                events: Ready::default(),
                accepted: 0,
                ids: 0..0,
            })),
            overflow: SegQueue::new(),
            overflowing: AtomicUsize::new(0),
            delayed: Mutex::new(BinaryHeap::new()),
            delayed_changed: Notify::new(),
            timer_started: AtomicBool::new(false),
            delay_seq: AtomicU64::new(0),
            pending: Padded(AtomicUsize::new(0)),
            idle: Notify::new(),
            workers: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            unpark: Notify::new(),
            waking: AtomicBool::new(false),
            slow: AtomicUsize::new(0),
            on_cpu: AtomicUsize::new(0),
            threads: threads.max(1),
            kick_scheduled: AtomicBool::new(false),
            kept: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            kept_failures: AtomicUsize::new(0),
            warned_kept: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            max_event_age,
            age_epoch: Instant::now(),
            age_deadline: AtomicU64::new(u64::MAX),
            age_changed: Notify::new(),
            destinations,
            retry,
            counters: AsyncCounters::default(),
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits until no event is pending.
    pub(crate) async fn until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Keeps an event for the host, with how it failed if it did.
    pub(super) fn keep(&self, queued: Queued<E>, failure: Option<(Condition, Option<ErrorInfo>)>) {
        self.kept.lock().push(Kept { queued, failure });
    }

    /// Keeps a failed event for the host; returns whether it is the function's first.
    pub(super) fn keep_failure(&self, failure: KeptFailure<E>) -> bool {
        {
            let mut failed = self.failed.lock();
            failed.push(failure);
            self.kept_failures.store(failed.len(), Ordering::SeqCst);
        }
        !self.warned_kept.swap(true, Ordering::Relaxed)
    }

    /// Takes the failed events kept for the host.
    pub(super) fn take_failed(&self) -> Vec<KeptFailure<E>> {
        let mut failed = self.failed.lock();
        self.kept_failures.store(0, Ordering::SeqCst);
        std::mem::take(&mut *failed)
    }

    /// Puts events taken but not started, after the first `keep` of `batch`, back at the front
    /// of the queue, in their order; returns the queue's depth.
    pub(super) fn requeue_front(&self, batch: &mut VecDeque<Queued<E>>, keep: usize) -> usize {
        let pushed = batch.len() > keep;
        let depth = {
            let mut ready = self.lock_ready();
            while batch.len() > keep {
                let Some(queued) = batch.pop_back() else {
                    break;
                };
                ready.push_front(queued);
            }
            ready.len()
        };
        if pushed {
            self.wake_parked();
        }
        depth
    }

    /// Whether the workers fill the runtime's threads running fast handlers: another worker
    /// could not run beside them, and would only take a share of the events they would have
    /// run. Not while any worker is in a slow handler: scaling to such handlers (a step in load
    /// to handlers that wait) is left as it was, since holding back arrivals' workers there,
    /// even while those just started are on their way to their handlers, builds a backlog that
    /// later needs more workers than the load.
    pub(super) fn cpu_bound(&self) -> bool {
        // Workers are spawned on the caller's runtime, when it has one.
        let threads = gauge::runtime_threads().unwrap_or(self.threads);
        self.on_cpu.load(Ordering::Relaxed) >= threads && self.slow.load(Ordering::Relaxed) == 0
    }

    /// Wakes a parked worker, if any, for events just put in the ready queue. Called after
    /// every push, outside the lock: a worker counts itself parked before it looks at the
    /// queue, so either its look sees the events or this sees its count. The worker parked
    /// last is woken, so that workers a burst left over are not kept busy by a steady stream
    /// and time out.
    ///
    /// Until a woken worker has taken the wake-up (it clears `waking`, then looks at the
    /// queue), pushes send no other: the woken worker sees their events. A worker woken on a
    /// busy runtime may wait a while for a thread, and a push per event into a `Notify` whose
    /// wake-up is already sent still costs an atomic read-modify-write (three quarters of the
    /// async bench's pushes did so).
    pub(super) fn wake_parked(&self) {
        if self.parked.load(Ordering::SeqCst) > 0
            && !self.waking.load(Ordering::SeqCst)
            && !self.waking.swap(true, Ordering::SeqCst)
        {
            self.unpark.notify_last();
        }
    }

    pub(super) fn finish_one(&self) {
        self.finish_many(1);
    }

    /// Counts `n` events finished; workers batch this so that the producer and the workers
    /// do not bounce the `pending` cache line on every event.
    pub(super) fn finish_many(&self, n: usize) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::SeqCst) == n {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn metrics(&self) -> AsyncMetrics {
        let now = Instant::now();
        let (queue_depth, oldest_ready, accepted) = {
            let ready = self.lock_ready();
            (
                ready.len(),
                ready.front().map(|q| q.accepted_at),
                ready.accepted,
            )
        };
        let (waiting_retry, oldest_delayed) = {
            let delayed = self.delayed.lock();
            (
                delayed.len(),
                delayed.iter().map(|d| d.queued.accepted_at).min(),
            )
        };
        let oldest = match (oldest_ready, oldest_delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        AsyncMetrics {
            accepted,
            pending: self.pending(),
            queue_depth,
            waiting_retry,
            oldest_event_age: oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
            retries: load(&c.retries),
            throttles: load(&c.throttles),
            succeeded: load(&c.succeeded),
            failed: load(&c.failed),
            delivered: load(&c.delivered),
            delivery_failures: load(&c.delivery_failures),
            handed_back: load(&c.handed_back),
            kept_failures: self.kept_failures.load(Ordering::SeqCst),
            discarded: load(&c.discarded),
        }
    }
}

impl<E: Send + 'static, O> AsyncState<E, O> {
    /// Takes every unfinished event out, for the host (after the workers have stopped).
    pub(crate) fn hand_back(&self, function: &str) -> Vec<HandedBack> {
        let unfinished = |queued| Kept {
            queued,
            failure: None,
        };
        let mut events: Vec<Kept<E>> = {
            let mut ready = self.ready.lock();
            self.sealed.store(true, Ordering::SeqCst);
            // An arrival that looked at `sealed` before this pushes into `overflow`: wait for
            // its push, then take it with the rest. Later ones see `sealed` and are refused.
            while self.overflowing.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            self.take_overflow(&mut ready);
            ready.take_all().map(unfinished).collect()
        };
        events.extend(self.delayed.lock().drain().map(|d| unfinished(d.queued)));
        events.append(&mut self.kept.lock());
        // Kept failures are finished already: they are not counted out of `pending` again.
        let unfinished = events.len();
        events.extend(self.take_failed().into_iter().map(|f| Kept {
            queued: f.queued,
            failure: Some((f.condition, f.error)),
        }));
        self.counters
            .handed_back
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events
            .into_iter()
            .enumerate()
            .map(|(i, kept)| {
                if i < unfinished {
                    self.finish_one();
                }
                let (condition, error) = kept.failure.unzip();
                HandedBack {
                    function: function.to_owned(),
                    request_id: kept.queued.request_id,
                    attempts: kept.queued.attempts,
                    principal: kept.queued.principal.get().clone(),
                    hop_count: kept.queued.principal.hops(),
                    condition,
                    error: error.flatten(),
                    event: Box::new(kept.queued.event),
                }
            })
            .collect()
    }
}

/// An event kept for the host, with how it ended if it did.
pub(super) struct Kept<E> {
    pub(super) queued: Queued<E>,
    pub(super) failure: Option<(Condition, Option<ErrorInfo>)>,
}

/// An event that failed for good and that no target took, kept for the host.
pub(super) struct KeptFailure<E> {
    pub(super) queued: Queued<E>,
    pub(super) condition: Condition,
    pub(super) error: Option<ErrorInfo>,
    /// When it failed.
    pub(super) at: std::time::SystemTime,
}
