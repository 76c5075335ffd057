//! Property: with random failures, random parallelization factors and bisect on or off, per
//! partition key records are handled in sequence order, no record is lost, and a checkpoint
//! never passes a record that was neither handled nor sent to the on-failure destination.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::{handler_fn, Backoff, Context, DeliveryError, Function, FunctionError};
use nimbus_sources::{
    Checkpoint, CheckpointStore, FailureDestination, InMemoryStream, InMemoryStreamStore, Lease,
    Sequence, SourceError, StreamBatch, StreamConfig, StreamFailure, StreamMapping,
    StreamMappingConfig, StreamResponse,
};
use parking_lot::Mutex;
use proptest::prelude::*;

use crate::support::{forward_leases, runtime};

/// Records finished so far: handled by the function, or taken by the on-failure destination.
#[derive(Default, Clone)]
struct Finished {
    handled: HashSet<Sequence>,
    failed: HashSet<Sequence>,
}

type Shared = Arc<Mutex<Finished>>;

/// A checkpoint store that checks, at every put, that the checkpoint passes no unfinished
/// record of its shard.
struct Checked {
    inner: InMemoryStreamStore,
    finished: Shared,
    shard_records: HashMap<String, Vec<Sequence>>,
    violations: Mutex<Vec<String>>,
}

#[async_trait]
impl CheckpointStore for Checked {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        self.inner.get(mapping, shard).await
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        let passed: Vec<Sequence> = {
            let finished = self.finished.lock();
            let records = self.shard_records.get(shard).cloned().unwrap_or_default();
            let unfinished =
                |seq: &Sequence| !finished.handled.contains(seq) && !finished.failed.contains(seq);
            match &checkpoint {
                Checkpoint::At(at) => records
                    .iter()
                    .filter(|s| *s <= at)
                    .filter(|s| unfinished(s))
                    .cloned()
                    .collect(),
                Checkpoint::ShardEnd => records.iter().filter(|s| unfinished(s)).cloned().collect(),
            }
        };
        if !passed.is_empty() {
            self.violations
                .lock()
                .push(format!("{shard} {checkpoint:?} passes {passed:?}"));
        }
        self.inner.put(mapping, shard, checkpoint, lease).await
    }
}

forward_leases!(Checked, inner);

struct Collect(Shared);

#[async_trait]
impl FailureDestination for Collect {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        let mut finished = self.0.lock();
        for r in &failure.records {
            finished.failed.insert(r.sequence.clone());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn order_no_loss_and_safe_checkpoints(
        // (key, failures before success) per record
        records in prop::collection::vec((0u8..6, 0u32..4), 1..60),
        factor in 1u32..=4,
        bisect in any::<bool>(),
        max_retries in prop_oneof![Just(-1i64), 0i64..=2],
        batch_size in 1usize..=8,
    ) {
        let tokio_rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        tokio_rt.block_on(run_case(records, factor, bisect, max_retries, batch_size));
    }
}

async fn run_case(
    records: Vec<(u8, u32)>,
    factor: u32,
    bisect: bool,
    max_retries: i64,
    batch_size: usize,
) {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap());
    let mut fails: HashMap<Sequence, u32> = HashMap::new();
    let mut key_of: HashMap<Sequence, u8> = HashMap::new();
    let mut shard_records: HashMap<String, Vec<Sequence>> = HashMap::new();
    for (key, failures) in &records {
        let (shard, seq) = stream.put(&format!("key-{key}"), format!("{key}")).unwrap();
        fails.insert(seq.clone(), *failures);
        key_of.insert(seq.clone(), *key);
        shard_records
            .entry(shard.to_string())
            .or_default()
            .push(seq);
    }
    let finished: Shared = Arc::default();
    let calls: Arc<Mutex<Vec<(u8, Sequence, bool)>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<Sequence, u32>>> = Arc::default();
    let (fails, key_of) = (Arc::new(fails), Arc::new(key_of));
    let function = rt
        .register(Function::new(
            "random",
            handler_fn({
                let (finished, calls, attempts, fails, key_of) = (
                    finished.clone(),
                    calls.clone(),
                    attempts.clone(),
                    fails.clone(),
                    key_of.clone(),
                );
                move |batch: StreamBatch, _ctx: Context| {
                    let (finished, calls, attempts, fails, key_of) = (
                        finished.clone(),
                        calls.clone(),
                        attempts.clone(),
                        fails.clone(),
                        key_of.clone(),
                    );
                    async move {
                        let mut ok = true;
                        for r in &batch.records {
                            let n = {
                                let mut a = attempts.lock();
                                let n = a.entry(r.sequence.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            if n <= fails[&r.sequence] {
                                ok = false;
                            }
                        }
                        for r in &batch.records {
                            calls
                                .lock()
                                .push((key_of[&r.sequence], r.sequence.clone(), ok));
                        }
                        if !ok {
                            return Err(FunctionError::msg("injected"));
                        }
                        let mut f = finished.lock();
                        for r in &batch.records {
                            f.handled.insert(r.sequence.clone());
                        }
                        Ok::<_, FunctionError>(StreamResponse::success())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let checked = Arc::new(Checked {
        inner: InMemoryStreamStore::new(),
        finished: finished.clone(),
        shard_records: shard_records.clone(),
        violations: Mutex::default(),
    });
    let config = StreamMappingConfig::new("random")
        .with_parallelization_factor(factor)
        .with_bisect_on_error(bisect)
        .with_max_retry_attempts(max_retries)
        .with_batch_size(batch_size)
        .with_retry_backoff(Backoff::fixed(Duration::from_millis(100)).unwrap());
    let mapping = StreamMapping::builder(stream.clone(), function, config)
        .store(checked.clone())
        .on_failure(Collect(finished.clone()))
        .start()
        .unwrap();
    // Drained: every record finished, and each shard checkpointed to its end.
    mapping.drained().await.unwrap();
    let f = finished.lock().clone();
    assert_eq!(f.handled.union(&f.failed).count(), records.len());
    for (shard, seqs) in &shard_records {
        let last = seqs.last().unwrap().clone();
        assert_eq!(
            checked.inner.get("random", shard).await.unwrap(),
            Some(Checkpoint::At(last)),
            "shard {shard} checkpointed to its last record"
        );
    }
    mapping.stop(Duration::from_secs(5)).await;

    assert!(
        checked.violations.lock().is_empty(),
        "{:?}",
        checked.violations.lock()
    );
    let f = finished.lock();
    assert!(
        f.handled.is_disjoint(&f.failed),
        "a record both handled and sent to on-failure"
    );
    if max_retries < 0 {
        assert!(
            f.failed.is_empty(),
            "nothing is given up without a retry limit"
        );
    }
    // Per key: successful handlings strictly increase, and no call goes back before one.
    let mut last_ok: HashMap<u8, Sequence> = HashMap::new();
    for (key, seq, ok) in calls.lock().iter() {
        if let Some(prev) = last_ok.get(key) {
            assert!(seq > prev, "key {key}: {seq} handled after {prev}");
        }
        if *ok {
            last_ok.insert(*key, seq.clone());
        }
    }
}
