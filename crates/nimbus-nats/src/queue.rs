//! A queue on a JetStream stream read by a durable pull consumer.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use async_nats::Subject;
use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::handler::hops;
use nimbus_sources::{
    Message, MessageId, QueueProducer, QueueSource, QueueStats, Receipt, SourceError,
};

use crate::config::NatsConfig;
use crate::delivery::Delivery;
use crate::error::NatsError;
use crate::receipt::{Released, Replies};
use crate::redrive::DeadLetters;
use crate::setup::{
    dead_letter_count, fetch_stats, open_consumer, open_dead_letter_stream, open_stream,
};
use crate::superseded::Superseded;

/// The longest a receive waits: a longer wait (even `Duration::MAX`) is cut to it, and the
/// receive returns empty at its end ("nothing arrived in time").
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The longest `retry_later` delay: SQS's 12 hours. Longer delays are cut to it.
const MAX_DELAY: Duration = Duration::from_secs(12 * 3600);

/// A queue with SQS semantics on a JetStream stream with work-queue retention, read by one
/// durable pull consumer with explicit acks that every process of the queue shares.
///
/// - receive: one pull request, answered at once with what is there, or held by the server
///   until a message comes or the wait passes (a long poll, no polling loop).
/// - ack: `+ACK`, confirmed by the server before `ack` returns; on a work-queue stream an
///   acknowledged message is deleted. A receipt older than `ack_wait` (counted from when its
///   delivery arrived) is refused by the adapter, as the contract asks: JetStream itself would
///   still delete the message.
/// - retry later: `-NAK` with the delay.
/// - visibility timeout: the consumer's `ack_wait`, read when the queue connects (reconnect
///   after changing it: see [`NatsConfig::ack_wait`]); receive count: JetStream's delivery
///   count (raised where a server restarted it, see `superseded.rs`).
/// - redrive: a message delivered more than `max_receive_count` times is published to the
///   dead-letter subject and terminated, instead of being returned.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use nimbus_nats::{NatsConfig, NatsQueue};
/// use nimbus_sources::QueueSource;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = NatsConfig::new("nats://127.0.0.1:4222", "ORDERS").with_max_receive_count(5);
/// let queue = NatsQueue::connect(config).await?;
/// queue.send("hello".into()).await?;
/// for message in queue.receive(10, Duration::from_secs(20)).await? {
///     println!("{} (receive {})", message.id, message.receive_count);
///     queue.ack(&[message.receipt]).await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct NatsQueue {
    pub(crate) config: NatsConfig,
    client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) consumer: PullConsumer,
    subject: Subject,
    /// The consumer's `ack_wait` as the server had it when the queue connected.
    pub(crate) ack_wait: Duration,
    /// Deliveries this process released (see `receipt.rs`).
    released: Released,
    /// The latest delivery of each message in play (see `superseded.rs`).
    pub(crate) superseded: Superseded,
    pub(crate) dead_letters: Option<DeadLetters>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stream", &self.config.stream)
            .field("consumer", &self.config.consumer)
            .finish_non_exhaustive()
    }
}

