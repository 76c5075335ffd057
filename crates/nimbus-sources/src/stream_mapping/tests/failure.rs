//! Failure handling: retries until success, bisection down to the poison record, partial
//! batch responses, record age, a refusing destination, and stopping mid-retry.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{DeliveryError, FunctionError};
use tokio_util::sync::CancellationToken;

use super::super::progress::Round;
use super::super::{Done, FailureDestination, StreamCondition, StreamFailure, StreamResponse};
use super::support::{
    config, function, hold, record, record_at, run_batch, sequences, Parts, RecordedCheckpoints,
};
use crate::stream::{stream_now, Checkpoint, Sequence, ShardId, StreamRecord};

fn shard() -> ShardId {
    Arc::from("s")
}

fn batch(n: u128) -> Vec<StreamRecord> {
    (1..=n).map(|i| record("k", i)).collect()
}

fn at(sequence: u128) -> Checkpoint {
    Checkpoint::At(Sequence::from(sequence))
}

/// Fails a batch that holds the record with sequence number `poison`.
fn poisoned(
    poison: u128,
) -> impl Fn(&super::super::StreamBatch) -> Result<StreamResponse, FunctionError> {
    let poison = Sequence::from(poison);
    move |batch| {
        if batch.records.iter().any(|r| r.sequence == poison) {
            Err(FunctionError::msg("poison"))
        } else {
            Ok(StreamResponse::success())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_batch_is_retried_until_the_function_succeeds() {
    let runtime = nimbus_core::Runtime::default();
    let failures = Arc::new(AtomicU32::new(0));
    let (function, calls) = function(&runtime, {
        let failures = failures.clone();
        move |_| {
            if failures.fetch_add(1, Ordering::Relaxed) < 2 {
                Err(FunctionError::msg("not yet"))
            } else {
                Ok(StreamResponse::success())
            }
        }
    })
    .await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("f"));
    parts.store(store.clone());
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let records = batch(3);
    let round = Round::new(&records);
    let done = run_batch(&shared, &shard(), records.clone(), &round).await;
    assert!(matches!(done, Done::Finished));
    assert_eq!(calls.lock().len(), 3);
    assert!(calls
        .lock()
        .iter()
        .all(|b| sequences(&b.records) == sequences(&records)));
    assert_eq!(shared.metrics.lock()[&shard()].retries, 2);
    assert_eq!(store.written.lock().clone(), vec![("s".to_owned(), at(3))]);
}

#[tokio::test(start_paused = true)]
async fn bisection_isolates_the_poison_record_and_handles_the_rest() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = function(&runtime, poisoned(3)).await;
    let (tx, mut given_up) = tokio::sync::mpsc::unbounded_channel();
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(
        config("f")
            .with_bisect_on_error(true)
            .with_max_retry_attempts(0),
    );
    parts.store(store.clone());
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let records = batch(4);
    let round = Round::new(&records);
    run_batch(&shared, &shard(), records, &round).await;
    let invoked: Vec<Vec<Sequence>> = calls.lock().iter().map(|b| sequences(&b.records)).collect();
    let s = |v: &[u128]| v.iter().map(|n| Sequence::from(*n)).collect::<Vec<_>>();
    // Halves in order, first half first; the poison record alone is given up on.
    assert_eq!(
        invoked,
        vec![s(&[1, 2, 3, 4]), s(&[1, 2]), s(&[3, 4]), s(&[3]), s(&[4])]
    );
    let failure = given_up.try_recv().unwrap();
    assert_eq!(sequences(&failure.records), s(&[3]));
    assert_eq!(failure.condition, StreamCondition::RetryAttemptsExhausted);
    assert!(given_up.try_recv().is_err());
    let written: Vec<Checkpoint> = store
        .written
        .lock()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(written, vec![at(2), at(3), at(4)]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_failure_finishes_the_records_before_it_and_retries_from_it() {
    let runtime = nimbus_core::Runtime::default();
    let reported = Arc::new(AtomicU32::new(0));
    let (function, calls) = function(&runtime, {
        let reported = reported.clone();
        move |batch| {
            // Record 3 fails once, reported as an item failure along with the later record 4.
            if reported.fetch_add(1, Ordering::Relaxed) == 0 {
                let failed = batch.records[2..].iter().map(|r| r.sequence.clone());
                return Ok(StreamResponse::failures(failed.rev()));
            }
            Ok(StreamResponse::success())
        }
    })
    .await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("f").with_report_batch_item_failures(true));
    parts.store(store.clone());
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let records = batch(4);
    let round = Round::new(&records);
    run_batch(&shared, &shard(), records, &round).await;
    let invoked: Vec<usize> = calls.lock().iter().map(|b| b.records.len()).collect();
    assert_eq!(
        invoked,
        vec![4, 2],
        "the retry starts at the first failed record"
    );
    let written: Vec<Checkpoint> = store
        .written
        .lock()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    assert_eq!(written, vec![at(2), at(4)]);
}

#[tokio::test(start_paused = true)]
async fn records_older_than_the_maximum_age_go_to_the_destination_unhandled() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = function(&runtime, |_| Ok(StreamResponse::success())).await;
    let (tx, mut given_up) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(config("f").with_max_record_age(Duration::from_secs(60)));
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let old = stream_now() - Duration::from_secs(61);
    let records = vec![record_at("k", 1, old), record("k", 2)];
    let round = Round::new(&records);
    run_batch(&shared, &shard(), records, &round).await;
    let failure = given_up.try_recv().unwrap();
    assert_eq!(failure.condition, StreamCondition::RecordAgeExceeded);
    assert_eq!(sequences(&failure.records), vec![Sequence::from(1u128)]);
    assert_eq!(calls.lock().len(), 1);
    assert_eq!(
        sequences(&calls.lock()[0].records),
        vec![Sequence::from(2u128)]
    );
}

/// Refuses deliveries, telling the test of each, until it is told to take them.
struct Reluctant {
    take: std::sync::atomic::AtomicBool,
    refused: tokio::sync::mpsc::UnboundedSender<()>,
    kept: parking_lot::Mutex<Vec<StreamFailure>>,
}

#[async_trait::async_trait]
impl FailureDestination for Reluctant {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        if !self.take.load(Ordering::SeqCst) {
            let _ = self.refused.send(());
            return Err(DeliveryError::new(failure, "not now"));
        }
        self.kept.lock().push(failure);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn records_stay_unfinished_until_the_destination_takes_them() {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = function(&runtime, poisoned(1)).await;
    let (refused, mut refusals) = tokio::sync::mpsc::unbounded_channel();
    let destination = Arc::new(Reluctant {
        take: std::sync::atomic::AtomicBool::new(false),
        refused,
        kept: parking_lot::Mutex::default(),
    });
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("f").with_max_retry_attempts(0));
    parts.store(store.clone());
    parts.on_failure = Some(destination.clone());
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let records = batch(1);
    let round = Round::new(&records);
    let cancel = CancellationToken::new();
    let shard = shard();
    let processing = shared.process_batch(&shard, records, None, None, &round, &cancel);
    tokio::pin!(processing);
    // While the destination refuses, the checkpoint stays where it was.
    for _ in 0..3 {
        tokio::select! {
            _ = &mut processing => panic!("finished while the destination refused"),
            _ = refusals.recv() => {}
        }
        assert!(store.written.lock().is_empty());
    }
    destination.take.store(true, Ordering::SeqCst);
    assert!(matches!(processing.await, Done::Finished));
    assert_eq!(destination.kept.lock().len(), 1);
    assert_eq!(store.written.lock().clone(), vec![("s".to_owned(), at(1))]);
}

#[tokio::test(start_paused = true)]
async fn stopping_mid_retry_leaves_the_records_unfinished() {
    let runtime = nimbus_core::Runtime::default();
    let (invoked, mut invocations) = tokio::sync::mpsc::unbounded_channel();
    let poison = poisoned(1);
    let (function, _) = function(&runtime, move |batch| {
        let _ = invoked.send(());
        poison(batch)
    })
    .await;
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("f"));
    parts.store(store.clone());
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let records = batch(2);
    let round = Round::new(&records);
    let cancel = CancellationToken::new();
    let shard = shard();
    let processing = shared.process_batch(&shard, records, None, None, &round, &cancel);
    tokio::pin!(processing);
    // Once the function has seen the batch twice (it is retrying), stop.
    for _ in 0..2 {
        tokio::select! {
            _ = &mut processing => panic!("a poison batch with unlimited retries finished"),
            _ = invocations.recv() => {}
        }
    }
    cancel.cancel();
    assert!(matches!(processing.await, Done::Stopped));
    assert!(store.written.lock().is_empty());
}

