//! Closed-loop throughput: sync invoke, async invoke, queue and stream mappings, each beside
//! its peers.

use std::time::{Duration, Instant};

use nimbus::{Context, Function, Handler, Runtime, RuntimeConfig};

use super::{noop, Sizes};
use crate::bench::peers;
use crate::bench::stats::Row;
use crate::bench::workloads;

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
            let share = share(total, callers, c);
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

/// Caller `c`'s part of `total` operations split over `callers`.
fn share(total: u64, callers: u64, c: u64) -> u64 {
    total / callers + u64::from(c < total % callers)
}

/// The floor of a sync invoke: `total` calls of the boxed handler split over `callers` tasks,
/// each boxing its handler once and calling it in a loop, as nimbus keeps an instance between
/// invocations. A `Context` per call stays: nimbus builds one per invocation too.
async fn direct_boxed_calls(total: u64, callers: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let share = share(total, callers, c);
            tokio::spawn(async move {
                let mut handler: Box<dyn Handler<u64, u64>> = Box::new(noop());
                for i in 0..share {
                    let ctx = Context::detached("noop", Duration::from_secs(3));
                    std::hint::black_box(handler.call(i, ctx).await.ok());
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
        let took = direct_boxed_calls(n, callers).await;
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
