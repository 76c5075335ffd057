//! Open-loop latency: time from enqueue to handler start at fixed arrival rates (10,000/s and
//! 100,000/s) and at fractions of nimbus's measured async capacity (10 % and 50 % by default,
//! `--rate-fraction`).
//!
//! Capacity is the median of `reps` runs of the async-capacity probe. At each rate nimbus and a
//! Tokio mpsc worker run `reps` times, interleaved (the order rotated each repetition); each
//! row reports the median over repetitions of p50, p99 and p99.9, and nimbus's row the ratio
//! of its p99 to the mpsc worker's (`p99_vs_mpsc`). A task spawned per event runs only at the
//! rates up to 10,000/s: remote spawns onto a single-threaded runtime fall behind at higher
//! rates, where its figures would be queueing time, not latency. Each run starts with a warm-up
//! of a tenth of its events, left out of the figures.
//!
//! Each system under test runs on a single-threaded Tokio runtime of its own thread while the
//! open-loop sender spins on another thread, so that each has one core of a 2-core machine (a
//! multi-threaded runtime beside a spinning sender would measure the OS scheduler's slices).
//! `sender_late_p99_us` (the median over repetitions of the p99 of how late the sender sent)
//! tells whether the open loop kept its schedule: a late send counts in the event's latency,
//! and comes either from other work on a shared machine taking the sender's core or from the
//! system's enqueue call taking longer than the interval between events.
//!
//! `cpu_us_per_event` is the CPU time (user and system) the system's own thread used per event,
//! from the sender's start to the last event (warm-up included, set-up and shutdown not): what
//! serving events at that rate costs beside the sender's enqueue calls.
//! On a shared 2-core machine a thread that needs more CPU is more often runnable while
//! something else holds its core, which is where most of a run's tail comes from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

use super::record::Latencies;
use super::Sizes;
use crate::bench::stats::{median, percentile_us, rate, round1, round2, Row};
use crate::bench::workloads;

/// The fixed arrival rates, per second.
const FIXED_RATES: [f64; 2] = [10_000.0, 100_000.0];

/// The highest rate at which the spawn-per-event peer runs.
const SPAWN_MAX_RATE: f64 = 10_000.0;

/// Sends `count` events from a dedicated thread at `per_sec`, each at its scheduled time
/// (open loop: the sender never waits for the system), calling `send(index, scheduled)`.
/// The thread returns how late (ns) it sent each event (see the module doc).
fn open_loop(
    count: u64,
    per_sec: f64,
    send: impl Fn(u64, Instant) + Send + 'static,
) -> std::thread::JoinHandle<Histogram<u64>> {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let _runtime = handle.enter();
        let mut late = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("bounds");
        let start = Instant::now();
        for i in 0..count {
            let due = start + Duration::from_secs_f64(i as f64 / per_sec);
            let mut now = Instant::now();
            while now < due {
                std::hint::spin_loop();
                now = Instant::now();
            }
            let _ = late.record((now - due).as_nanos().max(1) as u64);
            send(i, due);
        }
        late
    })
}

/// Runs `work` on a single-threaded Tokio runtime of its own thread (see the module doc).
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

/// The systems measured at each rate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum System {
    /// `invoke_async` from the sender thread; the handler records when it starts.
    Nimbus,
    /// A Tokio unbounded mpsc channel into one worker task.
    MpscWorker,
    /// A task spawned per event.
    SpawnPerEvent,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            Self::Nimbus => "nimbus",
            Self::MpscWorker => "tokio mpsc worker",
            Self::SpawnPerEvent => "tokio spawn per event",
        }
    }
}

