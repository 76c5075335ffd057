//! Queue sources (SQS semantics): the [`QueueSource`] trait, [`Message`]s with receipts, and the
//! in-memory [`InMemoryQueue`].
//!
//! The trait is the common core of SQS (`ReceiveMessage` with `WaitTimeSeconds`,
//! `DeleteMessageBatch`, `ChangeMessageVisibility`), Redis (`XREADGROUP BLOCK`, `XACK`,
//! `XAUTOCLAIM`), PostgreSQL (`SELECT ... FOR UPDATE SKIP LOCKED`, `DELETE`, `visible_at`)
//! and NATS JetStream (pull `fetch` with `expires`, `ack`, `nak` with delay): receive a batch
//! with a long poll, acknowledge a set, make one visible again after a delay. Redrive to a
//! dead-letter queue after `max_receive_count` is the queue's own business, as it is in SQS.

mod config;
pub mod limits;
mod memory;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use config::{Outgoing, QueueConfig, SendError};
pub use memory::InMemoryQueue;

use crate::error::SourceError;

/// A message id. Numeric ids (in-memory queue, PostgreSQL rows, NATS sequences) are kept as
/// numbers, so making and comparing them allocates nothing; others (SQS UUIDs, Redis stream
/// ids) as text. Displayed and serialised as text; a decimal text is the same id as the number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(IdRepr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IdRepr {
    Number(u64),
    Text(Arc<str>),
}

impl MessageId {
    /// A numeric id.
    pub fn number(n: u64) -> Self {
        Self(IdRepr::Number(n))
    }

    /// A text id (a canonical decimal text becomes the numeric id, so both spellings are equal).
    pub fn text(text: &str) -> Self {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse::<u64>() {
            Ok(n) if canonical => Self::number(n),
            _ => Self(IdRepr::Text(Arc::from(text))),
        }
    }

    /// The number, for a numeric id.
    pub fn as_number(&self) -> Option<u64> {
        match self.0 {
            IdRepr::Number(n) => Some(n),
            IdRepr::Text(_) => None,
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            IdRepr::Number(n) => write!(f, "{n}"),
            IdRepr::Text(text) => f.write_str(text),
        }
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl From<&str> for MessageId {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::text(&text))
    }
}

/// Message attributes: string keys and values, as SQS's string attributes. Empty attributes
/// allocate nothing; cloning shares them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes(Option<Arc<std::collections::BTreeMap<String, String>>>);

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self(None)
    }

    /// These attributes plus `key` = `value`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default)).insert(key.into(), value.into());
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|map| map.is_empty())
    }

    /// The attributes, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|map| map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<std::collections::BTreeMap<String, String>> for Attributes {
    fn from(map: std::collections::BTreeMap<String, String>) -> Self {
        Self((!map.is_empty()).then(|| Arc::new(map)))
    }
}

impl serde::Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(std::collections::BTreeMap::<String, String>::deserialize(d)?.into())
    }
}

/// Proof of one receipt of a message, used to acknowledge it or make it visible again.
/// Opaque to the mapping engine; each source chooses what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(ReceiptInner);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ReceiptInner {
    Slot { lease: u64, slot: u32 },
    Token(Arc<str>),
}

impl Receipt {
    /// A receipt made of two numbers (for sources that index in-flight messages).
    pub fn from_parts(lease: u64, slot: u32) -> Self {
        Self(ReceiptInner::Slot { lease, slot })
    }

    /// A receipt made of a token (SQS receipt handle, NATS reply subject, ...).
    pub fn token(token: impl Into<Arc<str>>) -> Self {
        Self(ReceiptInner::Token(token.into()))
    }

    /// The two numbers, for a receipt made by [`Receipt::from_parts`].
    pub fn parts(&self) -> Option<(u64, u32)> {
        match self.0 {
            ReceiptInner::Slot { lease, slot } => Some((lease, slot)),
            ReceiptInner::Token(_) => None,
        }
    }

    /// The token, for a receipt made by [`Receipt::token`].
    pub fn as_token(&self) -> Option<&str> {
        match &self.0 {
            ReceiptInner::Token(token) => Some(token),
            ReceiptInner::Slot { .. } => None,
        }
    }
}

/// One received message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message {
    /// The message id, stable across receives.
    pub id: MessageId,
    /// The body.
    pub body: Bytes,
    /// String attributes.
    pub attributes: Attributes,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// Its message group, on a FIFO queue.
    pub group_id: Option<Arc<str>>,
    /// This receipt, for acknowledging it or making it visible again.
    pub receipt: Receipt,
}

