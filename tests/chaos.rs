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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus::async_trait;
use nimbus::sources::Bytes;
use nimbus::sources::{
    BatchResponse, Checkpoint, CheckpointStore, FailureDestination, InMemoryQueue, InMemoryStream,
    InMemoryStreamStore, Lease, LeaseStore, Message, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig, QueueSource, QueueStats, Receipt, Sequence, SourceError, StreamBatch,
    StreamConfig, StreamFailure, StreamMapping, StreamMappingConfig, StreamResponse,
};
use nimbus::{
    handler_fn, Backoff, Context, DeadLetter, DeliveryError, Destination, Function, FunctionError,
    InvocationRecord, Runtime, RuntimeConfig,
};
use tokio::sync::Notify;

const ASYNC_EVENTS: u64 = 120;
const QUEUE_MESSAGES: u64 = 150;
const STREAM_RECORDS: u64 = 120;
const KEYS: u64 = 6;
const QUEUE_BATCH: usize = 5;
const MAX_RECEIVES: u32 = 3;

/// The messages of the panics this test injects.
const INJECTED: [&str; 3] = [
    "handler panicked",
    "destination panicked",
    "source panicked in receive",
];

/// What a handler does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeed,
    Fail,
    Panic,
    Hang,
}

/// A deterministic coin for (seed, what, id, attempt).
fn roll(seed: u64, what: u64, id: u64, attempt: u64) -> u64 {
    let mut x = seed
        ^ what.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ id.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ attempt.wrapping_mul(0x1656_67B1_9E37_79F9);
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % 100
}

fn fate(seed: u64, what: u64, id: u64, attempt: u64) -> Fate {
    match roll(seed, what, id, attempt) {
        0..=64 => Fate::Succeed,
        65..=84 => Fate::Fail,
        85..=92 => Fate::Panic,
        _ => Fate::Hang,
    }
}

/// Counts outcomes and wakes the driver when enough have happened.
#[derive(Default)]
struct Progress {
    outcomes: AtomicUsize,
    changed: Notify,
}

impl Progress {
    fn add(&self) {
        self.outcomes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn reach(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.outcomes.load(Ordering::SeqCst) >= n {
                return;
            }
            changed.await;
        }
    }
}

/// Everything observed, for the reconciliation.
#[derive(Default)]
struct Ledger {
    async_handled: HashMap<u64, u32>,
    async_on_failure: HashSet<u64>,
    async_dead_letter: HashSet<u64>,
    queue_handled: HashMap<u64, u32>,
    /// Invocations that carried each queue message, whatever their outcome.
    queue_attempts: HashMap<u64, u32>,
    stream_handled: HashMap<Sequence, u32>,
    stream_on_failure: HashSet<Sequence>,
    /// (key, sequence) of every successful stream handling, in order.
    stream_calls: Vec<(u64, Sequence)>,
}

type Shared = Arc<Mutex<Ledger>>;

/// A destination that panics or stalls by the dice, else records.
struct ChaosDestination {
    seed: u64,
    what: u64,
    ledger: Shared,
    progress: Arc<Progress>,
    on_failure: bool,
}

#[async_trait]
impl Destination<u64, u64> for ChaosDestination {
    async fn deliver(
        &self,
        record: InvocationRecord<u64, u64>,
    ) -> Result<(), DeliveryError<InvocationRecord<u64, u64>>> {
        match roll(self.seed, self.what, record.request, 0) {
            0..=9 => panic!("destination panicked"),
            10..=17 => std::future::pending().await,
            _ => {}
        }
        if self.on_failure {
            self.ledger
                .lock()
                .unwrap()
                .async_on_failure
                .insert(record.request);
            self.progress.add();
        }
        Ok(())
    }
}

struct ReliableDeadLetter {
    ledger: Shared,
    progress: Arc<Progress>,
}

#[async_trait]
impl DeadLetter<u64> for ReliableDeadLetter {
    async fn send(
        &self,
        event: u64,
        _attributes: nimbus::DeadLetterAttributes,
    ) -> Result<(), DeliveryError<u64>> {
        self.ledger.lock().unwrap().async_dead_letter.insert(event);
        self.progress.add();
        Ok(())
    }
}

/// A queue that fails and panics on receive, and fails acks (without deleting), by the dice.
struct ChaosQueue {
    inner: Arc<InMemoryQueue>,
    seed: u64,
    calls: AtomicU64,
    failed_acks: AtomicU64,
}

