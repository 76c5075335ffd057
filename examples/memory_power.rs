//! Memory that buys CPU: the same CPU-bound function at 128, 256, 512 and 1,024 MB, on process
//! instances whose CPU quota the kernel enforces (`memory_mb / 1769` of a vCPU), with the time
//! and the cost of each. As on Lambda, time falls about in proportion to memory while the cost
//! stays about flat.
//!
//! The function is `examples/functions/primes/bootstrap`, a custom runtime in plain Python: all
//! primes ≤ `n`, `rounds` times. Run with
//! `cargo run --release --example memory_power` (`-- --quick` for a short run, `-- --rounds N`).
//! It checks each doubling of memory is at least 1.6× faster (all four sizes are below one
//! vCPU) and exits non-zero otherwise. It needs `python3` and writable cgroups (root on a
//! cgroup v1 or delegated v2 host).

use std::path::Path;
use std::time::Duration;

use nimbus::process::{Enforcement, Limits, ProcessBackend, ProcessConfig};
use nimbus::{InvokeOptions, Prices, Runtime};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: u64 = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).ok_or("--rounds needs a number")?.parse()?,
        None if quick => 30,
        None => 150,
    };
    let n: u64 = 1_000_000;
    // On a shared machine the fastest of a few runs is the one the quota alone decided.
    let repeats = if quick { 3 } else { 1 };
    let function_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/functions/primes");
    let config = ProcessConfig::new(function_dir.join("bootstrap"))
        .with_working_dir(&function_dir)
        .with_limits(Limits::Cgroups);
    if ProcessBackend::<Value, Value>::new(config.clone())?.enforcement() != Enforcement::Cgroup {
        return Err("cgroups are not writable here: the CPU quota cannot be enforced".into());
    }

    let runtime = Runtime::default();
    let prices = Prices::default();
    println!(
        "all primes <= {n}, {rounds} times, on a process instance under its CPU quota \
         (fastest of {repeats})\n"
    );
    println!(
        "{:>8}  {:>9}  {:>11}  {:>10}",
        "Memory", "Time", "Cost", "CPU share"
    );
    let mut times = Vec::new();
    for memory_mb in [128u32, 256, 512, 1024] {
        let name = format!("primes-{memory_mb}");
        let backend = ProcessBackend::<Value, Value>::new(config.clone())?;
        let primes = runtime
            .register(
                backend
                    .into_function(&name)
                    .with_memory_mb(memory_mb)
                    .with_timeout(Duration::from_secs(900)),
            )
            .await?;
        // A warm-up invocation takes the cold start out of the measured ones; the fastest of
        // `repeats` is kept, since a busy machine can only slow an invocation down.
        primes.invoke(json!({"n": 1_000, "rounds": 1})).await?;
        let mut best: Option<nimbus::UsageReport> = None;
        for _ in 0..repeats {
            let invocation = primes
                .invoke_with(json!({"n": n, "rounds": rounds}), InvokeOptions::default())
                .await;
            let answer = invocation.result?;
            if answer["primes"] != 78_498 {
                return Err(format!("{memory_mb} MB counted {} primes", answer["primes"]).into());
            }
            let report = invocation.report.ok_or("a report")?;
            if best.as_ref().is_none_or(|b| report.duration < b.duration) {
                best = Some(report);
            }
        }
        let report = best.ok_or("no invocation")?;
        let seconds = report.duration.as_secs_f64();
        // The cost of that one invocation at Lambda's prices (duration and request).
        let cost = report.billed_duration.as_secs_f64() * f64::from(memory_mb) / 1024.0
            * prices.per_gb_second
            + prices.per_million_requests / 1e6;
        println!(
            "{:>5} MB  {:>7.2} s  ${:>10.8}  {:>9.1} %",
            memory_mb,
            seconds,
            cost,
            f64::from(memory_mb) / 17.69
        );
        times.push((memory_mb, seconds));
        runtime.unregister(&name, Duration::from_secs(5)).await;
    }
    runtime.shutdown(Duration::from_secs(5)).await;

    println!();
    for pair in times.windows(2) {
        let ((small, slow), (large, fast)) = (pair[0], pair[1]);
        let speedup = slow / fast;
        println!("{small} MB -> {large} MB: {speedup:.2}x faster");
        if speedup < 1.6 {
            return Err(
                format!("doubling {small} MB to {large} MB was only {speedup:.2}x faster").into(),
            );
        }
    }
    Ok(())
}
