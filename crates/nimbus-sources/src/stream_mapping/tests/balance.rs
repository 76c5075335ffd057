//! Balancing against a scripted lease store: the fair share, hand-offs above it, readers
//! stopped when their lease moves or cannot be renewed in time, shards held elsewhere, and
//! parents before children.

use std::sync::Arc;
use std::time::Duration;

use super::super::Shared;
use super::support::{config, succeeding, Parts, ScriptedLeases, Silent};
use crate::stream::{Checkpoint, CheckpointStore, LeaseStore, ShardInfo};

const TTL: Duration = Duration::from_secs(30);

/// A mapping over `shards` open shards, with its scripted lease store.
async fn mapping(shards: &[&str]) -> (Arc<Shared>, Arc<ScriptedLeases>, nimbus_core::Runtime) {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = succeeding(&runtime).await;
    let leases = Arc::new(ScriptedLeases::default());
    let mut parts = Parts::new(config("m").with_lease_ttl(TTL));
    parts.source = Arc::new(Silent::open(shards));
    parts.store(leases.clone());
    (parts.build(function), leases, runtime)
}

/// Another worker, alive in the store.
async fn other_worker(leases: &ScriptedLeases, owner: &str) {
    let key = format!("m/~worker/{owner}");
    assert!(leases
        .inner
        .acquire(&key, owner, TTL)
        .await
        .unwrap()
        .is_some());
}

async fn balance(shared: &Arc<Shared>) -> Option<Duration> {
    let shards = shared.source.shards().await.unwrap();
    shared.balance(&shards).await.expect("balanced")
}