/// One repetition of one system: wall time and p50 / p99 / p99.9 in µs.
#[derive(Debug, Clone, Copy)]
struct Sample {
    took: Duration,
    p50: f64,
    p99: f64,
    p999: f64,
    /// p99 of how late the sender sent, in µs.
    sender_late_p99: f64,
    /// CPU time of the measuring thread per event, in µs.
    cpu_per_event: f64,
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Runs `count` events at `per_sec` through `system` once, after a warm-up of a tenth as many
/// (at the same rate, left out of the figures): the first events would otherwise measure the
/// system's start (a fresh thread, nimbus's first instance) rather than its steady state.
async fn once(system: System, count: u64, per_sec: f64) -> Sample {
    let warm_up = count / 10;
    let count = count + warm_up;
    on_own_thread(move || async move {
        let base = Instant::now();
        let lat = Latencies::new(base, count);
        let due_ns = move |due: Instant| due.duration_since(base).as_nanos() as u64;
        let start = Instant::now();
        let mut runtime = None;
        let mut worker = None;
        // Read when the system is set up, as its sender starts.
        let cpu_before;
        let sender = match system {
            System::Nimbus => {
                let rt = Runtime::default();
                let handle = rt
                    .register(
                        Function::new(
                            "timed",
                            handler_fn({
                                let lat = Arc::clone(&lat);
                                move |(i, due): (u64, u64), _ctx: Context| {
                                    lat.started(i, due);
                                    async { Ok::<_, FunctionError>(()) }
                                }
                            }),
                        )
                        .with_async_queue_capacity(count as usize),
                    )
                    .await
                    .expect("register");
                runtime = Some(rt);
                cpu_before = thread_cpu();
                open_loop(count, per_sec, move |i, due| {
                    let _ = handle.invoke_async((i, due_ns(due)));
                })
            }
            System::MpscWorker => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
                let lat = Arc::clone(&lat);
                worker = Some(tokio::spawn(async move {
                    while let Some((i, due)) = rx.recv().await {
                        lat.started(i, due);
                    }
                }));
                cpu_before = thread_cpu();
                open_loop(count, per_sec, move |i, due| {
                    let _ = tx.send((i, due_ns(due)));
                })
            }
            System::SpawnPerEvent => {
                let lat = Arc::clone(&lat);
                cpu_before = thread_cpu();
                open_loop(count, per_sec, move |i, due| {
                    let (lat, due) = (Arc::clone(&lat), due_ns(due));
                    tokio::spawn(async move { lat.started(i, due) });
                })
            }
        };
        lat.countdown.wait().await;
        // The time of the measured events only, at the set rate.
        let took = start
            .elapsed()
            .saturating_sub(Duration::from_secs_f64(warm_up as f64 / per_sec));
        let late = sender.join().ok();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        // Before the shutdown, which is no part of serving the events.
        let cpu = thread_cpu().saturating_sub(cpu_before);
        if let Some(runtime) = runtime {
            runtime.shutdown(Duration::from_secs(1)).await;
        }
        let h = lat.histogram(warm_up as usize);
        Sample {
            took,
            p50: percentile_us(&h, 0.50),
            p99: percentile_us(&h, 0.99),
            p999: percentile_us(&h, 0.999),
            sender_late_p99: late.map_or(f64::NAN, |late| percentile_us(&late, 0.99)),
            cpu_per_event: cpu.as_secs_f64() * 1e6 / count as f64,
        }
    })
    .await
}

/// Open loop at fixed rates and at fractions of nimbus's measured async capacity.
pub(crate) async fn latency(sizes: &Sizes) -> Vec<Row> {
    let probe = sizes.events.min(200_000);
    let mut capacities = Vec::with_capacity(sizes.reps);
    for _ in 0..sizes.reps {
        capacities.push(
            on_own_thread(
                move || async move { rate(probe, workloads::invoke_async_noop(probe).await) },
            )
            .await,
        );
    }
    let capacity = median(&capacities);
    let mut rates: Vec<(String, f64)> = FIXED_RATES
        .iter()
        .map(|r| (format!("latency/{}k/s", r / 1e3), *r))
        .collect();
    for fraction in &sizes.rate_fractions {
        rates.push((
            format!("latency/{}%cap", round1(fraction * 100.0)),
            (capacity * fraction).max(1.0),
        ));
    }
    let mut rows = Vec::new();
    for (scenario, per_sec) in rates {
        let count = ((per_sec * sizes.latency_window.as_secs_f64()) as u64).clamp(1_000, 2_000_000);
        let mut systems = vec![System::Nimbus, System::MpscWorker];
        if per_sec <= SPAWN_MAX_RATE {
            systems.push(System::SpawnPerEvent);
        }
        let mut samples = vec![Vec::with_capacity(sizes.reps); systems.len()];
        for rep in 0..sizes.reps {
            for k in 0..systems.len() {
                let i = (rep + k) % systems.len();
                samples[i].push(once(systems[i], count, per_sec).await);
            }
        }
        let mut group: Vec<Row> = systems
            .iter()
            .zip(&samples)
            .map(|(system, samples)| {
                let of = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
                let p99s = samples.iter().map(|s| s.p99);
                let took = Duration::from_secs_f64(of(|s| s.took.as_secs_f64()));
                let mut row = Row::throughput(&scenario, system.name(), count, took)
                    .at_set_rate()
                    .with("rate_per_sec", round1(per_sec))
                    .with("reps", samples.len() as u64)
                    .with(
                        "p99_min_us",
                        round1(p99s.clone().fold(f64::INFINITY, f64::min)),
                    )
                    .with("p99_max_us", round1(p99s.fold(0.0, f64::max)))
                    .with("sender_late_p99_us", round1(of(|s| s.sender_late_p99)))
                    .with("cpu_us_per_event", round2(of(|s| s.cpu_per_event)));
                row.p50_us = Some(of(|s| s.p50));
                row.p99_us = Some(of(|s| s.p99));
                row.p999_us = Some(of(|s| s.p999));
                row
            })
            .collect();
        let p99_mpsc = group.get(1).and_then(|r| r.p99_us);
        if let (Some(nimbus), Some(mpsc)) = (group.first_mut(), p99_mpsc) {
            let p99 = nimbus.p99_us.unwrap_or(f64::NAN);
            nimbus.extra.insert(
                "p99_vs_mpsc".into(),
                ((p99 / mpsc * 100.0).round() / 100.0).into(),
            );
            nimbus
                .extra
                .insert("capacity_per_sec".into(), round1(capacity).into());
        }
        rows.extend(group);
    }
    rows
}
