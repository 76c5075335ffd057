//! Leases: the messages of one receive, in flight until a deadline, found by id and by
//! deadline.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

use super::stored::Stored;
use crate::queue::{Message, MessageId, Receipt};

/// The messages of one receive, in flight until `deadline`. They are shared with the receive
/// that took them, which makes its [`Message`]s from them after letting go of the lock. A slot
/// taken back (acknowledged, released) is marked as such.
#[derive(Debug)]
pub(super) struct Lease {
    messages: Arc<Vec<Stored>>,
    /// Which slots were taken back: empty (no allocation) until the first is.
    taken_back: Vec<bool>,
    live: usize,
    deadline: Instant,
}

impl Lease {
    /// A lease of `messages` (at least one) until `deadline`.
    pub(super) fn new(messages: Arc<Vec<Stored>>, deadline: Instant) -> Self {
        Self {
            live: messages.len(),
            messages,
            taken_back: Vec::new(),
            deadline,
        }
    }

    /// Whether its deadline passed by `now`.
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.deadline <= now
    }

    /// Messages in the lease, taken back or not.
    pub(super) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Messages not taken back yet.
    pub(super) fn live_count(&self) -> usize {
        self.live
    }

    /// Takes back the message in `slot`, unless it was already. Moved out once the receive
    /// is done with the lease's messages (as it is by the time its receipts come back), so
    /// that a message acknowledged is freed now rather than with the last of its lease, which
    /// a failed one can keep for the visibility timeout (a small body's buffer goes with the
    /// last body packed in it).
    pub(super) fn take_back(&mut self, slot: usize) -> Option<Stored> {
        if slot >= self.messages.len() {
            return None;
        }
        if self.taken_back.is_empty() {
            self.taken_back = vec![false; self.messages.len()];
        }
        if std::mem::replace(&mut self.taken_back[slot], true) {
            return None;
        }
        self.live -= 1;
        Some(match Arc::get_mut(&mut self.messages) {
            Some(messages) => std::mem::replace(&mut messages[slot], Stored::taken_back()),
            None => self.messages[slot].clone(),
        })
    }

    /// Its messages, for a lease taken back whole.
    pub(super) fn into_messages(self) -> Arc<Vec<Stored>> {
        self.messages
    }

    /// The messages not taken back, in order: moved out when the receive that took them is
    /// done with them, cloned otherwise.
    pub(super) fn into_live(self) -> impl DoubleEndedIterator<Item = Stored> {
        let messages = Arc::try_unwrap(self.messages).unwrap_or_else(|shared| (*shared).clone());
        let taken_back = self.taken_back;
        messages
            .into_iter()
            .enumerate()
            .filter(move |(slot, _)| !is_taken_back(&taken_back, *slot))
            .map(|(_, stored)| stored)
    }

    fn live(&self) -> impl Iterator<Item = &Stored> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(slot, _)| !is_taken_back(&self.taken_back, *slot))
            .map(|(_, stored)| stored)
    }
}

/// Whether a lease's `slot` was taken back, by its flags (none yet: empty).
fn is_taken_back(flags: &[bool], slot: usize) -> bool {
    flags.get(slot).copied().unwrap_or(false)
}

/// What one receive took: its lease's number and messages, to make [`Message`]s of once the
/// lock is let go.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) lease_id: u64,
    pub(super) messages: Arc<Vec<Stored>>,
}

impl Taken {
    /// The messages as a receiver gets them, each with its receipt.
    pub(super) fn messages(&self) -> Vec<Message> {
        self.messages
            .iter()
            .enumerate()
            .map(|(slot, stored)| Message {
                id: MessageId::number(stored.id),
                body: stored.body.clone(),
                attributes: stored.attributes.clone(),
                receive_count: stored.receive_count,
                sent_at: stored.sent_at,
                group_id: stored.group.clone(),
                // A slot number fits: a queue holds at most 100 M messages (validated).
                receipt: Receipt::from_parts(self.lease_id, slot as u32),
            })
            .collect()
    }
}

