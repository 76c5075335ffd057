//! Writing your own queue adapter: a small queue source that keeps the whole contract, checked
//! by the conformance kit, then drained by a queue mapping. The guide for adapter authors.
//!
//! An adapter implements [`QueueSource`] (receive with a long poll, ack, retry later, release,
//! and the hints: visibility timeout, cancel-safety, demand, stats) and, for the kit,
//! [`QueueProducer`] and a [`QueueHarness`]. The trait's documentation is the contract in full;
//! what it asks, and where this adapter does it:
//!
//! - **ack** answers `Ok` only once the message is deleted for good, and refuses (with
//!   `SourceError::Refused`, naming its position) a receipt that is no longer current:
//!   acknowledged, released, or past its visibility timeout, even if nobody received the
//!   message since (`TinyQueue::current`); the others are deleted all the same.
//! - **visibility timeout**: a mapping never hands a failed message back; it returns when its
//!   timeout passes. This queue keeps one deadline per receipt. A broker without visibility
//!   timeouts (RabbitMQ) needs a timer per received message that requeues it.
//! - **message ids** are stable across receives (here, numbers given at send time). A broker
//!   without ids assigns one in a header at send time, or derives one from the content (then
//!   duplicates are recognised on a best-effort basis).
//! - **receive counts** and **redrive**: each receive counts; past `max_receive_count` a
//!   message goes to the dead-letter queue instead of to a receiver, and `release` takes the
//!   count back.
//! - **cancel-safety**: `receive` claims in one step that does not await, so it says so, and a
//!   stopping mapping drops its long poll at once.
//! - **hop count**: a message sent from inside an invocation carries `hops::outgoing()` back
//!   as its `nimbus-hops` attribute (`hops::ATTRIBUTE`), so that a function feeding its own
//!   queue is stopped after 16 invocations; a broker keeps it in a header or field.
//! - **demand** and **stats**: the mapping tells the source how many messages it wants
//!   (a broker with prefetch sizes it with that; such a source is given to each mapping as its
//!   own value, since a shared one cannot tell whose hint is whose), and asks it for counts,
//!   off its polling path.
//!
//! Run `cargo run --release --example custom_source`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus::async_trait;
use nimbus::core::handler::hops;
use nimbus::sources::conformance::{self, QueueHarness, QueueProducer, QueueSpec};
use nimbus::sources::Bytes;
use nimbus::sources::{
    Attributes, BatchResponse, Message, MessageId, QueueBatch, QueueMapping, QueueMappingConfig,
    QueueSource, QueueStats, Receipt, SourceError,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A message as the adapter stores it.
struct Stored {
    id: u64,
    body: Bytes,
    receives: u32,
    /// The hop count of the invocation that sent it, if one did (recursive loop detection).
    hops: Option<u32>,
}

/// Visible messages; received ones by receipt token, with when their visibility timeout ends;
/// ones waiting for a `retry_later` delay; dead letters; and the last id or token handed out.
#[derive(Default)]
struct State {
    visible: VecDeque<Stored>,
    in_flight: HashMap<u64, (Stored, Instant)>,
    delayed: Vec<(Stored, Instant)>,
    dead: Vec<Stored>,
    counter: u64,
}

/// The adapter.
struct TinyQueue {
    state: std::sync::Mutex<State>,
    arrived: Notify,
    visibility: Duration,
    max_receive_count: Option<u32>,
    /// The latest demand hint (a broker with prefetch would set its prefetch to it).
    demand: AtomicUsize,
}

impl TinyQueue {
    fn new(visibility: Duration, max_receive_count: Option<u32>) -> Self {
        Self {
            state: std::sync::Mutex::default(),
            arrived: Notify::new(),
            visibility,
            max_receive_count,
            demand: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes up to `max` messages, first making visible again what expired or is due, and
    /// dead-lettering what is over the receive limit. Also says when something next is due.
    fn take(&self, max: usize) -> (Vec<Message>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let State {
            visible,
            in_flight,
            delayed,
            dead,
            counter,
        } = &mut *state;
        let expired: Vec<u64> = in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            if let Some((stored, _)) = in_flight.remove(&token) {
                visible.push_back(stored);
            }
        }
        let mut i = 0;
        while i < delayed.len() {
            if delayed[i].1 <= now {
                visible.push_back(delayed.swap_remove(i).0);
            } else {
                i += 1;
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut stored) = visible.pop_front() else {
                break;
            };
            stored.receives += 1;
            if self
                .max_receive_count
                .is_some_and(|max| stored.receives > max)
            {
                dead.push(stored);
                continue;
            }
            *counter += 1;
            let message = Message::new(
                MessageId::number(stored.id),
                stored.body.clone(),
                Receipt::from_parts(*counter, 0),
            )
            .with_receive_count(stored.receives)
            .with_attributes(match stored.hops {
                Some(count) => Attributes::new().with(hops::ATTRIBUTE, count.to_string()),
                None => Attributes::new(),
            });
            // The visibility timeout is at most 12 hours (the kit asks for one second).
            in_flight.insert(*counter, (stored, now + self.visibility));
            out.push(message);
        }
        let next = in_flight
            .values()
            .map(|(_, until)| *until)
            .chain(delayed.iter().map(|(_, due)| *due))
            .min();
        (out, next)
    }

    /// Takes a message out of flight if its receipt is current: known, and its visibility
    /// timeout not passed. An expired one stays, for `take` to make visible again.
    fn current(state: &mut State, receipt: &Receipt) -> Option<Stored> {
        let token = receipt.parts()?.0;
        let (_, until) = state.in_flight.get(&token)?;
        if *until <= Instant::now() {
            return None;
        }
        state.in_flight.remove(&token).map(|(stored, _)| stored)
    }
}

/// The `refused` positions less those of a receipt given twice whose other position took
/// effect: a receipt given twice counts once.
fn given_twice(receipts: &[Receipt], done: &[usize], mut refused: Vec<usize>) -> Vec<usize> {
    refused.retain(|&at| !done.iter().any(|&d| receipts[d] == receipts[at]));
    refused
}

#[async_trait]
impl QueueSource for TinyQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        // A wait too long to add to the clock waits as long as anyone will.
        let give_up = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (messages, next_due) = self.take(max);
            if !messages.is_empty() || Instant::now() >= give_up {
                return Ok(messages);
            }
            // Sleep until something can change: a send, an expiry, a delay, or the wait's end.
            let wake = next_due.map_or(give_up, |at| at.min(give_up));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// `receive` claims messages only in `take`, with no await after it: dropping it while it
    /// waits strands nothing, so a stopping mapping may drop its long poll at once instead of
    /// waiting for it (a broker whose claim is a network round trip cannot say this).
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        // Delete every current receipt; name the others after, by position, as the contract
        // asks, so that a mapping counts exactly what was deleted. Once this returns, the
        // deletes are done (a broker adapter waits for its broker to confirm).
        let mut state = self.lock();
        let (mut done, mut refused) = (Vec::new(), Vec::new());
        for (at, receipt) in receipts.iter().enumerate() {
            match Self::current(&mut state, receipt) {
                Some(_deleted) => done.push(at),
                None => refused.push(at),
            }
        }
        SourceError::refusing(given_twice(receipts, &done, refused))
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        // Visible again at once, at the front, and this receive does not count.
        let (mut done, mut refused) = (Vec::new(), Vec::new());
        {
            let mut state = self.lock();
            for (at, receipt) in receipts.iter().enumerate().rev() {
                match Self::current(&mut state, receipt) {
                    Some(mut stored) => {
                        stored.receives -= 1;
                        state.visible.push_front(stored);
                        done.push(at);
                    }
                    None => refused.push(at),
                }
            }
        }
        self.arrived.notify_waiters();
        SourceError::refusing(given_twice(receipts, &done, refused))
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        {
            let mut state = self.lock();
            let stored = Self::current(&mut state, receipt).ok_or(SourceError::UnknownReceipt)?;
            // Visible again when the delay is over (cut to 12 hours, as SQS does), not before.
            let due = Instant::now() + delay.min(Duration::from_secs(12 * 3_600));
            state.delayed.push((stored, due));
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(self.visibility)
    }

    /// Called as the mapping scales; must not block.
    fn demand(&self, wanted: usize) {
        self.demand.store(wanted, Ordering::Relaxed);
    }

    /// Counts, asked when the mapping wants them (a broker adapter asks its broker here).
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        let state = self.lock();
        let mut stats = QueueStats::default();
        stats.visible = state.visible.len() as u64;
        stats.in_flight = state.in_flight.len() as u64;
        stats.delayed = state.delayed.len() as u64;
        stats.dead_lettered = state.dead.len() as u64;
        Ok(Some(stats))
    }
}

