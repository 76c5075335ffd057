//! The in-memory queue: SQS semantics in one process. Visibility timeouts, delays, receive
//! counts, redrive to a dead-letter queue, long polls woken by notification, bounded capacity,
//! and a FIFO variant with message groups.
//!
//! Nothing here polls: a receiver that finds nothing waits on a notification, or sleeps until
//! the next moment something is due (a visibility timeout ends, a delay passes) or its long
//! poll ends. Expired leases and due delays are settled lazily by whoever takes the lock next.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{Outgoing, QueueConfig, SendError, MAX_DELAY, MAX_VISIBILITY};
use super::{Attributes, Message, MessageId, QueueSource, QueueStats, Receipt};
use crate::error::{ConfigError, SourceError};

/// A stored message, kept inline in the queue's deques (no allocation of its own; cloning it
/// for a receiver shares the body).
#[derive(Debug)]
struct Stored {
    id: u64,
    body: Bytes,
    attributes: Attributes,
    sent_at: SystemTime,
    group: Option<Arc<str>>,
    receive_count: u32,
}

#[derive(Debug)]
struct Lease {
    slots: Vec<Option<Stored>>,
    live: usize,
}

#[derive(Debug, Default)]
struct Group {
    queue: VecDeque<Stored>,
    /// Messages of the group received and not yet acknowledged or returned: while non-zero,
    /// the group is blocked, which keeps its order.
    in_flight: usize,
}

#[derive(Debug)]
struct DelayedMessage {
    due: Instant,
    seq: u64,
    stored: Stored,
}

impl PartialEq for DelayedMessage {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for DelayedMessage {}
impl PartialOrd for DelayedMessage {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for DelayedMessage {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Leases by id. Ids are handed out in order, so a deque indexed from the oldest live id
/// finds one without hashing; finished leases leave a hole until the front catches up.
#[derive(Debug, Default)]
struct Leases {
    first: u64,
    slots: VecDeque<Option<Lease>>,
}

impl Leases {
    fn insert(&mut self, id: u64, lease: Lease) {
        if self.slots.is_empty() {
            self.first = id;
        }
        let index = (id - self.first) as usize;
        while self.slots.len() <= index {
            self.slots.push_back(None);
        }
        self.slots[index] = Some(lease);
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Lease> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.slots.get_mut(index)?.as_mut()
    }

    fn remove(&mut self, id: u64) -> Option<Lease> {
        let index = usize::try_from(id.checked_sub(self.first)?).ok()?;
        let lease = self.slots.get_mut(index)?.take();
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
        lease
    }
}

#[derive(Debug, Default)]
struct State {
    /// Standard queue: visible messages.
    visible: VecDeque<Stored>,
    /// FIFO queue: messages by group, and the groups that can be received from now.
    groups: HashMap<Arc<str>, Group>,
    ready_groups: VecDeque<Arc<str>>,
    leases: Leases,
    lease_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed: BinaryHeap<DelayedMessage>,
    next_lease: u64,
    next_seq: u64,
    held: usize,
    visible_count: usize,
    in_flight: usize,
}

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
    /// a message without a group, or when its delay is above 15 minutes
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
        let mut ids = self.send_batch(std::iter::once(message))?;
        Ok(ids.pop().expect("one message sent"))
    }

