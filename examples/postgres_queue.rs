//! A queue pipeline on PostgreSQL: jobs in a table, received with `FOR UPDATE SKIP LOCKED`,
//! pollers woken by `LISTEN/NOTIFY`, failures retried and, after three receives, moved to the
//! dead-letter table.
//!
//! Run with `cargo run --release --example postgres_queue` (PostgreSQL at
//! `NIMBUS_POSTGRES_URL`, default `host=127.0.0.1 user=postgres dbname=test`). Two mappings
//! compete for the same table, as two host processes would; the example checks that every job
//! was done (at least once; duplicates are counted) or dead-lettered, and drops its tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus::postgres::{PostgresConfig, PostgresQueue};
use nimbus::sources::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

type Error = Box<dyn std::error::Error + Send + Sync>;

const JOBS: u64 = 2_000;

fn postgres_url() -> String {
    std::env::var("NIMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let name = format!(
        "nimbus_example_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let result = run(&name).await;
    // Leave nothing behind, whatever happened.
    let (client, connection) =
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}_queue; DROP TABLE IF EXISTS {name}_dead;"
        ))
        .await?;
    result
}

async fn run(name: &str) -> Result<(), Error> {
    let config = PostgresConfig::new(postgres_url(), name)
        .with_visibility_timeout(Duration::from_secs(1))
        .with_max_receive_count(3);
    let queue = PostgresQueue::connect(config.clone()).await.map_err(|e| {
        format!(
            "cannot reach PostgreSQL at {} ({e}); start it or set NIMBUS_POSTGRES_URL",
            postgres_url()
        )
    })?;

    // Which worker did each job, and how often; every 100th job fails always.
    let done: Arc<Mutex<HashMap<u64, Vec<&'static str>>>> = Arc::default();
    let runtime = Runtime::default();
    let mut mappings = Vec::new();
    for worker in ["worker-1", "worker-2"] {
        let done = Arc::clone(&done);
        let function = runtime
            .register(
                Function::new(
                    worker,
                    handler_fn(move |batch: QueueBatch, _ctx: Context| {
                        let done = Arc::clone(&done);
                        async move {
                            let mut failures = Vec::new();
                            for record in &batch.records {
                                let job: u64 = record.body_str()?.parse()?;
                                if job % 100 == 99 {
                                    failures.push(record.message_id.clone());
                                    continue;
                                }
                                done.lock()
                                    .map_err(|_| FunctionError::msg("lock poisoned"))?
                                    .entry(job)
                                    .or_default()
                                    .push(worker);
                            }
                            Ok::<_, FunctionError>(BatchResponse::failures(failures))
                        }
                    }),
                )
                // A mapping needs the function's timeout within the visibility timeout.
                .with_timeout(Duration::from_millis(500)),
            )
            .await?;
        // Each mapping has its own connections, as a separate process would.
        let source = PostgresQueue::connect(config.clone()).await?;
        mappings.push(QueueMapping::start(
            source,
            function,
            QueueMappingConfig::new(worker)
                .with_batch_size(50)
                .with_batching_window(Duration::from_millis(10)),
        )?);
    }

    let started = std::time::Instant::now();
    let bodies: Vec<String> = (0..JOBS).map(|job| job.to_string()).collect();
    for chunk in bodies.chunks(100) {
        let chunk: Vec<&[u8]> = chunk.iter().map(|b| b.as_bytes()).collect();
        queue.send_batch(&chunk).await?;
    }
    let failing = JOBS / 100;
    // Wait, with a deadline, until every good job is done and every bad one dead-lettered.
    loop {
        let finished = done.lock().map_err(|_| "lock poisoned")?.len() as u64;
        if finished == JOBS - failing && queue.dead_letters().await? == failing {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("after 60 s: {finished} jobs done").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    for mapping in &mappings {
        mapping.stop(Duration::from_secs(5)).await;
    }

    let done = std::mem::take(&mut *done.lock().map_err(|_| "lock poisoned")?);
    // At least once: a job handled again after its visibility timeout ran out is a
    // duplicate, counted; a job never done would be an error (checked above).
    let duplicates: usize = done.values().map(|workers| workers.len() - 1).sum();
    let mut per_worker: HashMap<&str, usize> = HashMap::new();
    for workers in done.values() {
        *per_worker.entry(workers[0]).or_default() += 1;
    }
    let left = queue.receive(10, Duration::ZERO).await?;
    if !left.is_empty() {
        return Err(format!("{} messages left in the queue", left.len()).into());
    }
    let mut shares: Vec<_> = per_worker.into_iter().collect();
    shares.sort_unstable();
    println!(
        "postgres_queue: {} jobs done by two competing mappings {shares:?} ({duplicates} \
         duplicates), {failing} failing jobs dead-lettered after 3 receives, in {:.0} ms",
        done.len(),
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
