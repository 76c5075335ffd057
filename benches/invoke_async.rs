//! Async invoke throughput of a no-op function, beside apalis 1.0 `MemoryStorage`, a Tokio
//! mpsc worker pool and Tokio spawn-per-event processing the same number of no-op jobs.
//!
//! Run with `cargo bench --features peers --bench invoke_async`. Target: at least 2× apalis
//! and 2× spawn-per-event.

use std::time::Duration;

use criterion::{Criterion, Throughput};

// The benchmark harness shared with `nimbus bench` (not library API).
#[path = "../src/bin/nimbus/bench/peers.rs"]
pub mod peers;
#[path = "../src/bin/nimbus/bench/workloads.rs"]
pub mod workloads;

/// Jobs per measured batch.
const BATCH: u64 = 100_000;

fn bench_async(c: &mut Criterion) {
    let rt = workloads::bench_runtime();
    let mut group = c.benchmark_group("invoke_async/noop");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    let mut run = |name: &str,
                   f: fn(
        u64,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Duration> + Send>,
    >| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(async { tokio::spawn(f(BATCH)).await.expect("task") }))
                    .sum()
            })
        });
    };
    run("nimbus_invoke_async", |n| {
        Box::pin(workloads::invoke_async_noop(n))
    });
    run("apalis_memory_storage", |n| {
        Box::pin(peers::apalis_memory_storage(n))
    });
    run("apalis_drain_only", |n| {
        Box::pin(peers::apalis_memory_storage_drain_only(n))
    });
    run("tokio_mpsc_pool_2", |n| {
        Box::pin(peers::tokio_mpsc_pool(n, 2))
    });
    run("tokio_spawn_per_event", |n| {
        Box::pin(peers::tokio_spawn_per_event(n))
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_async(&mut criterion);
    criterion.final_summary();
}