    /// Sends many messages under one lock; returns their ids. Stops at the first refused one,
    /// which is handed back (the ones before it are sent).
    ///
    /// # Errors
    ///
    /// As [`InMemoryQueue::send`].
    pub fn send_batch(
        &self,
        messages: impl IntoIterator<Item = Outgoing>,
    ) -> Result<Vec<MessageId>, SendError> {
        let now = Instant::now();
        let sent_at = SystemTime::now();
        let mut ids = Vec::new();
        let mut refused = None;
        {
            let mut state = self.state.lock();
            for message in messages {
                if self.config.fifo && message.group_id.is_none() {
                    refused = Some(SendError {
                        message,
                        error: SourceError::Invalid("a FIFO queue needs a message group".into()),
                    });
                    break;
                }
                if state.held >= self.config.capacity {
                    refused = Some(SendError {
                        message,
                        error: SourceError::Full {
                            capacity: self.config.capacity,
                        },
                    });
                    break;
                }
                let delay = message.delay.unwrap_or(self.config.delay);
                if delay > MAX_DELAY {
                    let error = ConfigError::new("message", "delay", delay, "0s..=15min");
                    refused = Some(SendError {
                        message,
                        error: SourceError::Invalid(error.to_string()),
                    });
                    break;
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let body = message.body;
                // Cloning a `Bytes` made from a `Vec` allocates its shared header the first
                // time; do it here, on the sender, rather than on every receiver's hot path.
                drop(body.clone());
                let stored = Stored {
                    id,
                    body,
                    attributes: message.attributes,
                    sent_at,
                    group: message.group_id,
                    receive_count: 0,
                };
                state.held += 1;
                if delay.is_zero() {
                    self.make_visible(&mut state, stored, false);
                } else {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    state.delayed.push(DelayedMessage {
                        due: now + delay,
                        seq,
                        stored,
                    });
                }
                ids.push(MessageId::number(id));
            }
        }
        if !ids.is_empty() {
            self.arrived.notify_waiters();
        }
        match refused {
            Some(error) => Err(error),
            None => Ok(ids),
        }
    }

    /// Counts of the queue now.
    pub fn counts(&self) -> QueueStats {
        let mut state = self.state.lock();
        self.settle(&mut state, Instant::now());
        QueueStats {
            visible: state.visible_count as u64,
            in_flight: state.in_flight as u64,
            delayed: state.delayed.len() as u64,
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// The bodies of every message held — visible, in flight or delayed — in no particular
    /// order: for hosts and tests that audit what a queue still holds (nothing is received).
    pub fn bodies(&self) -> Vec<Bytes> {
        let state = self.state.lock();
        let visible = state.visible.iter();
        let grouped = state.groups.values().flat_map(|g| g.queue.iter());
        let delayed = state.delayed.iter().map(|d| &d.stored);
        let in_flight = state
            .leases
            .slots
            .iter()
            .flatten()
            .flat_map(|lease| lease.slots.iter().flatten());
        visible
            .chain(grouped)
            .chain(delayed)
            .chain(in_flight)
            .map(|stored| stored.body.clone())
            .collect()
    }

    /// Messages held: visible, in flight or delayed.
    pub fn len(&self) -> usize {
        self.state.lock().held
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a message where receivers find it. `returning` puts a FIFO message back at the
    /// front of its group (it was received before the ones queued behind it).
    fn make_visible(&self, state: &mut State, stored: Stored, returning: bool) {
        state.visible_count += 1;
        match stored.group.clone() {
            Some(group_id) if self.config.fifo => {
                let group = state.groups.entry(Arc::clone(&group_id)).or_default();
                if returning {
                    group.in_flight -= 1;
                    group.queue.push_front(stored);
                } else {
                    group.queue.push_back(stored);
                }
                if group.in_flight == 0 && (returning || group.queue.len() == 1) {
                    state.ready_groups.push_back(group_id);
                }
            }
            _ => state.visible.push_back(stored),
        }
    }

    /// Returns expired leases' messages and due delayed messages to the visible set.
    /// Returns whether anything became visible.
    fn settle(&self, state: &mut State, now: Instant) -> bool {
        let mut changed = false;
        while let Some(Reverse((deadline, lease_id))) = state.lease_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            state.lease_deadlines.pop();
            let Some(lease) = state.leases.remove(lease_id) else {
                continue;
            };
            // FIFO messages go back to the front of their group: return them last-first.
            for stored in lease.slots.into_iter().rev().flatten() {
                state.in_flight -= 1;
                self.make_visible(state, stored, true);
                changed = true;
            }
        }
        while state.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(delayed) = state.delayed.pop() {
                // A FIFO message delayed by `retry_later` still blocks its group.
                let returning = delayed.stored.receive_count > 0;
                self.make_visible(state, delayed.stored, returning);
                changed = true;
            }
        }
        changed
    }

    /// When something next becomes visible without a send: a lease expiry or a delay.
    fn next_due(state: &State) -> Option<Instant> {
        let lease = state.lease_deadlines.peek().map(|Reverse((at, _))| *at);
        let delayed = state.delayed.peek().map(|d| d.due);
        match (lease, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes up to `max` visible messages under a new lease. Messages over their receive
    /// limit are collected in `redrive` instead.
    fn take(
        &self,
        state: &mut State,
        max: usize,
        now: Instant,
        redrive: &mut Vec<Stored>,
    ) -> Vec<Message> {
        let mut taken: Vec<Stored> = Vec::with_capacity(max.min(1_024));
        while taken.len() < max {
            let next = if self.config.fifo {
                let Some(group_id) = state.ready_groups.front().cloned() else {
                    break;
                };
                let group = state.groups.get_mut(&group_id);
                match group.and_then(|g| g.queue.pop_front().map(|s| (s, g))) {
                    Some((stored, group)) => {
                        group.in_flight += 1;
                        // The whole group stays with this receiver; no other group interleaves
                        // until its queue is empty or the batch is full.
                        if group.queue.is_empty() {
                            state.ready_groups.pop_front();
                        }
                        Some(stored)
                    }
                    None => {
                        state.ready_groups.pop_front();
                        continue;
                    }
                }
            } else {
                state.visible.pop_front()
            };
            let Some(mut stored) = next else { break };
            state.visible_count -= 1;
            stored.receive_count += 1;
            if let Some(max_receives) = self.config.max_receive_count {
                if stored.receive_count > max_receives {
                    state.held -= 1;
                    if let Some(group) = stored.group.as_ref().and_then(|g| state.groups.get_mut(g))
                    {
                        group.in_flight -= 1;
                    }
                    redrive.push(stored);
                    continue;
                }
            }
            taken.push(stored);
        }
        if self.config.fifo {
            // A group blocked because the batch filled up mid-group stays at the front, but
            // it is in flight now: take it out of the ready list until its messages return.
            state
                .ready_groups
                .retain(|g| state.groups.get(g).is_some_and(|g| g.in_flight == 0));
        }
        if taken.is_empty() {
            return Vec::new();
        }
        let lease_id = state.next_lease;
        state.next_lease += 1;
        let deadline = now + self.config.visibility_timeout;
        let mut messages = Vec::with_capacity(taken.len());
        for (slot, stored) in taken.iter().enumerate() {
            messages.push(Message {
                id: MessageId::number(stored.id),
                body: stored.body.clone(),
                attributes: stored.attributes.clone(),
                receive_count: stored.receive_count,
                sent_at: stored.sent_at,
                group_id: stored.group.clone(),
                receipt: Receipt::from_parts(lease_id, slot as u32),
            });
        }
        state.in_flight += taken.len();
        let live = taken.len();
        state.leases.insert(
            lease_id,
            Lease {
                slots: taken.into_iter().map(Some).collect(),
                live,
            },
        );
        state.lease_deadlines.push(Reverse((deadline, lease_id)));
        messages
    }

    fn redrive(&self, redriven: Vec<Stored>) {
        if redriven.is_empty() {
            return;
        }
        self.dead_lettered
            .fetch_add(redriven.len() as u64, Ordering::Relaxed);
        if let Some(dlq) = &self.config.dead_letter {
            for mut stored in redriven {
                let mut outgoing = Outgoing::new(stored.body.clone());
                outgoing.attributes = stored.attributes.clone();
                outgoing.group_id = stored.group.clone();
                if let Err(refused) = dlq.send_message(outgoing) {
                    // The dead-letter queue is full: keep the message here rather than lose it.
                    tracing::error!(id = stored.id, error = %refused.error, "dead-letter queue refused a message; keeping it");
                    let mut state = self.state.lock();
                    state.held += 1;
                    stored.receive_count = 0;
                    self.make_visible(&mut state, stored, false);
                }
            }
        }
    }

    /// Removes a receipt's message from its lease, if it is still there.
    fn take_back(state: &mut State, receipt: &Receipt) -> Option<Stored> {
        let (lease_id, slot) = receipt.parts()?;
        let lease = state.leases.get_mut(lease_id)?;
        let stored = lease.slots.get_mut(slot as usize)?.take()?;
        lease.live -= 1;
        if lease.live == 0 {
            state.leases.remove(lease_id);
        }
        state.in_flight -= 1;
        Some(stored)
    }
}

#[async_trait]
impl QueueSource for InMemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let give_up = Instant::now().checked_add(wait);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = Instant::now();
            let mut redriven = Vec::new();
            let (messages, next_due) = {
                let mut state = self.state.lock();
                self.settle(&mut state, now);
                let messages = self.take(&mut state, max, now, &mut redriven);
                (messages, Self::next_due(&state))
            };
            self.redrive(redriven);
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

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let mut unknown = false;
        let mut freed_group = false;
        {
            let mut state = self.state.lock();
            for receipt in receipts {
                match Self::take_back(&mut state, receipt) {
                    Some(stored) => {
                        state.held -= 1;
                        if let Some(group_id) = &stored.group {
                            if let Some(group) = state.groups.get_mut(group_id) {
                                group.in_flight -= 1;
                                if group.in_flight == 0 {
                                    if group.queue.is_empty() {
                                        state.groups.remove(group_id);
                                    } else {
                                        state.ready_groups.push_back(Arc::clone(group_id));
                                        freed_group = true;
                                    }
                                }
                            }
                        }
                    }
                    None => unknown = true,
                }
            }
        }
        if freed_group {
            self.arrived.notify_waiters();
        }
        if unknown {
            Err(SourceError::UnknownReceipt)
        } else {
            Ok(())
        }
    }

    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let mut unknown = false;
        let mut released = false;
        {
            let mut state = self.state.lock();
            // A FIFO message goes back to the front of its group, so a FIFO batch is returned
            // last first to keep the group's order; a standard queue's go to the back in order.
            let fifo = self.config.fifo;
            let mut forward = receipts.iter();
            let mut backward = receipts.iter().rev();
            let order: &mut dyn Iterator<Item = &Receipt> =
                if fifo { &mut backward } else { &mut forward };
            for receipt in order {
                match Self::take_back(&mut state, receipt) {
                    Some(mut stored) => {
                        // The receive that delivered it does not count.
                        stored.receive_count = stored.receive_count.saturating_sub(1);
                        self.make_visible(&mut state, stored, true);
                        released = true;
                    }
                    None => unknown = true,
                }
            }
        }
        if released {
            self.arrived.notify_waiters();
        }
        if unknown {
            Err(SourceError::UnknownReceipt)
        } else {
            Ok(())
        }
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        {
            let mut state = self.state.lock();
            let stored = Self::take_back(&mut state, receipt).ok_or(SourceError::UnknownReceipt)?;
            if delay.is_zero() {
                self.make_visible(&mut state, stored, true);
            } else {
                let seq = state.next_seq;
                state.next_seq += 1;
                // SQS caps a visibility change at 12 hours; longer delays are cut to it.
                let delay = delay.min(MAX_VISIBILITY);
                state.delayed.push(DelayedMessage {
                    due: Instant::now() + delay,
                    seq,
                    stored,
                });
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

    fn stats(&self) -> Option<QueueStats> {
        Some(self.counts())
    }
}
