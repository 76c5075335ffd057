//! `nimbus bench`: whole-scenario benchmarks of nimbus beside its peers (Tokio spawn-per-event,
//! a Tokio mpsc worker pool, apalis `MemoryStorage`), in the same run, on the same events.
//! criterion benches (`benches/`) stay for the micro level.

#[cfg(feature = "brokers")]
mod brokers;
#[cfg(feature = "http")]
mod http;
pub mod peers;
mod plot;
#[cfg(feature = "process")]
mod process;
mod scenarios;
mod stats;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

use scenarios::Sizes;
use stats::{attach_speedups, Row};

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
    /// Sync invoke of a no-op function, closed loop, 1 and 8 callers.
    Invoke,
    /// Sync invoke by a caller checked against a function policy of six statements with
    /// conditions, beside the same invoke by the host (never checked): what authorisation costs.
    Auth,
    /// Async invoke throughput.
    Async,
    /// In-memory queue -> mapping -> no-op handler, batch sizes 1, 10, 100.
    Queue,
    /// In-memory stream -> mapping -> no-op handler, shards x parallelization factor.
    Stream,
    /// Open loop at 10,000/s, 100,000/s and fractions of capacity: enqueue to handler start,
    /// p50/p99/p99.9, nimbus beside a Tokio mpsc worker.
    Latency,
    /// A step in arrival rate to a handler that awaits a fixed time: concurrency vs λ·d.
    Autoscale,
    /// Functions and mappings registered and idle: CPU time and memory.
    Idle,
    /// Every scenario above, in sequence (not the broker scenarios, which need services).
    All,
    /// Redis: the `RedisQueue` adapter through a mapping vs a raw XREADGROUP/XACK loop
    /// (feature `brokers`).
    Redis,
    /// PostgreSQL: the `PostgresQueue` adapter through a mapping vs a raw SKIP LOCKED loop
    /// (feature `brokers`).
    Postgres,
    /// NATS JetStream: the `NatsQueue` adapter through a mapping vs a raw async-nats pull loop
    /// (feature `brokers`).
    Nats,
    /// Every broker scenario (feature `brokers`).
    Brokers,
    /// Process instances through the Lambda Runtime API: cold start and warm round trip of the
    /// Rust and Python clients beside the same handler in-process (feature `process`).
    Process,
    /// The Invoke API and the gateway over HTTP on loopback beside a bare axum server answering
    /// the same bytes (feature `http`).
    Http,
}

/// Options of `nimbus bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// The scenario.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Small sizes and 3 repetitions: `bench all --quick` in about 30 s.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object per result line instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the autoscale curves (concurrency and throughput over time) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Events per repetition of a throughput measurement (default 1,000,000; 200,000 with
    /// --quick).
    #[arg(long)]
    events: Option<u64>,
    /// Repetitions of every measurement, the systems of a group interleaved within each; rows
    /// report the median (default 5; 3 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Messages per broker scenario run (default 50,000; 5,000 with --quick).
    #[arg(long)]
    broker_events: Option<u64>,
    /// Arrival rates of the latency scenario as fractions of nimbus's measured async capacity,
    /// comma-separated, measured beside the fixed rates of 10,000/s and 100,000/s.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5")]
    rate_fraction: Vec<f64>,
}

impl BenchArgs {
    fn sizes(&self) -> Result<Sizes, String> {
        if let Some(f) = self
            .rate_fraction
            .iter()
            .find(|f| !(**f > 0.0 && **f <= 1.0))
        {
            return Err(format!("--rate-fraction {f} is outside (0, 1]"));
        }
        let reps = self.reps.unwrap_or(if self.quick { 3 } else { 5 });
        if !(1..=50).contains(&reps) {
            return Err(format!("--reps {reps} is outside 1..=50"));
        }
        let events = self
            .events
            .unwrap_or(if self.quick { 200_000 } else { 1_000_000 });
        if !(1_000..=100_000_000).contains(&events) {
            return Err(format!("--events {events} is outside 1000..=100000000"));
        }
        let broker_events = self
            .broker_events
            .unwrap_or(if self.quick { 5_000 } else { 50_000 });
        if !(100..=10_000_000).contains(&broker_events) {
            return Err(format!(
                "--broker-events {broker_events} is outside 100..=10000000"
            ));
        }
        Ok(if self.quick {
            Sizes {
                events,
                reps,
                broker_events,
                latency_window: Duration::from_millis(250),
                rate_fractions: self.rate_fraction.clone(),
                autoscale_load: Duration::from_secs(1),
                idle_for: Duration::from_secs(2),
                idle_functions: 1_000,
                idle_mappings: 1_000,
            }
        } else {
            Sizes {
                events,
                reps,
                broker_events,
                latency_window: Duration::from_secs(1),
                rate_fractions: self.rate_fraction.clone(),
                autoscale_load: Duration::from_secs(3),
                idle_for: Duration::from_secs(10),
                idle_functions: 1_000,
                idle_mappings: 1_000,
            }
        })
    }
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let sizes = args.sizes()?;
    let scenarios: Vec<Scenario> = match args.scenario {
        // Idle first, so that its memory figures are not those of the throughput runs.
        Scenario::All => vec![
            Scenario::Idle,
            Scenario::Invoke,
            Scenario::Auth,
            Scenario::Async,
            Scenario::Queue,
            Scenario::Stream,
            Scenario::Latency,
            Scenario::Autoscale,
        ],
        Scenario::Brokers => vec![Scenario::Redis, Scenario::Postgres, Scenario::Nats],
        one => vec![one],
    };
    let progress = ProgressBar::new(scenarios.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(100));
    let mut rows = Vec::new();
    let mut curves = None;
    for scenario in scenarios {
        progress.set_message(format!("{scenario:?}").to_lowercase());
        match scenario {
            Scenario::Invoke => rows.extend(scenarios::invoke(&sizes).await),
            Scenario::Auth => rows.extend(scenarios::access(&sizes).await),
            Scenario::Async => rows.extend(scenarios::async_invoke(&sizes).await),
            Scenario::Queue => rows.extend(scenarios::queue(&sizes).await),
            Scenario::Stream => rows.extend(scenarios::stream(&sizes).await),
            Scenario::Latency => rows.extend(scenarios::latency(&sizes).await),
            Scenario::Autoscale => {
                let (r, c, target) = scenarios::autoscale(&sizes).await;
                rows.extend(r);
                curves = Some((c, target));
            }
            Scenario::Idle => rows.extend(scenarios::idle(&sizes).await),
            Scenario::Redis | Scenario::Postgres | Scenario::Nats => {
                rows.extend(broker(scenario, sizes.broker_events, sizes.reps).await?);
            }
            Scenario::Process => rows.extend(process(args.quick).await?),
            Scenario::Http => rows.extend(http(args.quick).await?),
            Scenario::All | Scenario::Brokers => {}
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    attach_speedups(&mut rows);

    if args.json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        print_table(&rows);
    }
    if let Some(path) = &args.plot {
        match &curves {
            Some((curves, target)) => {
                plot::autoscale_svg(path, curves, *target)?;
                eprintln!("wrote {}", path.display());
            }
            None => return Err("--plot needs the autoscale scenario (or all)".into()),
        }
    }
    Ok(())
}

#[cfg(feature = "process")]
async fn process(quick: bool) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let sizes = if quick {
        process::ProcessSizes { cold: 5, warm: 200 }
    } else {
        process::ProcessSizes {
            cold: 20,
            warm: 2_000,
        }
    };
    process::run(sizes).await
}

