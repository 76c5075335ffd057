//! Records per second through an in-memory queue -> queue mapping -> no-op handler, at batch
//! sizes 1, 10 and 100, with the mapping's default scaling.
//!
//! Run with `cargo bench --bench queue`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, InMemoryQueue, Outgoing, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig,
};
use tokio::sync::Notify;

/// Records per measured run.
const RECORDS: u64 = 200_000;

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Fills a queue with `records` messages, then times a mapping draining it through a no-op
/// handler until every record has been handled and deleted.
async fn drain(records: u64, batch_size: usize) -> Duration {
    let runtime = Runtime::default();
    let handled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let function = runtime
        .register_native(Function::new(
            "noop",
            handler_fn({
                let (handled, done) = (handled.clone(), done.clone());
                move |batch: QueueBatch, _ctx: Context| {
                    let n = batch.records.len() as u64;
                    if handled.fetch_add(n, std::sync::atomic::Ordering::AcqRel) + n >= records {
                        done.notify_one();
                    }
                    async { Ok::<_, FunctionError>(BatchResponse::success()) }
                }
            }),
        ))
        .await
        .expect("register");
    let queue = Arc::new(
        InMemoryQueue::new(QueueConfig::default().with_capacity(records as usize))
            .expect("queue config"),
    );
    let fill = Instant::now();
    queue
        .send_batch((0..records).map(|i| Outgoing::new(i.to_string())))
        .expect("room for every record");
    let fill = fill.elapsed();
    let mut config = QueueMappingConfig::new("bench").with_batch_size(batch_size);
    if batch_size > 10 {
        config = config.with_batching_window(Duration::from_millis(1));
    }
    let start = Instant::now();
    let mapping = QueueMapping::start(queue.clone(), function, config).expect("mapping");
    done.notified().await;
    while !queue.is_empty() {
        tokio::task::yield_now().await;
    }
    let elapsed = start.elapsed();
    if std::env::var_os("NIMBUS_BENCH_DEBUG").is_some() {
        eprintln!("fill {fill:?} drain {elapsed:?} {:?}", mapping.metrics());
    }
    mapping.stop(Duration::from_secs(5)).await;
    runtime.shutdown(Duration::from_secs(1)).await;
    elapsed
}

fn bench_queue(c: &mut Criterion) {
    let rt = tokio_runtime();
    let mut group = c.benchmark_group("queue/in_memory_noop");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_secs(1));
    for batch_size in [1usize, 10, 100] {
        group.bench_function(format!("batch_{batch_size}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        rt.block_on(async {
                            tokio::spawn(drain(RECORDS, batch_size))
                                .await
                                .expect("task")
                        })
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_queue(&mut criterion);
    criterion.final_summary();
}