impl Message {
    /// A message, for sources built outside this crate.
    pub fn new(id: MessageId, body: impl Into<Bytes>, receipt: Receipt) -> Self {
        Self {
            id,
            body: body.into(),
            attributes: Attributes::default(),
            receive_count: 1,
            sent_at: SystemTime::now(),
            group_id: None,
            receipt,
        }
    }

    /// Sets the attributes.
    #[must_use]
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets the receive count.
    #[must_use]
    pub fn with_receive_count(mut self, receive_count: u32) -> Self {
        self.receive_count = receive_count;
        self
    }

    /// Sets the send time.
    #[must_use]
    pub fn with_sent_at(mut self, sent_at: SystemTime) -> Self {
        self.sent_at = sent_at;
        self
    }

    /// Sets the message group.
    #[must_use]
    pub fn with_group(mut self, group_id: impl Into<Arc<str>>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }
}

/// Counts a queue may report, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages visible now.
    pub visible: u64,
    /// Messages received and not yet acknowledged or visible again.
    pub in_flight: u64,
    /// Messages waiting for their delay (sent with a delay, or made visible later).
    pub delayed: u64,
    /// Messages moved to the dead-letter queue so far.
    pub dead_lettered: u64,
}

impl QueueStats {
    /// Messages not yet handled: visible, in flight or delayed.
    pub fn backlog(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// A queue that a mapping polls: at-least-once delivery with visibility timeouts.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::{InMemoryQueue, QueueConfig, QueueSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = InMemoryQueue::new(QueueConfig::default())?;
/// queue.send("hello")?;
/// let batch = queue.receive(10, Duration::from_secs(1)).await?;
/// assert_eq!(&batch[0].body[..], b"hello");
/// queue.ack(&[batch[0].receipt.clone()]).await?;
/// # Ok(())
/// # }
/// ```
///
/// Implementing it: a queue that counts the messages it hands out, keeping them in an
/// [`InMemoryQueue`]. A wrapper forwards the provided methods too, so that mappings see the
/// inner queue's visibility timeout, ordering, cancel-safety and counts. The `async_trait`
/// attribute is re-exported by this crate.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use nimbus_sources::{async_trait, InMemoryQueue, Message, QueueConfig, QueueSource, QueueStats, Receipt, SourceError};
///
/// #[derive(Debug)]
/// struct Counted {
///     inner: InMemoryQueue,
///     received: AtomicU64,
/// }
///
/// #[async_trait]
/// impl QueueSource for Counted {
///     async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
///         let messages = self.inner.receive(max, wait).await?;
///         self.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
///         Ok(messages)
///     }
///     async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
///         self.inner.ack(receipts).await
///     }
///     async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
///         self.inner.retry_later(receipt, delay).await
///     }
///     async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
///         self.inner.release(receipts).await
///     }
///     fn receive_is_cancel_safe(&self) -> bool {
///         // Nothing is awaited after the inner receive returns.
///         self.inner.receive_is_cancel_safe()
///     }
///     fn visibility_timeout(&self) -> Option<Duration> {
///         self.inner.visibility_timeout()
///     }
///     fn is_fifo(&self) -> bool {
///         self.inner.is_fifo()
///     }
///     fn stats(&self) -> Option<QueueStats> {
///         self.inner.stats()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = Counted { inner: InMemoryQueue::new(QueueConfig::default())?, received: AtomicU64::new(0) };
/// queue.inner.send("a")?;
/// queue.inner.send("b")?;
/// let batch = queue.receive(10, Duration::ZERO).await?;
/// assert_eq!(queue.received.load(Ordering::Relaxed), 2);
/// // Released messages are visible again at once, their receive not counted by the queue.
/// let receipts: Vec<Receipt> = batch.iter().map(|m| m.receipt.clone()).collect();
/// queue.release(&receipts).await?;
/// assert_eq!(queue.stats().map(|s| s.visible), Some(2));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait QueueSource: Send + Sync + 'static {
    /// Receives up to `max` messages, waiting up to `wait` for the first one (long poll).
    /// Received messages are invisible to other receivers until acknowledged, made visible
    /// again, or their visibility timeout passes. An empty vector means nothing arrived in time.
    ///
    /// # Cancellation
    ///
    /// A receive need not be cancel-safe: if its future is dropped after the broker handed
    /// messages out, they may stay invisible until their visibility timeout (and come back
    /// then, at least once, their receive counted). Mappings therefore do not drop such a
    /// receive when they stop: it runs on, on its own task, and what it brings is
    /// [released](QueueSource::release) at once; but only until the stop gives up (a little
    /// past its deadline). A receive still running then is dropped, the stop is reported
    /// unclean, and what that receive had claimed may be stranded until its visibility
    /// timeout. A source whose receive is cancel-safe says so with
    /// [`QueueSource::receive_is_cancel_safe`], and mappings drop its long polls at once.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the mapping retries with backoff.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError>;

    /// Deletes received messages for good. A receipt that is stale (already acknowledged, or
    /// expired) never stops the others from being deleted.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; a source that can tell reports stale receipts as
    /// [`SourceError::UnknownReceipt`] after the others are deleted (one that cannot, as SQS
    /// for an already deleted message, answers `Ok`).
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError>;

    /// Makes a received message visible again after `delay` (zero: at once).
    ///
    /// # Errors
    ///
    /// A [`SourceError`].
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError>;

    /// Hands received messages back unhandled: visible again at once, and the receive that
    /// delivered them is not counted, so the next receive reports the same `receive_count` as
    /// this one did and releasing never moves a message towards its dead-letter queue.
    /// Mappings release what they received but did not hand to the function when they stop
    /// (shutdown, `stop`, unregister); a source that prefetches releases what it buffered.
    /// Unlike [`QueueSource::retry_later`], a release is not a failed attempt.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; receipts already expired are reported as
    /// [`SourceError::UnknownReceipt`] after the others are released.
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError>;

    /// Whether dropping a [`QueueSource::receive`] future at any await point never leaves
    /// messages claimed (for example, messages are claimed in one step that does not await
    /// and returned at once). Mappings then drop a receive in flight when they stop, instead
    /// of letting it run out its long poll. `false` unless a source says otherwise.
    fn receive_is_cancel_safe(&self) -> bool {
        false
    }

    /// How long a received message stays invisible, if the source has a fixed one. A mapping
    /// whose function timeout exceeds it is rejected at build time.
    fn visibility_timeout(&self) -> Option<Duration> {
        None
    }

    /// Whether messages are ordered per message group (a FIFO queue).
    fn is_fifo(&self) -> bool {
        false
    }

    /// Counts for metrics, if the source keeps them.
    fn stats(&self) -> Option<QueueStats> {
        None
    }
}

#[async_trait]
impl<Q: QueueSource + ?Sized> QueueSource for Arc<Q> {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        (**self).receive(max, wait).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        (**self).ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        (**self).retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        (**self).release(receipts).await
    }
    fn receive_is_cancel_safe(&self) -> bool {
        (**self).receive_is_cancel_safe()
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        (**self).visibility_timeout()
    }
    fn is_fifo(&self) -> bool {
        (**self).is_fifo()
    }
    fn stats(&self) -> Option<QueueStats> {
        (**self).stats()
    }
}