fn stop_readers(shared: &Shared) {
    shared.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_worker_takes_its_fair_share_of_ready_shards() {
    let (shared, leases, _rt) = mapping(&["s0", "s1", "s2", "s3", "s4"]).await;
    other_worker(&leases, "other").await;
    balance(&shared).await;
    // Five shards over two live workers: three each at most.
    assert_eq!(leases.held_by("me").await, ["m/s0", "m/s1", "m/s2"]);
    assert_eq!(shared.running.lock().len(), 3);
    // A second round keeps the same shards, renewed.
    balance(&shared).await;
    assert_eq!(leases.held_by("me").await, ["m/s0", "m/s1", "m/s2"]);
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn shards_above_the_fair_share_are_handed_off_not_cut() {
    let (shared, leases, _rt) = mapping(&["s0", "s1", "s2", "s3"]).await;
    balance(&shared).await;
    assert_eq!(
        shared.running.lock().len(),
        4,
        "alone, it takes every shard"
    );
    other_worker(&leases, "other").await;
    balance(&shared).await;
    let (handing_off, cut): (usize, usize) = {
        let running = shared.running.lock();
        (
            running
                .values()
                .filter(|r| r.hand_off.is_cancelled())
                .count(),
            running.values().filter(|r| r.cancel.is_cancelled()).count(),
        )
    };
    // Two readers finish their round and give their shards back; none is stopped mid-round.
    assert_eq!((handing_off, cut), (2, 0));
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn a_reader_whose_lease_moved_is_stopped() {
    let (shared, leases, _rt) = mapping(&["s0", "s1"]).await;
    balance(&shared).await;
    leases.refused.lock().insert("m/s1".to_owned());
    balance(&shared).await;
    let running = shared.running.lock();
    assert!(running["s1"].cancel.is_cancelled());
    assert!(!running["s0"].cancel.is_cancelled());
    drop(running);
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn a_reader_keeps_reading_while_renewals_fail_until_its_lease_would_have_expired() {
    let (shared, leases, _rt) = mapping(&["s0"]).await;
    balance(&shared).await;
    leases.failing.lock().insert("m/s0".to_owned());
    tokio::time::advance(TTL / 2).await;
    balance(&shared).await;
    assert!(
        !shared.running.lock()["s0"].cancel.is_cancelled(),
        "unsure whether the lease holds: keep reading while it may"
    );
    // Nine tenths of the TTL without a renewal: another worker may take it soon.
    tokio::time::advance(TTL / 2).await;
    shared.stop_unrenewed();
    assert!(shared.running.lock()["s0"].cancel.is_cancelled());
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn a_shard_held_elsewhere_is_left_and_looked_at_again_when_its_lease_ends() {
    let (shared, leases, _rt) = mapping(&["s0", "s1"]).await;
    other_worker(&leases, "other").await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // The other worker took s0 ten seconds after saying it was alive.
    assert!(leases
        .inner
        .acquire("m/s0", "other", TTL)
        .await
        .unwrap()
        .is_some());
    tokio::time::advance(Duration::from_secs(5)).await;
    let next = balance(&shared).await;
    assert_eq!(leases.held_by("me").await, ["m/s1"]);
    // Fair share one, held one: it wants no more, so the next look is when the other worker's
    // own lease ends (it may have died), 15 s from now.
    assert_eq!(next, Some(Duration::from_secs(15)));
    stop_readers(&shared);

    // A worker that wants more looks again when the shard lease it waits for ends.
    let (shared, leases, _rt) = mapping(&["s0", "s1"]).await;
    assert!(leases
        .inner
        .acquire("m/s0", "gone", TTL)
        .await
        .unwrap()
        .is_some());
    tokio::time::advance(Duration::from_secs(20)).await;
    let next = balance(&shared).await;
    assert_eq!(leases.held_by("me").await, ["m/s1"]);
    assert_eq!(next, Some(Duration::from_secs(10)));
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn children_wait_until_every_parent_still_known_is_finished() {
    let (shared, _leases, _rt) = mapping(&[]).await;
    let parent = ShardInfo::new(Arc::from("p"), Vec::new(), (0, u128::MAX), true);
    let child = ShardInfo::new(Arc::from("c"), vec![Arc::from("p")], (0, u128::MAX), false);
    let shards = vec![parent.clone(), child.clone()];
    let ids = |ready: Vec<&ShardInfo>| ready.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(shared.ready_shards(&shards).await.0), ["p"]);
    let lease = super::support::hold(&shared, &Arc::from("p")).await;
    shared
        .checkpoints
        .put("m", "p", Checkpoint::ShardEnd, &lease)
        .await
        .unwrap();
    // The finished parent is not ready any more; its child is.
    assert_eq!(ids(shared.ready_shards(&shards).await.0), ["c"]);
    // A parent the source no longer knows of (it expired) has nothing left to read.
    let (shared, _leases, _rt) = mapping(&[]).await;
    assert_eq!(ids(shared.ready_shards(&[child]).await.0), ["c"]);
}

#[tokio::test(start_paused = true)]
async fn two_mappings_started_from_one_config_are_two_workers() {
    use crate::stream::{InMemoryStream, InMemoryStreamStore, StreamConfig};
    use crate::stream_mapping::StreamMapping;

    let runtime = nimbus_core::Runtime::default();
    let (function, _) = succeeding(&runtime).await;
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4)).unwrap());
    let store = Arc::new(InMemoryStreamStore::new());
    // One configuration, one owner name, cloned into two mappings (two processes alike).
    let config = config("m").with_lease_ttl(TTL);
    let start = || {
        StreamMapping::builder(stream.clone(), function.clone(), config.clone())
            .store(store.clone())
            .start()
            .unwrap()
    };
    let (a, b) = (start(), start());
    a.drained().await.unwrap();
    b.drained().await.unwrap();
    let now = tokio::time::Instant::now();
    let workers: Vec<_> = store
        .list("m/~worker/")
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.expires > now)
        .map(|l| l.owner)
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert_ne!(workers[0], workers[1]);
    assert!(workers.iter().all(|o| o.starts_with("me#")), "{workers:?}");
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_listing_with_a_checkpoint_that_could_not_be_read_is_not_published() {
    let (shared, leases, _rt) = mapping(&["s0", "s1"]).await;
    balance(&shared).await;
    assert_eq!(shared.running.lock().len(), 2);
    let id = |name: &str| {
        let running = shared.running.lock();
        running.keys().find(|k| &***k == name).cloned().unwrap()
    };
    let (s0, s1) = (id("s0"), id("s1"));
    // A complete listing, both readers caught up (set with no await since, so that the
    // readers cannot overwrite it): drained.
    shared.drain.publish(1);
    shared.set_caught_up(&s0, Some(1));
    shared.set_caught_up(&s1, Some(1));
    assert!(shared.is_drained(1));
    // s1's reader runs, but its checkpoint cannot be read this round.
    leases.failing_gets.lock().insert("s1".to_owned());
    balance(&shared).await;
    shared.drain.publish(2);
    shared.set_caught_up(&s0, Some(2));
    shared.set_caught_up(&s1, None);
    assert!(
        !shared.is_drained(2),
        "a listing that could not see s1 was taken for drained"
    );
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn a_renewal_under_a_new_counter_stops_the_reader() {
    let (shared, leases, _rt) = mapping(&["s0"]).await;
    balance(&shared).await;
    let reader = {
        let running = shared.running.lock();
        let reader = running.values().next().unwrap();
        (reader.cancel.clone(), reader.lease.counter)
    };
    // The worker stalled past its TTL; another took the shard and gave it back.
    leases.inner.release("m/s0", "me").await.unwrap();
    let other = leases
        .inner
        .acquire("m/s0", "other", TTL)
        .await
        .unwrap()
        .unwrap();
    leases.inner.release("m/s0", "other").await.unwrap();
    assert!(other.counter > reader.1);
    balance(&shared).await;
    // Its position in memory may be stale: it restarts from the store's checkpoint.
    assert!(
        reader.0.is_cancelled(),
        "the reader went on under a new counter"
    );
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn a_shard_finished_elsewhere_before_its_lease_was_taken_is_not_read() {
    let (shared, leases, _rt) = mapping(&["s0"]).await;
    // Ready when listed; finished by another worker between the listing and the acquire.
    leases.finished_on_acquire.lock().insert("m/s0".to_owned());
    balance(&shared).await;
    assert!(
        shared.running.lock().is_empty(),
        "a reader started on a finished shard"
    );
    assert!(leases.held_by("me").await.is_empty());
    stop_readers(&shared);
}

#[tokio::test(start_paused = true)]
async fn leases_are_renewed_while_stopping_readers_finish_their_round() {
    use crate::stream::{InMemoryStream, InMemoryStreamStore, StreamConfig};
    use crate::stream_mapping::StreamMapping;

    let runtime = nimbus_core::Runtime::default();
    let (started, mut invoked) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let function = runtime
        .register(nimbus_core::Function::new(
            "slow",
            nimbus_core::handler_fn({
                let release = release.clone();
                move |_batch: crate::StreamBatch, _ctx: nimbus_core::Context| {
                    let (started, release) = (started.clone(), release.clone());
                    async move {
                        let _ = started.send(());
                        release.notified().await;
                        Ok::<_, nimbus_core::FunctionError>(crate::StreamResponse::success())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let (shard, sequence) = stream.put("k", "slow").unwrap();
    let store = Arc::new(InMemoryStreamStore::new());
    let mapping = StreamMapping::builder(stream, function, config("m").with_lease_ttl(TTL))
        .store(store.clone())
        .start()
        .unwrap();
    invoked.recv().await.unwrap();
    let stopping = tokio::spawn({
        let mapping = mapping.clone();
        async move { mapping.stop(TTL * 10).await }
    });
    // The round in hand takes three lease TTLs.
    tokio::time::sleep(TTL * 3).await;
    let now = tokio::time::Instant::now();
    let key = format!("m/{shard}");
    let leases = store.list(&key).await.unwrap();
    assert!(
        leases.iter().any(|l| l.key == key && l.expires > now),
        "the lease of a reader finishing its round lapsed: {leases:?}"
    );
    release.notify_one();
    assert!(stopping.await.unwrap(), "stopped cleanly");
    assert_eq!(
        store.get("m", &shard).await.unwrap(),
        Some(Checkpoint::At(sequence)),
        "the final checkpoint was fenced"
    );
}
