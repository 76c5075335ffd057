//! Autoscale: a step in arrival rate (20,000 events/s) to a handler that holds for 10 ms, run
//! `reps` times in a row, nimbus then a task spawned per event in each repetition. One row per
//! system and run, judged against issue 19's targets: concurrency reaches 90 % of λ·d within
//! 100 ms; overshoot, on concurrency smoothed over 20 ms windows (the mean of 1 ms samples),
//! at most 10 % above λ·d; and the p99 of the time an event waits for a worker (from
//! `invoke_async`, or the spawn, to the handler's start) at most 2·d. d is the hold measured
//! by the handler (a timer rounds its sleep up), λ the arrival rate achieved.
//!
//! Two figures tell a late timer from a scaler's overshoot: `hold_max_ms`, the longest hold
//! (a handler whose timer fired late stays in flight while events keep arriving), and
//! `sample_gap_max_ms`, the longest gap between two samples of the 1 ms sampler on the same
//! runtime while the load runs.
//!
//! The sender does not make up ticks it missed. When the machine stalls the process for a few
//! milliseconds, every hold ends at once when it resumes; a sender that then sent the missed
//! ticks' events in one burst would start them all at once too, and until they ended, one
//! hold later, the new arrivals would stack on top of them: λ·d plus the burst, a load
//! well above the step's, which any system that starts events without delay would have to
//! meet with as many instances. So after a stall the sender carries on at its rate from where
//! it is, and λ is the rate it achieved over the time it took.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

use super::record::Latencies;
use super::Sizes;
use crate::bench::stats::{
    littles_law, percentile_us, rate, round1, round2, scaling_fit, smoothed, Row,
};

/// Concurrency over time of one system in the autoscale scenario.
#[derive(Debug, Clone)]
pub(crate) struct Curve {
    pub(crate) system: String,
    /// (seconds since the load began, concurrency, completions per second over the last 20 ms)
    pub(crate) samples: Vec<(f64, f64, f64)>,
}

/// The window concurrency is smoothed over before judging overshoot.
const SMOOTHING: Duration = Duration::from_millis(20);

/// The step of load: `per_tick` events every `tick` for `ticks` ticks.
#[derive(Debug, Clone, Copy)]
struct Load {
    hold: Duration,
    tick: Duration,
    per_tick: u64,
    ticks: u64,
    events: u64,
    length: Duration,
}

impl Load {
    /// Sends the load: `per_tick` events at each tick, calling `send` with each event's
    /// number; a tick missed in a stall is not made up (see the module doc). Returns the time
    /// the load took: from the first tick to one tick after the last.
    async fn send(self, mut send: impl FnMut(u64)) -> Duration {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = 0;
        let mut first = None;
        for _ in 0..self.ticks {
            let at = interval.tick().await;
            first.get_or_insert(at);
            for _ in 0..self.per_tick {
                send(sent);
                sent += 1;
            }
        }
        first.map_or(Duration::ZERO, |first| first.elapsed() + self.tick)
    }

    fn new(length: Duration) -> Self {
        let per_sec = 20_000.0;
        let tick = Duration::from_millis(1);
        let per_tick = (per_sec * tick.as_secs_f64()).round() as u64;
        let ticks = (length.as_secs_f64() / tick.as_secs_f64()) as u64;
        Self {
            hold: Duration::from_millis(10),
            tick,
            per_tick,
            ticks,
            events: per_tick * ticks,
            length,
        }
    }
}

/// How long the handlers held, summed and at most: a hold far above the set 10 ms means the
/// runtime's timer fired late (its threads busy, or the machine took the CPU), and events that
/// kept arriving meanwhile raise concurrency above λ·d without any fault of the scaler.
#[derive(Default)]
struct Holds {
    total_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Holds {
    fn record(&self, held: Duration) {
        let ns = held.as_nanos() as u64;
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn mean(&self, completed: u64) -> Duration {
        Duration::from_nanos(self.total_ns.load(Ordering::Relaxed) / completed.max(1))
    }

    fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns.load(Ordering::Relaxed))
    }
}

