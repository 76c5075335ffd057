//! Chaos: the in-process product under random failures, reconciled event by event.
//!
//! Each seed builds one runtime on a multi-thread Tokio runtime with three feeds:
//! - an **async** function whose handler randomly errors, panics or hangs past its timeout,
//!   whose on-success destination randomly panics or stalls forever, and whose on-failure
//!   destination randomly panics or stalls (a reliable dead letter stands behind it);
//! - a **queue mapping** over an in-memory queue with redrive, wrapped in a source that
//!   randomly fails and panics on receive and fails acks, and a handler that randomly errors,
//!   panics or hangs;
//! - a **stream mapping** over two shards with bisect, bounded retries and an on-failure
//!   destination, whose handler randomly errors, panics or hangs.
//!
//! At a random moment (after a random number of events have reached an outcome) the runtime
//! shuts down with a random grace. Then every event is reconciled: it must have at least one
//! final outcome — handled, dead-lettered, taken by an on-failure destination, handed back in
//! the shutdown report, refused at the door, or still in its source — and none may have none.
//! Duplicates (an event handled more than once) are counted and bounded by the failures that
//! can cause them (a failed ack re-delivers at most its batch). For the stream, per-key order
//! holds and no checkpoint passes a record that was neither handled nor sent to on-failure.
//!
//! `NIMBUS_CHAOS_SEEDS` sets the number of seeds (default 24) and `NIMBUS_CHAOS_FIRST_SEED`
//! the first one, so that a failing seed can be run again alone.

mod faults;
mod ledger;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus::sources::Bytes;
use nimbus::sources::{
    BatchResponse, Checkpoint, CheckpointStore, InMemoryQueue, InMemoryStream, InMemoryStreamStore,
    QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource, Receipt, Sequence,
    StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse,
};
use nimbus::{handler_fn, Backoff, Context, Function, FunctionError, Runtime, RuntimeConfig};

use faults::{act, fate, roll, ChaosDestination, ChaosQueue, INJECTED};
use ledger::{CheckedCheckpoints, Progress, ReliableDeadLetter, Shared, StreamOnFailure, Tally};

const ASYNC_EVENTS: u64 = 120;
const QUEUE_MESSAGES: u64 = 150;
const STREAM_RECORDS: u64 = 120;
const KEYS: u64 = 6;
const QUEUE_BATCH: usize = 5;
const MAX_RECEIVES: u32 = 3;

fn seeds() -> std::ops::Range<u64> {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let first = var("NIMBUS_CHAOS_FIRST_SEED", 1);
    first..first + var("NIMBUS_CHAOS_SEEDS", 24)
}

#[test]
fn every_event_has_an_outcome_under_chaos() {
    // The injected panics are expected; keep the output readable, and show every other one.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| INJECTED.contains(m));
        if !injected {
            default_hook(info);
        }
    }));
    let mut total = Tally::default();
    let seeds = seeds();
    let count = seeds.end - seeds.start;
    for seed in seeds {
        let tokio_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tally = tokio_rt.block_on(run_seed(seed));
        tokio_rt.shutdown_timeout(Duration::from_secs(5));
        total.add(&tally);
    }
    let _ = std::panic::take_hook();
    println!("chaos: {count} seeds; outcomes over all of them: {total:?}");
}

