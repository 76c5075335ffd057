//! The in-memory queue alone: the cost per record of a receive and an acknowledgement (delete),
//! at batch sizes 1, 10 and 100, on one thread (no mapping, no invocation). The queue is filled
//! before each timed drain; only the receives and acks are timed.
//!
//! Run with `cargo bench -p nimbus-sources --bench memory_queue`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use nimbus_sources::{InMemoryQueue, Outgoing, QueueConfig, QueueSource};

/// Records per timed drain.
const RECORDS: usize = 100_000;

/// A queue holding `RECORDS` small messages.
fn filled() -> InMemoryQueue {
    let queue = InMemoryQueue::new(QueueConfig::default().with_capacity(RECORDS))
        .expect("a valid queue config");
    queue
        .send_batch((0..RECORDS).map(|i| Outgoing::new(format!("record {i}"))))
        .expect("room for every record");
    queue
}

/// Receives and acknowledges everything in `queue`, `batch` at a time; returns the time taken.
async fn drain(queue: &InMemoryQueue, batch: usize) -> Duration {
    let start = Instant::now();
    loop {
        let messages = queue.receive(batch, Duration::ZERO).await.expect("receive");
        if messages.is_empty() {
            break;
        }
        let receipts: Vec<_> = messages.iter().map(|m| m.receipt.clone()).collect();
        queue.ack(&receipts).await.expect("current receipts");
    }
    start.elapsed()
}

fn bench_memory_queue(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("memory_queue/receive_ack");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for batch in [1usize, 10, 100] {
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let queue = filled();
                        let took = rt.block_on(drain(&queue, batch));
                        assert!(queue.is_empty(), "the drain deleted every record");
                        took
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_memory_queue(&mut criterion);
    criterion.final_summary();
}
