//! Adapters broken on purpose, each in one way, over the in-memory queue: the kit must catch
//! every one of them. [`BrokenHarness`] makes them and counts its teardowns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_sources::conformance::{InMemoryHarness, QueueHarness, QueueProducer, QueueSpec};
use nimbus_sources::{InMemoryQueue, Message, MessageId, QueueSource, Receipt, SourceError};
use parking_lot::Mutex;

/// The one thing a broken adapter gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// Deletes on receive: at most once.
    Lossy,
    /// Releases as a failed attempt: the receive is counted.
    CountingRelease,
    /// Stops acknowledging at the first unknown receipt.
    AllOrNothingAck,
    /// An ack with an old receipt makes the current delivery visible again.
    StaleAckUndoes,
    /// Reports success for an ack whose receipt expired (the message is not deleted).
    ExpiredAckOk,
    /// Makes a message visible again at once, whatever the delay.
    IgnoresDelay,
    /// Acknowledges every delivery up to the one named, as AMQP's `multiple` flag does.
    AckMultiple,
    /// Counts towards redrive only the receives ended by `retry_later`, not those ended by the
    /// visibility timeout: a mapping, which never calls `retry_later`, never dead-letters.
    RedrivesOnlyRetried,
    /// Redrives one receive late (`max_receive_count + 1`).
    RedrivesLate,
    /// Never redrives: the harness ignores `max_receive_count`.
    NeverRedrives,
    /// Acknowledges only the first receipt of each call, answering `Ok` for all.
    AckFirstOnly,
    /// Hands a message released and received again the receipt it was released with, so
    /// that the released receipt acknowledges the new delivery (as a Redis queue did whose
    /// release set the delivery count back).
    ReleaseReusesReceipt,
    /// Sends bodies only: the hop count of the invocation sending is lost, so a function
    /// writing back to its own queue is never stopped.
    DropsHopCount,
}

#[derive(Debug, Default)]
struct Book {
    /// Receipts received and not yet acknowledged or handed back, in receive order.
    outstanding: Vec<Receipt>,
    latest: HashMap<MessageId, Receipt>,
    owner: HashMap<Receipt, MessageId>,
    /// `retry_later` calls per message.
    retried: HashMap<MessageId, u32>,
    /// The receipt each message was last released with, to hand out again.
    released: HashMap<MessageId, Receipt>,
    /// The inner queue's receipt behind each receipt handed out again.
    alias: HashMap<Receipt, Receipt>,
    dead: u64,
}

/// An in-memory queue with one [`Flaw`].
#[derive(Debug)]
pub(crate) struct Broken {
    inner: InMemoryQueue,
    flaw: Flaw,
    max_receive_count: Option<u32>,
    book: Mutex<Book>,
}

impl Broken {
    pub(crate) fn new(inner: InMemoryQueue, flaw: Flaw) -> Self {
        Self {
            inner,
            flaw,
            max_receive_count: None,
            book: Mutex::default(),
        }
    }

    fn forget(&self, receipts: &[Receipt]) {
        self.book
            .lock()
            .outstanding
            .retain(|r| !receipts.contains(r));
    }

    /// The inner queue's receipts behind those handed out.
    fn inner_receipts(&self, receipts: &[Receipt]) -> Vec<Receipt> {
        let book = self.book.lock();
        receipts
            .iter()
            .map(|r| book.alias.get(r).unwrap_or(r).clone())
            .collect()
    }
}

