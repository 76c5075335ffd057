//! The scenarios: each runs nimbus and its peers on the same events with the same no-op (or
//! fixed-duration) handler, and returns one row per system.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nimbus::sources::{InMemoryQueue, QueueConfig, QueueMapping, QueueMappingConfig};
use nimbus::{handler_fn, Context, Function, FunctionError, Handler, Runtime, RuntimeConfig};

use super::peers::{self, Countdown};
use super::stats::{littles_law, rate, scaling_fit, Row};
use super::workloads;

/// Sizes of one run of the harness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) events: u64,
    /// Messages per broker scenario run.
    pub(crate) broker_events: u64,
    pub(crate) latency_window: Duration,
    pub(crate) rate_fraction: f64,
    pub(crate) autoscale_load: Duration,
    pub(crate) idle_for: Duration,
    pub(crate) idle_functions: usize,
    pub(crate) idle_mappings: usize,
}

fn noop() -> impl Handler<u64, u64> + Clone + Sync {
    handler_fn(|n: u64, _ctx: Context| async move { Ok::<_, FunctionError>(n) })
}

/// Runs `total` operations split over `callers` tasks; returns the wall time.
async fn closed_loop<F, Fut>(total: u64, callers: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let op = op.clone();
            let share = total / callers + u64::from(c < total % callers);
            tokio::spawn(async move {
                for i in 0..share {
                    op(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    start.elapsed()
}

/// Sync invoke of a no-op function, closed loop, on 1 and 8 callers.
pub(crate) async fn invoke(sizes: Sizes) -> Vec<Row> {
    let runtime =
        Runtime::new(RuntimeConfig::default().with_concurrency_limit(10_000)).expect("config");
    let handle = runtime
        .register(Function::new("noop", noop()))
        .await
        .expect("register");
    let n = sizes.events;
    let mut rows = Vec::new();
    for callers in [1u64, 8] {
        let scenario = format!(
            "invoke/{callers}_caller{}",
            if callers > 1 { "s" } else { "" }
        );
        let h = handle.clone();
        let took = closed_loop(n, callers, move |i| {
            let h = h.clone();
            async move {
                std::hint::black_box(h.invoke(i).await.ok());
            }
        })
        .await;
        rows.push(Row::throughput(&scenario, "nimbus", n, took));
        let took = closed_loop(n, callers, |i| async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = tx.send(std::hint::black_box(i));
            });
            std::hint::black_box(rx.await.ok());
        })
        .await;
        rows.push(Row::throughput(&scenario, "tokio spawn+oneshot", n, took));
        let took = closed_loop(n, callers, |i| async move {
            let mut handler: Box<dyn Handler<u64, u64>> = Box::new(noop());
            let ctx = Context::detached("noop", Duration::from_secs(3));
            std::hint::black_box(handler.call(i, ctx).await.ok());
        })
        .await;
        rows.push(Row::throughput(&scenario, "direct boxed call", n, took));
    }
    runtime.shutdown(Duration::from_secs(1)).await;
    rows
}

/// Async invoke throughput against apalis, an mpsc pool and spawn-per-event.
pub(crate) async fn async_invoke(sizes: Sizes) -> Vec<Row> {
    let n = sizes.events;
    vec![
        Row::throughput("async", "nimbus", n, workloads::invoke_async_noop(n).await),
        Row::throughput(
            "async",
            "apalis MemoryStorage",
            n,
            peers::apalis_memory_storage(n).await,
        ),
        Row::throughput(
            "async",
            "tokio mpsc pool (2)",
            n,
            peers::tokio_mpsc_pool(n, 2).await,
        ),
        Row::throughput(
            "async",
            "tokio spawn per event",
            n,
            peers::tokio_spawn_per_event(n).await,
        ),
    ]
}

/// In-memory queue -> mapping -> no-op handler at batch sizes 1, 10, 100, with the peers
/// draining the same number of jobs (measured once, shown in each batch size's group).
pub(crate) async fn queue(sizes: Sizes) -> Vec<Row> {
    let n = sizes.events;
    let apalis = peers::apalis_memory_storage(n).await;
    let pool = peers::tokio_mpsc_pool(n, 2).await;
    let mut rows = Vec::new();
    for batch in [1usize, 10, 100] {
        let scenario = format!("queue/batch_{batch}");
        rows.push(Row::throughput(
            &scenario,
            "nimbus",
            n,
            workloads::queue_drain(n, batch).await,
        ));
        rows.push(Row::throughput(
            &scenario,
            "apalis MemoryStorage",
            n,
            apalis,
        ));
        rows.push(Row::throughput(&scenario, "tokio mpsc pool (2)", n, pool));
    }
    rows
}

/// In-memory stream -> stream mapping -> no-op handler, for shards x parallelization factor,
/// with the peers draining the same number of jobs.
pub(crate) async fn stream(sizes: Sizes) -> Vec<Row> {
    let n = sizes.events;
    let apalis = peers::apalis_memory_storage(n).await;
    let pool = peers::tokio_mpsc_pool(n, 2).await;
    let mut rows = Vec::new();
    for (shards, factor) in [(1usize, 1u32), (4, 1), (4, 4)] {
        let scenario = format!("stream/{shards}x{factor}");
        rows.push(
            Row::throughput(
                &scenario,
                "nimbus",
                n,
                workloads::stream_drain(n, shards, factor).await,
            )
            .with("shards", shards as u64)
            .with("parallelization_factor", u64::from(factor)),
        );
        rows.push(Row::throughput(
            &scenario,
            "apalis MemoryStorage",
            n,
            apalis,
        ));
        rows.push(Row::throughput(&scenario, "tokio mpsc pool (2)", n, pool));
    }
    rows
}

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
pub(crate) async fn latency(sizes: Sizes) -> Vec<Row> {
    let probe = sizes.events.min(200_000);
    let capacity =
        on_own_thread(
            move || async move { rate(probe, workloads::invoke_async_noop(probe).await) },
        )
        .await;
    let per_sec = (capacity * sizes.rate_fraction).max(1.0);
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
                .with_latency(&lat.histogram())
                .with("rate_per_sec", per_sec)
        })
        .await,
    );
    rows
}

