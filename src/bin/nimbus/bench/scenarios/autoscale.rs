//! Autoscale: a step in arrival rate to a handler that holds for a fixed time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

use super::Sizes;
use crate::bench::stats::{littles_law, rate, scaling_fit, Row};

/// Concurrency over time of one system in the autoscale scenario.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pub(crate) system: String,
    /// (seconds since the load began, concurrency, completions per second over the last sample)
    pub(crate) samples: Vec<(f64, f64, f64)>,
}

/// A step in arrival rate to a handler that awaits a fixed duration: concurrency against
/// Little's law, time to reach it, overshoot, and scale-in after the load stops.
pub(crate) async fn autoscale(sizes: &Sizes) -> (Vec<Row>, Vec<Curve>, f64) {
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
