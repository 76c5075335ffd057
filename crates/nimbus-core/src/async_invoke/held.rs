//! What an async worker holds, and its guard: the events it took, the one it runs, the
//! successes it has not counted yet, and its place in the function's worker counts. Dropped for
//! any reason (its queue stayed empty while it parked, the grace period ended, its task was
//! dropped, a bug panicked it), the guard puts the events back at the front of the queue,
//! counts the worker out, and starts a replacement if the backlog needs one.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::worker::WORKER_BATCH;
use super::{AsyncInvoker, Queued};
use crate::metrics::Successes;

/// A worker, counted in `workers` from its spawn to its end, and what it holds: its batch,
/// the event it is running, and successes not yet counted (in `succeeded`, and out of
/// `pending`). Dropped, it gives all of it back (see the module docs).
pub(super) struct WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    function: Arc<AsyncInvoker<E, O>>,
    pub(super) batch: VecDeque<Queued<E>>,
    pub(super) current: Option<Queued<E>>,
    /// Finished events not yet counted out of `pending`.
    pub(super) done: usize,
    /// Successes not yet added to the `succeeded` counter: counted with `done`, so that two
    /// workers do not write one cache line per event.
    pub(super) succeeded: u64,
    /// Runs that succeeded, not yet added to the function's metrics: added with `done`.
    pub(super) successes: Successes,
    /// The worker ran: only then does its end start a replacement (a task dropped unrun, its
    /// runtime going away, must not spawn another one that would be dropped the same way).
    started: bool,
    /// Counted in `on_cpu`: from its spawn (a worker about to start is about to run) to its
    /// end, but not while it waits for something other than the CPU.
    on_cpu: bool,
}

impl<E, O> WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// A worker already counted in `workers` by the caller; it counts itself on the CPU.
    pub(super) fn new(function: Arc<AsyncInvoker<E, O>>) -> Self {
        function.state.on_cpu.fetch_add(1, Ordering::SeqCst);
        Self {
            function,
            batch: VecDeque::new(),
            current: None,
            done: 0,
            succeeded: 0,
            successes: Successes::default(),
            started: false,
            on_cpu: true,
        }
    }

    /// Counts the worker off the CPU while it waits (parked, throttled, for a cold start, a
    /// slow handler or a delivery): events behind it may get another worker.
    pub(super) fn off_cpu(&mut self) {
        if std::mem::replace(&mut self.on_cpu, false) {
            self.function.state.on_cpu.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Counts it on the CPU again once the wait is over.
    pub(super) fn on_cpu(&mut self) {
        if !std::mem::replace(&mut self.on_cpu, true) {
            self.function.state.on_cpu.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Counts what the worker finished: its successes (in the function's metrics and the
    /// async counters), then (so that whoever sees the queue idle sees them counted) its
    /// finished events out of `pending`.
    pub(super) fn settle(&mut self) {
        self.function.exec.flush(&mut self.successes);
        let state = &self.function.state;
        let succeeded = std::mem::take(&mut self.succeeded);
        if succeeded > 0 {
            state
                .counters
                .succeeded
                .fetch_add(succeeded, Ordering::Relaxed);
        }
        state.finish_many(std::mem::take(&mut self.done));
    }

    /// Runs the worker.
    pub(super) async fn run(mut self) {
        self.started = true;
        self.batch.reserve(WORKER_BATCH);
        let function = Arc::clone(&self.function);
        function.worker(&mut self).await;
    }
}

impl<E, O> Drop for WorkerGuard<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    fn drop(&mut self) {
        self.settle();
        self.off_cpu();
        let state = &self.function.state;
        if let Some(current) = self.current.take() {
            if std::thread::panicking() {
                // The event in hand when the worker panicked may be what panics it: it is kept
                // for the host rather than run again.
                state.keep(current, None);
            } else {
                self.batch.push_front(current);
            }
        }
        self.function.requeue(&mut self.batch);
        let remaining = state.workers.fetch_sub(1, Ordering::SeqCst) - 1;
        // An event pushed while this worker was leaving must not be stranded: count the worker
        // out first, then look at the queue. A producer that pushed before this look is seen
        // here; one that pushes after it sees the lower worker count: with none left it adds
        // a worker, and with every one left in a slow handler it schedules a look.
        let depth = state.lock_ready().len();
        // Workers inside slow handlers will not take the events soon: they do not count.
        let slow = state.slow.load(Ordering::SeqCst);
        if self.started
            && depth > remaining.saturating_sub(slow)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.function.kick(depth, slow > 0);
        }
    }
}