#[async_trait]
impl QueueSource for Broken {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let mut got = self.inner.receive(max, wait).await?;
        match self.flaw {
            Flaw::Lossy => {
                let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
                self.inner.ack(&receipts).await?;
            }
            Flaw::RedrivesOnlyRetried => {
                let mut over = Vec::new();
                {
                    let book = self.book.lock();
                    let max = self.max_receive_count.unwrap_or(u32::MAX);
                    got.retain(|m| {
                        let failed = book.retried.get(&m.id).copied().unwrap_or(0);
                        let keep = failed < max;
                        if !keep {
                            over.push(m.receipt.clone());
                        }
                        keep
                    });
                }
                self.inner.ack(&over).await?;
                self.book.lock().dead += over.len() as u64;
            }
            _ => {}
        }
        let mut book = self.book.lock();
        if self.flaw == Flaw::ReleaseReusesReceipt {
            for m in &mut got {
                if let Some(old) = book.released.remove(&m.id) {
                    let inner = std::mem::replace(&mut m.receipt, old.clone());
                    book.alias.insert(old, inner);
                }
            }
        }
        for m in &got {
            book.outstanding.push(m.receipt.clone());
            book.latest.insert(m.id.clone(), m.receipt.clone());
            book.owner.insert(m.receipt.clone(), m.id.clone());
        }
        Ok(got)
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        match self.flaw {
            Flaw::Lossy => Ok(()),
            Flaw::AllOrNothingAck => {
                for receipt in receipts {
                    self.inner.ack(std::slice::from_ref(receipt)).await?;
                }
                Ok(())
            }
            Flaw::StaleAckUndoes => {
                let mut fine = Vec::new();
                for receipt in receipts {
                    let current = {
                        let book = self.book.lock();
                        let id = book.owner.get(receipt).cloned();
                        id.and_then(|id| book.latest.get(&id).cloned())
                    };
                    match current {
                        Some(current) if current != *receipt => {
                            self.inner.retry_later(&current, Duration::ZERO).await?;
                        }
                        _ => fine.push(receipt.clone()),
                    }
                }
                self.inner.ack(&fine).await
            }
            Flaw::ExpiredAckOk => match self.inner.ack(receipts).await {
                Err(SourceError::Refused { .. }) => Ok(()),
                other => other,
            },
            Flaw::AckMultiple => {
                let upto = {
                    let mut book = self.book.lock();
                    let last = book.outstanding.iter().rposition(|r| receipts.contains(r));
                    match last {
                        Some(last) => book.outstanding.drain(..=last).collect(),
                        None => Vec::new(),
                    }
                };
                let mut result = Ok(());
                for receipt in receipts {
                    if let Err(e) = self.inner.ack(std::slice::from_ref(receipt)).await {
                        result = Err(e);
                    }
                }
                // The deliveries before them go too: no error is reported for those.
                for receipt in upto.iter().filter(|r| !receipts.contains(r)) {
                    let _ = self.inner.ack(std::slice::from_ref(receipt)).await;
                }
                result
            }
            Flaw::AckFirstOnly => {
                self.inner.ack(&receipts[..receipts.len().min(1)]).await?;
                Ok(())
            }
            Flaw::ReleaseReusesReceipt => self.inner.ack(&self.inner_receipts(receipts)).await,
            _ => {
                self.forget(receipts);
                self.inner.ack(receipts).await
            }
        }
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.forget(std::slice::from_ref(receipt));
        match self.flaw {
            Flaw::Lossy => Ok(()),
            Flaw::IgnoresDelay => self.inner.retry_later(receipt, Duration::ZERO).await,
            Flaw::RedrivesOnlyRetried => {
                self.inner.retry_later(receipt, delay).await?;
                let mut book = self.book.lock();
                if let Some(id) = book.owner.get(receipt).cloned() {
                    *book.retried.entry(id).or_default() += 1;
                }
                Ok(())
            }
            _ => {
                let inner = self.inner_receipts(std::slice::from_ref(receipt));
                self.inner.retry_later(&inner[0], delay).await
            }
        }
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.forget(receipts);
        if self.flaw == Flaw::ReleaseReusesReceipt {
            let inner = self.inner_receipts(receipts);
            let result = self.inner.release(&inner).await;
            let mut book = self.book.lock();
            for r in receipts {
                if let Some(id) = book.owner.get(r).cloned() {
                    book.released.insert(id, r.clone());
                }
            }
            return result;
        }
        if self.flaw == Flaw::CountingRelease {
            let mut result = Ok(());
            for receipt in receipts {
                if let Err(e) = self.inner.retry_later(receipt, Duration::ZERO).await {
                    result = Err(e);
                }
            }
            return result;
        }
        self.inner.release(receipts).await
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
}

#[async_trait]
impl QueueProducer for Broken {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        if self.flaw == Flaw::DropsHopCount {
            // Sent from a thread of its own, outside the invocation's scope.
            let sent = std::thread::scope(|s| s.spawn(|| self.inner.send(body)).join());
            return match sent {
                Ok(sent) => sent.map_err(|refused| refused.error),
                Err(_) => Err(SourceError::transient("the sending thread panicked")),
            };
        }
        self.inner.produce(body).await
    }
}

/// Makes [`Broken`] queues with one flaw, and counts what it made and tore down.
#[derive(Debug)]
pub(crate) struct BrokenHarness {
    flaw: Flaw,
    made: AtomicUsize,
    torn_down: AtomicUsize,
}

impl BrokenHarness {
    pub(crate) fn new(flaw: Flaw) -> Self {
        Self {
            flaw,
            made: AtomicUsize::new(0),
            torn_down: AtomicUsize::new(0),
        }
    }

    /// Queues made and queues torn down.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.made.load(Ordering::SeqCst),
            self.torn_down.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl QueueHarness for BrokenHarness {
    type Queue = Broken;

    async fn make(&self, spec: QueueSpec) -> Result<Broken, SourceError> {
        self.made.fetch_add(1, Ordering::SeqCst);
        let inner_spec = match (self.flaw, spec.max_receive_count) {
            (Flaw::NeverRedrives | Flaw::RedrivesOnlyRetried, _) => {
                QueueSpec::new(spec.visibility_timeout)
            }
            (Flaw::RedrivesLate, Some(max)) => spec.with_redrive(max + 1),
            _ => spec,
        };
        let mut queue = Broken::new(InMemoryHarness.make(inner_spec).await?, self.flaw);
        queue.max_receive_count = spec.max_receive_count;
        Ok(queue)
    }

    async fn dead_letters(&self, queue: &Broken) -> Result<u64, SourceError> {
        Ok(InMemoryHarness.dead_letters(&queue.inner).await? + queue.book.lock().dead)
    }

    async fn teardown(&self, _queue: &Broken) -> Result<(), SourceError> {
        self.torn_down.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
