//! Progress: a checkpoint never passes an unfinished record, and checkpoints within a round go
//! out in order, forward only.

use std::sync::Arc;

use proptest::prelude::*;

use super::super::progress::{Progress, Round};
use super::support::{config, hold, record, succeeding, Parts, RecordedCheckpoints};
use crate::stream::{Checkpoint, Sequence, ShardId, StreamRecord};

fn records(n: u128) -> Vec<StreamRecord> {
    // Gaps between sequence numbers, as brokers leave them.
    (1..=n).map(|i| record("k", i * 10)).collect()
}

#[test]
fn the_checkpoint_is_the_end_of_the_finished_prefix() {
    let all = records(5);
    let mut progress = Progress::new(&all);
    assert_eq!(progress.unfinished(), 5);
    // The third record alone finishes nothing before it: no checkpoint.
    assert_eq!(progress.finish(&all[2..3], None), None);
    assert_eq!(
        progress.finish(&all[0..1], None),
        Some(Sequence::from(10u128))
    );
    // The second closes the gap up to the third.
    assert_eq!(
        progress.finish(&all[1..2], None),
        Some(Sequence::from(30u128))
    );
    assert_eq!(progress.unfinished(), 2);
    assert_eq!(progress.finish(&all[4..5], None), None);
    // Finishing a record twice changes nothing.
    assert_eq!(progress.finish(&all[2..3], None), None);
    assert_eq!(
        progress.finish(&all[3..4], None),
        Some(Sequence::from(50u128))
    );
    assert_eq!(progress.unfinished(), 0);
}

#[test]
fn records_not_in_the_round_are_ignored() {
    let all = records(2);
    let mut progress = Progress::new(&all);
    assert_eq!(progress.finish(&[record("k", 15)], None), None);
    assert_eq!(progress.unfinished(), 2);
}

proptest! {
    /// Whatever order records finish in, each checkpoint returned is the last record of the
    /// finished prefix at that moment: every record up to it is finished, the one after is not.
    #[test]
    fn no_checkpoint_passes_an_unfinished_record(
        (n, order, chunk) in (1usize..40).prop_flat_map(|n| {
            (Just(n), Just((0..n).collect::<Vec<_>>()).prop_shuffle(), 1usize..5)
        })
    ) {
        let all = records(n as u128);
        let mut progress = Progress::new(&all);
        let mut finished = vec![false; n];
        let mut last: Option<Sequence> = None;
        for group in order.chunks(chunk) {
            let done: Vec<StreamRecord> = group.iter().map(|&i| all[i].clone()).collect();
            for &i in group {
                finished[i] = true;
            }
            let prefix = finished.iter().take_while(|f| **f).count();
            match progress.finish(&done, None) {
                Some(checkpoint) => {
                    prop_assert!(prefix > 0);
                    prop_assert_eq!(&checkpoint, &all[prefix - 1].sequence);
                    prop_assert!(last.as_ref().is_none_or(|l| *l < checkpoint));
                    last = Some(checkpoint);
                }
                None => prop_assert_eq!(
                    last.as_ref(),
                    prefix.checked_sub(1).map(|p| &all[p].sequence)
                ),
            }
            prop_assert_eq!(progress.unfinished(), (n - prefix) as u64);
        }
        prop_assert_eq!(last.as_ref(), Some(&all[n - 1].sequence));
    }
}

#[tokio::test(start_paused = true)]
async fn checkpoints_within_a_round_go_out_in_order_and_only_forward() {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = succeeding(&runtime).await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("progress"));
    parts.store(store.clone());
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("shard-0");
    hold(&shared, &shard).await;
    let all = records(4);
    let round = Round::new(&all);
    shared.finished(&shard, &all[1..2], None, &round).await;
    assert!(store.written.lock().is_empty(), "a gap before the record");
    shared.finished(&shard, &all[0..1], None, &round).await;
    shared.finished(&shard, &all[3..4], None, &round).await;
    shared.finished(&shard, &all[2..3], None, &round).await;
    let written: Vec<Checkpoint> = store
        .written
        .lock()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(
        written,
        vec![
            Checkpoint::At(Sequence::from(20u128)),
            Checkpoint::At(Sequence::from(40u128))
        ]
    );
    let metrics = shared.metrics.lock()[&shard].clone();
    assert_eq!(metrics.checkpoint, Some(Sequence::from(40u128)));
    assert_eq!(metrics.checkpoint_lag, 0);
}
