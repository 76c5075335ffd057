//! The failures the chaos test injects: a deterministic coin per (seed, feed, event,
//! attempt), the fate it gives a handler's attempt, and the destination and queue source that
//! fail, panic or stall by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus::async_trait;
use nimbus::sources::{InMemoryQueue, Message, QueueSource, QueueStats, Receipt, SourceError};
use nimbus::{DeliveryError, Destination, FunctionError, InvocationRecord};

use super::ledger::{Progress, Shared};

/// The messages of the panics this test injects.
pub(crate) const INJECTED: [&str; 3] = [
    "handler panicked",
    "destination panicked",
    "source panicked in receive",
];

/// What a handler does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Succeed,
    Fail,
    Panic,
    Hang,
}

/// A deterministic coin for (seed, what, id, attempt).
pub(crate) fn roll(seed: u64, what: u64, id: u64, attempt: u64) -> u64 {
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

pub(crate) fn fate(seed: u64, what: u64, id: u64, attempt: u64) -> Fate {
    match roll(seed, what, id, attempt) {
        0..=64 => Fate::Succeed,
        65..=84 => Fate::Fail,
        85..=92 => Fate::Panic,
        _ => Fate::Hang,
    }
}

/// Runs the handler's fate: the caller has recorded nothing yet.
pub(crate) async fn act(fate: Fate) -> Result<(), FunctionError> {
    match fate {
        Fate::Succeed => Ok(()),
        Fate::Fail => Err(FunctionError::msg("injected failure")),
        Fate::Panic => panic!("handler panicked"),
        Fate::Hang => std::future::pending().await,
    }
}

/// A destination that panics or stalls by the dice, else records.
pub(crate) struct ChaosDestination {
    pub(crate) seed: u64,
    pub(crate) what: u64,
    pub(crate) ledger: Shared,
    pub(crate) progress: Arc<Progress>,
    pub(crate) on_failure: bool,
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

/// A queue that fails and panics on receive, and fails acks (without deleting), by the dice.
pub(crate) struct ChaosQueue {
    pub(crate) inner: Arc<InMemoryQueue>,
    pub(crate) seed: u64,
    pub(crate) calls: AtomicU64,
    pub(crate) failed_acks: AtomicU64,
}

impl ChaosQueue {
    pub(crate) fn dice(&self) -> u64 {
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