/// Concurrency over time of one system in the autoscale scenario.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pub(crate) system: String,
    /// (seconds since the load began, concurrency, completions per second over the last sample)
    pub(crate) samples: Vec<(f64, f64, f64)>,
}

/// A step in arrival rate to a handler that awaits a fixed duration: concurrency against
/// Little's law, time to reach it, overshoot, and scale-in after the load stops.
pub(crate) async fn autoscale(sizes: Sizes) -> (Vec<Row>, Vec<Curve>, f64) {
    let per_sec = 20_000.0;
    let hold = Duration::from_millis(10);
    let nominal = littles_law(per_sec, hold);
    let tick = Duration::from_millis(1);
    let per_tick = (per_sec * tick.as_secs_f64()).round() as u64;
    let ticks = (sizes.autoscale_load.as_secs_f64() / tick.as_secs_f64()) as u64;
    let events = per_tick * ticks;
    let min_instances = 2;
    let idle = Duration::from_millis(500);
    let mut rows = Vec::new();
    let mut curves = Vec::new();

    // nimbus: async invocations; concurrency is the function's busy instances. The handler
    // measures how long it really holds (a timer rounds its sleep up), for Little's law.
    let runtime = Runtime::default();
    let done = Arc::new(AtomicU64::new(0));
    let held_ns = Arc::new(AtomicU64::new(0));
    let handle = runtime
        .register(
            Function::new(
                "hold",
                handler_fn({
                    let (done, held_ns) = (Arc::clone(&done), Arc::clone(&held_ns));
                    move |_n: u64, _ctx: Context| {
                        let (done, held_ns) = (Arc::clone(&done), Arc::clone(&held_ns));
                        async move {
                            let began = Instant::now();
                            tokio::time::sleep(hold).await;
                            held_ns.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            done.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, FunctionError>(())
                        }
                    }
                }),
            )
            .with_min_instances(min_instances)
            .with_idle_timeout(idle),
        )
        .await
        .expect("register");
    let start = Instant::now();
    let producer = tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0;
            for _ in 0..ticks {
                interval.tick().await;
                for _ in 0..per_tick {
                    let _ = handle.invoke_async(sent);
                    sent += 1;
                }
            }
        }
    });
    let mut scaled_in_after = None;
    let samples = sample_curve(start, sizes.autoscale_load + Duration::from_secs(3), |t| {
        let m = handle.metrics();
        let completed = done.load(Ordering::Relaxed);
        let settled = t > sizes.autoscale_load
            && completed >= events
            && m.instances <= min_instances as usize;
        if settled {
            scaled_in_after = Some(t.saturating_sub(sizes.autoscale_load));
        }
        (m.concurrency as f64, completed, settled)
    })
    .await;
    let _ = producer.await;
    // Little's law with the arrival rate and the time in the system actually achieved.
    let completed = done.load(Ordering::Relaxed).max(1);
    let held = Duration::from_nanos(held_ns.load(Ordering::Relaxed) / completed);
    let target = littles_law(events as f64 / sizes.autoscale_load.as_secs_f64(), held);
    let steady: Vec<(Duration, f64)> = samples
        .iter()
        .filter(|(t, ..)| *t <= sizes.autoscale_load)
        .map(|(t, c, _)| (*t, *c))
        .collect();
    let fit = scaling_fit(&steady, target);
    let took = sizes.autoscale_load;
    rows.push(
        Row::throughput("autoscale", "nimbus", done.load(Ordering::Relaxed), took)
            .with("little_target", target)
            .with("nominal_target", nominal)
            .with("measured_hold_ms", held.as_secs_f64() * 1e3)
            .with(
                "reached_ms",
                fit.reached_after.map(|d| d.as_secs_f64() * 1e3),
            )
            .with("overshoot_pct", fit.overshoot * 100.0)
            .with("peak_concurrency", fit.peak)
            .with(
                "scale_in_ms",
                scaled_in_after.map(|d| d.as_secs_f64() * 1e3),
            )
            .with("idle_timeout_ms", idle.as_secs_f64() * 1e3),
    );
    curves.push(Curve {
        system: "nimbus".into(),
        samples: samples
            .iter()
            .map(|(t, c, x)| (t.as_secs_f64(), *c, *x))
            .collect(),
    });
    runtime.shutdown(Duration::from_secs(1)).await;

    // Tokio spawn per event: concurrency is the tasks in flight.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let producer = tokio::spawn({
        let (in_flight, done) = (Arc::clone(&in_flight), Arc::clone(&done));
        async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..ticks {
                interval.tick().await;
                for _ in 0..per_tick {
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let (in_flight, done) = (Arc::clone(&in_flight), Arc::clone(&done));
                    tokio::spawn(async move {
                        tokio::time::sleep(hold).await;
                        done.fetch_add(1, Ordering::Relaxed);
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }
        }
    });
    let samples = sample_curve(
        start,
        sizes.autoscale_load + Duration::from_millis(100),
        |_| {
            (
                in_flight.load(Ordering::Relaxed) as f64,
                done.load(Ordering::Relaxed),
                false,
            )
        },
    )
    .await;
    let _ = producer.await;
    let steady: Vec<(Duration, f64)> = samples
        .iter()
        .filter(|(t, ..)| *t <= sizes.autoscale_load)
        .map(|(t, c, _)| (*t, *c))
        .collect();
    let fit = scaling_fit(&steady, target);
    rows.push(
        Row::throughput(
            "autoscale",
            "tokio spawn per event",
            done.load(Ordering::Relaxed),
            took,
        )
        .with("little_target", target)
        .with(
            "reached_ms",
            fit.reached_after.map(|d| d.as_secs_f64() * 1e3),
        )
        .with("overshoot_pct", fit.overshoot * 100.0)
        .with("peak_concurrency", fit.peak),
    );
    curves.push(Curve {
        system: "tokio spawn per event".into(),
        samples: samples
            .iter()
            .map(|(t, c, x)| (t.as_secs_f64(), *c, *x))
            .collect(),
    });
    (rows, curves, target)
}

