//! The in-memory sharded stream, checkpoint store and lease store.

use std::time::Duration;

use nimbus_sources::{
    hash_key, stream_now, Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore,
    LeaseStore, Position, Sequence, StreamConfig, StreamSource,
};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn records_are_routed_by_hash_range_with_increasing_sequences() {
    let stream = InMemoryStream::new(StreamConfig::default().with_shards(4)).unwrap();
    let shards = stream.shards().await.unwrap();
    assert_eq!(shards.len(), 4);
    // The ranges tile the whole hash space.
    assert_eq!(shards[0].hash_range.0, 0);
    assert_eq!(shards[3].hash_range.1, u128::MAX);
    for pair in shards.windows(2) {
        assert_eq!(pair[0].hash_range.1 + 1, pair[1].hash_range.0);
    }
    let mut last = std::collections::HashMap::new();
    for i in 0..200 {
        let key = format!("key-{}", i % 17);
        let (shard, seq) = stream.put(&key, format!("{i}")).unwrap();
        let info = shards.iter().find(|s| s.id == shard).unwrap();
        let hash = hash_key(&key);
        assert!(info.hash_range.0 <= hash && hash <= info.hash_range.1);
        if let Some(prev) = last.insert(shard.clone(), seq.clone()) {
            assert!(seq > prev, "sequences increase within a shard");
        }
    }
    assert!(last.len() > 1, "17 keys spread over more than one shard");
}

#[tokio::test(start_paused = true)]
async fn positions_and_long_polls() {
    let stream = std::sync::Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    let (_, s1) = stream.put("k", "one").unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let middle = stream_now();
    let (_, s2) = stream.put("k", "two").unwrap();

    let all = stream
        .read(&shard, Position::TrimHorizon, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        all.records
            .iter()
            .map(|r| r.sequence.clone())
            .collect::<Vec<_>>(),
        [s1.clone(), s2.clone()]
    );
    assert_eq!(all.next, Position::After(s2.clone()));
    let after = stream
        .read(&shard, Position::After(s1), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(after.records[0].sequence, s2);
    let at = stream
        .read(&shard, Position::AtTimestamp(middle), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(at.records.len(), 1);
    let latest = stream
        .read(&shard, Position::Latest, 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(latest.records.is_empty());
    assert_eq!(
        latest.next,
        Position::After(s2.clone()),
        "Latest pins to the current end"
    );

    // A reader waiting at the end is woken by the append, not by a timer.
    let reader = tokio::spawn({
        let (stream, shard) = (stream.clone(), shard.clone());
        async move {
            let started = Instant::now();
            let read = stream
                .read(&shard, Position::After(s2), 10, Duration::from_secs(20))
                .await
                .unwrap();
            (started.elapsed(), read.records.len())
        }
    });
    tokio::task::yield_now().await;
    stream.put("k", "three").unwrap();
    assert_eq!(reader.await.unwrap(), (Duration::ZERO, 1));
}

#[tokio::test(start_paused = true)]
async fn retention_trims_and_a_trimmed_position_restarts_at_the_horizon() {
    let stream =
        InMemoryStream::new(StreamConfig::default().with_retention(Duration::from_secs(60)))
            .unwrap();
    let shard = stream.shards().await.unwrap()[0].id.clone();
    let (_, old) = stream.put("k", "old").unwrap();
    let (_, older_kept) = {
        tokio::time::sleep(Duration::from_secs(30)).await;
        stream.put("k", "newer").unwrap()
    };
    tokio::time::sleep(Duration::from_secs(31)).await;
    let read = stream
        .read(
            &shard,
            Position::After(Sequence::new(old.as_u128().unwrap() - 1)),
            10,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(read.trimmed, "the old record is gone");
    assert_eq!(
        read.records
            .iter()
            .map(|r| r.sequence.clone())
            .collect::<Vec<_>>(),
        [older_kept]
    );
    assert_eq!(stream.trimmed_reads(), 1);
    let fine = stream
        .read(&shard, Position::After(old), 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(!fine.trimmed, "nothing after `old` was trimmed");
}

#[tokio::test(start_paused = true)]
async fn split_and_merge_close_parents_and_open_children() {
    let stream = InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap();
    let shards = stream.shards().await.unwrap();
    let (a, b) = (shards[0].id.clone(), shards[1].id.clone());
    let middle = shards[0].hash_range.0 + (shards[0].hash_range.1 - shards[0].hash_range.0) / 2;
    let (left, right) = stream.split(&a, middle).unwrap();
    let shards = stream.shards().await.unwrap();
    let info = |id: &str| shards.iter().find(|s| &*s.id == id).unwrap().clone();
    assert!(info(&a).closed);
    assert_eq!(info(&left).parents, vec![a.clone()]);
    assert_eq!(info(&left).hash_range.1 + 1, info(&right).hash_range.0);
    // A closed shard read to its end is finished.
    let end = stream
        .read(&a, Position::TrimHorizon, 10, Duration::ZERO)
        .await
        .unwrap();
    assert!(end.shard_ended);
    assert!(
        stream.split(&a, middle).is_err(),
        "closed shards do not split"
    );
    let merged = stream.merge(&right, &b).unwrap();
    let shards = stream.shards().await.unwrap();
    let merged_info = shards.iter().find(|s| s.id == merged).unwrap();
    assert_eq!(merged_info.parents.len(), 2);
    assert_eq!(merged_info.hash_range.1, u128::MAX);
    assert!(stream.merge(&left, &b).is_err(), "b is closed now");
}

#[tokio::test]
async fn checkpoints_only_move_forward() {
    let store = InMemoryStreamStore::new();
    let lease = store
        .acquire("m/s", "w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.get("m", "s").await.unwrap(), None);
    store
        .put("m", "s", Checkpoint::At(Sequence::new(5)), &lease)
        .await
        .unwrap();
    store
        .put("m", "s", Checkpoint::At(Sequence::new(9)), &lease)
        .await
        .unwrap();
    assert!(store
        .put("m", "s", Checkpoint::At(Sequence::new(7)), &lease)
        .await
        .is_err());
    store
        .put("m", "s", Checkpoint::ShardEnd, &lease)
        .await
        .unwrap();
    assert!(store
        .put("m", "s", Checkpoint::At(Sequence::new(100)), &lease)
        .await
        .is_err());
    assert_eq!(
        store.get("m", "s").await.unwrap(),
        Some(Checkpoint::ShardEnd)
    );
    assert_eq!(store.get("other", "s").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn leases_are_exclusive_until_they_expire_or_are_released() {
    let leases = InMemoryStreamStore::new();
    let ttl = Duration::from_secs(30);
    let first = leases.acquire("m/s", "a", ttl).await.unwrap().unwrap();
    assert_eq!((first.owner.as_str(), first.counter), ("a", 1));
    assert!(
        leases.acquire("m/s", "b", ttl).await.unwrap().is_none(),
        "held by a"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let renewed = leases.acquire("m/s", "a", ttl).await.unwrap().unwrap();
    assert_eq!(renewed.counter, 1, "renewal keeps the counter");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        leases.acquire("m/s", "b", ttl).await.unwrap().is_none(),
        "renewed, still a's"
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let taken = leases.acquire("m/s", "b", ttl).await.unwrap().unwrap();
    assert_eq!(
        (taken.owner.as_str(), taken.counter),
        ("b", 2),
        "expired: taken over"
    );
    leases.release("m/s", "b").await.unwrap();
    assert!(
        leases.acquire("m/s", "a", ttl).await.unwrap().is_some(),
        "released"
    );
}
