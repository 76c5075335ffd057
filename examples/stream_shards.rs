//! A stream pipeline: keyed records on a 4-shard stream, processed with parallelization
//! factor 3 and injected failures; checks order per key and the counts.
//!
//! Some records fail on their first two attempts (the batch is retried and its shard waits);
//! a few always fail and, after three retries, go to the on-failure destination. Run with
//! `cargo run --release --example stream_shards`; it checks its own results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus::sources::{
    InMemoryStream, Sequence, StreamBatch, StreamConfig, StreamFailure, StreamMapping,
    StreamMappingConfig, StreamResponse,
};
use nimbus::{handler_fn, Backoff, Context, Function, FunctionError, Runtime};

/// Records handled, as (key, number), in the order the handler saw them.
#[derive(Default)]
struct Log(Mutex<Vec<(String, u64)>>);

impl Log {
    fn push(&self, key: String, n: u64) {
        self.0.lock().expect("log lock").push((key, n));
    }
    fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.0.lock().expect("log lock"))
    }
}

const RECORDS: u64 = 20_000;
const KEYS: u64 = 50;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let handled = Arc::new(Log::default());
    let attempts: Arc<Mutex<HashMap<Sequence, u32>>> = Arc::default();
    let process = runtime
        .register(Function::new(
            "process",
            handler_fn({
                let (handled, attempts) = (handled.clone(), attempts.clone());
                move |batch: StreamBatch, _ctx: Context| {
                    let (handled, attempts) = (handled.clone(), attempts.clone());
                    async move {
                        let mut parsed = Vec::new();
                        for record in &batch.records {
                            let (key, n) = record
                                .data_str()?
                                .split_once(':')
                                .ok_or_else(|| FunctionError::msg("no ':'"))?;
                            let n: u64 = n.parse()?;
                            let attempt = {
                                let mut a = attempts.lock().expect("attempts lock");
                                let slot = a.entry(record.sequence.clone()).or_default();
                                *slot += 1;
                                *slot
                            };
                            // Every 997th record is poison; every 101st fails twice, then works.
                            if n % 997 == 996 || (n % 101 == 100 && attempt <= 2) {
                                return Err(FunctionError::new("Injected", format!("record {n}")));
                            }
                            parsed.push((key.to_owned(), n));
                        }
                        for (key, n) in parsed {
                            handled.push(key, n);
                        }
                        Ok::<_, FunctionError>(StreamResponse::success())
                    }
                }
            }),
        ))
        .await?;

    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4))?);
    for n in 0..RECORDS {
        stream.put(
            &format!("device-{}", n % KEYS),
            format!("device-{}:{n}", n % KEYS),
        )?;
    }
    println!("wrote {RECORDS} records for {KEYS} keys to 4 shards");

    let (on_failure, mut failures) = tokio::sync::mpsc::unbounded_channel::<StreamFailure>();
    let mapping = StreamMapping::builder(
        stream.clone(),
        process,
        StreamMappingConfig::new("devices")
            .with_parallelization_factor(3)
            .with_batch_size(100)
            .with_bisect_on_error(true)
            .with_max_retry_attempts(3)
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(10)).unwrap()),
    )
    .in_memory_store()
    .on_failure(on_failure)
    .start()?;

    let poison = (0..RECORDS).filter(|n| n % 997 == 996).count() as u64;
    // Every record is in the stream already: once drained, each was handled or sent on.
    if tokio::time::timeout(Duration::from_secs(60), mapping.drained())
        .await
        .is_err()
    {
        return Err(format!("not drained in 60 s: {:?}", mapping.metrics()).into());
    }
    mapping.stop(Duration::from_secs(5)).await;
    let m = mapping.metrics();
    println!(
        "handled {} records in {} batches; {} retries, {} bisections, {} sent to on-failure; iterator age {:?}",
        m.records, m.batches, m.retries, m.bisections, m.sent_to_on_failure, m.iterator_age
    );

    // Order per key: each key's records were handled in increasing order.
    let mut last: HashMap<String, u64> = HashMap::new();
    let log = handled.take();
    for (key, n) in &log {
        if let Some(prev) = last.insert(key.clone(), *n) {
            assert!(*n > prev, "{key}: {n} handled after {prev}");
        }
    }
    let mut failed = 0;
    while let Ok(failure) = failures.try_recv() {
        failed += failure.records.len() as u64;
    }
    assert_eq!(
        failed, poison,
        "exactly the poison records went to on-failure"
    );
    assert_eq!(m.records, RECORDS - poison);
    assert_eq!(
        log.len() as u64,
        RECORDS - poison,
        "each good record handled once"
    );
    runtime.shutdown(Duration::from_secs(1)).await;
    println!("stream_shards: order per key held, {poison} poison records in on-failure; all checks passed");
    Ok(())
}