/// What one run of one system measured.
struct Run {
    completed: u64,
    /// How long the load took to send (its set length, unless the machine stalled).
    sent_over: Duration,
    /// The mean time the handler held, measured.
    held: Duration,
    /// The longest hold.
    held_max: Duration,
    /// (time since the load began, concurrency, completions per second over the last 20 ms)
    samples: Vec<(Duration, f64, f64)>,
    waits: Arc<Latencies>,
    scaled_in_after: Option<Duration>,
}

impl Run {
    /// The row of this run, with its verdict against the targets of the module doc.
    fn row(&self, scenario: &str, system: &str, load: &Load) -> Row {
        let target = littles_law(rate(self.completed, self.sent_over), self.held);
        let steady: Vec<(Duration, f64)> = self
            .samples
            .iter()
            .filter(|(t, ..)| *t <= load.length)
            .map(|(t, c, _)| (*t, *c))
            .collect();
        // How late the sampler's timer was at worst, while the load ran (the window overshoot
        // is judged on).
        let sample_gap_max = steady
            .windows(2)
            .map(|pair| pair[1].0 - pair[0].0)
            .max()
            .unwrap_or_default();
        let raw = scaling_fit(&steady, target);
        let smooth = scaling_fit(&smoothed(&steady, SMOOTHING), target);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let wait_p99_ms = percentile_us(&self.waits.histogram(0), 0.99) / 1e3;
        let wait_limit_ms = 2.0 * ms(self.held);
        let mut failed = Vec::new();
        if raw
            .reached_after
            .is_none_or(|d| d > Duration::from_millis(100))
        {
            failed.push("reach");
        }
        if smooth.overshoot > 0.10 {
            failed.push("overshoot");
        }
        if wait_p99_ms > wait_limit_ms {
            failed.push("wait");
        }
        let verdict = if failed.is_empty() {
            "pass".to_owned()
        } else {
            format!("fail:{}", failed.join("+"))
        };
        Row::throughput(scenario, system, self.completed, load.length)
            .with("little_target", round1(target))
            .with("hold_ms", round2(ms(self.held)))
            .with("reached_ms", raw.reached_after.map(|d| round1(ms(d))))
            .with("overshoot_20ms_pct", round1(smooth.overshoot * 100.0))
            .with("peak_1ms", raw.peak)
            .with("wait_p99_ms", round2(wait_p99_ms))
            .with("wait_limit_ms", round2(wait_limit_ms))
            .with("scale_in_ms", self.scaled_in_after.map(|d| round1(ms(d))))
            .with("hold_max_ms", round2(ms(self.held_max)))
            .with("sample_gap_max_ms", round2(ms(sample_gap_max)))
            .with("verdict", verdict)
            .at_set_rate()
    }

    fn curve(&self, system: &str) -> Curve {
        Curve {
            system: system.into(),
            samples: self
                .samples
                .iter()
                .map(|(t, c, x)| (t.as_secs_f64(), *c, *x))
                .collect(),
        }
    }
}

/// The step `sizes.reps` times; the curves are the first run's, the target its λ·d.
pub(crate) async fn autoscale(sizes: &Sizes) -> (Vec<Row>, Vec<Curve>, f64) {
    let load = Load::new(sizes.autoscale_load);
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    let mut plot_target = 0.0;
    for rep in 1..=sizes.reps.max(1) {
        let scenario = format!("autoscale/{rep}");
        let nimbus = nimbus_run(&load).await;
        let spawn = spawn_run(&load).await;
        let nimbus_row = nimbus.row(&scenario, "nimbus", &load);
        if rep == 1 {
            plot_target = nimbus_row
                .extra
                .get("little_target")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            curves = vec![nimbus.curve("nimbus"), spawn.curve("tokio spawn per event")];
        }
        rows.push(nimbus_row);
        rows.push(spawn.row(&scenario, "tokio spawn per event", &load));
    }
    (rows, curves, plot_target)
}

