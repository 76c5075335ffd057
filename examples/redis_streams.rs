//! A stream pipeline on Redis Streams, shared by several workers through leases.
//!
//! Run with `cargo run --release --example redis_streams` (Redis at `NIMBUS_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). It appends keyed records to a 4-shard stream, starts two
//! workers — two stream mappings with different owners, as two host processes would — that
//! split the shards through Redis leases and keep their checkpoints there, checks that every
//! record was handled in order per key, and deletes its keys.
//!
//! The same program is the host of the multi-process scale-out test
//! (`tests/scale_out.rs`): `redis_streams worker <key> <owner> <out-file> <redis|postgres>
//! <lease-ttl-ms> <work-ms-per-batch>` runs one worker on an 8-shard stream until its standard
//! input closes, spending the given time on each batch (as real work would) and writing
//! `<nanos> <index> <key> <value>` for each record it handles.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus::redis::{RedisConfig, RedisStream, RedisStreamStore};
use nimbus::sources::{
    CheckpointStore, Position, StreamBatch, StreamFunction, StreamMapping, StreamMappingConfig,
    StreamResponse,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn redis_url() -> String {
    std::env::var("NIMBUS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("NIMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

/// Shards of the stream in worker mode (the scale-out test's layout).
const WORKER_SHARDS: usize = 8;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => demo().await,
        Some("worker") => match &args[1..] {
            [key, owner, out, store, ttl, work] => {
                let work = Duration::from_millis(work.parse()?);
                worker(key, owner, out, store, ttl.parse()?, work).await
            }
            _ => Err(
                "usage: redis_streams worker <key> <owner> <out-file> <redis|postgres> \
                      <lease-ttl-ms> <work-ms-per-batch>"
                    .into(),
            ),
        },
        Some(other) => Err(format!("unknown mode {other:?}; run without arguments").into()),
    }
}

/// Registers a function that works on each batch for `work`, then hands its records, as
/// `(key, value)`, to `sink`.
async fn recorder(
    runtime: &Runtime,
    name: &str,
    work: Duration,
    sink: impl Fn(Vec<(String, String)>) -> Result<(), FunctionError> + Send + Sync + 'static,
) -> Result<StreamFunction, Error> {
    let sink = Arc::new(sink);
    Ok(runtime
        .register(Function::new(
            name,
            handler_fn(move |batch: StreamBatch, _ctx: Context| {
                let sink = Arc::clone(&sink);
                async move {
                    let records = batch
                        .records
                        .iter()
                        .map(|r| Ok((r.partition_key.to_string(), r.data_str()?.to_owned())))
                        .collect::<Result<Vec<_>, FunctionError>>()?;
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    sink(records)?;
                    Ok::<_, FunctionError>(StreamResponse::success())
                }
            }),
        ))
        .await?)
}

/// One worker of the scale-out test: reads its share of the shards until stdin closes.
async fn worker(
    key: &str,
    owner: &str,
    out: &str,
    store: &str,
    ttl_ms: u64,
    work: Duration,
) -> Result<(), Error> {
    let config = RedisConfig::new(redis_url(), key).with_shards(WORKER_SHARDS);
    let stream = RedisStream::connect(config.clone()).await?;
    // Leases and checkpoints live together, so that a checkpoint write can be checked
    // against its writer's lease.
    let store: Arc<dyn CheckpointStore> = match store {
        "redis" => Arc::new(RedisStreamStore::connect(&config).await?),
        "postgres" => {
            Arc::new(nimbus::postgres::PostgresStreamStore::connect(&postgres_url()).await?)
        }
        other => return Err(format!("unknown store {other:?}: redis or postgres").into()),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    let file = Arc::new(std::sync::Mutex::new(file));
    let runtime = Runtime::default();
    let function = recorder(&runtime, "record", work, move |records| {
        // One write per batch, before the batch counts as handled: a SIGKILL loses at most a
        // partial last line, whose records were not checkpointed either.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut text = String::new();
        for (i, (key, value)) in records.iter().enumerate() {
            text.push_str(&format!("{nanos} {i} {key} {value}\n"));
        }
        let mut file = file
            .lock()
            .map_err(|_| FunctionError::msg("output lock poisoned"))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    })
    .await?;
    // The mapping is named after the key, so that runs sharing a lease table stay apart.
    let mapping = StreamMapping::builder(
        stream,
        function,
        StreamMappingConfig::new(key)
            .with_owner(owner)
            .with_lease_ttl(Duration::from_millis(ttl_ms))
            .with_starting_position(Position::TrimHorizon)
            .with_batch_size(10)
            .with_poll_wait(Duration::from_millis(200)),
    )
    .store(store)
    .start()?;
    println!("ready");
    // Runs until the parent closes our stdin; then stops gracefully, giving the leases back.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;
    let stopped = mapping.stop(Duration::from_secs(10)).await;
    runtime.shutdown(Duration::from_secs(5)).await;
    if !stopped {
        return Err("the mapping did not stop within 10 s".into());
    }
    Ok(())
}

const RECORDS: u64 = 4_000;
const KEYS: u64 = 40;

/// The self-checking demo: two workers share a 4-shard stream.
async fn demo() -> Result<(), Error> {
    let key = format!(
        "nimbus-example:{}:{:08x}",
        std::process::id(),
        fastrand::u32(..)
    );
    let config = RedisConfig::new(redis_url(), &key).with_shards(4);
    let stream = RedisStream::connect(config.clone()).await.map_err(|e| {
        format!(
            "cannot reach Redis at {} ({e}); start it or set NIMBUS_REDIS_URL",
            redis_url()
        )
    })?;
    let result = run_demo(&key, &config, &stream).await;
    // Leave nothing behind, whatever happened.
    let client = redis::Client::open(redis_url())?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{key}*"))
        .query_async(&mut con)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut con).await?;
    }
    result
}

