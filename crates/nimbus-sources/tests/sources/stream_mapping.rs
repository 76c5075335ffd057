//! Stream mappings: order, checkpoints, retries, bisect, record age, partial responses,
//! parallelization, tumbling windows, resharding, metrics and build-time checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Backoff, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, Position, Sequence,
    StreamBatch, StreamCondition, StreamConfig, StreamFailure, StreamFunction, StreamMapping,
    StreamMappingConfig, StreamResponse, StreamSource,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::support::{eventually, runtime};

const LIMIT: Duration = Duration::from_secs(3_600);

/// Every handled batch: (shard, data of each record, window state if any, is_final).
pub(crate) type Log = Arc<Mutex<Vec<(String, Vec<String>, Option<serde_json::Value>, bool)>>>;

/// A stream function: records whose data starts with `bad` fail the batch while their
/// attempt count (per sequence) is below `bad_attempts`; `item:` records are reported as item
/// failures once; windows count records into the state.
pub(crate) async fn recorder(rt: &Runtime, name: &str, bad_attempts: u32) -> (StreamFunction, Log) {
    let log: Log = Arc::default();
    let seen: Arc<Mutex<HashMap<Sequence, u32>>> = Arc::default();
    let handle = rt
        .register(Function::new(
            name,
            handler_fn({
                let (log, seen) = (log.clone(), seen.clone());
                move |batch: StreamBatch, _ctx: Context| {
                    let (log, seen) = (log.clone(), seen.clone());
                    async move {
                        let data: Vec<String> = batch
                            .records
                            .iter()
                            .map(|r| r.data_str().unwrap().to_owned())
                            .collect();
                        let window = batch.window.clone();
                        log.lock().push((
                            batch.shard_id.to_string(),
                            data.clone(),
                            window.as_ref().map(|w| w.state.clone()),
                            window.as_ref().is_some_and(|w| w.is_final),
                        ));
                        let mut item_failures = Vec::new();
                        for r in &batch.records {
                            let attempt = {
                                let mut seen = seen.lock();
                                let n = seen.entry(r.sequence.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            let text = r.data_str().unwrap();
                            if text.starts_with("bad") && attempt <= bad_attempts {
                                return Err(FunctionError::msg(format!("bad record {text}")));
                            }
                            if text.starts_with("item:") && attempt == 1 {
                                item_failures.push(r.sequence.clone());
                            }
                        }
                        let mut response = StreamResponse::failures(item_failures);
                        if let Some(w) = window {
                            let count = w.state.as_u64().unwrap_or(0) + batch.records.len() as u64;
                            response = response.with_state(serde_json::json!(count));
                        }
                        Ok::<_, FunctionError>(response)
                    }
                }
            }),
        ))
        .await
        .unwrap();
    (handle, log)
}

fn handled(log: &Log) -> Vec<String> {
    log.lock()
        .iter()
        .flat_map(|(_, data, ..)| data.clone())
        .collect()
}

pub(crate) async fn one_shard() -> (Arc<InMemoryStream>, Arc<str>) {
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    (stream, shard)
}

pub(crate) fn fast_retries(config: StreamMappingConfig) -> StreamMappingConfig {
    config.with_retry_backoff(Backoff::fixed(Duration::from_secs(1)).unwrap())
}

#[tokio::test(start_paused = true)]
async fn records_are_handled_in_order_and_checkpointed() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "ordered", 0).await;
    let (stream, shard) = one_shard().await;
    for i in 0..25 {
        stream.put("k", format!("r{i}")).unwrap();
    }
    let checkpoints = Arc::new(InMemoryStreamStore::new());
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("ordered").with_batch_size(10),
    )
    .store(checkpoints.clone())
    .start()
    .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 25).await;
    assert_eq!(
        handled(&log),
        (0..25).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
    let m = mapping.metrics();
    assert_eq!(m.batches, 3);
    let last = stream
        .read(&shard, Position::TrimHorizon, 100, Duration::ZERO)
        .await
        .unwrap()
        .records
        .last()
        .unwrap()
        .sequence
        .clone();
    eventually(LIMIT, || {
        mapping.metrics().shards[&*shard].checkpoint.as_ref() == Some(&last)
    })
    .await;
    assert_eq!(
        checkpoints.get("ordered", &shard).await.unwrap(),
        Some(Checkpoint::At(last))
    );
    mapping.stop(Duration::from_secs(1)).await;

    // A new mapping with the same store resumes after the checkpoint.
    stream.put("k", "r25").unwrap();
    let (function, log) = recorder(&rt, "ordered-again", 0).await;
    let again = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("ordered"),
    )
    .store(checkpoints.clone())
    .start()
    .unwrap();
    eventually(LIMIT, || again.metrics().records == 1).await;
    assert_eq!(handled(&log), ["r25"]);
    again.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn latest_and_at_timestamp_starting_positions() {
    let rt = runtime();
    let (stream, _shard) = one_shard().await;
    stream.put("k", "before").unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mark = nimbus_sources::stream_now();
    stream.put("k", "after-mark").unwrap();

    let (function, log) = recorder(&rt, "latest", 0).await;
    let latest = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("latest").with_starting_position(Position::Latest),
    )
    .in_memory_store()
    .start()
    .unwrap();
    let (function, at_log) = recorder(&rt, "at", 0).await;
    let at = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("at").with_starting_position(Position::AtTimestamp(mark)),
    )
    .in_memory_store()
    .start()
    .unwrap();
    eventually(LIMIT, || at.metrics().records == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stream.put("k", "new").unwrap();
    eventually(LIMIT, || {
        latest.metrics().records == 1 && at.metrics().records == 2
    })
    .await;
    assert_eq!(handled(&log), ["new"]);
    assert_eq!(handled(&at_log), ["after-mark", "new"]);
    latest.stop(Duration::from_secs(1)).await;
    at.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_batch_is_retried_and_blocks_its_shard() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "retry", 2).await;
    let (stream, _shard) = one_shard().await;
    stream.put("k", "ok-1").unwrap();
    stream.put("k", "bad-1").unwrap();
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        fast_retries(StreamMappingConfig::new("retry").with_batch_size(1)),
    )
    .in_memory_store()
    .start()
    .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 2).await;
    stream.put("k", "ok-2").unwrap();
    eventually(LIMIT, || mapping.metrics().records == 3).await;
    // bad-1 failed twice (blocking the shard), then succeeded; ok-2 only after it.
    assert_eq!(handled(&log), ["ok-1", "bad-1", "bad-1", "bad-1", "ok-2"]);
    assert_eq!(mapping.metrics().retries, 2);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn bisect_isolates_the_poison_record_and_exhausted_retries_go_to_on_failure() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "bisect", u32::MAX).await;
    let (stream, shard) = one_shard().await;
    for i in 0..8 {
        stream
            .put(
                "k",
                if i == 5 {
                    "bad".to_owned()
                } else {
                    format!("ok-{i}")
                },
            )
            .unwrap();
    }
    let (tx, mut failures) = mpsc::unbounded_channel::<StreamFailure>();
    let config = fast_retries(
        StreamMappingConfig::new("bisect")
            .with_bisect_on_error(true)
            .with_max_retry_attempts(1),
    );
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .on_failure(tx)
        .start()
        .unwrap();
    let failure = failures.recv().await.unwrap();
    assert_eq!(failure.condition, StreamCondition::RetryAttemptsExhausted);
    assert_eq!(&*failure.shard_id, &*shard);
    assert_eq!(failure.batch_size, 1);
    assert_eq!(failure.first_sequence, failure.last_sequence);
    assert_eq!(failure.records[0].data_str().unwrap(), "bad");
    assert!(failure.error.unwrap().message.contains("bad record"));
    eventually(LIMIT, || mapping.metrics().records == 7).await;
    let m = mapping.metrics();
    // 8 -> 4+4 -> 2+2 -> 1+1: three splits; then the lone poison fails twice (1 retry).
    assert_eq!(m.bisections, 3);
    assert_eq!(m.retries, 2);
    assert_eq!(m.sent_to_on_failure, 1);
    let handled = handled(&log);
    assert_eq!(
        handled.iter().filter(|d| d.as_str() == "bad").count(),
        5,
        "8, 4, 2, 1, 1"
    );
    // Everything is finished, so the checkpoint covers the last record.
    let last = stream
        .read(&shard, Position::TrimHorizon, 100, Duration::ZERO)
        .await
        .unwrap()
        .records
        .last()
        .unwrap()
        .sequence
        .clone();
    eventually(LIMIT, || {
        mapping.metrics().shards[&*shard].checkpoint.as_ref() == Some(&last)
    })
    .await;
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn records_older_than_max_record_age_go_to_on_failure_unhandled() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "aged", u32::MAX).await;
    let (stream, _shard) = one_shard().await;
    stream.put("k", "bad-forever").unwrap();
    let (tx, mut failures) = mpsc::unbounded_channel::<StreamFailure>();
    let config =
        fast_retries(StreamMappingConfig::new("aged").with_max_record_age(Duration::from_secs(60)));
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .on_failure(tx)
        .start()
        .unwrap();
    let failure = failures.recv().await.unwrap();
    assert_eq!(failure.condition, StreamCondition::RecordAgeExceeded);
    assert!(failure.error.is_some(), "the last attempt's error is kept");
    assert!(handled(&log).len() >= 2, "retried until it expired");
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn partial_responses_checkpoint_before_the_lowest_failure_and_retry_from_it() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "partial", 0).await;
    let (stream, shard) = one_shard().await;
    let mut seqs = Vec::new();
    for data in ["a", "b", "item:c", "d"] {
        seqs.push(stream.put("k", data).unwrap().1);
    }
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        fast_retries(StreamMappingConfig::new("partial").with_report_batch_item_failures(true)),
    )
    .in_memory_store()
    .start()
    .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 4).await;
    let batches: Vec<Vec<String>> = log.lock().iter().map(|(_, d, ..)| d.clone()).collect();
    assert_eq!(
        batches,
        vec![vec!["a", "b", "item:c", "d"], vec!["item:c", "d"]]
    );
    eventually(LIMIT, || {
        mapping.metrics().shards[&*shard].checkpoint.as_ref() == Some(&seqs[3])
    })
    .await;
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn tumbling_windows_carry_state_and_end_with_a_final_invocation() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "windows", 0).await;
    let (stream, _shard) = one_shard().await;
    let config = StreamMappingConfig::new("windows")
        .with_tumbling_window(Duration::from_secs(60))
        .with_batch_size(2)
        .with_poll_wait(Duration::from_secs(5));
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    for i in 0..3 {
        stream.put("k", format!("w{i}")).unwrap();
    }
    // Let the window's time run out; the final invocation carries the count.
    eventually(LIMIT, || log.lock().iter().any(|(.., is_final)| *is_final)).await;
    let entries = log.lock().clone();
    let finals: Vec<_> = entries.iter().filter(|e| e.3).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0].2,
        Some(serde_json::json!(3)),
        "state counted every record"
    );
    assert!(
        finals[0].1.is_empty(),
        "the final invocation has no records"
    );
    let states: Vec<_> = entries
        .iter()
        .filter(|e| !e.3)
        .map(|e| e.2.clone())
        .collect();
    assert_eq!(
        states[0],
        Some(serde_json::Value::Null),
        "a window starts with null state"
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn parallelization_keeps_order_per_key() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "parallel", 0).await;
    let (stream, _shard) = one_shard().await;
    for i in 0..60 {
        stream
            .put(&format!("key-{}", i % 6), format!("key-{}:{i}", i % 6))
            .unwrap();
    }
    let config = StreamMappingConfig::new("parallel")
        .with_parallelization_factor(3)
        .with_batch_size(5);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 60).await;
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for data in handled(&log) {
        let (key, n) = data.split_once(':').unwrap();
        per_key
            .entry(key.to_owned())
            .or_default()
            .push(n.parse().unwrap());
    }
    for (key, ns) in per_key {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{key}: {ns:?}");
    }
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn parent_shards_are_finished_before_their_children() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "reshard", 0).await;
    let (stream, shard) = one_shard().await;
    for i in 0..20 {
        stream
            .put(&format!("k{}", i % 5), format!("before-k{}-{i}", i % 5))
            .unwrap();
    }
    let middle = u128::MAX / 2;
    let (left, right) = stream.split(&shard, middle).unwrap();
    for i in 20..40 {
        stream
            .put(&format!("k{}", i % 5), format!("after-k{}-{i}", i % 5))
            .unwrap();
    }
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new("reshard").with_batch_size(7),
    )
    .in_memory_store()
    .start()
    .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 40).await;
    let entries = log.lock().clone();
    let last_parent = entries.iter().rposition(|e| *e.0 == *shard).unwrap();
    let first_child = entries
        .iter()
        .position(|e| *e.0 == *left || *e.0 == *right)
        .unwrap();
    assert!(last_parent < first_child, "the parent was finished first");
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for data in handled(&log) {
        let mut parts = data.rsplitn(2, '-');
        let n: u32 = parts.next().unwrap().parse().unwrap();
        let key = parts.next().unwrap().rsplit('-').next().unwrap().to_owned();
        per_key.entry(key).or_default().push(n);
    }
    for (key, ns) in per_key {
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} in order across the split: {ns:?}"
        );
    }
    eventually(LIMIT, || {
        mapping
            .metrics()
            .shards
            .get(&*shard)
            .is_some_and(|m| m.finished)
    })
    .await;
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn iterator_age_is_the_age_of_the_last_record_of_a_batch() {
    let rt = runtime();
    let (function, _log) = recorder(&rt, "age", 0).await;
    let (stream, _shard) = one_shard().await;
    stream.put("k", "old").unwrap();
    tokio::time::sleep(Duration::from_secs(42)).await;
    let mapping = StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("age"))
        .in_memory_store()
        .start()
        .unwrap();
    eventually(LIMIT, || mapping.metrics().records == 1).await;
    let age = mapping.metrics().iterator_age;
    assert!(
        age >= Duration::from_secs(42) && age < Duration::from_secs(43),
        "{age:?}"
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn build_time_checks() {
    let rt = runtime();
    let (function, _) = recorder(&rt, "checks", 0).await;
    let (stream, _) = one_shard().await;
    let cases = [
        (
            StreamMappingConfig::new("m").with_max_retry_attempts(3),
            "on_failure",
        ),
        (
            StreamMappingConfig::new("m").with_max_record_age(Duration::from_secs(120)),
            "on_failure",
        ),
        (
            StreamMappingConfig::new("m").with_parallelization_factor(11),
            "parallelization_factor",
        ),
        (
            StreamMappingConfig::new("m").with_parallelization_factor(0),
            "parallelization_factor",
        ),
        (
            StreamMappingConfig::new("m").with_batch_size(10_001),
            "batch_size",
        ),
        (
            StreamMappingConfig::new("m").with_max_retry_attempts(-2),
            "max_retry_attempts",
        ),
        (
            StreamMappingConfig::new("m").with_max_batch_bytes(0),
            "max_batch_bytes",
        ),
        (
            StreamMappingConfig::new("m").with_max_batch_bytes(6_291_457),
            "max_batch_bytes",
        ),
        (
            StreamMappingConfig::new("m").with_stream_name("no spaces"),
            "stream_name",
        ),
        (
            StreamMappingConfig::new("m").with_tumbling_window(Duration::from_secs(901)),
            "tumbling_window",
        ),
        (
            StreamMappingConfig::new("m")
                .with_tumbling_window(Duration::from_secs(60))
                .with_parallelization_factor(2),
            "tumbling_window",
        ),
    ];
    for (config, field) in cases {
        let err = StreamMapping::builder(stream.clone(), function.clone(), config)
            .in_memory_store()
            .start()
            .unwrap_err();
        assert_eq!(err.field, field);
    }
    let extended = StreamMappingConfig::new("m")
        .with_parallelization_factor(50)
        .with_extended_parallelization(true);
    assert!(extended.validate(false).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_batching_window_gathers_records_into_one_batch() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "window-batch", 0).await;
    let (stream, _shard) = one_shard().await;
    let config =
        StreamMappingConfig::new("window-batch").with_batching_window(Duration::from_secs(2));
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    stream.put("k", "a").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stream.put("k", "b").unwrap();
    eventually(LIMIT, || mapping.metrics().records == 2).await;
    let batches: Vec<Vec<String>> = log.lock().iter().map(|(_, d, ..)| d.clone()).collect();
    assert_eq!(
        batches,
        vec![vec!["a".to_owned(), "b".to_owned()]],
        "one batch for the window"
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn leases_split_shards_between_owners_without_duplicates() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4)).unwrap());
    for i in 0..200 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    let store = Arc::new(InMemoryStreamStore::new());
    let (f1, log1) = recorder(&rt, "owner-1", 0).await;
    let (f2, log2) = recorder(&rt, "owner-2", 0).await;
    let a = StreamMapping::builder(
        stream.clone(),
        f1,
        StreamMappingConfig::new("shared").with_owner("a"),
    )
    .store(store.clone())
    .start()
    .unwrap();
    let b = StreamMapping::builder(
        stream.clone(),
        f2,
        StreamMappingConfig::new("shared").with_owner("b"),
    )
    .store(store.clone())
    .start()
    .unwrap();
    eventually(LIMIT, || a.metrics().records + b.metrics().records == 200).await;
    let mut all = handled(&log1);
    all.extend(handled(&log2));
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        200,
        "every record once: a shard is read by one owner at a time"
    );
    // The first owner to list took every free shard; the records were handled before its next
    // heartbeat could give half of them to the other owner.
    let shards_a: std::collections::HashSet<_> = log1.lock().iter().map(|e| e.0.clone()).collect();
    let shards_b: std::collections::HashSet<_> = log2.lock().iter().map(|e| e.0.clone()).collect();
    assert!(shards_a.is_disjoint(&shards_b));
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn shards_are_rebalanced_evenly_as_workers_join_and_leave() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(8)).unwrap());
    let store = Arc::new(InMemoryStreamStore::new());
    let start = |owner: &'static str, function: StreamFunction| {
        StreamMapping::builder(
            stream.clone(),
            function,
            StreamMappingConfig::new("shared").with_owner(owner),
        )
        .store(store.clone())
        .start()
        .unwrap()
    };
    let running = |m: &StreamMapping| m.metrics().shards_running;
    let (fa, log_a) = recorder(&rt, "owner-a", 0).await;
    let (fb, log_b) = recorder(&rt, "owner-b", 0).await;
    let (fc, log_c) = recorder(&rt, "owner-c", 0).await;

    let a = start("a", fa);
    eventually(LIMIT, || running(&a) == 8).await;
    let b = start("b", fb);
    eventually(LIMIT, || running(&a) == 4 && running(&b) == 4).await;
    let c = start("c", fc);
    eventually(LIMIT, || {
        let mut counts = [running(&a), running(&b), running(&c)];
        counts.sort_unstable();
        counts == [2, 3, 3]
    })
    .await;
    for i in 0..400 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    eventually(LIMIT, || {
        a.metrics().records + b.metrics().records + c.metrics().records >= 400
    })
    .await;

    // A worker that stops gives its shards back; the others share them again.
    assert!(c.stop(Duration::from_secs(1)).await);
    eventually(LIMIT, || running(&a) == 4 && running(&b) == 4).await;
    for i in 400..600 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    let all = || {
        let mut all = handled(&log_a);
        all.extend(handled(&log_b));
        all.extend(handled(&log_c));
        all.sort();
        all
    };
    eventually(LIMIT, || all().len() >= 600).await;
    // Hand-offs happen between rounds: nothing handled was read again by the next owner.
    let mut distinct = all();
    distinct.dedup();
    assert_eq!((distinct.len(), all().len()), (600, 600));
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_shard_read_from_latest_keeps_its_place_when_handed_off() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4)).unwrap());
    stream.put("old", "before the mapping").unwrap();
    let store = Arc::new(InMemoryStreamStore::new());
    let start = |owner: &'static str, function: StreamFunction| {
        StreamMapping::builder(
            stream.clone(),
            function,
            StreamMappingConfig::new("latest")
                .with_owner(owner)
                .with_starting_position(Position::Latest),
        )
        .store(store.clone())
        .start()
        .unwrap()
    };
    let (fa, log_a) = recorder(&rt, "latest-a", 0).await;
    let (fb, log_b) = recorder(&rt, "latest-b", 0).await;
    let a = start("a", fa);
    eventually(LIMIT, || a.metrics().shards_running == 4).await;
    let b = start("b", fb);
    // Records that arrive after `a` handed two shards off and before `b` took them up must
    // be read by `b`: it starts where `a` stopped, not at a later Latest.
    eventually(LIMIT, || a.metrics().shards_running == 2).await;
    for i in 0..100 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    eventually(LIMIT, || b.metrics().shards_running == 2).await;
    eventually(LIMIT, || {
        handled(&log_a).len() + handled(&log_b).len() >= 100
    })
    .await;
    let mut all = handled(&log_a);
    all.extend(handled(&log_b));
    all.sort();
    assert_eq!(all.len(), 100, "each new record once, none of the old");
    assert!(!all.iter().any(|r| r == "before the mapping"));
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

