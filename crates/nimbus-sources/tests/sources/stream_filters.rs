//! Stream mapping filters: records no pattern matches are skipped (checkpointed past, never
//! handed to the function); `data` that is JSON is matched as JSON, other data as a string.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError};
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, Position, StreamBatch,
    StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse, StreamSource,
};
use parking_lot::Mutex;

use crate::support::{eventually, runtime};

const LIMIT: Duration = Duration::from_secs(3_600);

#[tokio::test(start_paused = true)]
async fn records_no_filter_matches_are_skipped_and_checkpointed_past() {
    let rt = runtime();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let function = rt
        .register(Function::new(
            "stream-filtered",
            handler_fn({
                let seen = seen.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    let seen = seen.clone();
                    async move {
                        for r in &batch.records {
                            seen.lock().push(r.data_str().unwrap().to_owned());
                        }
                        Ok::<_, FunctionError>(StreamResponse::default())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    for data in [
        r#"{"type":"order","n":1}"#,
        r#"{"type":"ping"}"#,
        "ERROR disk full",
        "INFO fine",
        r#"{"type":"order","n":2}"#,
        "INFO last, skipped",
    ] {
        stream.put("k", data).unwrap();
    }
    let store = Arc::new(InMemoryStreamStore::new());
    let config = StreamMappingConfig::new("stream-filtered")
        .with_batch_size(2)
        .with_filter(r#"{"data": {"type": ["order"]}}"#)
        .with_filter(r#"{"data": [{"prefix": "ERROR"}]}"#);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .store(store.clone())
        .start()
        .unwrap();
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
        mapping
            .metrics()
            .shards
            .get(&*shard)
            .and_then(|s| s.checkpoint.clone())
            == Some(last.clone())
    })
    .await;
    assert_eq!(
        *seen.lock(),
        [
            r#"{"type":"order","n":1}"#,
            "ERROR disk full",
            r#"{"type":"order","n":2}"#
        ]
    );
    let m = mapping.metrics();
    assert_eq!((m.records, m.filtered), (3, 3));
    assert_eq!(
        store.get("stream-filtered", &shard).await.unwrap(),
        Some(Checkpoint::At(last))
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stream_filters_are_checked_when_the_mapping_is_built() {
    for (pattern, field) in [
        (r#"{"body": {"a": ["b"]}}"#, "filter"),
        (r#"{"data": {"n": [{"numeric": ["~", 1]}]}}"#, "filter"),
    ] {
        let config = StreamMappingConfig::new("bad").with_filter(pattern);
        assert_eq!(
            config.validate(false).unwrap_err().field,
            field,
            "{pattern}"
        );
    }
    let mut config = StreamMappingConfig::new("many");
    for _ in 0..11 {
        config = config.with_filter(r#"{"data": ["x"]}"#);
    }
    let err = config.validate(false).unwrap_err();
    assert_eq!((err.field, err.scope), ("filters", "stream mapping"));
}

#[tokio::test(start_paused = true)]
async fn skipped_records_do_not_reach_a_tumbling_window() {
    let rt = runtime();
    let finals: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let function = rt
        .register(Function::new(
            "windowed-filtered",
            handler_fn({
                let (finals, seen) = (finals.clone(), seen.clone());
                move |batch: StreamBatch, _ctx: Context| {
                    let (finals, seen) = (finals.clone(), seen.clone());
                    async move {
                        let window = batch.window.clone().expect("a window");
                        for r in &batch.records {
                            seen.lock().push(r.data_str().unwrap().to_owned());
                        }
                        let count = window.state.as_u64().unwrap_or(0) + batch.records.len() as u64;
                        if window.is_final {
                            finals.lock().push(window.state.clone());
                        }
                        Ok::<_, FunctionError>(
                            StreamResponse::default().with_state(serde_json::json!(count)),
                        )
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    for data in ["ERROR a", "INFO b", "ERROR c", "INFO d"] {
        stream.put("k", data).unwrap();
    }
    let config = StreamMappingConfig::new("windowed-filtered")
        .with_tumbling_window(Duration::from_secs(60))
        .with_filter(r#"{"data": [{"prefix": "ERROR"}]}"#);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    eventually(LIMIT, || !finals.lock().is_empty()).await;
    assert_eq!(*seen.lock(), ["ERROR a", "ERROR c"]);
    assert_eq!(finals.lock()[0], serde_json::json!(2));
    let m = mapping.metrics();
    assert_eq!((m.records, m.filtered), (2, 2));
    assert!(m.shards[&*shard].checkpoint.is_some());
    mapping.stop(Duration::from_secs(1)).await;
}
