//! `StreamMapping::drained`: resolves once every record in the stream at the call is handled
//! (or sent on) and checkpointed and nothing is in flight; never on a reader's stale word, and
//! with an error once the mapping stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, MappingStatus, Position,
    StreamBatch, StreamConfig, StreamFunction, StreamMapping, StreamMappingConfig, StreamResponse,
    StreamSource,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::support::runtime;

/// Long enough for anything here on the paused clock; a drained future still pending then is
/// a failure, not a hang.
const LIMIT: Duration = Duration::from_secs(3_600);

/// What the function saw: each record's data, and whether each invocation was a final window.
#[derive(Default)]
struct Seen {
    data: Mutex<Vec<String>>,
    finals: AtomicU64,
}

/// A function that takes `work` per batch and, while `gate` has no permits, waits for one.
async fn function(
    rt: &Runtime,
    name: &str,
    work: Duration,
    gate: Option<Arc<Semaphore>>,
) -> (StreamFunction, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let handle = rt
        .register(Function::new(
            name,
            handler_fn({
                let seen = seen.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    let (seen, gate) = (seen.clone(), gate.clone());
                    async move {
                        if let Some(gate) = gate {
                            let _permit = gate.acquire().await;
                        }
                        tokio::time::sleep(work).await;
                        let window = batch.window.clone();
                        if window.as_ref().is_some_and(|w| w.is_final) {
                            seen.finals.fetch_add(1, Ordering::Relaxed);
                        }
                        seen.data.lock().extend(
                            batch
                                .records
                                .iter()
                                .map(|r| r.data_str().unwrap().to_owned()),
                        );
                        let mut response = StreamResponse::success();
                        if window.is_some() {
                            response = response.with_state(serde_json::json!(1));
                        }
                        Ok::<_, FunctionError>(response)
                    }
                }
            }),
        ))
        .await
        .unwrap();
    (handle, seen)
}

async fn drained(mapping: &StreamMapping) {
    tokio::time::timeout(LIMIT, mapping.drained())
        .await
        .expect("drained within the limit")
        .expect("the mapping runs");
}

/// The last sequence number of each shard, by shard id.
async fn ends(stream: &InMemoryStream) -> Vec<(Arc<str>, Option<Checkpoint>)> {
    let mut ends = Vec::new();
    for shard in stream.shards().await.unwrap() {
        let read = stream
            .read(&shard.id, Position::TrimHorizon, 10_000, Duration::ZERO)
            .await
            .unwrap();
        let last = read
            .records
            .last()
            .map(|r| Checkpoint::At(r.sequence.clone()));
        ends.push((shard.id, last));
    }
    ends
}

#[tokio::test(start_paused = true)]
async fn every_record_present_at_the_call_is_handled_and_checkpointed() {
    let rt = runtime();
    let (function, seen) = function(&rt, "all", Duration::from_millis(5), None).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(3)).unwrap());
    for i in 0..300 {
        stream
            .put(&format!("k{}", i % 17), format!("r{i}"))
            .unwrap();
    }
    let store = Arc::new(InMemoryStreamStore::new());
    let config = StreamMappingConfig::new("all")
        .with_parallelization_factor(2)
        .with_batch_size(7);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .store(store.clone())
        .start()
        .unwrap();
    drained(&mapping).await;
    assert_eq!(seen.data.lock().len(), 300);
    for (shard, end) in ends(&stream).await {
        let checkpoint = store.get("all", &shard).await.unwrap();
        if end.is_some() {
            assert_eq!(checkpoint, end, "{shard} checkpointed to its last record");
        }
    }
    mapping.stop(Duration::from_secs(1)).await;
}

