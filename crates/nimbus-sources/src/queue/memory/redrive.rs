//! Redrive of the in-memory queue: messages received more than `max_receive_count` times go
//! to the dead-letter queue instead of to a receiver.

use std::sync::atomic::Ordering;

use super::stored::Stored;
use super::{InMemoryQueue, Sizing};
use crate::queue::Outgoing;

impl InMemoryQueue {
    /// Sends messages taken over their receive limit to the dead-letter queue. One that it
    /// refuses (it is full) stays here, visible again with its receive count reset, rather
    /// than be lost.
    pub(super) fn redrive(&self, redriven: Vec<Stored>) {
        if redriven.is_empty() {
            return;
        }
        let Some(dlq) = &self.config.dead_letter else {
            // Validation pairs a receive limit with a dead-letter queue.
            return;
        };
        for mut stored in redriven {
            let mut outgoing = Outgoing::new(stored.body.clone());
            outgoing.attributes = stored.attributes.clone();
            outgoing.group_id = stored.group.clone();
            match dlq.send_sized(std::iter::once(outgoing), Sizing::Unchecked) {
                Ok(_) => {
                    self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Err(refused) => {
                    tracing::error!(id = stored.id, error = %refused, "dead-letter queue refused a message; keeping it");
                    let mut state = self.state.lock();
                    state.held += 1;
                    stored.receive_count = 0;
                    state.make_visible(self.config.fifo, stored, false);
                }
            }
        }
    }
}
