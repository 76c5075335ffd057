//! Sequence numbers larger than JSON numbers hold: a 56-digit Kinesis-style number and a Redis
//! stream position (`ms << 64 | seq`) go through a stream mapping (batches, partial responses,
//! the on-failure destination, checkpoints) and through `invoke_json` as strings, and come back
//! as the numbers they were.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Backoff, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, Sequence, StreamBatch,
    StreamConfig, StreamFailure, StreamMapping, StreamMappingConfig, StreamResponse, StreamSource,
};
use parking_lot::Mutex;
use serde_json::json;

use crate::support::runtime;

const KINESIS: &str = "49590338271490256608559692538361571095921575989136588898";

/// A Redis stream position: entry `1700000000123-0` is `1700000000123 << 64 | 0`; the stream
/// numbers from the entry after it.
fn redis_position() -> Sequence {
    Sequence::new((1_700_000_000_123u128 << 64) | 1)
}

/// What the mapping's function saw: the batches, and attempts per sequence number.
#[derive(Default)]
struct Seen {
    batches: Vec<StreamBatch>,
    attempts: HashMap<Sequence, u32>,
}

/// A function that reports `item:` records as failed on their first attempt, and `bad` ones
/// always.
async fn partial(rt: &Runtime, name: &str) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    rt.register(Function::new(
        name,
        handler_fn({
            let seen = seen.clone();
            move |batch: StreamBatch, _ctx: Context| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock();
                    seen.batches.push(batch.clone());
                    let mut failed = Vec::new();
                    for record in &batch.records {
                        let attempt = seen.attempts.entry(record.sequence.clone()).or_default();
                        *attempt += 1;
                        let data = record.data_str()?;
                        if data == "bad" || (data.starts_with("item:") && *attempt == 1) {
                            failed.push(record.sequence.clone());
                        }
                    }
                    Ok::<_, FunctionError>(StreamResponse::failures(failed))
                }
            }
        }),
    ))
    .await
    .unwrap();
    seen
}

async fn round_trip(first: Sequence) {
    let rt = runtime();
    let seen = partial(&rt, "numbers").await;
    let stream = Arc::new(
        InMemoryStream::new(StreamConfig::default().with_first_sequence(first.clone())).unwrap(),
    );
    let shard = stream.shards().await.unwrap()[0].id.clone();
    let mut sequences = Vec::new();
    for data in ["a", "item:b", "c", "bad"] {
        sequences.push(stream.put("k", data).unwrap().1);
    }
    assert_eq!(sequences[0], first);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    let function = rt
        .function::<StreamBatch, StreamResponse>("numbers")
        .unwrap();
    let store = Arc::new(InMemoryStreamStore::new());
    let (tx, mut failures) = tokio::sync::mpsc::unbounded_channel::<StreamFailure>();
    let config = StreamMappingConfig::new("numbers")
        .with_report_batch_item_failures(true)
        .with_max_retry_attempts(1)
        .with_retry_backoff(Backoff::fixed(Duration::from_secs(1)).unwrap());
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .store(store.clone())
        .on_failure(tx)
        .start()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3_600), mapping.drained())
        .await
        .unwrap()
        .unwrap();

    // The partial response named `item:b` (and `bad`) by number: the mapping retried from the
    // lower, then gave `bad` up.
    let batches = std::mem::take(&mut seen.lock().batches);
    let data = |batch: &StreamBatch| -> Vec<String> {
        batch
            .records
            .iter()
            .map(|r| r.data_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(data(&batches[0]), ["a", "item:b", "c", "bad"]);
    assert_eq!(data(&batches[1]), ["item:b", "c", "bad"]);
    assert_eq!(batches.len(), 2);
    // `bad` went to the on-failure destination under its own number.
    let failure = failures.try_recv().unwrap();
    assert_eq!(failure.first_sequence, sequences[3]);
    assert_eq!(failure.last_sequence, sequences[3]);
    let failure_json = serde_json::to_value(&failure).unwrap();
    assert_eq!(
        failure_json["KinesisBatchInfo"]["startSequenceNumber"],
        json!(sequences[3].to_string())
    );
    assert_eq!(
        failure_json["nimbus"]["records"][0]["sequence"],
        json!(sequences[3].to_string())
    );
    // The checkpoint is the last record's number, in the metrics and in the store.
    assert_eq!(
        mapping.metrics().shards[&*shard].checkpoint.as_ref(),
        Some(&sequences[3])
    );
    assert_eq!(
        store.get("numbers", &shard).await.unwrap(),
        Some(Checkpoint::At(sequences[3].clone()))
    );
    mapping.stop(Duration::from_secs(1)).await;

    // The first batch as JSON (Lambda's Kinesis event), as a process instance or the HTTP API
    // would see it: sequence numbers are strings.
    let batch = serde_json::to_value(&batches[0]).unwrap();
    assert_eq!(
        batch["Records"][0]["kinesis"]["sequenceNumber"],
        json!(first.to_string())
    );
    let response = rt.invoke_json("numbers", batch).await.unwrap();
    assert_eq!(
        response["batchItemFailures"],
        json!([{ "itemIdentifier": sequences[3].to_string() }]),
        "bad fails by its number; item:b failed once only"
    );
    let parsed: StreamResponse = serde_json::from_value(response).unwrap();
    assert_eq!(parsed.item_failures, [sequences[3].clone()]);
    // A handler elsewhere answers with string sequence numbers.
    let answer = json!({
        "batchItemFailures": [{ "itemIdentifier": sequences[1].to_string() }],
        "state": null
    });
    let parsed: StreamResponse = serde_json::from_value(answer).unwrap();
    assert_eq!(parsed.item_failures, [sequences[1].clone()]);
    // And a fresh record through invoke_json comes back as a failure by its number.
    let mut fresh = serde_json::to_value(&batches[0]).unwrap();
    let next = sequences[3].to_string() + "0";
    let mut record = fresh["Records"][0].clone();
    record["kinesis"]["sequenceNumber"] = json!(next);
    record["kinesis"]["data"] = json!("aXRlbTpuZXc="); // "item:new" in base64
    fresh["Records"] = json!([record]);
    let response = rt.invoke_json("numbers", fresh).await.unwrap();
    assert_eq!(
        response["batchItemFailures"],
        json!([{ "itemIdentifier": next }])
    );
    let parsed: StreamResponse = serde_json::from_value(response).unwrap();
    assert_eq!(parsed.item_failures, [next.parse::<Sequence>().unwrap()]);
}

#[tokio::test(start_paused = true)]
async fn kinesis_sequence_numbers_round_trip() {
    round_trip(KINESIS.parse().unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn redis_stream_positions_round_trip() {
    let position = redis_position();
    assert!(position.as_u128().unwrap() > u128::from(u64::MAX));
    round_trip(position).await;
}