impl ChaosQueue {
    fn dice(&self) -> u64 {
        roll(self.seed, 7, self.calls.fetch_add(1, Ordering::Relaxed), 0)
    }
}

#[async_trait]
impl QueueSource for ChaosQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        match self.dice() {
            0..=4 => Err(SourceError::transient("injected receive failure")),
            5..=6 => panic!("source panicked in receive"),
            _ => self.inner.receive(max, wait).await,
        }
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        if self.dice() < 5 {
            self.failed_acks.fetch_add(1, Ordering::Relaxed);
            return Err(SourceError::transient("injected ack failure"));
        }
        let acked = self.inner.ack(receipts).await;
        if matches!(acked, Err(SourceError::Refused { .. })) {
            // The visibility timeout ended before the ack (a loaded machine): the message
            // may have been received and handled again, as SQS allows.
            self.failed_acks.fetch_add(1, Ordering::Relaxed);
        }
        acked
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.release(receipts).await
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }

    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        self.inner.stats().await
    }
}

/// Checkpoints that check, at every put, that nothing unfinished is passed; leases as they are.
struct CheckedCheckpoints {
    inner: InMemoryStreamStore,
    ledger: Shared,
    shard_records: HashMap<String, Vec<Sequence>>,
    violations: Mutex<Vec<String>>,
}

#[async_trait]
impl CheckpointStore for CheckedCheckpoints {
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
        let passed = {
            let ledger = self.ledger.lock().unwrap();
            let records = self.shard_records.get(shard).cloned().unwrap_or_default();
            records
                .into_iter()
                .filter(|s| match &checkpoint {
                    Checkpoint::At(at) => s <= at,
                    Checkpoint::ShardEnd => true,
                })
                .filter(|s| {
                    !ledger.stream_handled.contains_key(s) && !ledger.stream_on_failure.contains(s)
                })
                .collect::<Vec<_>>()
        };
        if !passed.is_empty() {
            self.violations
                .lock()
                .unwrap()
                .push(format!("{shard} {checkpoint:?} passes {passed:?}"));
        }
        self.inner.put(mapping, shard, checkpoint, lease).await
    }
}

#[async_trait]
impl LeaseStore for CheckedCheckpoints {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        self.inner.acquire(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        self.inner.release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        self.inner.list(prefix).await
    }
}

struct StreamOnFailure {
    ledger: Shared,
    progress: Arc<Progress>,
}

#[async_trait]
impl FailureDestination for StreamOnFailure {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        let mut ledger = self.ledger.lock().unwrap();
        for record in &failure.records {
            ledger.stream_on_failure.insert(record.sequence.clone());
            self.progress.add();
        }
        Ok(())
    }
}

/// Runs the handler's fate: the caller has recorded nothing yet.
async fn act(fate: Fate) -> Result<(), FunctionError> {
    match fate {
        Fate::Succeed => Ok(()),
        Fate::Fail => Err(FunctionError::msg("injected failure")),
        Fate::Panic => panic!("handler panicked"),
        Fate::Hang => std::future::pending().await,
    }
}

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

/// Outcomes of one seed (or, added up, of all).
#[derive(Debug, Default)]
struct Tally {
    async_handled: u64,
    async_on_failure: u64,
    async_dead_letter: u64,
    async_handed_back: u64,
    async_refused: u64,
    queue_handled: u64,
    queue_dead_lettered: u64,
    queue_in_source: u64,
    queue_duplicates: u64,
    queue_failed_acks: u64,
    stream_handled: u64,
    stream_on_failure: u64,
    stream_in_source: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.async_handled += other.async_handled;
        self.async_on_failure += other.async_on_failure;
        self.async_dead_letter += other.async_dead_letter;
        self.async_handed_back += other.async_handed_back;
        self.async_refused += other.async_refused;
        self.queue_handled += other.queue_handled;
        self.queue_dead_lettered += other.queue_dead_lettered;
        self.queue_in_source += other.queue_in_source;
        self.queue_duplicates += other.queue_duplicates;
        self.queue_failed_acks += other.queue_failed_acks;
        self.stream_handled += other.stream_handled;
        self.stream_on_failure += other.stream_on_failure;
        self.stream_in_source += other.stream_in_source;
    }
}
