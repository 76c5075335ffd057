//! Stream mappings against Lambda's defaults and limits: item failures ignored unless
//! reported, and batches cut at 6 MiB of Lambda's Kinesis event.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError};
use nimbus_sources::{StreamBatch, StreamMapping, StreamMappingConfig, StreamResponse};
use parking_lot::Mutex;

use crate::stream_mapping::{fast_retries, one_shard, recorder};
use crate::support::runtime;

#[tokio::test(start_paused = true)]
async fn item_failures_are_a_success_unless_the_mapping_reports_them_as_lambda_does() {
    let rt = runtime();
    let (function, log) = recorder(&rt, "unreported", 0).await;
    let (stream, shard) = one_shard().await;
    let mut seqs = Vec::new();
    for data in ["a", "item:b", "c"] {
        seqs.push(stream.put("k", data).unwrap().1);
    }
    // The default, as Lambda without `ReportBatchItemFailures`.
    let config = StreamMappingConfig::new("unreported");
    assert!(!config.report_batch_item_failures);
    let mapping = StreamMapping::builder(stream.clone(), function, fast_retries(config))
        .in_memory_store()
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    let batches: Vec<Vec<String>> = log.lock().iter().map(|(_, d, ..)| d.clone()).collect();
    assert_eq!(batches, vec![vec!["a", "item:b", "c"]], "no retry");
    let metrics = mapping.metrics();
    assert_eq!((metrics.records, metrics.retries), (3, 0));
    assert_eq!(metrics.shards[&*shard].checkpoint.as_ref(), Some(&seqs[2]));
    // Ignored, but counted: one answer listed failures.
    assert_eq!(metrics.ignored_item_failures, 1);
    assert_eq!(metrics.shards[&*shard].ignored_item_failures, 1);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_holds_at_most_six_mib_of_lambdas_event_and_the_rest_follows_in_order() {
    let rt = runtime();
    let sizes: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let function = rt
        .register(Function::new(
            "big",
            handler_fn({
                let sizes = sizes.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    // The first byte of each record numbers it.
                    sizes
                        .lock()
                        .push(batch.records.iter().map(|r| r.data[0]).collect());
                    async { Ok::<_, FunctionError>(StreamResponse::success()) }
                }
            }),
        ))
        .await
        .unwrap();
    let (stream, shard) = one_shard().await;
    for i in 0..7u8 {
        // 1 MiB each, 1,398,104 bytes as base64: four fit in 6 MiB.
        let mut data = vec![b'x'; 1 << 20];
        data[0] = i;
        stream.put("k", data).unwrap();
    }
    let config = StreamMappingConfig::new("big");
    assert_eq!(config.max_batch_bytes, nimbus_sources::MAX_BATCH_BYTES);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    assert_eq!(*sizes.lock(), vec![vec![0, 1, 2, 3], vec![4, 5, 6]]);
    let metrics = mapping.metrics();
    assert_eq!((metrics.records, metrics.batches), (7, 2));
    assert!(metrics.shards[&*shard].checkpoint.is_some());

    // Configurable: a smaller limit cuts smaller batches.
    let sizes2: Arc<Mutex<Vec<usize>>> = Arc::default();
    let function = rt
        .register(Function::new(
            "small",
            handler_fn({
                let sizes2 = sizes2.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    sizes2.lock().push(batch.records.len());
                    async { Ok::<_, FunctionError>(StreamResponse::success()) }
                }
            }),
        ))
        .await
        .unwrap();
    let config = StreamMappingConfig::new("small").with_max_batch_bytes(3 << 20);
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .in_memory_store()
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    assert_eq!(*sizes2.lock(), vec![2, 2, 2, 1]);
}