/// The documented on-failure destination: each failure as JSON on a queue.
#[derive(Debug)]
struct ToQueue(Arc<crate::InMemoryQueue>);

#[async_trait::async_trait]
impl FailureDestination for ToQueue {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        let body = match serde_json::to_vec(&failure) {
            Ok(body) => body,
            Err(e) => return Err(DeliveryError::new(failure, e.to_string())),
        };
        match self.0.send(body) {
            Ok(_) => Ok(()),
            Err(refused) if matches!(refused.error, crate::SourceError::TooLarge { .. }) => {
                let lambdas = failure.without_records();
                let body = serde_json::to_vec(&lambdas).unwrap_or_default();
                self.0
                    .send(body)
                    .map(|_| ())
                    .map_err(|refused| DeliveryError::new(lambdas, refused.error.to_string()))
            }
            Err(refused) => Err(DeliveryError::new(failure, refused.error.to_string())),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_too_large_for_the_queue_goes_as_lambdas_own_record() {
    let runtime = nimbus_core::Runtime::default();
    let (function, _) = function(&runtime, |_| Err(FunctionError::msg("down"))).await;
    let queue = Arc::new(crate::InMemoryQueue::new(crate::QueueConfig::default()).unwrap());
    let store = Arc::new(RecordedCheckpoints::default());
    let mut parts = Parts::new(config("f").with_max_retry_attempts(0));
    parts.store(store.clone());
    parts.on_failure = Some(Arc::new(ToQueue(queue.clone())));
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    // 100 records of 12 KB: the full record (with `nimbus.records`) is over the queue's 1 MiB.
    let records: Vec<StreamRecord> = (1..=100u128)
        .map(|i| StreamRecord::new("k", Sequence::from(i), vec![b'x'; 12_000], stream_now()))
        .collect();
    let round = Round::new(&records);
    let done = tokio::time::timeout(
        Duration::from_secs(3600),
        run_batch(&shared, &shard(), records, &round),
    )
    .await
    .expect("the shard stalled on a failure record the queue cannot take");
    assert!(matches!(done, Done::Finished));
    let received = crate::QueueSource::receive(&*queue, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    let failure: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(failure["KinesisBatchInfo"]["batchSize"], 100);
    assert_eq!(failure["KinesisBatchInfo"]["startSequenceNumber"], "1");
    assert_eq!(failure["KinesisBatchInfo"]["endSequenceNumber"], "100");
    assert!(failure["nimbus"].get("records").is_none());
    assert_eq!(failure["nimbus"]["error"]["errorMessage"], "down");
    assert_eq!(
        store.written.lock().clone(),
        vec![("s".to_owned(), at(100))]
    );
}

/// Takes every failure after a wait, as a slow destination would.
struct Slow {
    takes: Duration,
    kept: parking_lot::Mutex<Vec<StreamFailure>>,
}

#[async_trait::async_trait]
impl FailureDestination for Slow {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        tokio::time::sleep(self.takes).await;
        self.kept.lock().push(failure);
        Ok(())
    }
}

/// Records that pass the maximum age while the expired ones before them are delivered are
/// checked again, and go to the destination too, not to the function.
#[tokio::test(start_paused = true)]
async fn records_that_expire_during_a_slow_delivery_are_not_invoked() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = function(&runtime, |_| Ok(StreamResponse::success())).await;
    let destination = Arc::new(Slow {
        takes: Duration::from_secs(40),
        kept: parking_lot::Mutex::default(),
    });
    let mut parts = Parts::new(config("f").with_max_record_age(Duration::from_secs(60)));
    parts.on_failure = Some(destination.clone());
    let shared = parts.build(function);
    hold(&shared, &shard()).await;
    let now = stream_now();
    let records = vec![
        record_at("k", 1, now - Duration::from_secs(61)),
        // Fresh now, 70 s old once the first record's delivery is done.
        record_at("k", 2, now - Duration::from_secs(30)),
    ];
    let round = Round::new(&records);
    run_batch(&shared, &shard(), records, &round).await;
    assert_eq!(calls.lock().len(), 0, "no expired record is invoked");
    let kept = destination.kept.lock();
    let given_up: Vec<_> = kept
        .iter()
        .map(|f| (f.condition, sequences(&f.records)))
        .collect();
    assert_eq!(
        given_up,
        vec![
            (
                StreamCondition::RecordAgeExceeded,
                vec![Sequence::from(1u128)]
            ),
            (
                StreamCondition::RecordAgeExceeded,
                vec![Sequence::from(2u128)]
            ),
        ]
    );
}

/// The iterator age is the last record's age when its batch is sent, as Lambda's
/// `IteratorAge` is, not when the function has answered.
#[tokio::test(start_paused = true)]
async fn the_iterator_age_is_taken_when_the_batch_is_sent() {
    let runtime = nimbus_core::Runtime::default();
    let function = runtime
        .register(nimbus_core::Function::new(
            "slow",
            nimbus_core::handler_fn(
                |_batch: super::super::StreamBatch, _ctx: nimbus_core::Context| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok::<_, FunctionError>(StreamResponse::success())
                },
            ),
        ))
        .await
        .expect("registered");
    let shared = Parts::new(config("f")).build(function);
    hold(&shared, &shard()).await;
    let records = vec![record_at("k", 1, stream_now() - Duration::from_secs(10))];
    let round = Round::new(&records);
    run_batch(&shared, &shard(), records, &round).await;
    let metrics = shared.metrics.lock()[&shard()].clone();
    assert_eq!(metrics.batches, 1);
    // The stream's clock follows the paused one from its first reading, so ages are exact
    // only to within the real time before that: the 2 s of the invocation must not be in it.
    let age = metrics.iterator_age;
    assert!(
        age > Duration::from_secs(9) && age < Duration::from_secs(11),
        "{age:?}"
    );
}