/// A reader that was caught up before the call does not count: records put just before the
/// call are read and handled before it resolves.
#[tokio::test(start_paused = true)]
async fn records_put_just_before_the_call_are_not_missed() {
    let rt = runtime();
    let (function, seen) = function(&rt, "again", Duration::from_millis(5), None).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap());
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("again"))
            .in_memory_store()
            .start()
            .unwrap();
    drained(&mapping).await;
    assert!(seen.data.lock().is_empty());
    for round in 1..=5 {
        for i in 0..50 {
            stream
                .put(&format!("k{i}"), format!("{round}-{i}"))
                .unwrap();
        }
        // No yield between the puts and the call: every reader is still caught up from before.
        drained(&mapping).await;
        assert_eq!(seen.data.lock().len(), round * 50);
    }
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_in_flight_holds_it_back() {
    let rt = runtime();
    let gate = Arc::new(Semaphore::new(0));
    let (function, seen) = function(&rt, "slow", Duration::ZERO, Some(gate.clone())).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    stream.put("k", "slow").unwrap();
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("slow"))
            .in_memory_store()
            .start()
            .unwrap();
    let waiting = tokio::spawn(mapping.drained());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!waiting.is_finished(), "resolved with a batch in flight");
    gate.add_permits(1);
    tokio::time::timeout(LIMIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(*seen.data.lock(), ["slow"]);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn an_open_tumbling_window_is_closed_first() {
    let rt = runtime();
    let (function, seen) = function(&rt, "window", Duration::ZERO, None).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    stream.put("k", "w").unwrap();
    let config = StreamMappingConfig::new("window").with_tumbling_window(Duration::from_secs(60));
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    drained(&mapping).await;
    assert_eq!(*seen.data.lock(), ["w"]);
    assert_eq!(
        seen.finals.load(Ordering::Relaxed),
        1,
        "the window was closed"
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn children_of_a_split_are_drained_too() {
    let rt = runtime();
    let (function, seen) = function(&rt, "split", Duration::from_millis(5), None).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let parent = stream.shards().await.unwrap()[0].id.clone();
    for i in 0..20 {
        stream.put(&format!("k{i}"), format!("before-{i}")).unwrap();
    }
    stream.split(&parent, u128::MAX / 2).unwrap();
    for i in 0..20 {
        stream.put(&format!("k{i}"), format!("after-{i}")).unwrap();
    }
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("split"))
            .in_memory_store()
            .start()
            .unwrap();
    drained(&mapping).await;
    assert_eq!(seen.data.lock().len(), 40);
    assert!(mapping.metrics().shards[&*parent].finished);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn each_worker_drains_the_shards_it_reads() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4)).unwrap());
    let store = Arc::new(InMemoryStreamStore::new());
    let mut workers = Vec::new();
    let mut logs = Vec::new();
    for owner in ["a", "b"] {
        let (function, seen) = function(&rt, owner, Duration::from_millis(5), None).await;
        let config = StreamMappingConfig::new("shared").with_owner(owner);
        workers.push(
            StreamMapping::builder(stream.clone(), function, config)
                .store(store.clone())
                .start()
                .unwrap(),
        );
        logs.push(seen);
    }
    for i in 0..200 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    for worker in &workers {
        drained(worker).await;
    }
    let mut all: Vec<String> = logs.iter().flat_map(|s| s.data.lock().clone()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200);
    for worker in &workers {
        worker.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_mapping_that_stops_first_says_so() {
    let rt = runtime();
    let gate = Arc::new(Semaphore::new(0));
    let (function, _seen) = function(&rt, "stops", Duration::ZERO, Some(gate)).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    stream.put("k", "never handled").unwrap();
    let mapping =
        StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("stops"))
            .in_memory_store()
            .start()
            .unwrap();
    let waiting = tokio::spawn(mapping.drained());
    tokio::time::sleep(Duration::from_secs(1)).await;
    mapping.stop(Duration::from_millis(100)).await;
    let error = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(error.status, MappingStatus::Stopped { .. }),
        "{error}"
    );
    assert!(mapping.drained().await.is_err(), "stopped: at once");
}
