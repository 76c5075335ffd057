//! What the chaos test observes: the ledger of every outcome, the progress the driver waits
//! on, the dead letter and stream on-failure destination that record reliably, checkpoints
//! that check they pass nothing unfinished, and the tally of a seed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus::async_trait;
use nimbus::sources::{
    Checkpoint, CheckpointStore, FailureDestination, InMemoryStreamStore, Lease, LeaseStore,
    Sequence, SourceError, StreamFailure,
};
use nimbus::{DeadLetter, DeliveryError};
use tokio::sync::Notify;

/// Counts outcomes and wakes the driver when enough have happened.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) outcomes: AtomicUsize,
    pub(crate) changed: Notify,
}

impl Progress {
    pub(crate) fn add(&self) {
        self.outcomes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) async fn reach(&self, n: usize) {
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
pub(crate) struct Ledger {
    pub(crate) async_handled: HashMap<u64, u32>,
    pub(crate) async_on_failure: HashSet<u64>,
    pub(crate) async_dead_letter: HashSet<u64>,
    pub(crate) queue_handled: HashMap<u64, u32>,
    /// Invocations that carried each queue message, whatever their outcome.
    pub(crate) queue_attempts: HashMap<u64, u32>,
    pub(crate) stream_handled: HashMap<Sequence, u32>,
    pub(crate) stream_on_failure: HashSet<Sequence>,
    /// (key, sequence) of every successful stream handling, in order.
    pub(crate) stream_calls: Vec<(u64, Sequence)>,
}

pub(crate) type Shared = Arc<Mutex<Ledger>>;

pub(crate) struct ReliableDeadLetter {
    pub(crate) ledger: Shared,
    pub(crate) progress: Arc<Progress>,
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

/// Checkpoints that check, at every put, that nothing unfinished is passed; leases as they are.
pub(crate) struct CheckedCheckpoints {
    pub(crate) inner: InMemoryStreamStore,
    pub(crate) ledger: Shared,
    pub(crate) shard_records: HashMap<String, Vec<Sequence>>,
    pub(crate) violations: Mutex<Vec<String>>,
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

pub(crate) struct StreamOnFailure {
    pub(crate) ledger: Shared,
    pub(crate) progress: Arc<Progress>,
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

/// Outcomes of one seed (or, added up, of all).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) async_handled: u64,
    pub(crate) async_on_failure: u64,
    pub(crate) async_dead_letter: u64,
    pub(crate) async_handed_back: u64,
    pub(crate) async_refused: u64,
    pub(crate) queue_handled: u64,
    pub(crate) queue_dead_lettered: u64,
    pub(crate) queue_in_source: u64,
    pub(crate) queue_duplicates: u64,
    pub(crate) queue_failed_acks: u64,
    pub(crate) stream_handled: u64,
    pub(crate) stream_on_failure: u64,
    pub(crate) stream_in_source: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, other: &Self) {
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
