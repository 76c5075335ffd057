//! Idle cost: CPU time and memory of registered functions and mappings doing nothing.

use std::sync::Arc;
use std::time::Duration;

use nimbus::sources::{InMemoryQueue, QueueConfig, QueueMapping, QueueMappingConfig};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};

use super::Sizes;
use crate::bench::stats::Row;

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
pub(crate) async fn idle(sizes: &Sizes) -> Vec<Row> {
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
