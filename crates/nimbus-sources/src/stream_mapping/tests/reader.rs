//! The shard reader: `Latest` pinned and checkpointed, resuming after a checkpoint, a closed
//! shard read to its end marked finished, and no checkpoint once the lease is lost.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::super::{Reader, StreamResponse};
use super::support::{config, function, hold, succeeding, Parts, RecordedCheckpoints};
use crate::stream::{Checkpoint, InMemoryStream, Position, Sequence, ShardId, StreamConfig};

/// A one-shard stream holding records `a`, `b`, `c`; and its shard and their sequences.
fn stream() -> (Arc<InMemoryStream>, ShardId, Vec<Sequence>) {
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let mut sequences = Vec::new();
    let mut shard = None;
    for data in ["a", "b", "c"] {
        let (id, sequence) = stream.put("k", data).unwrap();
        shard = Some(id);
        sequences.push(sequence);
    }
    (stream, shard.unwrap(), sequences)
}

#[tokio::test(start_paused = true)]
async fn latest_is_pinned_to_a_place_and_checkpointed() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = succeeding(&runtime).await;
    let (source, shard, sequences) = stream();
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("r").with_starting_position(Position::Latest));
    parts.source = source;
    parts.store(store.clone());
    let shared = parts.build(function);
    hold(&shared, &shard).await;
    // Handed off at once: it pins Latest, checkpoints it and returns.
    let hand_off = CancellationToken::new();
    hand_off.cancel();
    shared
        .read_shard(shard, None, &CancellationToken::new(), &hand_off)
        .await;
    // A later owner reads on from here, not from its own Latest.
    let written: Vec<Checkpoint> = store
        .written
        .lock()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(written, vec![Checkpoint::At(sequences[2].clone())]);
    assert!(calls.lock().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_reader_resumes_after_its_checkpoint() {
    let runtime = nimbus_core::Runtime::default();
    let (seen, mut batches) = tokio::sync::mpsc::unbounded_channel();
    let (function, _) = function(&runtime, move |batch| {
        let _ = seen.send(
            batch
                .records
                .iter()
                .map(|r| r.data_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        );
        Ok(StreamResponse::success())
    })
    .await;
    let (source, shard, sequences) = stream();
    let mut parts = Parts::new(config("r"));
    parts.source = source;
    let shared = parts.build(function);
    hold(&shared, &shard).await;
    let hand_off = CancellationToken::new();
    let reading = tokio::spawn({
        let (shared, hand_off) = (shared.clone(), hand_off.clone());
        let checkpoint = Some(Checkpoint::At(sequences[0].clone()));
        async move {
            shared
                .read_shard(shard, checkpoint, &CancellationToken::new(), &hand_off)
                .await;
        }
    });
    assert_eq!(batches.recv().await.unwrap(), ["b", "c"]);
    hand_off.cancel();
    reading.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_closed_shard_read_to_its_end_is_marked_finished() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = succeeding(&runtime).await;
    let (source, shard, sequences) = stream();
    source.split(&shard, u128::MAX / 2).unwrap();
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("r"));
    parts.source = source;
    parts.store(store.clone());
    let shared = parts.build(function);
    hold(&shared, &shard).await;
    shared
        .read_shard(
            shard.clone(),
            None,
            &CancellationToken::new(),
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(calls.lock().len(), 1);
    let written: Vec<Checkpoint> = store
        .written
        .lock()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(
        written,
        vec![Checkpoint::At(sequences[2].clone()), Checkpoint::ShardEnd]
    );
    assert!(shared.metrics.lock()[&shard].finished);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_checkpointed_once_the_lease_is_lost() {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = succeeding(&runtime).await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("r"));
    parts.store(store.clone());
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("s");
    let lease = hold(&shared, &shard).await;
    let lost = CancellationToken::new();
    lost.cancel();
    shared.running.lock().insert(
        shard.clone(),
        Reader {
            cancel: lost,
            hand_off: CancellationToken::new(),
            renewed: tokio::time::Instant::now(),
            lease: Arc::new(lease),
            ending: false,
            caught_up: None,
        },
    );
    shared
        .settle(&shard, Position::After(Sequence::from(5u128)))
        .await;
    assert!(
        store.written.lock().is_empty(),
        "the shard is someone else's now"
    );
    // Held again (a live reader under the lease), the same position is written.
    shared.running.lock().clear();
    hold(&shared, &shard).await;
    shared
        .settle(&shard, Position::After(Sequence::from(5u128)))
        .await;
    assert_eq!(store.written.lock().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_that_could_not_be_written_is_not_marked_finished() {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = succeeding(&runtime).await;
    let (source, shard, _) = stream();
    source.split(&shard, u128::MAX / 2).unwrap();
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("r"));
    parts.source = source;
    parts.store(store.clone());
    let shared = parts.build(function);
    // No lease held: every checkpoint write, ShardEnd too, is refused.
    shared
        .read_shard(
            shard.clone(),
            None,
            &CancellationToken::new(),
            &CancellationToken::new(),
        )
        .await;
    assert!(store.written.lock().is_empty());
    assert!(!shared
        .metrics
        .lock()
        .get(&shard)
        .is_some_and(|m| m.finished));
}
