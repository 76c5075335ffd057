//! Lanes: records split by partition key run in parallel lanes, each key's records in order,
//! every record exactly once, and the checkpoint reaches the end of the round.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::super::Done;
use super::support::{config, hold, record, succeeding, Parts, RecordedCheckpoints};
use crate::stream::{Checkpoint, Sequence, ShardId};

#[tokio::test(start_paused = true)]
async fn lanes_keep_order_per_partition_key_and_handle_every_record_once() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = succeeding(&runtime).await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(
        config("r")
            .with_parallelization_factor(4)
            .with_batch_size(3),
    );
    parts.store(store.clone());
    let shared = parts.build(function);
    let records: Vec<_> = (1..=64u128)
        .map(|i| record(&format!("key-{}", i % 8), i))
        .collect();
    let shard: ShardId = Arc::from("s");
    hold(&shared, &shard).await;
    let done = shared
        .process_round(&shard, records, &CancellationToken::new())
        .await;
    assert!(matches!(done, Done::Finished));
    let mut by_key: HashMap<String, Vec<Sequence>> = HashMap::new();
    let mut lanes_per_batch = Vec::new();
    for batch in calls.lock().iter() {
        assert!(batch.records.len() <= 3);
        lanes_per_batch.push(batch.records.len());
        for r in &batch.records {
            by_key
                .entry(r.partition_key.to_string())
                .or_default()
                .push(r.sequence.clone());
        }
    }
    let total: usize = by_key.values().map(Vec::len).sum();
    assert_eq!(total, 64, "every record exactly once");
    for (key, seen) in &by_key {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {seen:?}"
        );
    }
    assert_eq!(
        store.written.lock().last().map(|(_, c)| c.clone()),
        Some(Checkpoint::At(Sequence::from(64u128)))
    );
}

#[test]
fn a_lane_is_cut_into_batches_in_order() {
    use super::super::round::batches;
    let lane = |n: u128| (1..=n).map(|i| record("k", i)).collect::<Vec<_>>();
    let shape = |batches: Vec<Vec<crate::stream::StreamRecord>>| {
        batches
            .iter()
            .map(|b| b.iter().map(|r| r.sequence.clone()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    let s = |v: &[u128]| v.iter().map(|&i| Sequence::from(i)).collect::<Vec<_>>();
    assert_eq!(
        shape(batches(lane(10), 3)),
        [s(&[1, 2, 3]), s(&[4, 5, 6]), s(&[7, 8, 9]), s(&[10])]
    );
    assert_eq!(shape(batches(lane(6), 3)), [s(&[1, 2, 3]), s(&[4, 5, 6])]);
    assert_eq!(shape(batches(lane(2), 3)), [s(&[1, 2])]);
    assert!(batches(Vec::new(), 3).is_empty());
    // A long skewed lane in batches of one: linear, so this is quick.
    let long = batches(lane(200_000), 1);
    assert_eq!(long.len(), 200_000);
    assert_eq!(long[199_999][0].sequence, Sequence::from(200_000u128));
}

#[test]
fn the_keys_of_one_shard_spread_over_every_lane() {
    use super::super::round::lane_of;
    // Shards own ranges of the key hash: the keys of one shard share its high bits, which must
    // not decide the lane too, or a shard would run in one lane whatever the factor.
    let stream =
        crate::stream::InMemoryStream::new(crate::stream::StreamConfig::default().with_shards(4))
            .expect("config");
    let mut lanes_of_shard: HashMap<ShardId, Vec<usize>> = HashMap::new();
    for i in 0..4_000 {
        let key = format!("key-{i}");
        let (shard, _) = stream.put(&key, "x").expect("an open shard");
        lanes_of_shard
            .entry(shard)
            .or_default()
            .push(lane_of(&key, 4));
    }
    assert_eq!(lanes_of_shard.len(), 4);
    for (shard, lanes) in &lanes_of_shard {
        let mut per_lane = [0usize; 4];
        for &lane in lanes {
            per_lane[lane] += 1;
        }
        // About a quarter each (a fifth at least) of the shard's thousand-odd keys.
        assert!(
            per_lane.iter().all(|&n| n * 5 >= lanes.len()),
            "{shard}: keys per lane {per_lane:?}"
        );
    }
}
