//! The Redis store of stream leases and checkpoints, and stream positions end to end: a
//! checkpoint written under an expired or moved lease is refused, Kinesis numbers and Redis
//! positions round-trip, and a mapping over a Redis stream checkpoints entry positions and hands
//! them to functions (and through JSON) as decimal strings.
//!
//! Skips loudly when the server is down, unless `NIMBUS_REQUIRE_SERVICES=1` (see `support`).

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_redis::{RedisStream, RedisStreamStore};
use nimbus_sources::{
    Checkpoint, CheckpointStore, LeaseStore, Sequence, SourceError, StreamBatch, StreamMapping,
    StreamMappingConfig, StreamResponse,
};
use parking_lot::Mutex;

mod support;

use support::{url, Prefix};

const KINESIS: &str = "49590338271490256608559692538361571095921575989136588898";

fn at(sequence: impl Into<Sequence>) -> Checkpoint {
    Checkpoint::At(sequence.into())
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_writes_under_an_expired_or_moved_lease_are_refused() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let store = RedisStreamStore::connect(&prefix.config("fence"))
        .await
        .unwrap();
    let first = store
        .acquire("m/shard", "a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    store.put("m", "shard", at(1u64), &first).await.unwrap();
    // Expiry is on the server's clock: wait it out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    match store.put("m", "shard", at(2u64), &first).await {
        Err(SourceError::Fenced { detail, .. }) => assert!(detail.contains("expired"), "{detail}"),
        other => panic!("an expired lease wrote: {other:?}"),
    }
    let taken = store
        .acquire("m/shard", "b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(taken.counter > first.counter);
    let moved = store.put("m", "shard", at(2u64), &first).await;
    assert!(
        matches!(moved, Err(SourceError::Fenced { .. })),
        "{moved:?}"
    );
    store.put("m", "shard", at(2u64), &taken).await.unwrap();
    assert_eq!(store.get("m", "shard").await.unwrap(), Some(at(2u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_numbers_and_redis_positions_round_trip() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("numbers");
    let store = RedisStreamStore::connect(&config).await.unwrap();
    let lease = store
        .acquire("m/shard", "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let position = at((1_700_000_000_123u128 << 64) | 5);
    let kinesis = at(KINESIS.parse::<Sequence>().unwrap());
    for checkpoint in [&position, &kinesis] {
        store
            .put("m", "shard", checkpoint.clone(), &lease)
            .await
            .unwrap();
        assert_eq!(
            store.get("m", "shard").await.unwrap().as_ref(),
            Some(checkpoint)
        );
    }
    let stored: String = redis::cmd("HGET")
        .arg(format!("{}:checkpoints", config.key))
        .arg("m/shard")
        .query_async(&mut admin().await)
        .await
        .unwrap();
    assert_eq!(stored, format!(":056{KINESIS}"));
    // 40 nines sort below 56 digits, though their text starts higher.
    let nines = at("9".repeat(40).parse::<Sequence>().unwrap());
    assert!(store.put("m", "shard", nines, &lease).await.is_err());
}

/// The position of a stream's last entry, `ms << 64 | seq`.
async fn last_position(key: &str) -> Option<u128> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    let (id, _) = entries.into_iter().next()?;
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse::<u128>().ok()? << 64) | seq.parse::<u128>().ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_over_a_redis_stream_checkpoints_entry_positions() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("mapped").with_shards(2);
    let stream = RedisStream::connect(config.clone()).await.unwrap();
    for i in 0..20 {
        stream
            .put(&format!("k{i}"), format!("r{i}").as_bytes())
            .await
            .unwrap();
    }
    let runtime = Runtime::default();
    let batches: Arc<Mutex<Vec<StreamBatch>>> = Arc::default();
    let record = runtime
        .register(Function::new(
            "record",
            handler_fn({
                let batches = batches.clone();
                move |batch: StreamBatch, _ctx: Context| {
                    batches.lock().push(batch);
                    async { Ok::<_, FunctionError>(StreamResponse::success()) }
                }
            }),
        ))
        .await
        .unwrap();
    // Says every record failed, by its number.
    runtime
        .register(Function::new(
            "refuse",
            handler_fn(|batch: StreamBatch, _ctx: Context| async move {
                let all = batch.records.iter().map(|r| r.sequence.clone());
                Ok::<_, FunctionError>(StreamResponse::failures(all))
            }),
        ))
        .await
        .unwrap();
    let store = Arc::new(RedisStreamStore::connect(&config).await.unwrap());
    let mapping = StreamMapping::builder(
        RedisStream::connect(config.clone()).await.unwrap(),
        record,
        StreamMappingConfig::new("mapped").with_poll_wait(Duration::from_millis(500)),
    )
    .store(store.clone())
    .start()
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), mapping.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapping.metrics().records, 20);
    for n in 0..2 {
        let shard = format!("{}:shard:{n}", config.key);
        let Some(last) = last_position(&shard).await else {
            continue;
        };
        assert!(last > u128::from(u64::MAX), "a position is above 64 bits");
        assert_eq!(
            store.get("mapped", &shard).await.unwrap(),
            Some(at(last)),
            "{shard} checkpointed at its last entry's position"
        );
    }
    assert!(mapping.stop(Duration::from_secs(5)).await);

    // A batch as JSON carries positions as decimal strings; a JSON answer naming them comes
    // back as the same numbers.
    let batch = batches.lock()[0].clone();
    let json = serde_json::to_value(&batch).unwrap();
    let first = batch.records[0].sequence.clone();
    assert_eq!(
        json["Records"][0]["kinesis"]["sequenceNumber"],
        serde_json::json!(first.to_string())
    );
    let answer = runtime.invoke_json("refuse", json).await.unwrap();
    let parsed: StreamResponse = serde_json::from_value(answer).unwrap();
    let expected: Vec<Sequence> = batch.records.iter().map(|r| r.sequence.clone()).collect();
    assert_eq!(parsed.item_failures, expected);
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_a_permanent_error_not_no_checkpoint() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("corrupt");
    let store = RedisStreamStore::connect(&config).await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:checkpoints", config.key))
        .arg("m/shard")
        .arg("5")
        .query_async(&mut admin().await)
        .await
        .unwrap();
    match store.get("m", "shard").await {
        Err(error) => {
            assert!(error.is_permanent(), "{error}");
            assert!(error.to_string().contains("\"5\""), "{error}");
        }
        Ok(read) => panic!("a corrupt checkpoint read as {read:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_on_another_shard_does_not_write() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let store = RedisStreamStore::connect(&prefix.config("other"))
        .await
        .unwrap();
    let lease = store
        .acquire("m/x", "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let wrong = store.put("m", "y", at(1u64), &lease).await;
    assert!(
        matches!(wrong, Err(SourceError::Fenced { .. })),
        "{wrong:?}"
    );
    assert_eq!(store.get("m", "y").await.unwrap(), None);
    store.put("m", "x", at(1u64), &lease).await.unwrap();
}
