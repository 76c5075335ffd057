//! The queue contract: [`QueueSource`], what a mapping polls, and [`QueueProducer`], what the
//! conformance kit sends through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Message, MessageId, QueueStats, Receipt};
use crate::error::SourceError;

/// A queue that a mapping polls: at-least-once delivery with visibility timeouts, as SQS.
///
/// This documentation is the whole contract an adapter signs. The conformance kit
/// ([`conformance::queue`](crate::conformance::queue), feature `conformance`) checks it
/// against the real broker; `examples/custom_source.rs` is a complete adapter that passes it.
///
/// # Delivery
///
/// [`receive`](QueueSource::receive) hands out up to `max` messages and makes each one
/// *in flight*: invisible to every other receiver until the first of
///
/// - it is acknowledged ([`ack`](QueueSource::ack)): deleted for good;
/// - it is handed back ([`release`](QueueSource::release) at once, uncounted, or
///   [`retry_later`](QueueSource::retry_later) after a delay, counted);
/// - its visibility timeout passes: it is delivered again, `receive_count` one higher.
///
/// Nothing is lost and anything may be delivered twice (at least once). A receipt is
/// *current* from the receive that made it until its message is acknowledged or released
/// with it, or its visibility timeout passes; only a current receipt may change its message.
/// (After `retry_later`, whether the receipt still acknowledges the message until the delay
/// ends is the broker's choice, as SQS keeps a receipt valid across a visibility change; a
/// mapping never does that.)
///
/// # What `ack` guarantees
///
/// `ack` answers `Ok` only once the broker has durably deleted (or acknowledged, where the
/// broker deletes on acknowledgement) every message it names, as durably as the broker's own
/// persistence makes a delete: a message acknowledged with `Ok` is not delivered again. An
/// acknowledgement the broker does not answer (a publish, or AMQP's `basic.ack`) must be made
/// to answer: a request with a reply, or a synchronous round trip on the same channel behind
/// it (a channel's frames are processed in order).
///
/// A receipt that is not current must not delete its message: its visibility timeout passed
/// (whether or not the message was delivered again since), or it was released. `ack` then
/// deletes the others and answers [`SourceError::Refused`] with the positions of the receipts
/// it refused (build it with [`SourceError::refusing`]), so that a mapping counts exactly the
/// messages deleted; the refused messages are delivered again. A claim ends at the visibility
/// timeout on every broker, so a
/// handler that outlived it cannot delete a message that may be in someone else's hands. A
/// broker that honours stale receipts itself (SQS, JetStream) needs the adapter to remember
/// when each receipt was made and refuse it past the timeout. One leniency: a receipt whose
/// message was already acknowledged may answer `Ok` (as SQS does) when the broker cannot tell,
/// since the message is gone either way.
///
/// # What the broker must provide, and what to do when it does not
///
/// - **A visibility timeout.** A mapping never hands a failed message back: it leaves it in
///   flight, and the message returns when its visibility timeout passes (as Lambda does with
///   SQS; the queue's redrive policy counts the receives). A broker without one (RabbitMQ
///   redelivers an unacknowledged message only when its channel closes) needs the adapter to
///   keep a timer per received message that hands it back (a `nack` with requeue, or a
///   re-publish carrying its receive count) once [`visibility_timeout`] passes without an
///   `ack`, and that makes the receipt stale. Without it a failed message never returns.
/// - **Stable message ids.** [`Message::id`] names a message across receives: a function's
///   partial batch response names failed records by id, and duplicates are recognised by it.
///   Ids must be unique within one batch. A broker that assigns none must derive one: best,
///   assign it at send time in a header the producer side writes (producers outside nimbus
///   must then set it too); otherwise derive it from the content (a hash of body and
///   attributes, made unique within a batch by its occurrence), and then equal messages
///   share an id, so recognising duplicates is best effort. A per-delivery tag (AMQP's
///   delivery tag) is not an id: it changes with every delivery.
/// - **A receive count.** [`Message::receive_count`] counts receives, this one included, and
///   drives redrive. A broker that does not count (RabbitMQ's classic queues have only a
///   `redelivered` flag) must carry the count with the message (a header written when the
///   adapter re-publishes it).
/// - **Redrive.** After `max_receive_count` receives, the next receive moves the message to
///   the dead-letter queue instead of returning it. That is the queue's business, not the
///   mapping's, as in SQS.
///
/// # Which calls may be dropped
///
/// A mapping calls every method through a guard that turns a panic into a transient error.
///
/// - `receive` is dropped mid-poll only if [`receive_is_cancel_safe`] says so (when the
///   mapping stops). Otherwise a receive in flight at the stop runs on, on its own task, what
///   it brings is released at once, and it is dropped only at the stop's give-up point (a
///   little past its deadline); what it had claimed then stays in flight until its timeout.
/// - `ack` and `release` are awaited to completion, except by a mapping whose stop deadline
///   has passed by a further grace (200 ms): it drops them (one that answers at once still
///   goes through). Dropped, a call must leave each message either done or still in flight
///   (which its timeout ends), never half done.
/// - `retry_later` is never called by a mapping (the kit, and hosts, call it).
/// - `stats` is dropped after a timeout (a few seconds) and when the mapping stops; it must
///   only read.
/// - `demand`, `visibility_timeout`, `is_fifo` and `receive_is_cancel_safe` are plain
///   functions: answer at once, never block.
///
/// Once a mapping's `stop` returns, it calls its source no more.
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
/// [`InMemoryQueue`](crate::InMemoryQueue). A wrapper forwards the provided methods too, so
/// that mappings see the inner queue's visibility timeout, ordering, cancel-safety, demand and
/// counts. The `async_trait` attribute is re-exported by this crate.
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
///     fn demand(&self, wanted: usize) {
///         self.inner.demand(wanted)
///     }
///     async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
///         self.inner.stats().await
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
/// assert_eq!(queue.stats().await?.map(|s| s.visible), Some(2));
/// # Ok(())
/// # }
/// ```
///
/// [`visibility_timeout`]: QueueSource::visibility_timeout
/// [`receive_is_cancel_safe`]: QueueSource::receive_is_cancel_safe
#[async_trait]
pub trait QueueSource: Send + Sync + 'static {
    /// Receives up to `max` messages, waiting up to `wait` for the first one (a long poll:
    /// woken by the broker, never a polling loop). Received messages are in flight until
    /// acknowledged, handed back, or their visibility timeout passes. An empty vector means
    /// nothing arrived in time. Messages over the receive limit are redriven, not returned.
    ///
    /// # Cancellation
    ///
    /// A receive need not be cancel-safe: if its future is dropped after the broker handed
    /// messages out, they may stay in flight until their visibility timeout (and come back
    /// then, their receive counted). Mappings therefore do not drop such a receive when they
    /// stop: it runs on, on its own task, and what it brings is
    /// [released](QueueSource::release) at once; but only until the stop gives up (a little
    /// past its deadline). A receive still running then is dropped, the stop is reported
    /// unclean, and what that receive had claimed may be stranded until its visibility
    /// timeout. A source whose receive is cancel-safe says so with
    /// [`QueueSource::receive_is_cancel_safe`], and mappings drop its long polls at once.
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the mapping retries transient ones with backoff and stops on a
    /// permanent one.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError>;

    /// Deletes received messages for good; `Ok` only once the broker has durably deleted
    /// every one (see "What `ack` guarantees" above). A receipt that is not current (expired,
    /// handed back, unknown, malformed) deletes nothing and never stops the others from being
    /// deleted. A receipt given twice counts once.
    ///
    /// # Errors
    ///
    /// [`SourceError::Refused`] after the others are deleted, naming the positions of the
    /// receipts that were not current (a receipt whose message was already acknowledged may
    /// pass where the broker cannot tell); any other [`SourceError`] when the broker failed,
    /// and then some messages may be deleted and the rest stay in flight.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError>;

    /// Makes a received message visible again once `delay` has passed (zero: at once), not
    /// before. The receive counts towards `max_receive_count`: this is a failed attempt. A
    /// delay above the adapter's limit is cut to it (12 hours for the in-memory queue, as
    /// SQS; each adapter documents its own).
    ///
    /// # Errors
    ///
    /// [`SourceError::UnknownReceipt`] when the receipt is not current (the message is left
    /// alone); another [`SourceError`] when the broker failed.
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
    /// [`SourceError::Refused`] after the others are released, naming the positions of the
    /// receipts that were not current (they are left alone); another [`SourceError`] when
    /// the broker failed.
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError>;

    /// Whether dropping a [`QueueSource::receive`] future at any await point never leaves
    /// messages claimed (for example, messages are claimed in one step that does not await
    /// and returned at once). Mappings then drop a receive in flight when they stop, instead
    /// of letting it run out its long poll. `false` unless a source says otherwise.
    fn receive_is_cancel_safe(&self) -> bool {
        false
    }

    /// How long a received message stays in flight, if the source has a fixed timeout. A
    /// mapping whose function timeout exceeds it is rejected at build time, and a throttled
    /// batch is handed back before it passes. A source without one (`None`) still must return
    /// failed messages (see "What the broker must provide" above).
    fn visibility_timeout(&self) -> Option<Duration> {
        None
    }

    /// Whether messages are ordered per message group (a FIFO queue). A mapping over a FIFO
    /// source refuses, when it is built, a batch size above 10 and a batching window, as
    /// Lambda does; a source with message groups must say so here. As an SQS FIFO queue, such
    /// a source delivers no message of a group while another of the group is in flight, and
    /// puts a message it takes back ([`QueueSource::release`], or a visibility timeout) in
    /// front of the rest of its group: a mapping at batch size 1 hands back the messages of a
    /// group behind a failed one and relies on both.
    fn is_fifo(&self) -> bool {
        false
    }

    /// A demand hint: how many messages the mapping wants in flight now (its target number
    /// of concurrent batches × its batch size, or × 10 at batch size 1, where a poller may
    /// receive up to 10 messages at once). Called when a mapping starts, whenever that
    /// number changes as the mapping scales, and with 0 when it stops. A broker that
    /// prefetches sizes its prefetch with it (RabbitMQ's `basic.qos` prefetch count, a NATS
    /// pull batch, a Kafka fetch size); one that does not ignores it (the default).
    ///
    /// It is a hint, never a limit on [`QueueSource::receive`]'s `max`, and it speaks for one
    /// mapping. A source value shared by several mappings hears all their hints and cannot
    /// tell whose each is (one mapping's 0 as it stops would cut the others' prefetch), so an
    /// adapter that sizes a prefetch by the hint must be given to each mapping as its own
    /// value (its own consumer or buffer; the connection underneath may be shared), and say
    /// so in its docs. It is called while the mapping holds a lock: store the number and
    /// return; never block, await or call back into the mapping. A panic is caught and logged.
    fn demand(&self, wanted: usize) {
        let _ = wanted;
    }

    /// Counts of the queue now, asked of the broker (`Ok(None)`: the source keeps none, the
    /// default). A mapping awaits it off its polling path, bounded by a timeout, for its
    /// metrics and to tell when its source is drained, so an adapter may simply ask its
    /// broker: no background cache is needed. Counts may be approximate, but `backlog() == 0`
    /// must mean nothing is visible, in flight or delayed.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] when the broker could not be asked; the mapping keeps its previous
    /// counts.
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        Ok(None)
    }
}

