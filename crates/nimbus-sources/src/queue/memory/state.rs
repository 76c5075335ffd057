//! The in-memory queue's state under its lock: visible messages (or FIFO groups), leases of
//! messages in flight with their deadlines, and delayed messages. Expired leases and due
//! delays are settled lazily, by whoever takes the lock next.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use tokio::time::Instant;

use super::fifo::Groups;
use super::lease::{Lease, Leases, Taken};
use super::stored::Stored;
use crate::queue::{QueueConfig, Receipt};

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

#[derive(Debug, Default)]
pub(super) struct State {
    /// Standard queue: visible messages.
    visible: VecDeque<Stored>,
    /// FIFO queue: messages by group.
    groups: Groups,
    leases: Leases,
    delayed: BinaryHeap<DelayedMessage>,
    next_lease: u64,
    next_seq: u64,
    /// Messages held: visible, in flight or delayed.
    pub(super) held: usize,
    pub(super) visible_count: usize,
    pub(super) in_flight: usize,
}

impl State {
    /// Messages waiting for a delay.
    pub(super) fn delayed(&self) -> usize {
        self.delayed.len()
    }

    /// Every message held, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Stored> {
        let delayed = self.delayed.iter().map(|d| &d.stored);
        self.visible
            .iter()
            .chain(self.groups.iter())
            .chain(delayed)
            .chain(self.leases.iter())
    }

    /// Puts a message where receivers find it. `returning` puts a FIFO message back at the
    /// front of its group (it was received before the ones queued behind it).
    pub(super) fn make_visible(&mut self, fifo: bool, stored: Stored, returning: bool) {
        self.visible_count += 1;
        match stored.group.clone() {
            Some(group_id) if fifo => self.groups.push(group_id, stored, returning),
            _ => self.visible.push_back(stored),
        }
    }

    /// Holds a message back until `due`.
    pub(super) fn delay(&mut self, stored: Stored, due: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.delayed.push(DelayedMessage { due, seq, stored });
    }

    /// Returns expired leases' messages and due delayed messages to the visible set.
    /// Returns whether anything became visible.
    pub(super) fn settle(&mut self, fifo: bool, now: Instant) -> bool {
        let mut changed = false;
        while let Some(lease) = self.leases.pop_expired(now) {
            // FIFO messages go back to the front of their group: return them last-first.
            for stored in lease.into_live().rev() {
                self.in_flight -= 1;
                self.make_visible(fifo, stored, true);
                changed = true;
            }
        }
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(delayed) = self.delayed.pop() {
                // A FIFO message delayed by `retry_later` still blocks its group.
                let returning = delayed.stored.receive_count > 0;
                self.make_visible(fifo, delayed.stored, returning);
                changed = true;
            }
        }
        changed
    }

    /// When something next becomes visible without a send: a lease expiry or a delay.
    pub(super) fn next_due(&self) -> Option<Instant> {
        let lease = self.leases.next_deadline();
        let delayed = self.delayed.peek().map(|d| d.due);
        match (lease, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes up to `max` visible messages under a new lease. Messages over their receive
    /// limit are collected in `redrive` instead.
    pub(super) fn take(
        &mut self,
        config: &QueueConfig,
        max: usize,
        now: Instant,
        redrive: &mut Vec<Stored>,
    ) -> Option<Taken> {
        // The lease keeps this vector: at most what is visible.
        let mut taken: Vec<Stored> = Vec::with_capacity(max.min(self.visible_count));
        if !config.fifo && config.max_receive_count.is_none() {
            // Nothing to redrive or to keep in group order: one move of a run of the deque.
            let n = max.min(self.visible.len());
            taken.extend(self.visible.drain(..n));
            self.visible_count -= n;
            for stored in &mut taken {
                stored.receive_count += 1;
            }
        }
        while taken.len() < max {
            let next = if config.fifo {
                self.groups.pop()
            } else {
                self.visible.pop_front()
            };
            let Some(mut stored) = next else { break };
            self.visible_count -= 1;
            stored.receive_count += 1;
            if let Some(max_receives) = config.max_receive_count {
                if stored.receive_count > max_receives {
                    self.held -= 1;
                    if let Some(group) = &stored.group {
                        self.groups.drop_in_flight(group);
                    }
                    redrive.push(stored);
                    continue;
                }
            }
            taken.push(stored);
        }
        if config.fifo {
            self.groups.settle_ready();
        }
        if taken.is_empty() {
            return None;
        }
        // Room left over (a FIFO queue's blocked groups, messages redriven) would stay with the
        // lease until it ends.
        taken.shrink_to_fit();
        let lease_id = self.next_lease;
        self.next_lease += 1;
        // The visibility timeout is at most 12 h (validated).
        let deadline = now + config.visibility_timeout;
        let live = taken.len();
        self.in_flight += live;
        let messages = Arc::new(taken);
        self.leases
            .insert(lease_id, Lease::new(Arc::clone(&messages), deadline));
        Some(Taken { lease_id, messages })
    }

    /// Removes a receipt's message from its lease, if the receipt is current: its message
    /// still there and its lease not expired at `now`. An expired lease is left for
    /// [`State::settle`] to make visible again.
    pub(super) fn take_back(&mut self, receipt: &Receipt, now: Instant) -> Option<Stored> {
        let (lease_id, slot) = receipt.parts()?;
        let lease = self.leases.get_mut(lease_id)?;
        if lease.expired(now) {
            return None;
        }
        let stored = lease.take_back(slot as usize)?;
        if lease.live_count() == 0 {
            self.leases.remove(lease_id);
        }
        self.in_flight -= 1;
        Some(stored)
    }

    /// Takes back a whole lease when `receipts` start with every one of its receipts, in
    /// order, and it has not expired at `now` (a batch acknowledged at once): one lookup for
    /// the lease instead of one per receipt. Returns how many receipts it took and the lease's
    /// messages, or `None` to go receipt by receipt.
    pub(super) fn take_back_lease(
        &mut self,
        receipts: &[Receipt],
        now: Instant,
    ) -> Option<(usize, Arc<Vec<Stored>>)> {
        let (lease_id, 0) = receipts.first()?.parts()? else {
            return None;
        };
        let lease = self.leases.get_mut(lease_id)?;
        let n = lease.len();
        if lease.live_count() != n || lease.expired(now) || receipts.len() < n {
            return None;
        }
        let in_order = receipts[..n]
            .iter()
            .enumerate()
            .all(|(slot, r)| r.parts() == Some((lease_id, slot as u32)));
        if !in_order {
            return None;
        }
        let lease = self.leases.remove(lease_id)?;
        self.in_flight -= n;
        Some((n, lease.into_messages()))
    }

    /// A message taken back is gone for good (acknowledged). Returns whether its FIFO group
    /// became ready again.
    pub(super) fn delete(&mut self, stored: &Stored) -> bool {
        self.held -= 1;
        match &stored.group {
            Some(group_id) => self.groups.finish(group_id),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64) -> Stored {
        Stored {
            id,
            ..Stored::taken_back()
        }
    }

    #[test]
    fn a_busy_queue_keeps_about_its_leases_in_flight_not_every_receive() {
        let config = QueueConfig::default();
        let mut state = State::default();
        let now = Instant::now();
        for id in 0..10_000 {
            state.held += 1;
            state.make_visible(false, message(id), false);
        }
        // Two leases stay in flight throughout, as failed messages wait for their timeout.
        let stuck = state
            .take(&config, 1, now, &mut Vec::new())
            .expect("visible");
        let late = state
            .take(&config, 1, now, &mut Vec::new())
            .expect("visible");
        for _ in 2..10_000 {
            let taken = state
                .take(&config, 1, now, &mut Vec::new())
                .expect("visible");
            let receipt = Receipt::from_parts(taken.lease_id, 0);
            drop(taken);
            let (n, _) = state.take_back_lease(&[receipt], now).expect("current");
            assert_eq!(n, 1);
            // Both are trimmed as a lease is added, counting it: two more once it is taken back.
            let (live, deadlines, slots) = state.leases.footprint();
            assert!(
                deadlines <= 2 * (live + 1) + 64 && slots <= 2 * (live + 1) + 64,
                "{deadlines} deadlines and {slots} slots for {live} leases"
            );
        }
        assert_eq!(state.leases.footprint().0, 2);
        let deadline = now + config.visibility_timeout;
        assert_eq!(state.next_due(), Some(deadline));
        assert_eq!(state.iter().count(), 2, "the two in flight are still held");

        // Both are found by their receipts after the leases around them ended.
        let receipt = Receipt::from_parts(late.lease_id, 0);
        drop(late);
        assert!(state.take_back(&receipt, now).is_some());
        assert!(state.take_back(&receipt, now).is_none(), "taken back once");
        assert_eq!(state.leases.footprint().0, 1);

        // The one left in flight still comes back at its deadline, and nothing else is due.
        drop(stuck);
        assert!(!state.settle(false, deadline - Duration::from_millis(1)));
        assert!(state.settle(false, deadline));
        assert_eq!((state.visible_count, state.in_flight), (1, 0));
        assert_eq!(state.next_due(), None);
        assert_eq!(state.leases.footprint(), (0, 0, 0));
    }
}