/// A queue that can be sent to: the producer side of an adapter (the conformance kit uses it).
///
/// # Example
///
/// A queue whose producer marks every message with where it came from, keeping messages in an
/// [`InMemoryQueue`]. A producer is a [`QueueSource`] too; here that side is forwarded to the
/// inner queue, as in [`QueueSource`]'s example.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use nimbus_sources::{async_trait, InMemoryQueue, Message, MessageId, Outgoing, QueueConfig, QueueProducer, QueueSource, QueueStats, Receipt, SourceError};
///
/// #[derive(Debug)]
/// struct Marked {
///     inner: InMemoryQueue,
///     producer: String,
/// }
///
/// #[async_trait]
/// impl QueueProducer for Marked {
///     async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
///         let message = Outgoing::new(body).with_attribute("producer", self.producer.as_str());
///         self.inner.send_message(message).map_err(|refused| refused.error)
///     }
/// }
///
/// #[async_trait]
/// impl QueueSource for Marked {
///     async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
///         self.inner.receive(max, wait).await
///     }
///     async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
///         self.inner.ack(receipts).await
///     }
///     async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
///         self.inner.retry_later(receipt, delay).await
///     }
///     async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
///         self.inner.release(receipts).await
///     }
///     fn receive_is_cancel_safe(&self) -> bool {
///         self.inner.receive_is_cancel_safe()
///     }
///     fn visibility_timeout(&self) -> Option<Duration> {
///         self.inner.visibility_timeout()
///     }
///     fn is_fifo(&self) -> bool {
///         self.inner.is_fifo()
///     }
///     fn stats(&self) -> Option<QueueStats> {
///         self.inner.stats()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = Marked { inner: InMemoryQueue::new(QueueConfig::default())?, producer: "billing".into() };
/// let id = queue.produce(Bytes::from_static(b"invoice 17")).await?;
/// let received = queue.receive(1, Duration::ZERO).await?;
/// assert_eq!(received[0].id, id);
/// assert_eq!(received[0].attributes.get("producer"), Some("billing"));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait QueueProducer: QueueSource {
    /// Sends one message.
    ///
    /// # Errors
    ///
    /// A [`SourceError`].
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError>;
}

#[async_trait]
impl QueueProducer for memory::InMemoryQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        self.send(body).map_err(|e| e.error)
    }
}