#[async_trait]
impl QueueProducer for TinyQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        let id = {
            let mut state = self.lock();
            state.counter += 1;
            let id = state.counter;
            state.visible.push_back(Stored {
                id,
                body,
                receives: 0,
                // Sent from inside an invocation: carry its count on, as the kit checks.
                hops: hops::outgoing(),
            });
            id
        };
        self.arrived.notify_waiters();
        Ok(MessageId::number(id))
    }
}

/// What the kit needs: fresh queues to a spec, their dead letters, and their removal.
struct TinyHarness;

#[async_trait]
impl QueueHarness for TinyHarness {
    type Queue = TinyQueue;

    async fn make(&self, spec: QueueSpec) -> Result<TinyQueue, SourceError> {
        Ok(TinyQueue::new(
            spec.visibility_timeout,
            spec.max_receive_count,
        ))
    }

    async fn dead_letters(&self, queue: &TinyQueue) -> Result<u64, SourceError> {
        Ok(queue.lock().dead.len() as u64)
    }

    /// Nothing to remove here; a broker adapter deletes the stream, keys or tables `make`
    /// created, so that a kit run leaves nothing behind.
    async fn teardown(&self, _queue: &TinyQueue) -> Result<(), SourceError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The contract: the same checks every adapter must pass (about half a minute).
    conformance::queue(&TinyHarness).await?;
    println!("TinyQueue passes the queue conformance kit");

