//! Closed-loop throughput: sync invoke, async invoke, queue and stream mappings, each beside
//! its peers.

use std::time::{Duration, Instant};

use nimbus::{Context, Function, Handler, Runtime, RuntimeConfig};

use super::{interleaved, measure, noop, Measure, Sizes};
use crate::bench::peers;
use crate::bench::stats::Row;
use crate::bench::workloads;

/// Runs `total` operations split over `callers` tasks; returns the wall time.
pub(super) async fn closed_loop<F, Fut>(total: u64, callers: u64, op: F) -> Duration
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
/// invocations. Each call gets a clone of a context built once per task: nimbus builds the
/// parts of a context (the function's and the instance's scopes, the ARN) once and shares them
/// into each invocation's context, where a fresh detached context would allocate them all.
async fn direct_boxed_calls(total: u64, callers: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let share = share(total, callers, c);
            tokio::spawn(async move {
                let mut handler: Box<dyn Handler<u64, u64>> = Box::new(noop());
                let built = Context::detached("noop", Duration::from_secs(3));
                for i in 0..share {
                    let ctx = built.clone();
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

/// Sync invoke of a no-op function, closed loop, on 1 and 8 callers, beside a task spawned per
/// call answering on a oneshot and the handler called directly.
pub(crate) async fn invoke(sizes: &Sizes) -> Vec<Row> {
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
        let nimbus = measure(move || {
            let h = h.clone();
            closed_loop(n, callers, move |i| {
                let h = h.clone();
                async move {
                    std::hint::black_box(h.invoke(i).await.ok());
                }
            })
        });
        let spawn = measure(move || {
            closed_loop(n, callers, |i| async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _ = tx.send(std::hint::black_box(i));
                });
                std::hint::black_box(rx.await.ok());
            })
        });
        let direct = measure(move || direct_boxed_calls(n, callers));
        let systems = vec![
            ("nimbus", nimbus),
            ("tokio spawn+oneshot", spawn),
            ("direct boxed call", direct),
        ];
        rows.extend(interleaved(&scenario, n, sizes.reps, systems).await);
    }
    runtime.shutdown(Duration::from_secs(1)).await;
    rows
}

/// The peers of a job queue: apalis `MemoryStorage` and a Tokio mpsc pool of 2 workers, each
/// draining `n` no-op jobs.
fn queue_peers(n: u64) -> [(&'static str, Measure); 2] {
    [
        (
            "apalis MemoryStorage",
            measure(move || peers::apalis_memory_storage(n)),
        ),
        (
            "tokio mpsc pool (2)",
            measure(move || peers::tokio_mpsc_pool(n, 2)),
        ),
    ]
}

/// Async invoke throughput against apalis, an mpsc pool and spawn-per-event.
pub(crate) async fn async_invoke(sizes: &Sizes) -> Vec<Row> {
    let n = sizes.events;
    let mut systems = vec![("nimbus", measure(move || workloads::invoke_async_noop(n)))];
    systems.extend(queue_peers(n));
    systems.push((
        "tokio spawn per event",
        measure(move || peers::tokio_spawn_per_event(n)),
    ));
    interleaved("async", n, sizes.reps, systems).await
}

/// In-memory queue -> mapping -> no-op handler at batch sizes 1, 10, 100, each batch size
/// interleaved with its own measurements of the peers draining the same number of jobs.
pub(crate) async fn queue(sizes: &Sizes) -> Vec<Row> {
    let n = sizes.events;
    let mut rows = Vec::new();
    for batch in [1usize, 10, 100] {
        let mut systems = vec![("nimbus", measure(move || workloads::queue_drain(n, batch)))];
        systems.extend(queue_peers(n));
        let scenario = format!("queue/batch_{batch}");
        rows.extend(interleaved(&scenario, n, sizes.reps, systems).await);
    }
    rows
}

/// In-memory stream -> stream mapping -> no-op handler, for shards x parallelization factor,
/// each interleaved with its own measurements of the peers draining the same number of jobs.
pub(crate) async fn stream(sizes: &Sizes) -> Vec<Row> {
    let n = sizes.events;
    let mut rows = Vec::new();
    for (shards, factor) in [(1usize, 1u32), (4, 1), (4, 4)] {
        let mut systems = vec![(
            "nimbus",
            measure(move || workloads::stream_drain(n, shards, factor)),
        )];
        systems.extend(queue_peers(n));
        let scenario = format!("stream/{shards}x{factor}");
        let mut group = interleaved(&scenario, n, sizes.reps, systems).await;
        if let Some(nimbus) = group.first_mut() {
            nimbus.extra.insert("shards".into(), (shards as u64).into());
            nimbus
                .extra
                .insert("parallelization_factor".into(), u64::from(factor).into());
        }
        rows.extend(group);
    }
    rows
}
