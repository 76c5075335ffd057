//! The in-memory queue's configuration, and what a sender hands it: an [`Outgoing`] message,
//! or a [`SendError`] that gives it back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Attributes, InMemoryQueue};
use crate::error::{ConfigError, SourceError};

/// The longest visibility timeout, and the longest `retry_later` delay (12 h, as SQS).
pub(super) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3_600);

/// The longest delay of a sent message (15 min, as SQS).
pub(super) const MAX_DELAY: Duration = Duration::from_secs(900);

/// Configuration of an [`InMemoryQueue`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// How long a received message stays invisible (0 s..=12 h, default 30 s, as SQS).
    pub visibility_timeout: Duration,
    /// Delay before a sent message becomes visible (0 s..=15 min, default 0).
    pub delay: Duration,
    /// Messages held at most, visible, in flight or delayed (1..=100,000,000, default
    /// 1,000,000); sending beyond it hands the message back.
    pub capacity: usize,
    /// Redrive: after this many receives (1..=1,000) a message goes to `dead_letter`.
    pub max_receive_count: Option<u32>,
    /// The dead-letter queue of the redrive policy.
    pub dead_letter: Option<Arc<InMemoryQueue>>,
    /// A FIFO queue: ordered per message group, one group's messages in flight at a time.
    pub fifo: bool,
    /// Largest message accepted, body plus attribute names and values (1,024..=1,048,576
    /// bytes, default 1 MiB, as SQS); a larger one is refused with [`SourceError::TooLarge`].
    pub max_message_size: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            delay: Duration::ZERO,
            capacity: 1_000_000,
            max_receive_count: None,
            dead_letter: None,
            fifo: false,
            max_message_size: super::limits::MAX_MESSAGE_SIZE,
        }
    }
}

impl QueueConfig {
    /// Sets the visibility timeout.
    #[must_use]
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Sets the default delay of sent messages.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the capacity.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Redrives a message to `dead_letter` once it has been received `max_receive_count` times.
    #[must_use]
    pub fn with_redrive(mut self, dead_letter: Arc<InMemoryQueue>, max_receive_count: u32) -> Self {
        self.dead_letter = Some(dead_letter);
        self.max_receive_count = Some(max_receive_count);
        self
    }

    /// Sets the largest message accepted.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Makes the queue FIFO.
    #[must_use]
    pub fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, value: &dyn std::fmt::Debug, allowed: &str| {
            Err(ConfigError::new("queue", field, value, allowed))
        };
        super::limits::check_visibility_timeout("queue", self.visibility_timeout)?;
        if self.delay > MAX_DELAY {
            return err("delay", &self.delay, "0s..=15min");
        }
        super::limits::check_max_message_size("queue", self.max_message_size)?;
        if !(1..=100_000_000).contains(&self.capacity) {
            return err("capacity", &self.capacity, "1..=100000000");
        }
        match (self.max_receive_count, &self.dead_letter) {
            (Some(n), Some(_)) => super::limits::check_max_receive_count("queue", n)?,
            (Some(_), None) | (None, Some(_)) => {
                return err(
                    "max_receive_count",
                    &self.max_receive_count,
                    "set together with dead_letter",
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// A message to send, with its options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Outgoing {
    /// The body.
    pub body: Bytes,
    /// String attributes.
    pub attributes: Attributes,
    /// A delay instead of the queue's default (0s..=15min; longer is refused).
    pub delay: Option<Duration>,
    /// The message group (FIFO queues require one).
    pub group_id: Option<Arc<str>>,
}

impl Outgoing {
    /// A message with this body.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// Sets an attribute.
    #[must_use]
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes = self.attributes.with(key, value);
        self
    }

    /// Sets the delay.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the message group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.group_id = Some(group.into());
        self
    }
}

/// A batch send of which some messages were refused; every other one was sent. Nothing is
/// dropped: each refused message is handed back with its place in the batch and why.
#[derive(Debug)]
pub struct SendBatchError {
    /// The place in the batch and the id of each message sent, in order.
    pub sent: Vec<(usize, super::MessageId)>,
    /// The place in the batch of each message refused, in order, with the message handed back.
    pub refused: Vec<(usize, SendError)>,
}

impl std::fmt::Display for SendBatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of the batch's messages refused", self.refused.len())?;
        match self.refused.first() {
            Some((at, refused)) => write!(f, " (first at {at}: {refused})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for SendBatchError {}

/// A send the queue refused; the message is handed back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    /// The message, unchanged.
    pub message: Outgoing,
    /// Why.
    pub error: SourceError,
}
