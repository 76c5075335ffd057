//! Peer baselines for benchmarks (feature `peers`): the same no-op work run by plain Tokio and
//! by apalis, so that nimbus is always measured beside its alternatives in the same run.
//!
//! Every baseline runs `events` no-op jobs whose handler counts them, and returns the wall time
//! from the first submission until the last job has run.
//!
//! Not library API: the binary declares it in its `bench` module, and each bench in `benches/`
//! includes it with `#[path]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Counts handled jobs and wakes the waiter when all have run.
#[derive(Debug)]
pub struct Countdown {
    left: AtomicU64,
    done: Notify,
}

impl Countdown {
    /// A countdown of `n` jobs.
    pub fn new(n: u64) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicU64::new(n),
            done: Notify::new(),
        })
    }

    /// Jobs not handled yet.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }

    /// One job handled.
    pub fn tick(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Waits until every job has been handled.
    pub async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.left.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// `tokio::spawn` of one task per job.
pub async fn tokio_spawn_per_event(events: u64) -> Duration {
    let countdown = Countdown::new(events);
    let start = Instant::now();
    for i in 0..events {
        let countdown = Arc::clone(&countdown);
        tokio::spawn(async move {
            std::hint::black_box(i);
            countdown.tick();
        });
    }
    countdown.wait().await;
    start.elapsed()
}

/// A pool of `workers` tasks, each draining its own bounded Tokio mpsc channel, fed round-robin.
pub async fn tokio_mpsc_pool(events: u64, workers: usize) -> Duration {
    let countdown = Countdown::new(events);
    let senders: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(1_024);
            let countdown = Arc::clone(&countdown);
            tokio::spawn(async move {
                while let Some(i) = rx.recv().await {
                    std::hint::black_box(i);
                    countdown.tick();
                }
            });
            tx
        })
        .collect();
    let start = Instant::now();
    for i in 0..events {
        let tx = &senders[(i as usize) % senders.len()];
        if tx.send(i).await.is_err() {
            break;
        }
    }
    countdown.wait().await;
    let elapsed = start.elapsed();
    drop(senders);
    elapsed
}

/// apalis 1.0 `MemoryStorage` with its default worker: push every job, then run the worker
/// until the last one has been handled. The time includes the pushes, as nimbus's includes
/// `invoke_async`.
///
/// # Panics
///
/// If apalis refuses a job or its worker fails, which a benchmark cannot recover from.
pub async fn apalis_memory_storage(events: u64) -> Duration {
    apalis_run(events, true).await
}

/// As [`apalis_memory_storage`], timing only the worker draining jobs pushed beforehand.
///
/// # Panics
///
/// As [`apalis_memory_storage`].
pub async fn apalis_memory_storage_drain_only(events: u64) -> Duration {
    apalis_run(events, false).await
}

async fn apalis_run(events: u64, time_pushes: bool) -> Duration {
    use apalis::prelude::*;

    let countdown = Countdown::new(events);
    let mut start = Instant::now();
    let mut storage = MemoryStorage::new();
    for i in 0..events {
        storage.push(i).await.expect("apalis accepts the job");
    }
    if !time_pushes {
        start = Instant::now();
    }
    let handler_countdown = Arc::clone(&countdown);
    let worker = WorkerBuilder::new("peer-noop")
        .backend(storage)
        .data(handler_countdown)
        .build(
            |job: u64, countdown: Data<Arc<Countdown>>, worker: WorkerContext| async move {
                std::hint::black_box(job);
                countdown.tick();
                if countdown.left.load(Ordering::Acquire) == 0 {
                    let _ = worker.stop();
                }
            },
        );
    worker.run().await.expect("the apalis worker runs");
    countdown.wait().await;
    start.elapsed()
}
