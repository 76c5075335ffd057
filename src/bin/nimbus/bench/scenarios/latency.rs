//! Open-loop latency: time from enqueue to handler start at a fixed arrival rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

use super::Sizes;
use crate::bench::peers::Countdown;
use crate::bench::stats::{rate, Row};
use crate::bench::workloads;

/// Sends `count` events from a dedicated thread at `per_sec`, each at its scheduled time
/// (open loop: the sender never waits for the system), calling `send(index, scheduled)`.
fn open_loop(
    count: u64,
    per_sec: f64,
    send: impl Fn(u64, Instant) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let _runtime = handle.enter();
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_secs_f64(i as f64 / per_sec);
            while Instant::now() < due {
                std::hint::spin_loop();
            }
            send(i, due);
        }
    })
}

/// Latencies (ns) recorded by index, then folded into a histogram.
struct Latencies {
    base: Instant,
    slots: Vec<AtomicU64>,
    countdown: Arc<Countdown>,
}

impl Latencies {
    fn new(base: Instant, count: u64) -> Arc<Self> {
        Arc::new(Self {
            base,
            slots: (0..count).map(|_| AtomicU64::new(0)).collect(),
            countdown: Countdown::new(count),
        })
    }

    /// The handler started the event scheduled `scheduled_ns` after the base.
    fn started(&self, index: u64, scheduled_ns: u64) {
        let now = self.base.elapsed().as_nanos() as u64;
        self.slots[index as usize]
            .store(now.saturating_sub(scheduled_ns).max(1), Ordering::Relaxed);
        self.countdown.tick();
    }

    fn histogram(&self) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        for slot in &self.slots {
            let _ = h.record(slot.load(Ordering::Relaxed).max(1));
        }
        h
    }
}

/// Runs `work` on a single-threaded Tokio runtime of its own thread, so that the system under
/// test and the open-loop sender have one core each (on a 2-core machine, a multi-threaded
/// runtime beside a spinning sender would measure the OS scheduler's time slices).
async fn on_own_thread<F>(work: impl FnOnce() -> F + Send + 'static) -> F::Output
where
    F: std::future::Future,
    F::Output: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let _ = tx.send(runtime.block_on(work()));
    });
    rx.await.expect("the measuring thread finishes")
}

/// Open loop at a fraction of nimbus's measured async capacity: time from enqueue to handler
/// start, beside a Tokio mpsc worker and spawn-per-event at the same arrival rate.
pub(crate) async fn latency(sizes: &Sizes) -> Vec<Row> {
    let probe = sizes.events.min(200_000);
    let capacity =
        on_own_thread(
            move || async move { rate(probe, workloads::invoke_async_noop(probe).await) },
        )
        .await;
    // One rate for now: the first fraction given.
    let fraction = sizes.rate_fractions.first().copied().unwrap_or(0.5);
    let per_sec = (capacity * fraction).max(1.0);
    let count = ((per_sec * sizes.latency_window.as_secs_f64()) as u64).clamp(1_000, 2_000_000);
    let scenario = "latency";
    let mut rows = Vec::new();

    // nimbus: invoke_async from the sender thread; the handler records when it starts.
    rows.push(
        on_own_thread(move || async move {
            let runtime = Runtime::default();
            let base = Instant::now();
            let lat = Latencies::new(base, count);
            let handle = runtime
                .register(
                    Function::new(
                        "timed",
                        handler_fn({
                            let lat = Arc::clone(&lat);
                            move |(i, scheduled): (u64, u64), _ctx: Context| {
                                lat.started(i, scheduled);
                                async { Ok::<_, FunctionError>(()) }
                            }
                        }),
                    )
                    .with_async_queue_capacity(count as usize),
                )
                .await
                .expect("register");
            let start = Instant::now();
            let sender = open_loop(count, per_sec, move |i, due| {
                let scheduled = due.duration_since(base).as_nanos() as u64;
                let _ = handle.invoke_async((i, scheduled));
            });
            lat.countdown.wait().await;
            let took = start.elapsed();
            let _ = sender.join();
            runtime.shutdown(Duration::from_secs(1)).await;
            Row::throughput(scenario, "nimbus", count, took)
                .at_set_rate()
                .with_latency(&lat.histogram())
                .with("rate_per_sec", per_sec)
                .with("capacity_per_sec", capacity)
        })
        .await,
    );

    // A Tokio mpsc channel into one worker task.
    rows.push(
        on_own_thread(move || async move {
            let base = Instant::now();
            let lat = Latencies::new(base, count);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
            let worker = tokio::spawn({
                let lat = Arc::clone(&lat);
                async move {
                    while let Some((i, scheduled)) = rx.recv().await {
                        lat.started(i, scheduled);
                    }
                }
            });
            let start = Instant::now();
            let sender = open_loop(count, per_sec, move |i, due| {
                let _ = tx.send((i, due.duration_since(base).as_nanos() as u64));
            });
            lat.countdown.wait().await;
            let took = start.elapsed();
            let _ = sender.join();
            let _ = worker.await;
            Row::throughput(scenario, "tokio mpsc worker", count, took)
                .at_set_rate()
                .with_latency(&lat.histogram())
                .with("rate_per_sec", per_sec)
        })
        .await,
    );

    // A task spawned per event.
    rows.push(
        on_own_thread(move || async move {
            let base = Instant::now();
            let lat = Latencies::new(base, count);
            let start = Instant::now();
            let sender = open_loop(count, per_sec, {
                let lat = Arc::clone(&lat);
                move |i, due| {
                    let scheduled = due.duration_since(base).as_nanos() as u64;
                    let lat = Arc::clone(&lat);
                    tokio::spawn(async move { lat.started(i, scheduled) });
                }
            });
            lat.countdown.wait().await;
            let took = start.elapsed();
            let _ = sender.join();
            Row::throughput(scenario, "tokio spawn per event", count, took)
                .at_set_rate()
                .with_latency(&lat.histogram())
                .with("rate_per_sec", per_sec)
        })
        .await,
    );
    rows
}