    // 2. It plugs into a mapping like any source.
    let runtime = Runtime::default();
    let echo = runtime
        .register(
            Function::new(
                "echo",
                handler_fn(|batch: QueueBatch, _ctx: Context| async move {
                    Ok::<_, FunctionError>(BatchResponse::failures(
                        batch
                            .records
                            .iter()
                            .filter(|r| r.receive_count == 1 && &r.body[..] == b"flaky")
                            .map(|r| r.message_id.clone()),
                    ))
                }),
            )
            .with_timeout(Duration::from_millis(500)),
        )
        .await?;
    let queue = Arc::new(TinyQueue::new(Duration::from_secs(1), Some(5)));
    for body in ["a", "b", "flaky", "c"] {
        queue.produce(Bytes::from(body)).await?;
    }
    // Attached, the mapping is stopped (and releases what it holds) before the function.
    let mapping = QueueMapping::builder(queue.clone(), echo, QueueMappingConfig::new("tiny"))
        .attach(&runtime)
        .start()?;
    println!(
        "the mapping asked for {} messages",
        queue.demand.load(Ordering::Relaxed)
    );
    // Resolves once the queue is empty (the flaky message came back after its visibility
    // timeout and was handled) and the mapping holds nothing: no polling of metrics.
    tokio::time::timeout(Duration::from_secs(10), mapping.drained())
        .await
        .map_err(|_| "the mapping did not drain the queue")?
        .map_err(|status| format!("the mapping stopped: {status:?}"))?;
    let m = mapping.metrics();
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    assert!(report.attachments.iter().all(|a| a.clean));
    println!(
        "mapping: {} deleted, {} failed once and came back",
        m.deleted, m.failed
    );
    assert_eq!((m.deleted, m.failed), (4, 1));
    // Stopped, it wants nothing more.
    assert_eq!(queue.demand.load(Ordering::Relaxed), 0);
    println!("custom_source: all checks passed");
    Ok(())
}
