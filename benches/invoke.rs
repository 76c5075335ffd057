//! Sync invoke of a no-op function, against a direct boxed call of the same handler and a
//! `tokio::spawn` + oneshot round trip, on one caller and on many concurrent callers.
//!
//! Run with `cargo bench --bench invoke`. Target: a nimbus invoke costs at most 2× a spawn +
//! oneshot round trip.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nimbus::{handler_fn, Context, Function, FunctionError, Handler, Runtime, RuntimeConfig};

// The benchmark harness shared with `nimbus bench` (not library API).
#[path = "../src/bin/nimbus/bench/peers.rs"]
pub mod peers;
#[path = "../src/bin/nimbus/bench/workloads.rs"]
pub mod workloads;

const CALLERS: u64 = 8;

fn noop() -> impl Handler<u64, u64> + Clone + Sync {
    handler_fn(|n: u64, _ctx: Context| async move { Ok::<_, FunctionError>(n) })
}

/// Splits `iters` over `callers` tasks, each running `caller(share)`, and returns the wall time.
fn timed<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, callers: u64, caller: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let loops: Vec<_> = (0..callers)
        .map(|c| caller(iters / callers + u64::from(c < iters % callers)))
        .collect();
    rt.block_on(async move {
        let start = Instant::now();
        let tasks: Vec<_> = loops.into_iter().map(tokio::spawn).collect();
        for t in tasks {
            t.await.expect("caller task");
        }
        start.elapsed()
    })
}

fn bench_invoke(c: &mut Criterion) {
    let rt = workloads::bench_runtime();
    let nimbus_rt = rt.block_on(async {
        Runtime::new(RuntimeConfig::default().with_concurrency_limit(10_000)).expect("config")
    });
    let handle = rt
        .block_on(nimbus_rt.register(Function::new("noop", noop())))
        .expect("register");

    for callers in [1, CALLERS] {
        let mut group = c.benchmark_group(format!("invoke/{callers}_callers"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));

        group.bench_function("boxed_call", |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, callers, |share| async move {
                    let mut handler: Box<dyn Handler<u64, u64>> = Box::new(noop());
                    let ctx = Context::detached("noop", Duration::from_secs(3));
                    for i in 0..share {
                        black_box(handler.call(black_box(i), ctx.clone()).await.ok());
                    }
                })
            })
        });
        group.bench_function("spawn_oneshot", |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, callers, |share| async move {
                    for i in 0..share {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tokio::spawn(async move {
                            let _ = tx.send(black_box(i));
                        });
                        black_box(rx.await.ok());
                    }
                })
            })
        });
        group.bench_function("nimbus_invoke", |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, callers, |share| {
                    let handle = handle.clone();
                    async move {
                        for i in 0..share {
                            black_box(handle.invoke(black_box(i)).await.ok());
                        }
                    }
                })
            })
        });
        group.finish();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_invoke(&mut criterion);
    criterion.final_summary();
}