impl NatsQueue {
    /// Checks the config, connects, and gets (or, with `create_if_missing`, creates) the
    /// stream, the durable pull consumer and the dead-letter stream.
    ///
    /// The client reconnects by itself after the connection drops; meanwhile operations fail
    /// with [`SourceError::Broker`] and the mapping retries them.
    ///
    /// # Errors
    ///
    /// An invalid config ([`NatsError::Config`]); the server cannot be reached; JetStream is
    /// not enabled; something missing that may not be created ([`NatsError::Setup`]).
    pub async fn connect(config: NatsConfig) -> Result<Self, NatsError> {
        config.validate()?;
        let servers = config.servers()?;
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(config.request_timeout))
            .name(format!("nimbus {}/{}", config.stream, config.consumer))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                    other => tracing::debug!(event = %other, "nats event"),
                }
            })
            .connect(servers)
            .await?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let stream = open_stream(&jetstream, &config).await?;
        let consumer = open_consumer(&stream, &config).await?;
        let info = consumer.cached_info();
        let ack_wait = info.config.ack_wait;
        let dead_letters = match config.max_receive_count {
            Some(max_receive_count) => {
                let max_deliver = info.config.max_deliver;
                // The adapter redrives on the delivery after the last allowed one, so it must
                // see that delivery.
                if max_deliver > 0 && max_deliver <= i64::from(max_receive_count) {
                    return Err(NatsError::Setup(format!(
                        "consumer {} delivers a message at most {max_deliver} times, so \
                         max_receive_count = {max_receive_count} would never redrive",
                        config.consumer
                    )));
                }
                Some(DeadLetters {
                    max_receive_count,
                    subject: Subject::from(config.dead_letter_subject()),
                    stream: open_dead_letter_stream(&jetstream, &config).await?,
                })
            }
            None => None,
        };
        Ok(Self {
            subject: Subject::from(config.subject.as_str()),
            config,
            client,
            jetstream,
            consumer,
            ack_wait,
            released: Released::default(),
            superseded: Superseded::default(),
            dead_letters,
        })
    }

    /// Sends a message; returns its id (its sequence number in the stream) once the stream has
    /// stored it.
    ///
    /// # Errors
    ///
    /// [`NatsError::TooLarge`] for a body above `max_message_size` (nothing is sent); the
    /// server did not store it ([`NatsError::Broker`]).
    pub async fn send(&self, body: Bytes) -> Result<MessageId, NatsError> {
        let limit = self.config.max_message_size;
        if body.len() > limit {
            return Err(NatsError::TooLarge {
                too_large: vec![(0, body.len())],
                limit,
            });
        }
        // Sent by an invocation: the hop count of its work, for recursive loop detection.
        let published = match hops::outgoing() {
            Some(hops) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(hops::ATTRIBUTE, hops.to_string().as_str());
                self.jetstream
                    .publish_with_headers(self.subject.clone(), headers, body)
                    .await
            }
            None => self.jetstream.publish(self.subject.clone(), body).await,
        };
        let ack = published
            .map_err(NatsError::broker("publish"))?
            .await
            .map_err(NatsError::broker("publish"))?;
        Ok(MessageId::number(ack.sequence))
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The settings the queue was connected with.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// Messages in the dead-letter stream (0 without redrive).
    ///
    /// # Errors
    ///
    /// The server did not answer ([`NatsError::Broker`]).
    pub async fn dead_letter_count(&self) -> Result<u64, NatsError> {
        match &self.dead_letters {
            Some(dead) => dead_letter_count(&self.jetstream, &dead.stream).await,
            None => Ok(0),
        }
    }

    /// Counts from the server, now: `visible` = messages not yet delivered (`num_pending`),
    /// `in_flight` = delivered and not acknowledged (`num_ack_pending`, which includes the
    /// messages waiting for a nak's delay or for redelivery), `dead_lettered` = messages in the
    /// dead-letter stream. [`QueueSource::stats`] asks the same.
    ///
    /// # Errors
    ///
    /// The server did not answer ([`NatsError::Broker`]).
    pub async fn queue_stats(&self) -> Result<QueueStats, NatsError> {
        fetch_stats(
            &self.jetstream,
            &self.config,
            self.dead_letters.as_ref().map(|d| d.stream.as_str()),
        )
        .await
    }

    /// Sends an acknowledgement of `kind` as a request, and waits (up to `request_timeout`)
    /// for the server's reply: the server answers once it has processed it, so an `ack` that
    /// returned is not lost with the connection. One round trip; a batch's acknowledgements go
    /// out together. (A plain publish, even flushed, only says the bytes left this process.)
    pub(crate) async fn confirm(
        &self,
        reply: Subject,
        kind: AckKind,
    ) -> Result<(), async_nats::RequestError> {
        self.client.request(reply, kind.into()).await.map(drop)
    }

    /// The current deliveries receipts name (see `receipt.rs`).
    fn replies_of(&self, receipts: &[Receipt]) -> Replies {
        Replies::of(
            receipts,
            &self.config.stream,
            &self.config.consumer,
            self.ack_wait,
            &self.released,
            &self.superseded,
        )
    }

    /// The reply subject of a receipt, if it names a current delivery of this queue's consumer
    /// (see `receipt.rs`).
    fn reply_of(&self, receipt: &Receipt) -> Option<Subject> {
        self.replies_of(std::slice::from_ref(receipt))
            .subjects
            .pop()
    }
}