/// The future an `async_trait` method returns.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared source is the source. The calls hand back the inner source's boxed futures as
/// they are, written out in `async_trait`'s form: an `async fn` here would box each one
/// again, an allocation more per receive and per acknowledgement.
#[async_trait]
impl<Q: QueueSource + ?Sized> QueueSource for Arc<Q> {
    fn receive<'s, 'f>(
        &'s self,
        max: usize,
        wait: Duration,
    ) -> Boxed<'f, Result<Vec<Message>, SourceError>>
    where
        's: 'f,
        Self: 'f,
    {
        (**self).receive(max, wait)
    }
    fn ack<'s, 'r, 'f>(&'s self, receipts: &'r [Receipt]) -> Boxed<'f, Result<(), SourceError>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        (**self).ack(receipts)
    }
    fn retry_later<'s, 'r, 'f>(
        &'s self,
        receipt: &'r Receipt,
        delay: Duration,
    ) -> Boxed<'f, Result<(), SourceError>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        (**self).retry_later(receipt, delay)
    }
    fn release<'s, 'r, 'f>(&'s self, receipts: &'r [Receipt]) -> Boxed<'f, Result<(), SourceError>>
    where
        's: 'f,
        'r: 'f,
        Self: 'f,
    {
        (**self).release(receipts)
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
    fn demand(&self, wanted: usize) {
        (**self).demand(wanted);
    }
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        (**self).stats().await
    }
}

/// A queue that can be sent to: the producer side of an adapter (the conformance kit uses it).
///
/// # Example
///
/// A queue whose producer marks every message with where it came from, keeping messages in an
/// [`InMemoryQueue`](crate::InMemoryQueue). A producer is a [`QueueSource`] too; here that side
/// is forwarded to the inner queue, as in [`QueueSource`]'s example (abridged: a real wrapper
/// forwards every provided method).
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use nimbus_sources::{async_trait, InMemoryQueue, Message, MessageId, Outgoing, QueueConfig, QueueProducer, QueueSource, Receipt, SourceError};
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
///     fn visibility_timeout(&self) -> Option<Duration> {
///         self.inner.visibility_timeout()
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
    /// Sends one message; returns its id (the id receives will report).
    ///
    /// # Errors
    ///
    /// A [`SourceError`].
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError>;
}
