//! The in-memory queue: SQS semantics in one process. Visibility timeouts, delays, receive
//! counts, redrive to a dead-letter queue, long polls woken by notification, bounded capacity,
//! and a FIFO variant with message groups.
//!
//! Nothing here polls: a receiver that finds nothing waits on a notification, or sleeps until
//! the next moment something is due (a visibility timeout ends, a delay passes) or its long
//! poll ends. Expired leases and due delays are settled lazily by whoever takes the lock next.

mod fifo;
mod lease;
mod redrive;
mod state;
mod stored;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::handler::hops;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{Outgoing, QueueConfig, SendBatchError, SendError, MAX_DELAY, MAX_VISIBILITY};
use super::{Attributes, Message, MessageId, QueueProducer, QueueSource, QueueStats, Receipt};
use crate::error::{ConfigError, SourceError};
use crate::pack::Packer;
use state::State;
use stored::Stored;

/// An in-memory queue with SQS semantics.
#[derive(Debug)]
pub struct InMemoryQueue {
    config: QueueConfig,
    state: Mutex<State>,
    arrived: Notify,
    next_id: AtomicU64,
    dead_lettered: AtomicU64,
}

impl InMemoryQueue {
    /// A queue with this configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field out of range.
    pub fn new(config: QueueConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            next_id: AtomicU64::new(1),
            dead_lettered: AtomicU64::new(0),
        })
    }

    /// The queue's configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Sends a message body; returns its id.
    ///
    /// # Errors
    ///
    /// [`SendError`] hands the message back when the queue is full, when a FIFO queue gets
    /// a message without a group, when the message is above `max_message_size`
    /// ([`SourceError::TooLarge`]), or when its delay is above 15 minutes
    /// ([`SourceError::Invalid`] naming `delay`).
    pub fn send(&self, body: impl Into<Bytes>) -> Result<MessageId, SendError> {
        self.send_message(Outgoing::new(body))
    }

    /// Sends a message with options; returns its id.
    ///
    /// # Errors
    ///
    /// As [`InMemoryQueue::send`].
    pub fn send_message(&self, message: Outgoing) -> Result<MessageId, SendError> {
        match self.send_batch(std::iter::once(message)) {
            Ok(mut ids) => Ok(ids.pop().expect("one message sent")),
            Err(mut batch) => Err(batch.refused.pop().expect("one message refused").1),
        }
    }

    /// Sends many messages under one lock; returns their ids. Each message is taken or
    /// refused on its own (as SQS's `SendMessageBatch` answers per entry).
    ///
    /// # Errors
    ///
    /// [`SendBatchError`] when any message was refused, for the reasons of
    /// [`InMemoryQueue::send`]: it lists the ids of the messages sent and hands back the
    /// refused ones with their places in the batch. Once the queue is full, every later
    /// message is refused too; on a FIFO queue, so are the later messages of a group one of
    /// whose messages was refused.
    pub fn send_batch(
        &self,
        messages: impl IntoIterator<Item = Outgoing>,
    ) -> Result<Vec<MessageId>, SendBatchError> {
        self.send_sized(messages, Sizing::Checked)
    }

    /// Sends messages, checking their size or not (a redriven message was within the limit of
    /// the queue it came from: a dead-letter queue takes it whatever its own limit).
    pub(super) fn send_sized(
        &self,
        messages: impl IntoIterator<Item = Outgoing>,
        checked: Sizing,
    ) -> Result<Vec<MessageId>, SendBatchError> {
        let now = Instant::now();
        let sent_at = SystemTime::now();
        // Sent by an invocation: the messages carry its work's hop count on.
        // One shared set of attributes for the messages that have none (no allocation each).
        let hop_count =
            hops::outgoing().map(|h| (h, Attributes::new().with(hops::ATTRIBUTE, h.to_string())));
        let mut sent = Vec::new();
        let mut refused = Vec::new();
        // FIFO groups with a message refused in this batch: later ones of the group are refused
        // too, so that a sender resending the first cannot have it overtaken.
        let mut broken: Vec<Arc<str>> = Vec::new();
        let mut packer = Packer::default();
        {
            let mut state = self.state.lock();
            for (place, mut message) in messages.into_iter().enumerate() {
                let group = message.group_id.clone().filter(|_| self.config.fifo);
                if let Some(group) = group.as_ref().filter(|g| broken.contains(g)) {
                    let error = SourceError::Invalid(format!(
                        "an earlier message of group {group} in this batch was refused"
                    ));
                    refused.push((place, SendError { message, error }));
                    continue;
                }
                // The hop count is part of what is stored, so it counts towards the size.
                let attributes = std::mem::take(&mut message.attributes);
                message.attributes = match &hop_count {
                    None => attributes,
                    Some((_, shared)) if attributes.is_empty() => shared.clone(),
                    // A higher count the sender set itself is kept.
                    Some((h, _)) => match attributes.get(hops::ATTRIBUTE).and_then(hops::parse) {
                        Some(carried) if carried >= *h => attributes,
                        _ => attributes.with(hops::ATTRIBUTE, h.to_string()),
                    },
                };
                if let Err(error) = self.check(&state, &message, checked) {
                    broken.extend(group);
                    refused.push((place, SendError { message, error }));
                    continue;
                }
                let delay = message.delay.unwrap_or(self.config.delay);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let stored = Stored {
                    id,
                    body: packer.pack(message.body),
                    attributes: message.attributes,
                    sent_at,
                    group: message.group_id,
                    receive_count: 0,
                };
                state.held += 1;
                if delay.is_zero() {
                    state.make_visible(self.config.fifo, stored, false);
                } else {
                    // At most 15 min (checked).
                    state.delay(stored, now + delay);
                }
                sent.push((place, MessageId::number(id)));
            }
        }
        if !sent.is_empty() {
            self.arrived.notify_waiters();
        }
        if refused.is_empty() {
            Ok(sent.into_iter().map(|(_, id)| id).collect())
        } else {
            Err(SendBatchError { sent, refused })
        }
    }

    /// Why `message` cannot be taken now, if it cannot.
    fn check(&self, state: &State, message: &Outgoing, size: Sizing) -> Result<(), SourceError> {
        if self.config.fifo && message.group_id.is_none() {
            return Err(SourceError::Invalid(
                "a FIFO queue needs a message group".into(),
            ));
        }
        if size == Sizing::Checked {
            let size = super::limits::message_size(&message.body, &message.attributes);
            super::limits::check_message_size(size, self.config.max_message_size)?;
        }
        if state.held >= self.config.capacity {
            return Err(SourceError::Full {
                capacity: self.config.capacity,
            });
        }
        let delay = message.delay.unwrap_or(self.config.delay);
        if delay > MAX_DELAY {
            let error = ConfigError::new("message", "delay", delay, "0s..=15min");
            return Err(SourceError::Invalid(error.to_string()));
        }
        Ok(())
    }

    /// Counts of the queue now.
    pub fn counts(&self) -> QueueStats {
        let mut state = self.state.lock();
        state.settle(self.config.fifo, Instant::now());
        QueueStats {
            visible: state.visible_count as u64,
            in_flight: state.in_flight as u64,
            delayed: state.delayed() as u64,
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// The bodies of every message held — visible, in flight or delayed — in no particular
    /// order: for hosts and tests that audit what a queue still holds (nothing is received).
    pub fn bodies(&self) -> Vec<Bytes> {
        let state = self.state.lock();
        state.iter().map(|stored| stored.body.clone()).collect()
    }

    /// Messages held: visible, in flight or delayed.
    pub fn len(&self) -> usize {
        self.state.lock().held
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl InMemoryQueue {
    /// Takes up to `max` visible messages under a new lease, redriving those over their
    /// receive limit; also returns when something next becomes visible without a send.
    fn try_take(&self, max: usize, now: Instant) -> (Vec<Message>, Option<Instant>) {
        let mut redriven = Vec::new();
        let (taken, next_due) = {
            let mut state = self.state.lock();
            state.settle(self.config.fifo, now);
            let taken = state.take(&self.config, max, now, &mut redriven);
            (taken, state.next_due())
        };
        self.redrive(redriven);
        // Made after the lock is let go: cloning bodies and writing the receiver's messages is
        // no part of the critical section every poller shares.
        let messages = taken.map_or_else(Vec::new, |taken| taken.messages());
        (messages, next_due)
    }
}

/// The `refused` positions less those of a receipt given twice whose other position took
/// effect (the second finds its message gone).
fn given_twice(receipts: &[Receipt], mut refused: Vec<usize>) -> Vec<usize> {
    if refused.is_empty() {
        return refused;
    }
    let all_refused = refused.clone();
    refused.retain(|&at| {
        receipts
            .iter()
            .enumerate()
            .all(|(other, r)| r != &receipts[at] || all_refused.contains(&other))
    });
    refused
}

#[async_trait]
impl QueueSource for InMemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        // With messages waiting (a backlog), the first try takes them without registering
        // for a notification: registering takes the notifier's lock, shared by every receiver.
        let (messages, _) = self.try_take(max, now);
        if !messages.is_empty() || wait.is_zero() {
            return Ok(messages);
        }
        let give_up = now.checked_add(wait);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            // Registered before looking again: a send from now on wakes this receiver.
            let now = Instant::now();
            let (messages, next_due) = self.try_take(max, now);
            if !messages.is_empty() {
                return Ok(messages);
            }
            if give_up.is_some_and(|at| at <= now) {
                return Ok(Vec::new());
            }
            let wake = match (give_up, next_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = &mut arrived => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => arrived.await,
            }
        }
    }

    /// Deletes the messages whose receipts are current. A receipt whose lease expired deletes
    /// nothing, even before the message was received again: it is delivered again.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let mut refused = Vec::new();
        let mut freed_group = false;
        // The deleted messages are dropped once the lock is let go: freeing their bodies is
        // no part of the queue's critical section, which every poller shares. A batch's
        // receipts are most often one whole lease: it needs no vector.
        let mut first_lease: Option<Arc<Vec<Stored>>> = None;
        let mut deleted: Vec<Arc<Vec<Stored>>> = Vec::new();
        let mut deleted_one: Vec<Stored> = Vec::new();
        {
            let now = Instant::now();
            let mut state = self.state.lock();
            let mut at = 0;
            while at < receipts.len() {
                if let Some((n, lease)) = state.take_back_lease(&receipts[at..], now) {
                    for stored in lease.iter() {
                        freed_group |= state.delete(stored);
                    }
                    match first_lease {
                        None => first_lease = Some(lease),
                        Some(_) => deleted.push(lease),
                    }
                    at += n;
                    continue;
                }
                match state.take_back(&receipts[at], now) {
                    Some(stored) => {
                        freed_group |= state.delete(&stored);
                        deleted_one.push(stored);
                    }
                    None => refused.push(at),
                }
                at += 1;
            }
        }
        drop((first_lease, deleted, deleted_one));
        if freed_group {
            self.arrived.notify_waiters();
        }
        SourceError::refusing(given_twice(receipts, refused))
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let mut refused = Vec::new();
        let mut released = false;
        {
            let now = Instant::now();
            let mut state = self.state.lock();
            // A FIFO message goes back to the front of its group, so a FIFO batch is returned
            // last first to keep the group's order; a standard queue's go to the back in order.
            let fifo = self.config.fifo;
            let mut forward = receipts.iter().enumerate();
            let mut backward = receipts.iter().enumerate().rev();
            let order: &mut dyn Iterator<Item = (usize, &Receipt)> =
                if fifo { &mut backward } else { &mut forward };
            for (at, receipt) in order {
                match state.take_back(receipt, now) {
                    Some(mut stored) => {
                        // The receive that delivered it does not count.
                        stored.receive_count = stored.receive_count.saturating_sub(1);
                        state.make_visible(fifo, stored, true);
                        released = true;
                    }
                    None => refused.push(at),
                }
            }
        }
        if released {
            self.arrived.notify_waiters();
        }
        SourceError::refusing(given_twice(receipts, refused))
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        {
            let now = Instant::now();
            let mut state = self.state.lock();
            let stored = state
                .take_back(receipt, now)
                .ok_or(SourceError::UnknownReceipt)?;
            if delay.is_zero() {
                state.make_visible(self.config.fifo, stored, true);
            } else {
                // SQS caps a visibility change at 12 hours; longer delays are cut to it.
                state.delay(stored, now + delay.min(MAX_VISIBILITY));
            }
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Messages are claimed and returned in one step that does not await.
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(self.config.visibility_timeout)
    }

    fn is_fifo(&self) -> bool {
        self.config.fifo
    }

    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        Ok(Some(self.counts()))
    }
}

#[async_trait]
impl QueueProducer for InMemoryQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        self.send(body).map_err(|e| e.error)
    }
}

/// Whether a send checks each message against `max_message_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sizing {
    /// Checked: a message from a sender.
    Checked,
    /// Not checked: a message redriven from another queue.
    Unchecked,
}
