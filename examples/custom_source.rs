//! Writing your own queue adapter: a small queue source in ~100 lines, checked by the
//! conformance kit, then drained by a queue mapping. The guide for adapter authors.
//!
//! An adapter implements [`QueueSource`] (receive with a long poll, ack, retry later, release)
//! and, for the kit, [`QueueProducer`]. Run `cargo run --release --example custom_source`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use nimbus::async_trait;
use nimbus::sources::conformance::{self, QueueProducer};
use nimbus::sources::Bytes;
use nimbus::sources::{
    BatchResponse, Message, MessageId, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource,
    Receipt, SourceError,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A message as the adapter stores it.
#[derive(Clone)]
struct Stored {
    id: u64,
    body: Bytes,
    receives: u32,
}

/// Visible messages, received ones by receipt token with when they become visible again,
/// and the last id or token handed out.
#[derive(Default)]
struct State {
    visible: VecDeque<Stored>,
    in_flight: HashMap<u64, (Stored, Instant)>,
    counter: u64,
}

/// The adapter.
#[derive(Default)]
struct TinyQueue {
    state: std::sync::Mutex<State>,
    arrived: Notify,
}

const VISIBILITY: Duration = Duration::from_secs(1);

impl TinyQueue {
    /// Takes up to `max` messages, first returning expired ones to the queue.
    fn take(&self, max: usize) -> (Vec<Message>, Option<Instant>) {
        let mut guard = self.state.lock().expect("lock");
        let State {
            visible,
            in_flight,
            counter: next_token,
        } = &mut *guard;
        let now = Instant::now();
        let expired: Vec<u64> = in_flight
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some((stored, _)) = in_flight.remove(&token) {
                visible.push_back(stored);
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut stored) = visible.pop_front() else {
                break;
            };
            stored.receives += 1;
            *next_token += 1;
            let message = Message::new(
                MessageId::number(stored.id),
                stored.body.clone(),
                Receipt::from_parts(*next_token, 0),
            )
            .with_receive_count(stored.receives);
            in_flight.insert(*next_token, (stored, now + VISIBILITY));
            out.push(message);
        }
        (out, in_flight.values().map(|(_, at)| *at).min())
    }
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
            let (messages, next_expiry) = self.take(max);
            if !messages.is_empty() || Instant::now() >= give_up {
                return Ok(messages);
            }
            // Sleep until something can change: a send, an expiry, or the end of the wait.
            let wake = next_expiry.map_or(give_up, |at| at.min(give_up));
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
        // Delete every receipt we know; report the unknown ones after, as the contract asks.
        let mut guard = self.state.lock().expect("lock");
        let mut unknown = false;
        for receipt in receipts {
            let known = receipt
                .parts()
                .and_then(|(token, _)| guard.in_flight.remove(&token));
            unknown |= known.is_none();
        }
        if unknown {
            Err(SourceError::UnknownReceipt)
        } else {
            Ok(())
        }
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        // Visible again at once, at the front, and this receive does not count.
        let mut unknown = false;
        {
            let mut guard = self.state.lock().expect("lock");
            for receipt in receipts.iter().rev() {
                let known = receipt
                    .parts()
                    .and_then(|(token, _)| guard.in_flight.remove(&token));
                match known {
                    Some((mut stored, _)) => {
                        stored.receives -= 1;
                        guard.visible.push_front(stored);
                    }
                    None => unknown = true,
                }
            }
        }
        self.arrived.notify_waiters();
        if unknown {
            Err(SourceError::UnknownReceipt)
        } else {
            Ok(())
        }
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        let token = receipt.parts().ok_or(SourceError::UnknownReceipt)?.0;
        let mut guard = self.state.lock().expect("lock");
        let entry = guard
            .in_flight
            .get_mut(&token)
            .ok_or(SourceError::UnknownReceipt)?;
        // Visible again when the delay is over (cut to 12 hours, as SQS does).
        entry.1 = Instant::now() + delay.min(Duration::from_secs(12 * 3_600));
        drop(guard);
        self.arrived.notify_waiters();
        Ok(())
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(VISIBILITY)
    }
}

#[async_trait]
impl QueueProducer for TinyQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        let id = {
            let mut guard = self.state.lock().expect("lock");
            guard.counter += 1;
            let id = guard.counter;
            guard.visible.push_back(Stored {
                id,
                body,
                receives: 0,
            });
            id
        };
        self.arrived.notify_waiters();
        Ok(MessageId::number(id))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The contract: the same checks every adapter must pass.
    conformance::queue(|| async { TinyQueue::default() }).await?;
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
    let queue = Arc::new(TinyQueue::default());
    for body in ["a", "b", "flaky", "c"] {
        queue.produce(Bytes::from(body)).await?;
    }
    let mapping = QueueMapping::start(queue.clone(), echo, QueueMappingConfig::new("tiny"))?;
    // Attached, the mapping is stopped (and releases what it holds) before the function.
    runtime.attach(mapping.clone())?;
    let started = std::time::Instant::now();
    while mapping.metrics().deleted < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the mapping did not drain the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = mapping.metrics();
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    assert!(report.attachments.iter().all(|a| a.clean));
    println!(
        "mapping: {} deleted, {} failed once and came back",
        m.deleted, m.failed
    );
    assert_eq!((m.deleted, m.failed), (4, 1));
    println!("custom_source: all checks passed");
    Ok(())
}