/// A throttle of the final window invocation is not a failed attempt: the invocation waits
/// for capacity and is retried uncounted, as batches are. Here the first final invocation
/// panics (one failed attempt of the one allowed), and the retry needs a new instance while
/// the scale rate is spent.
#[tokio::test(start_paused = true)]
async fn a_throttled_final_window_invocation_waits_instead_of_giving_up() {
    let rt = runtime();
    let finals = Arc::new(Mutex::new(Vec::<bool>::new()));
    let function = rt
        .register(
            Function::new(
                "window-throttle",
                handler_fn({
                    let finals = finals.clone();
                    move |batch: StreamBatch, _ctx: Context| {
                        let finals = finals.clone();
                        async move {
                            let window = batch.window.clone().expect("a windowed mapping");
                            if window.is_final {
                                let first = finals.lock().is_empty();
                                finals.lock().push(!first);
                                if first {
                                    panic!("the first final invocation fails");
                                }
                            }
                            let count =
                                window.state.as_u64().unwrap_or(0) + batch.records.len() as u64;
                            Ok::<_, FunctionError>(
                                StreamResponse::success().with_state(serde_json::json!(count)),
                            )
                        }
                    }
                }),
            )
            .with_scale_rate(1, Duration::from_secs(300)),
        )
        .await
        .unwrap();
    let (stream, _shard) = one_shard().await;
    let (tx, mut failures) = mpsc::unbounded_channel::<StreamFailure>();
    let config = StreamMappingConfig::new("window-throttle")
        .with_tumbling_window(Duration::from_secs(60))
        .with_max_retry_attempts(1)
        .with_retry_backoff(Backoff::fixed(Duration::from_secs(1)).unwrap());
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .on_failure(tx)
        .start()
        .unwrap();
    stream.put("k", "w0").unwrap();
    eventually(LIMIT, || finals.lock().iter().any(|succeeded| *succeeded)).await;
    assert_eq!(*finals.lock(), vec![false, true]);
    assert!(failures.try_recv().is_err(), "nothing was given up");
    mapping.stop(Duration::from_secs(1)).await;
}