#[cfg(not(feature = "process"))]
async fn process(_quick: bool) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    Err("the process scenario needs the `process` feature: \
         cargo run --release --features process -- bench process"
        .into())
}

#[cfg(feature = "http")]
async fn http(quick: bool) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let sizes = if quick {
        http::HttpSizes {
            connections: 8,
            run: Duration::from_millis(300),
            rounds: 3,
        }
    } else {
        http::HttpSizes {
            connections: 8,
            run: Duration::from_secs(2),
            rounds: 5,
        }
    };
    http::run(sizes).await
}

#[cfg(not(feature = "http"))]
async fn http(_quick: bool) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    Err("the http scenario needs the `http` feature: \
         cargo run --release --features http -- bench http"
        .into())
}

#[cfg(feature = "brokers")]
async fn broker(
    scenario: Scenario,
    n: u64,
    reps: usize,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    match scenario {
        Scenario::Redis => brokers::repeated(reps, || brokers::redis(n)).await,
        Scenario::Postgres => brokers::repeated(reps, || brokers::postgres(n)).await,
        Scenario::Nats => brokers::repeated(reps, || brokers::nats(n)).await,
        _ => Ok(Vec::new()),
    }
}

#[cfg(not(feature = "brokers"))]
async fn broker(
    _scenario: Scenario,
    _n: u64,
    _reps: usize,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    Err("broker scenarios need the `brokers` feature: \
         cargo run --release --features brokers -- bench brokers"
        .into())
}

/// Extra fields shown in columns of their own (or in the caption) rather than in the notes.
const IN_COLUMNS: [&str; 3] = ["reps", "min_per_sec", "max_per_sec"];

fn print_table(rows: &[Row]) {
    if let Some(reps) = rows.iter().find_map(|r| r.extra.get("reps")) {
        println!(
            "events/s and latencies: medians of {reps} repetitions, the systems of a scenario \
             interleaved; min-max: the range of events/s over the repetitions"
        );
    }
    println!(
        "{:<18} {:<22} {:>9} {:>7} {:>9} {:>17} {:>8} {:>8} {:>9} {:>8}  notes",
        "scenario",
        "system",
        "events",
        "seconds",
        "events/s",
        "min-max",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "nimbus ×"
    );
    let fmt_opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    for row in rows {
        let notes: Vec<String> = row
            .extra
            .iter()
            .filter(|(k, v)| !v.is_null() && !IN_COLUMNS.contains(&k.as_str()))
            .map(|(k, v)| match (v.as_f64(), v.as_str()) {
                (Some(f), _) if f.fract() != 0.0 => format!("{k}={f:.1}"),
                (_, Some(text)) => format!("{k}={text}"),
                _ => format!("{k}={v}"),
            })
            .collect();
        let range = match (
            row.extra
                .get("min_per_sec")
                .and_then(serde_json::Value::as_f64),
            row.extra
                .get("max_per_sec")
                .and_then(serde_json::Value::as_f64),
        ) {
            (Some(min), Some(max)) => format!("{}-{}", human(min), human(max)),
            _ => "-".to_owned(),
        };
        println!(
            "{:<18} {:<22} {:>9} {:>7.3} {:>9} {:>17} {:>8} {:>8} {:>9} {:>8}  {}",
            row.scenario,
            row.system,
            row.events,
            row.seconds,
            human(row.events_per_sec),
            range,
            fmt_opt(row.p50_us, 1),
            fmt_opt(row.p99_us, 1),
            fmt_opt(row.p999_us, 1),
            fmt_opt(row.nimbus_speedup, 2),
            notes.join(" ")
        );
    }
}

/// 1234567.0 -> "1.23 M".
fn human(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1} k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}