#[async_trait]
impl QueueSource for NatsQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let give_up = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let pulled = self.pull(max, left).await?;
            if pulled.is_empty() {
                return Ok(Vec::new());
            }
            let messages = self.sort_out(pulled).await?;
            // All of them redriven: look again while the wait lasts.
            if !messages.is_empty() || Instant::now() >= give_up {
                return Ok(messages);
            }
        }
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let replies = self.replies_of(receipts);
        let results = futures_util::future::join_all(
            replies
                .subjects
                .iter()
                .map(|reply| self.confirm(reply.clone(), AckKind::Ack)),
        )
        .await;
        let mut failed = None;
        let mut done = vec![false; results.len()];
        for (n, result) in results.into_iter().enumerate() {
            match result {
                Ok(()) => done[n] = true,
                // Nobody answers on the reply subject: its consumer is gone.
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
                Err(e) => failed = Some(NatsError::broker("ack")(e)),
            }
        }
        if let Some(error) = failed {
            return Err(error.into());
        }
        SourceError::refusing(replies.refused(&done))
    }

    /// Visible again at once, the receive not counted: a copy carrying the receives counted
    /// so far is stored, then the delivery acknowledged (see the crate docs: the message goes
    /// to the back of the queue and keeps its id).
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let replies = self.replies_of(receipts);
        let results = futures_util::future::join_all(
            replies
                .subjects
                .iter()
                .map(|reply| self.release_one(reply.clone())),
        )
        .await;
        let mut failed = None;
        let mut done = vec![false; results.len()];
        for (n, result) in results.into_iter().enumerate() {
            match result {
                Ok(released) => done[n] = released,
                Err(error) => failed = Some(error),
            }
        }
        if let Some(error) = failed {
            return Err(error.into());
        }
        let refused = replies.refused(&done);
        for (at, receipt) in receipts.iter().enumerate() {
            if !refused.contains(&at) {
                self.released.insert(receipt, self.ack_wait);
            }
        }
        SourceError::refusing(refused)
    }

    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        let reply = self.reply_of(receipt).ok_or(SourceError::UnknownReceipt)?;
        // `-NAK {"delay":<nanoseconds>}`; a plain `-NAK` redelivers at once.
        let delay = delay.min(MAX_DELAY);
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        // Let go before the -NAK: the server may deliver again before it answers, and that
        // delivery must not be taken for a copy (see `superseded.rs`). Should the -NAK fail, a
        // copy is handed out: a duplicate, never a loss.
        if let Some(delivery) = Delivery::parse(reply.as_str()) {
            self.superseded.let_go(&delivery);
        }
        match self.confirm(reply, kind).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(SourceError::UnknownReceipt)
            }
            Err(e) => Err(NatsError::broker("nak")(e).into()),
        }
    }

    fn visibility_timeout(&self) -> Option<Duration> {
        Some(self.ack_wait)
    }

    /// Asks the server (see [`NatsQueue::queue_stats`]).
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        Ok(Some(self.queue_stats().await?))
    }
}

#[async_trait]
impl QueueProducer for NatsQueue {
    async fn produce(&self, body: Bytes) -> Result<MessageId, SourceError> {
        Ok(self.send(body).await?)
    }
}