#[allow(clippy::too_many_lines)]
async fn run_seed(seed: u64) -> Tally {
    let ledger: Shared = Arc::default();
    let progress = Arc::new(Progress::default());
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let timeout = Duration::from_millis(20);

    // --- async ---
    let async_fn = runtime
        .register(
            Function::new(
                "chaos-async",
                handler_fn({
                    let (ledger, progress) = (ledger.clone(), progress.clone());
                    move |n: u64, ctx: Context| {
                        let (ledger, progress) = (ledger.clone(), progress.clone());
                        async move {
                            act(fate(seed, 1, n, u64::from(ctx.attempt()))).await?;
                            *ledger.lock().unwrap().async_handled.entry(n).or_default() += 1;
                            progress.add();
                            Ok::<_, FunctionError>(n)
                        }
                    }
                }),
            )
            .with_timeout(timeout)
            .with_max_concurrency(4)
            .with_max_retries(2)
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(2)).unwrap())
            .with_delivery_timeout(Duration::from_millis(50))
            .with_on_success(ChaosDestination {
                seed,
                what: 2,
                ledger: ledger.clone(),
                progress: progress.clone(),
                on_failure: false,
            })
            .with_on_failure(ChaosDestination {
                seed,
                what: 3,
                ledger: ledger.clone(),
                progress: progress.clone(),
                on_failure: true,
            })
            .with_dead_letter(ReliableDeadLetter {
                ledger: ledger.clone(),
                progress: progress.clone(),
            }),
        )
        .await
        .unwrap();
    let mut refused_async = HashSet::new();
    for n in 0..ASYNC_EVENTS {
        if let Err(rejected) = async_fn.invoke_async(n) {
            refused_async.insert(rejected.event);
        }
    }

    // --- queue ---
    let dead_letters = Arc::new(InMemoryQueue::new(QueueConfig::default()).unwrap());
    let inner = Arc::new(
        InMemoryQueue::new(
            QueueConfig::default()
                .with_visibility_timeout(Duration::from_millis(25))
                .with_redrive(dead_letters.clone(), MAX_RECEIVES),
        )
        .unwrap(),
    );
    for n in 0..QUEUE_MESSAGES {
        inner.send(n.to_string()).unwrap();
    }
    // The dead-letter queue's consumer: long-polls (woken by the redrive itself), records what
    // arrives as dead-lettered, and reports the progress.
    let dlq_consumer = tokio::spawn({
        let (dead_letters, progress) = (dead_letters.clone(), progress.clone());
        async move {
            let mut dead = HashSet::new();
            loop {
                let messages = dead_letters
                    .receive(100, Duration::from_secs(3_600))
                    .await
                    .unwrap();
                let receipts: Vec<Receipt> = messages.iter().map(|m| m.receipt.clone()).collect();
                dead_letters.ack(&receipts).await.unwrap();
                for message in &messages {
                    let body = std::str::from_utf8(&message.body).unwrap();
                    if body == "end" {
                        return dead;
                    }
                    if dead.insert(body.parse::<u64>().unwrap()) {
                        progress.add();
                    }
                }
            }
        }
    });
    let chaos_queue = Arc::new(ChaosQueue {
        inner: inner.clone(),
        seed,
        calls: AtomicU64::new(0),
        failed_acks: AtomicU64::new(0),
    });
    let queue_fn = runtime
        .register(
            Function::new(
                "chaos-queue",
                handler_fn({
                    let (ledger, progress) = (ledger.clone(), progress.clone());
                    move |batch: QueueBatch, ctx: Context| {
                        let (ledger, progress) = (ledger.clone(), progress.clone());
                        async move {
                            let ids: Vec<u64> = batch
                                .records
                                .iter()
                                .map(|r| r.body_str().unwrap().parse().unwrap())
                                .collect();
                            {
                                let mut ledger = ledger.lock().unwrap();
                                for id in &ids {
                                    *ledger.queue_attempts.entry(*id).or_default() += 1;
                                }
                            }
                            let first = ids.first().copied().unwrap_or(0);
                            let attempt = batch.records.first().map_or(0, |r| r.receive_count);
                            let _ = ctx;
                            act(fate(seed, 4, first, u64::from(attempt))).await?;
                            let mut ledger = ledger.lock().unwrap();
                            for id in ids {
                                *ledger.queue_handled.entry(id).or_default() += 1;
                                progress.add();
                            }
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(timeout),
        )
        .await
        .unwrap();
    let queue_mapping = QueueMapping::start(
        chaos_queue.clone(),
        queue_fn,
        QueueMappingConfig::new("chaos-queue")
            .with_batch_size(QUEUE_BATCH)
            .with_poll_wait(Duration::from_millis(50)),
    )
    .unwrap();
    runtime.attach(queue_mapping.clone()).unwrap();

    // --- stream ---
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2)).unwrap());
    let mut key_of = HashMap::new();
    let mut shard_records: HashMap<String, Vec<Sequence>> = HashMap::new();
    for n in 0..STREAM_RECORDS {
        let key = n % KEYS;
        let (shard, seq) = stream.put(&format!("key-{key}"), n.to_string()).unwrap();
        key_of.insert(seq.clone(), key);
        shard_records
            .entry(shard.to_string())
            .or_default()
            .push(seq);
    }
    let key_of = Arc::new(key_of);
    let stream_fn = runtime
        .register(
            Function::new(
                "chaos-stream",
                handler_fn({
                    let (ledger, progress, key_of) =
                        (ledger.clone(), progress.clone(), key_of.clone());
                    let attempts = Arc::new(AtomicU64::new(0));
                    move |batch: StreamBatch, _ctx: Context| {
                        let (ledger, progress, key_of) =
                            (ledger.clone(), progress.clone(), key_of.clone());
                        let attempt = attempts.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let first = batch
                                .records
                                .first()
                                .and_then(|r| r.sequence.as_u128())
                                .map_or(0, |s| s as u64);
                            act(fate(seed, 5, first, attempt)).await?;
                            let mut ledger = ledger.lock().unwrap();
                            for record in &batch.records {
                                *ledger
                                    .stream_handled
                                    .entry(record.sequence.clone())
                                    .or_default() += 1;
                                ledger
                                    .stream_calls
                                    .push((key_of[&record.sequence], record.sequence.clone()));
                                progress.add();
                            }
                            Ok::<_, FunctionError>(StreamResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(timeout),
        )
        .await
        .unwrap();
    let checkpoints = Arc::new(CheckedCheckpoints {
        inner: InMemoryStreamStore::new(),
        ledger: ledger.clone(),
        shard_records: shard_records.clone(),
        violations: Mutex::default(),
    });
    let stream_mapping = StreamMapping::builder(
        stream.clone(),
        stream_fn,
        StreamMappingConfig::new("chaos-stream")
            .with_batch_size(4)
            .with_parallelization_factor(2)
            .with_bisect_on_error(true)
            .with_max_retry_attempts(2)
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(2)).unwrap())
            .with_poll_wait(Duration::from_millis(50)),
    )
    .store(checkpoints.clone())
    .on_failure(StreamOnFailure {
        ledger: ledger.clone(),
        progress: progress.clone(),
    })
    .start()
    .unwrap();
    runtime.attach(stream_mapping.clone()).unwrap();

    // --- a random moment, then shutdown with a random grace ---
    let all = (ASYNC_EVENTS + QUEUE_MESSAGES + STREAM_RECORDS) as usize;
    // Every event reaches an outcome in time (stalled deliveries time out), so any moment
    // up to the end is reached.
    // A third of the seeds run until every event has one, so that retries, redrives and
    // on-failure destinations are reached too.
    let moment = usize::try_from(roll(seed, 8, 0, 0)).unwrap().min(66) * all / 66;
    let grace = Duration::from_millis(roll(seed, 9, 0, 0) % 40);
    let reached = tokio::time::timeout(Duration::from_secs(20), progress.reach(moment)).await;
    assert!(
        reached.is_ok(),
        "seed {seed}: stuck at {} outcomes of the {moment} awaited",
        progress.outcomes.load(Ordering::SeqCst)
    );
    if std::env::var_os("NIMBUS_CHAOS_VERBOSE").is_some() {
        println!(
            "seed {seed}: shutdown after {} outcomes (awaited {moment}), grace {grace:?}",
            progress.outcomes.load(Ordering::SeqCst)
        );
    }
    let started = tokio::time::Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), runtime.shutdown(grace))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: shutdown({grace:?}) did not return"));
    let took = started.elapsed();
    assert!(
        took <= grace + Duration::from_secs(2),
        "seed {seed}: shutdown({grace:?}) took {took:?}"
    );

    // --- reconcile the async events ---
    let handed_back: HashSet<u64> = report
        .handed_back
        .into_iter()
        .filter_map(|h| h.downcast::<u64>().ok())
        .collect();
    // The dead-letter consumer stops at this marker, sent after everything the runtime
    // dead-lettered; the stream's checkpoints are final too.
    dead_letters.send("end").unwrap();
    let mut dead: HashSet<u64> = dlq_consumer.await.unwrap();
    let mut final_checkpoints = HashMap::new();
    for shard in shard_records.keys() {
        let checkpoint = checkpoints.inner.get("chaos-stream", shard).await.unwrap();
        final_checkpoints.insert(shard.clone(), checkpoint);
    }
    let ledger = ledger.lock().unwrap();
    let mut tally = Tally {
        async_handled: ledger.async_handled.len() as u64,
        async_on_failure: ledger.async_on_failure.len() as u64,
        async_dead_letter: ledger.async_dead_letter.len() as u64,
        async_handed_back: handed_back.len() as u64,
        async_refused: refused_async.len() as u64,
        ..Tally::default()
    };
    let mut duplicates = 0;
    for n in 0..ASYNC_EVENTS {
        let outcomes = u32::from(ledger.async_on_failure.contains(&n))
            + u32::from(ledger.async_dead_letter.contains(&n))
            + u32::from(handed_back.contains(&n))
            + u32::from(refused_async.contains(&n))
            + ledger.async_handled.get(&n).copied().unwrap_or(0);
        assert!(outcomes > 0, "seed {seed}: async event {n} has no outcome");
        // A success ends an event: it is never handled twice.
        assert!(
            ledger.async_handled.get(&n).copied().unwrap_or(0) <= 1,
            "seed {seed}: async event {n} handled twice"
        );
    }

    // --- reconcile the queue: handled, dead-lettered, or still in the queue ---
    let mut in_source: HashSet<u64> = HashSet::new();
    let drain = |queue: &InMemoryQueue, into: &mut HashSet<u64>| {
        let messages = queue.bodies();
        into.extend(
            messages
                .iter()
                .map(|body: &Bytes| std::str::from_utf8(body).unwrap().parse::<u64>().unwrap()),
        );
    };
    drain(&inner, &mut in_source);
    drain(&dead_letters, &mut dead);
    for n in 0..QUEUE_MESSAGES {
        let handled = ledger.queue_handled.get(&n).copied().unwrap_or(0);
        assert!(
            handled > 0 || dead.contains(&n) || in_source.contains(&n),
            "seed {seed}: queue message {n} has no outcome"
        );
        duplicates += u64::from(handled.saturating_sub(1));
        // Dead-lettered unhandled, it was tried once per receive: a receive that raised its
        // count without an invocation (a lost release) would show here.
        let attempts = ledger.queue_attempts.get(&n).copied().unwrap_or(0);
        assert!(
            handled > 0 || !dead.contains(&n) || attempts >= MAX_RECEIVES,
            "seed {seed}: queue message {n} dead-lettered after {attempts} invocations"
        );
    }
    let failed_acks = chaos_queue.failed_acks.load(Ordering::Relaxed);
    tally.queue_handled = ledger.queue_handled.len() as u64;
    tally.queue_dead_lettered = dead.len() as u64;
    tally.queue_in_source = in_source.len() as u64;
    tally.queue_duplicates = duplicates;
    tally.queue_failed_acks = failed_acks;
    assert!(
        duplicates <= failed_acks * QUEUE_BATCH as u64,
        "seed {seed}: {duplicates} duplicates from {failed_acks} failed or late acks"
    );

    // --- reconcile the stream: checkpoints, order, outcomes ---
    let violations = checkpoints.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    for (shard, records) in &shard_records {
        let checkpoint = &final_checkpoints[shard];
        for seq in records {
            let covered = match checkpoint {
                Some(Checkpoint::At(at)) => seq <= at,
                Some(Checkpoint::ShardEnd) => true,
                None => false,
            };
            let finished =
                ledger.stream_handled.contains_key(seq) || ledger.stream_on_failure.contains(seq);
            // Past the checkpoint a record is still in its source, to be read again.
            assert!(
                finished || !covered,
                "seed {seed}: record {seq:?} of {shard} covered by {checkpoint:?} unfinished"
            );
        }
    }
    let mut last: HashMap<u64, Sequence> = HashMap::new();
    for (key, seq) in &ledger.stream_calls {
        if let Some(prev) = last.get(key) {
            assert!(seq > prev, "seed {seed}: key {key}: {seq:?} after {prev:?}");
        }
        last.insert(*key, seq.clone());
    }
    tally.stream_handled = ledger.stream_handled.len() as u64;
    tally.stream_on_failure = ledger.stream_on_failure.len() as u64;
    tally.stream_in_source = STREAM_RECORDS - tally.stream_handled - tally.stream_on_failure;
    tally
}
