//! A message as the in-memory queue keeps it, wherever it is: visible, delayed or in a lease.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::queue::Attributes;

/// A stored message, kept inline in the queue's deques (no allocation of its own; cloning it
/// for a receiver shares the body).
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) id: u64,
    pub(super) body: Bytes,
    pub(super) attributes: Attributes,
    pub(super) sent_at: SystemTime,
    pub(super) group: Option<Arc<str>>,
    pub(super) receive_count: u32,
}

impl Stored {
    /// What is left in a lease's slot whose message was moved out.
    pub(super) fn taken_back() -> Self {
        Self {
            id: 0,
            body: Bytes::new(),
            attributes: Attributes::default(),
            sent_at: SystemTime::UNIX_EPOCH,
            group: None,
            receive_count: 0,
        }
    }
}
