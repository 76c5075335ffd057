//! Async invoke throughput of a no-op function, beside apalis 1.0 `MemoryStorage`, a Tokio
//! mpsc worker pool and Tokio spawn-per-event processing the same number of no-op jobs.
//!
//! Run with `cargo bench --features peers --bench invoke_async`. Target: at least 2× apalis
//! and 2× spawn-per-event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nimbus::peers::{self, Countdown};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};

/// Jobs per measured batch.
const BATCH: u64 = 100_000;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Queues `events` async invocations of a no-op function and waits until all have run.
async fn nimbus_async(events: u64) -> Duration {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("config");
    let countdown = Countdown::new(events);
    let handle = runtime
        .register(
            Function::new(
                "noop",
                handler_fn({
                    let countdown = Arc::clone(&countdown);
                    move |n: u64, _ctx: Context| {
                        std::hint::black_box(n);
                        countdown.tick();
                        async { Ok::<_, FunctionError>(()) }
                    }
                }),
            )
            .with_async_queue_capacity(events as usize),
        )
        .await
        .expect("register");
    let start = Instant::now();
    for i in 0..events {
        handle.invoke_async(i).expect("queue has room");
    }
    countdown.wait().await;
    let elapsed = start.elapsed();
    if std::env::var_os("NIMBUS_BENCH_DEBUG").is_some() {
        eprintln!("{:?}", handle.metrics());
    }
    runtime.shutdown(Duration::from_secs(1)).await;
    elapsed
}

fn bench_async(c: &mut Criterion) {
    let rt = tokio_runtime();
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
    run("nimbus_invoke_async", |n| Box::pin(nimbus_async(n)));
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
