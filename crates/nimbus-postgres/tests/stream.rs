//! The PostgreSQL store of stream leases and checkpoints: a checkpoint written under an expired
//! or moved lease is refused, sequence numbers of any size round-trip (as text that sorts under
//! the `C` collation), and a mapping over Kinesis-style numbers checkpoints them here.
//!
//! Skips loudly when the database is down, unless `NIMBUS_REQUIRE_SERVICES=1` (see `support`).

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_postgres::PostgresStreamStore;
use nimbus_sources::{
    Checkpoint, CheckpointStore, InMemoryStream, LeaseStore, Sequence, SourceError, StreamBatch,
    StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse, StreamSource,
};

mod support;

use support::{psql, url, Names};

const KINESIS: &str = "49590338271490256608559692538361571095921575989136588898";

fn at(sequence: impl Into<Sequence>) -> Checkpoint {
    Checkpoint::At(sequence.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_writes_under_an_expired_or_moved_lease_are_refused() {
    let Some(names) = Names::new().await else {
        return;
    };
    let store = PostgresStreamStore::connect(&url()).await.unwrap();
    let mapping = format!("{}_fence", names.0);
    let key = format!("{mapping}/shard");
    let first = store
        .acquire(&key, "a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    store
        .put(&mapping, "shard", at(1u64), &first)
        .await
        .unwrap();
    // Expiry is on the database's clock: wait it out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expired = store.put(&mapping, "shard", at(2u64), &first).await;
    match expired {
        Err(SourceError::Fenced { detail, .. }) => assert!(detail.contains("expired"), "{detail}"),
        other => panic!("an expired lease wrote: {other:?}"),
    }
    let taken = store
        .acquire(&key, "b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(taken.counter > first.counter);
    let moved = store.put(&mapping, "shard", at(2u64), &first).await;
    assert!(
        matches!(moved, Err(SourceError::Fenced { .. })),
        "{moved:?}"
    );
    store
        .put(&mapping, "shard", at(2u64), &taken)
        .await
        .unwrap();
    assert_eq!(store.get(&mapping, "shard").await.unwrap(), Some(at(2u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesis_numbers_and_redis_positions_round_trip() {
    let Some(names) = Names::new().await else {
        return;
    };
    let store = PostgresStreamStore::connect(&url()).await.unwrap();
    let mapping = format!("{}_numbers", names.0);
    let lease = store
        .acquire(&format!("{mapping}/shard"), "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let position = at((1_700_000_000_123u128 << 64) | 5);
    let kinesis = at(KINESIS.parse::<Sequence>().unwrap());
    for checkpoint in [&position, &kinesis] {
        store
            .put(&mapping, "shard", checkpoint.clone(), &lease)
            .await
            .unwrap();
        assert_eq!(
            store.get(&mapping, "shard").await.unwrap().as_ref(),
            Some(checkpoint)
        );
    }
    let stored = psql(&format!(
        "SELECT value FROM nimbus_checkpoints WHERE mapping = '{mapping}' AND shard = 'shard'"
    ))
    .unwrap();
    assert_eq!(stored, format!(":056{KINESIS}"));
    // 40 nines sort below 56 digits, though their text starts higher.
    let nines = at("9".repeat(40).parse::<Sequence>().unwrap());
    assert!(store.put(&mapping, "shard", nines, &lease).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_over_kinesis_numbers_checkpoints_them_here() {
    let Some(names) = Names::new().await else {
        return;
    };
    let runtime = Runtime::default();
    let function = runtime
        .register(Function::new(
            "kinesis",
            handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
                Ok::<_, FunctionError>(StreamResponse::success())
            }),
        ))
        .await
        .unwrap();
    let first: Sequence = KINESIS.parse().unwrap();
    let stream = Arc::new(
        InMemoryStream::new(
            StreamConfig::default()
                .with_shards(2)
                .with_first_sequence(first),
        )
        .unwrap(),
    );
    for i in 0..40 {
        stream.put(&format!("k{i}"), format!("r{i}")).unwrap();
    }
    let mapping_name = format!("{}_mapping", names.0);
    let store = Arc::new(PostgresStreamStore::connect(&url()).await.unwrap());
    let mapping = StreamMapping::builder(
        stream.clone(),
        function,
        StreamMappingConfig::new(&mapping_name),
    )
    .store(store.clone())
    .start()
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), mapping.drained())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mapping.metrics().records, 40);
    for shard in stream.shards().await.unwrap() {
        let read = stream
            .read(
                &shard.id,
                nimbus_sources::Position::TrimHorizon,
                100,
                Duration::ZERO,
            )
            .await
            .unwrap();
        let Some(last) = read.records.last() else {
            continue;
        };
        assert!(last.sequence.as_u128().is_none(), "56 digits");
        assert_eq!(
            store.get(&mapping_name, &shard.id).await.unwrap(),
            Some(Checkpoint::At(last.sequence.clone()))
        );
    }
    assert!(mapping.stop(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_a_permanent_error_not_no_checkpoint() {
    let Some(names) = Names::new().await else {
        return;
    };
    let store = PostgresStreamStore::connect(&url()).await.unwrap();
    let mapping = format!("{}_corrupt", names.0);
    psql(&format!(
        "INSERT INTO nimbus_checkpoints (mapping, shard, value) VALUES ('{mapping}', 'shard', '5')"
    ))
    .unwrap();
    match store.get(&mapping, "shard").await {
        Err(error) => {
            assert!(error.is_permanent(), "{error}");
            assert!(error.to_string().contains("\"5\""), "{error}");
        }
        Ok(read) => panic!("a corrupt checkpoint read as {read:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_on_another_shard_does_not_write() {
    let Some(names) = Names::new().await else {
        return;
    };
    let store = PostgresStreamStore::connect(&url()).await.unwrap();
    let mapping = format!("{}_other", names.0);
    let lease = store
        .acquire(&format!("{mapping}/x"), "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let wrong = store.put(&mapping, "y", at(1u64), &lease).await;
    assert!(
        matches!(wrong, Err(SourceError::Fenced { .. })),
        "{wrong:?}"
    );
    assert_eq!(store.get(&mapping, "y").await.unwrap(), None);
    store.put(&mapping, "x", at(1u64), &lease).await.unwrap();
}