async fn run_demo(key: &str, config: &RedisConfig, stream: &RedisStream) -> Result<(), Error> {
    let runtime = Runtime::default();
    let handled: Arc<std::sync::Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut mappings = Vec::new();
    for owner in ["host-1", "host-2"] {
        let log = Arc::clone(&handled);
        let function = recorder(&runtime, owner, Duration::ZERO, move |records| {
            let mut log = log
                .lock()
                .map_err(|_| FunctionError::msg("log lock poisoned"))?;
            for (key, value) in records {
                log.push((key, value.parse()?));
            }
            Ok(())
        })
        .await?;
        // Each worker has its own connections, as a separate process would.
        mappings.push(
            StreamMapping::builder(
                RedisStream::connect(config.clone()).await?,
                function,
                StreamMappingConfig::new(key)
                    .with_owner(owner)
                    .with_lease_ttl(Duration::from_secs(3))
                    .with_starting_position(Position::TrimHorizon)
                    .with_parallelization_factor(4),
            )
            .store(RedisStreamStore::connect(config).await?)
            .start()?,
        );
    }
    let started = std::time::Instant::now();
    for i in 0..RECORDS {
        let k = i % KEYS;
        stream
            .put(&format!("user-{k}"), (i / KEYS).to_string().as_bytes())
            .await?;
    }
    // Each worker drains the shards it reads (a shard the other holds is the other's), with a
    // deadline; then the handler's own record of the work says whether every record was seen.
    let drained = async {
        for mapping in &mappings {
            mapping.drained().await?;
        }
        Ok::<_, nimbus::sources::DrainError>(())
    };
    match tokio::time::timeout(Duration::from_secs(60), drained).await {
        Ok(result) => result?,
        Err(_) => return Err("the workers did not drain the stream within 60 s".into()),
    }
    let seen = distinct_count(&handled.lock().map_err(|_| "log lock poisoned")?);
    if seen < RECORDS as usize {
        return Err(format!("drained, but only {seen} of {RECORDS} records were handled").into());
    }
    let elapsed = started.elapsed();
    let shares: Vec<usize> = mappings.iter().map(|m| m.metrics().shards.len()).collect();
    for mapping in &mappings {
        mapping.stop(Duration::from_secs(5)).await;
    }
    let handled = std::mem::take(&mut *handled.lock().map_err(|_| "log lock poisoned")?);
    // Order per key: each key's values first arrive 0, 1, 2, ...; a value seen again (a replay
    // after a shard changed hands) is a duplicate, allowed by at-least-once and counted.
    let mut next = std::collections::HashMap::<String, u64>::new();
    let mut duplicates = 0;
    for (key, value) in &handled {
        let want = next.entry(key.clone()).or_default();
        if *value < *want {
            duplicates += 1;
        } else if *value == *want {
            *want += 1;
        } else {
            return Err(format!("{key}: got {value} before {want}: order broken").into());
        }
    }
    let distinct: u64 = next.values().sum();
    if distinct != RECORDS || next.len() != KEYS as usize {
        return Err(format!("handled {distinct} distinct records of {} keys", next.len()).into());
    }
    println!(
        "redis_streams: {RECORDS} records over {KEYS} keys on 4 Redis shards, all handled in \
         order per key by two workers (shards read: {shares:?}, duplicates: {duplicates}) in \
         {:.0} ms",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

fn distinct_count(handled: &[(String, u64)]) -> usize {
    handled
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
}