/// nimbus: async invocations; concurrency is the function's busy instances. Samples until it
/// has scaled back in to `min_instances` after the load (or 3 s past it).
async fn nimbus_run(load: &Load) -> Run {
    let load = *load;
    let min_instances = 2;
    let idle = Duration::from_millis(500);
    let runtime = Runtime::default();
    let waits = Latencies::new(Instant::now(), load.events);
    let done = Arc::new(AtomicU64::new(0));
    let holds = Arc::new(Holds::default());
    let handle = runtime
        .register(
            Function::new(
                "hold",
                handler_fn({
                    let (waits, done, holds) =
                        (Arc::clone(&waits), Arc::clone(&done), Arc::clone(&holds));
                    move |(i, sent_ns): (u64, u64), _ctx: Context| {
                        waits.started(i, sent_ns);
                        let (done, holds) = (Arc::clone(&done), Arc::clone(&holds));
                        async move {
                            let began = Instant::now();
                            tokio::time::sleep(load.hold).await;
                            holds.record(began.elapsed());
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
        let (handle, waits) = (handle.clone(), Arc::clone(&waits));
        load.send(move |sent| {
            let _ = handle.invoke_async((sent, waits.now_ns()));
        })
    });
    let mut scaled_in_after = None;
    let samples = sample_curve(start, load.length + Duration::from_secs(3), |t| {
        let m = handle.metrics();
        let completed = done.load(Ordering::Relaxed);
        let settled =
            t > load.length && completed >= load.events && m.instances <= min_instances as usize;
        if settled {
            scaled_in_after = Some(t.saturating_sub(load.length));
        }
        (m.concurrency as f64, completed, settled)
    })
    .await;
    let sent_over = producer.await.unwrap_or(load.length);
    runtime.shutdown(Duration::from_secs(1)).await;
    let completed = done.load(Ordering::Relaxed);
    Run {
        completed,
        sent_over,
        held: holds.mean(completed),
        held_max: holds.max(),
        samples,
        waits,
        scaled_in_after,
    }
}

/// Tokio spawn per event: concurrency is the tasks in flight; the wait is from the spawn to
/// the task's start.
async fn spawn_run(load: &Load) -> Run {
    let load = *load;
    let waits = Latencies::new(Instant::now(), load.events);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let holds = Arc::new(Holds::default());
    let start = Instant::now();
    let producer = tokio::spawn({
        let (waits, in_flight, done, holds) = (
            Arc::clone(&waits),
            Arc::clone(&in_flight),
            Arc::clone(&done),
            Arc::clone(&holds),
        );
        load.send(move |sent| {
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (waits, in_flight, done, holds) = (
                Arc::clone(&waits),
                Arc::clone(&in_flight),
                Arc::clone(&done),
                Arc::clone(&holds),
            );
            let sent_ns = waits.now_ns();
            tokio::spawn(async move {
                waits.started(sent, sent_ns);
                let began = Instant::now();
                tokio::time::sleep(load.hold).await;
                holds.record(began.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        })
    });
    let samples = sample_curve(start, load.length + Duration::from_millis(100), |_| {
        (
            in_flight.load(Ordering::Relaxed) as f64,
            done.load(Ordering::Relaxed),
            false,
        )
    })
    .await;
    let sent_over = producer.await.unwrap_or(load.length);
    let completed = done.load(Ordering::Relaxed);
    Run {
        completed,
        sent_over,
        held: holds.mean(completed),
        held_max: holds.max(),
        samples,
        waits,
        scaled_in_after: None,
    }
}

/// Samples (time since `start`, concurrency, completions per second over the last 20 ms) every
/// millisecond until `limit` or until `probe` (returning concurrency, completions so far, and
/// whether to stop) says so.
async fn sample_curve(
    start: Instant,
    limit: Duration,
    mut probe: impl FnMut(Duration) -> (f64, u64, bool),
) -> Vec<(Duration, f64, f64)> {
    let mut samples = Vec::new();
    let mut history = vec![(Duration::ZERO, 0u64)];
    let mut back = 0;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < limit {
        interval.tick().await;
        let t = start.elapsed();
        let (concurrency, completed, stop) = probe(t);
        // The completions over the last 20 ms: from the newest sample at least that old.
        while back + 1 < history.len() && t - history[back + 1].0 >= SMOOTHING {
            back += 1;
        }
        let (t0, done0) = history[back];
        samples.push((t, concurrency, rate(completed - done0, t - t0)));
        history.push((t, completed));
        if stop {
            break;
        }
    }
    samples
}
