//! FIFO message groups of the in-memory queue: messages queued per group, and the groups that
//! may be received from now. A group with a message in flight is blocked, which keeps its
//! order: its next message waits until that one is acknowledged or returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::stored::Stored;

#[derive(Debug, Default)]
struct Group {
    queue: VecDeque<Stored>,
    /// Messages of the group received and not yet acknowledged or returned: while non-zero,
    /// the group is blocked.
    in_flight: usize,
}

/// The message groups of a FIFO queue.
#[derive(Debug, Default)]
pub(super) struct Groups {
    groups: HashMap<Arc<str>, Group>,
    /// Groups that can be received from now, in the order they became ready.
    ready: VecDeque<Arc<str>>,
}

impl Groups {
    /// Queues a message in its group. `returning` puts it back at the front (it was received
    /// before the ones queued behind it) and unblocks its group.
    pub(super) fn push(&mut self, group_id: Arc<str>, stored: Stored, returning: bool) {
        let group = self.groups.entry(Arc::clone(&group_id)).or_default();
        if returning {
            group.in_flight -= 1;
            group.queue.push_front(stored);
        } else {
            group.queue.push_back(stored);
        }
        if group.in_flight == 0 && (returning || group.queue.len() == 1) {
            self.ready.push_back(group_id);
        }
    }

    /// The next message of the first ready group, now in flight. The whole group stays with
    /// this receiver: no other group interleaves until its queue is empty or the batch is
    /// full.
    pub(super) fn pop(&mut self) -> Option<Stored> {
        loop {
            let group_id = self.ready.front()?;
            match self.groups.get_mut(group_id) {
                Some(group) => match group.queue.pop_front() {
                    Some(stored) => {
                        group.in_flight += 1;
                        if group.queue.is_empty() {
                            self.ready.pop_front();
                        }
                        return Some(stored);
                    }
                    None => {
                        self.ready.pop_front();
                    }
                },
                None => {
                    self.ready.pop_front();
                }
            }
        }
    }

    /// After a batch was taken: a group blocked because the batch filled up mid-group stays
    /// at the front, but it is in flight now: out of the ready list until its messages return.
    pub(super) fn settle_ready(&mut self) {
        let groups = &self.groups;
        self.ready
            .retain(|g| groups.get(g).is_some_and(|g| g.in_flight == 0));
    }

    /// A message of `group_id` in flight is gone for good (acknowledged or redriven). Returns
    /// whether its group became ready again.
    pub(super) fn finish(&mut self, group_id: &Arc<str>) -> bool {
        let Some(group) = self.groups.get_mut(group_id) else {
            return false;
        };
        group.in_flight -= 1;
        if group.in_flight > 0 {
            return false;
        }
        if group.queue.is_empty() {
            self.groups.remove(group_id);
            false
        } else {
            self.ready.push_back(Arc::clone(group_id));
            true
        }
    }

    /// A message taken for redrive instead of delivery: its group stays blocked only by the
    /// others in flight.
    pub(super) fn drop_in_flight(&mut self, group_id: &Arc<str>) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.in_flight -= 1;
        }
    }

    /// Every message queued in a group (not those in flight).
    pub(super) fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.groups.values().flat_map(|g| g.queue.iter())
    }
}
