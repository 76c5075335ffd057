//! Records per second through an in-memory queue -> queue mapping -> no-op handler, at batch
//! sizes 1, 10 and 100, with the mapping's default scaling.
//!
//! Run with `cargo bench --bench queue`.

use std::time::Duration;

use criterion::{Criterion, Throughput};

// The benchmark harness shared with `nimbus bench` (not library API).
#[path = "../src/bin/nimbus/bench/peers.rs"]
pub mod peers;
#[path = "../src/bin/nimbus/bench/workloads.rs"]
pub mod workloads;

/// Records per measured run.
const RECORDS: u64 = 200_000;

fn bench_queue(c: &mut Criterion) {
    let rt = workloads::bench_runtime();
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
                            tokio::spawn(workloads::queue_drain(RECORDS, batch_size))
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