/// Leases by id and by deadline.
///
/// Ids are handed out in order, so a deque indexed from the oldest live id finds a lease
/// without hashing; a lease that ends leaves a hole until the front catches up. A lease that
/// stays while many after it end (a failed message waiting out its visibility timeout, up to
/// 12 h) would keep a hole for every receive behind it: once holes outnumber the live leases,
/// the live ones move to an ordered map of stragglers (no hashing on the acknowledgement path,
/// and it frees its nodes as they go; all older than the deque's first) and the deque
/// starts again empty.
///
/// The deadlines' heap keeps the entry of a lease that ended early until the entry reaches the
/// top (dropped then, so the top is always a live lease's) or such entries outnumber the live
/// leases (the heap is compacted). Either way a busy queue holds about its leases in flight,
/// not every receive of the last visibility timeout.
#[derive(Debug, Default)]
pub(super) struct Leases {
    first: u64,
    slots: VecDeque<Option<Lease>>,
    stragglers: BTreeMap<u64, Lease>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    live: usize,
}

impl Leases {
    #[inline]
    pub(super) fn insert(&mut self, id: u64, lease: Lease) {
        if self.slots.is_empty() {
            self.first = id;
        }
        self.deadlines.push(Reverse((lease.deadline, id)));
        self.live += 1;
        let index = (id - self.first) as usize;
        while self.slots.len() <= index {
            self.slots.push_back(None);
        }
        self.slots[index] = Some(lease);
        // Each pass moves fewer leases than it frees holes: amortised, a constant cost per
        // receive.
        if self.slots.len() > 2 * self.live + 64 {
            let first = self.first;
            for (offset, lease) in self.slots.drain(..).enumerate() {
                if let Some(lease) = lease {
                    self.stragglers.insert(first + offset as u64, lease);
                }
            }
            // Every straggler is older than the next lease, with which the deque starts again.
            self.first = id + 1;
        }
        // Likewise: each pass drops more entries than it keeps.
        if self.deadlines.len() > 2 * self.live + 64 {
            let mut deadlines = std::mem::take(&mut self.deadlines);
            deadlines.retain(|Reverse((_, id))| self.contains(*id));
            self.deadlines = deadlines;
        }
    }

    #[inline]
    fn contains(&self, id: u64) -> bool {
        if id < self.first {
            return self.stragglers.contains_key(&id);
        }
        usize::try_from(id - self.first)
            .ok()
            .and_then(|index| self.slots.get(index))
            .is_some_and(Option::is_some)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Lease> {
        if id < self.first {
            return self.stragglers.get_mut(&id);
        }
        let index = usize::try_from(id - self.first).ok()?;
        self.slots.get_mut(index)?.as_mut()
    }

    #[inline]
    pub(super) fn remove(&mut self, id: u64) -> Option<Lease> {
        let lease = if id < self.first {
            self.stragglers.remove(&id)?
        } else {
            let index = usize::try_from(id - self.first).ok()?;
            let lease = self.slots.get_mut(index)?.take()?;
            while matches!(self.slots.front(), Some(None)) {
                self.slots.pop_front();
                self.first += 1;
            }
            lease
        };
        self.live -= 1;
        while let Some(&Reverse((_, top))) = self.deadlines.peek() {
            if self.contains(top) {
                break;
            }
            self.deadlines.pop();
        }
        Some(lease)
    }

    /// The lease whose deadline passed first, taken out, if one passed by `now`.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<Lease> {
        loop {
            let Reverse((deadline, id)) = *self.deadlines.peek()?;
            if deadline > now {
                return None;
            }
            // `remove` drops the entry with the lease; an entry left without one (the top is
            // kept live, so none should be) is dropped here rather than end the search.
            match self.remove(id) {
                Some(lease) => return Some(lease),
                None => {
                    self.deadlines.pop();
                }
            }
        }
    }

    /// The earliest deadline of a lease in flight.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.stragglers
            .values()
            .chain(self.slots.iter().flatten())
            .flat_map(Lease::live)
    }

    /// Leases in flight, the deadlines' heap's entries and the deque's slots (for tests of
    /// what a busy queue keeps).
    #[cfg(test)]
    pub(super) fn footprint(&self) -> (usize, usize, usize) {
        (self.live, self.deadlines.len(), self.slots.len())
    }
}
