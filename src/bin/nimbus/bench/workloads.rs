//! nimbus's side of the benchmark workloads (feature `peers`), shared by the criterion benches
//! and `nimbus bench` so that both measure the same thing as the [`super::peers`] baselines:
//! a no-op handler that counts its events, timed from the first submission to the last event.
//!
//! Not library API: the binary declares it beside [`super::peers`], and each bench in
//! `benches/` includes both files with `#[path]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::sources::{
    BatchResponse, InMemoryQueue, InMemoryStream, Outgoing, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig,
    StreamResponse,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};

use super::peers::Countdown;

/// The Tokio runtime the benches measure on: two workers, as the machines the figures are
/// quoted for have two cores.
///
/// # Panics
///
/// If Tokio cannot start.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Queues `events` async invocations of a no-op function and waits until all have run.
///
/// # Panics
///
/// If the runtime refuses the function or an event, which a benchmark cannot recover from.
pub async fn invoke_async_noop(events: u64) -> Duration {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("default config");
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
            .with_async_queue_capacity(
                usize::try_from(events)
                    .unwrap_or(usize::MAX)
                    .clamp(1, 10_000_000),
            ),
        )
        .await
        .expect("register");
    let start = Instant::now();
    for i in 0..events {
        handle.invoke_async(i).expect("the queue has room");
    }
    countdown.wait().await;
    let elapsed = start.elapsed();
    runtime.shutdown(Duration::from_secs(1)).await;
    elapsed
}

/// Fills an in-memory queue with `records` messages, then times a mapping (default scaling)
/// draining it in batches of `batch_size` through a no-op handler, until every record has been
/// handled and deleted.
///
/// # Panics
///
/// If a configuration is refused, which a benchmark cannot recover from.
pub async fn queue_drain(records: u64, batch_size: usize) -> Duration {
    let runtime = Runtime::default();
    let countdown = Countdown::new(records);
    let function = runtime
        .register_native(Function::new(
            "noop",
            handler_fn({
                let countdown = Arc::clone(&countdown);
                move |batch: QueueBatch, _ctx: Context| {
                    for _ in &batch.records {
                        countdown.tick();
                    }
                    async { Ok::<_, FunctionError>(BatchResponse::success()) }
                }
            }),
        ))
        .await
        .expect("register");
    let queue = Arc::new(
        InMemoryQueue::new(
            QueueConfig::default()
                .with_capacity(usize::try_from(records).unwrap_or(usize::MAX).max(1)),
        )
        .expect("queue config"),
    );
    queue
        .send_batch(
            (0..records)
                .map(|i| Outgoing::new(i.to_string()))
                .collect::<Vec<_>>(),
        )
        .expect("room for every record");
    let mut config = QueueMappingConfig::new("bench").with_batch_size(batch_size);
    if batch_size > 10 {
        config = config.with_batching_window(Duration::from_millis(1));
    }
    let start = Instant::now();
    let mapping = QueueMapping::start(Arc::clone(&queue), function, config).expect("mapping");
    countdown.wait().await;
    while !queue.is_empty() {
        tokio::task::yield_now().await;
    }
    let elapsed = start.elapsed();
    mapping.stop(Duration::from_secs(5)).await;
    runtime.shutdown(Duration::from_secs(1)).await;
    elapsed
}

/// Writes `records` keyed records to a stream of `shards` shards, then times a stream mapping
/// with `factor` lanes per shard draining them in batches of 100 through a no-op handler.
///
/// # Panics
///
/// If a configuration is refused, which a benchmark cannot recover from.
pub async fn stream_drain(records: u64, shards: usize, factor: u32) -> Duration {
    let runtime = Runtime::default();
    let countdown = Countdown::new(records);
    let function = runtime
        .register_native(Function::new(
            "noop",
            handler_fn({
                let countdown = Arc::clone(&countdown);
                move |batch: StreamBatch, _ctx: Context| {
                    for _ in &batch.records {
                        countdown.tick();
                    }
                    async { Ok::<_, FunctionError>(StreamResponse::success()) }
                }
            }),
        ))
        .await
        .expect("register");
    let stream = Arc::new(
        InMemoryStream::new(StreamConfig::default().with_shards(shards)).expect("stream config"),
    );
    for i in 0..records {
        stream
            .put(&format!("key-{}", i % 1_000), i.to_string())
            .expect("an open shard");
    }
    let config = StreamMappingConfig::new("bench").with_parallelization_factor(factor);
    let start = Instant::now();
    let mapping = StreamMapping::builder(stream, function, config)
        .in_memory_store()
        .start()
        .expect("mapping");
    countdown.wait().await;
    let elapsed = start.elapsed();
    mapping.stop(Duration::from_secs(5)).await;
    runtime.shutdown(Duration::from_secs(1)).await;
    elapsed
}