/// Samples (time since `start`, concurrency, completions per second) every 5 ms until `limit`
/// or until `probe` (returning concurrency, completions so far, and whether to stop) says so.
async fn sample_curve(
    start: Instant,
    limit: Duration,
    mut probe: impl FnMut(Duration) -> (f64, u64, bool),
) -> Vec<(Duration, f64, f64)> {
    let mut samples = Vec::new();
    let (mut last_done, mut last_t) = (0, Duration::ZERO);
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = start.elapsed();
        let (concurrency, completed, stop) = probe(t);
        samples.push((t, concurrency, rate(completed - last_done, t - last_t)));
        (last_done, last_t) = (completed, t);
        if stop {
            break;
        }
    }
    samples
}

/// CPU time (user + system) of this process so far, from /proc.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident memory of this process, in MB, from /proc.
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// N functions and M mappings registered and idle: CPU time used and memory.
pub(crate) async fn idle(sizes: Sizes) -> Vec<Row> {
    let measure =
        |label: &'static str, functions: usize, mappings: usize| async move {
            let runtime = Runtime::new(RuntimeConfig::default().with_concurrency_limit(100_000))
                .expect("config");
            let rss_before = rss_mb();
            let mut handles = Vec::new();
            for i in 0..functions {
                handles.push(
                runtime
                    .register_native(Function::new(
                        format!("f{i}"),
                        handler_fn(|batch: nimbus::sources::QueueBatch, _ctx: Context| async move {
                            std::hint::black_box(batch);
                            Ok::<_, FunctionError>(nimbus::sources::BatchResponse::success())
                        }),
                    ))
                    .await
                    .expect("register"),
            );
            }
            let mut running = Vec::new();
            for i in 0..mappings {
                let queue = Arc::new(InMemoryQueue::new(QueueConfig::default()).expect("queue"));
                let function = handles[i % handles.len().max(1)].clone();
                let config = QueueMappingConfig::new(format!("m{i}")).with_initial_concurrency(1);
                running.push(QueueMapping::start(queue, function, config).expect("mapping"));
            }
            // Let start-up settle (pollers reach their long poll), then measure.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu_before = cpu_time();
            tokio::time::sleep(sizes.idle_for).await;
            let cpu = match (cpu_before, cpu_time()) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            };
            let rss = rss_mb();
            for mapping in &running {
                mapping.stop(Duration::from_secs(1)).await;
            }
            runtime.shutdown(Duration::from_secs(1)).await;
            let cpu_pct = cpu.map(|c| c.as_secs_f64() / sizes.idle_for.as_secs_f64() * 100.0);
            Row::throughput("idle", label, 0, sizes.idle_for)
                .with("functions", functions as u64)
                .with("mappings", mappings as u64)
                .with("cpu_pct_of_one_core", cpu_pct)
                .with("rss_mb", rss)
                .with(
                    "rss_growth_mb",
                    match (rss_before, rss) {
                        (Some(a), Some(b)) => Some(b - a),
                        _ => None,
                    },
                )
        };
    vec![
        measure("nimbus", sizes.idle_functions, sizes.idle_mappings).await,
        measure("empty runtime", 0, 0).await,
    ]
}
