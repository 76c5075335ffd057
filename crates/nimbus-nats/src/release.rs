//! Releasing received messages without counting the receive.
//!
//! JetStream counts deliveries itself (`num_delivered`, in every delivery's reply subject) and
//! offers no way to take one back: a `-NAK` makes a message visible again but the next delivery
//! still counts one more. So a release hands the server a new copy of the message that carries
//! how many receives it had before (the [`release_headers`]), and acknowledges the delivery
//! being released:
//!
//! 1. the stored message is read back by its sequence (`STREAM.MSG.GET`): body, headers,
//!    subject;
//! 2. a copy is published to the same subject, with the original's headers plus
//!    [`release_headers::RECEIVE_BASE`] = the receives counted so far, the released one not
//!    included, [`release_headers::MESSAGE_ID`] and [`release_headers::SENT_AT`] (the
//!    original's id and store time, so that the message keeps its id and send time), and a
//!    `Nats-Msg-Id` naming the delivery released, and the adapter waits for the stream to
//!    store it;
//! 3. only then is the delivery acknowledged (`+ACK`, confirmed), which deletes the original
//!    from the work-queue stream.
//!
//! A receive reports `RECEIVE_BASE + delivery count` as the receive count (or more, where a
//! server restarted its delivery count: see `superseded.rs`), and redrives on that number, so
//! the copy's next delivery reports the count the released one did, and releasing never moves
//! a message towards the dead-letter stream. The scheme is sound across processes
//! (the count travels with the message, not in one process's memory) and survives restarts.
//!
//! What it costs: a released message goes to the back of the queue (JetStream order is not a
//! contract of this adapter, which is not FIFO); its stream sequence changes (its
//! [`nimbus_sources::MessageId`] does not: it is read from the header). If the acknowledgement
//! in step 3 fails after the copy was stored, the original also comes back after `ack_wait`
//! and the message is handled twice (at least once, never lost); a release repeated after a
//! failed step 2 or 3 publishes no second copy, since the stream's duplicate window drops a
//! `Nats-Msg-Id` it has seen. A receipt whose `ack_wait` has passed is refused before anything
//! is published (see `receipt.rs`): JetStream does not say which delivery is the latest, so
//! the adapter goes by the receipt's age. Mappings release only what they have just received.
//! Once released, a receipt is refused by this process (see `receipt.rs`): JetStream would
//! answer its ack as done, though the message it names is gone and the copy untouched.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::AckKind;
use async_nats::{HeaderMap, Subject};

use crate::delivery::Delivery;
use crate::error::NatsError;
use crate::queue::NatsQueue;

/// Headers the adapter adds to the copy it publishes when a message is released (see the
/// crate docs, "Release"); a receive reads them and leaves them out of the message's attributes.
pub mod release_headers {
    /// Receives counted before this copy was published: the message's receive count is this
    /// plus JetStream's delivery count of the copy.
    pub const RECEIVE_BASE: &str = "Nimbus-Receive-Base";
    /// The message's id: the stream sequence it was first stored at.
    pub const MESSAGE_ID: &str = "Nimbus-Message-Id";
    /// When the message was first stored, in nanoseconds since the Unix epoch.
    pub const SENT_AT: &str = "Nimbus-Sent-At";
}

/// Whether a header is one of the adapter's own release headers.
pub(crate) fn is_release_header(name: &str) -> bool {
    use release_headers as h;
    name == h::RECEIVE_BASE || name == h::MESSAGE_ID || name == h::SENT_AT
}

/// What a delivered message's release headers say (all absent for a message never released).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Lineage {
    base: u64,
    id: Option<u64>,
    sent_at_nanos: Option<u64>,
}

impl Lineage {
    /// Reads the release headers; a message without headers costs nothing.
    pub(crate) fn of(headers: Option<&HeaderMap>) -> Self {
        let Some(headers) = headers else {
            return Self::default();
        };
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.as_str().parse::<u64>().ok())
        };
        Self {
            base: number(release_headers::RECEIVE_BASE).unwrap_or(0),
            id: number(release_headers::MESSAGE_ID),
            sent_at_nanos: number(release_headers::SENT_AT),
        }
    }

    /// The receive count of this delivery, as nimbus counts it.
    pub(crate) fn receive_count(&self, delivery: &Delivery<'_>) -> u32 {
        u32::try_from(self.base.saturating_add(delivery.delivered)).unwrap_or(u32::MAX)
    }

    /// The message's id: its first stream sequence.
    pub(crate) fn id(&self, delivery: &Delivery<'_>) -> u64 {
        self.id.unwrap_or(delivery.stream_sequence)
    }

    /// When the message was first stored.
    pub(crate) fn sent_at(&self, delivery: &Delivery<'_>) -> std::time::SystemTime {
        match self.sent_at_nanos {
            Some(nanos) => std::time::UNIX_EPOCH + std::time::Duration::from_nanos(nanos),
            None => delivery.published_at(),
        }
    }
}

impl NatsQueue {
    /// Releases one delivery of this queue's consumer; `Ok(false)` if the message is not in the
    /// stream any more (acknowledged, or redriven).
    pub(crate) async fn release_one(&self, reply: Subject) -> Result<bool, NatsError> {
        let Some(delivery) = Delivery::parse(&reply) else {
            return Ok(false);
        };
        let stream = self
            .jetstream()
            .get_stream_no_info(delivery.stream)
            .await
            .map_err(NatsError::broker("release"))?;
        let stored = match stream.get_raw_message(delivery.stream_sequence).await {
            Ok(stored) => stored,
            Err(error) if matches!(error.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return Ok(false)
            }
            Err(error) => return Err(NatsError::broker("release")(error)),
        };
        let lineage = Lineage::of(Some(&stored.headers));
        // The count this process handed the delivery out with, which may be higher than the
        // server's (see `superseded.rs`).
        let counted = self
            .superseded
            .receive_count_of(&delivery)
            .unwrap_or_else(|| lineage.receive_count(&delivery))
            .saturating_sub(1);
        let mut headers = HeaderMap::new();
        for (name, values) in stored.headers.iter() {
            let text: &str = name.as_ref();
            if !text.starts_with("Nats-") && !is_release_header(text) {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let sent_at = lineage.sent_at_nanos.unwrap_or(delivery.published_nanos);
        headers.insert(
            "Nats-Msg-Id",
            format!("released:{}:{}", delivery.stream, delivery.stream_sequence),
        );
        headers.insert(release_headers::RECEIVE_BASE, counted.to_string());
        headers.insert(
            release_headers::MESSAGE_ID,
            lineage.id(&delivery).to_string(),
        );
        headers.insert(release_headers::SENT_AT, sent_at.to_string());
        self.jetstream()
            .publish_with_headers(stored.subject.clone(), headers, stored.payload.clone())
            .await
            .map_err(NatsError::broker("release publish"))?
            .await
            .map_err(NatsError::broker("release publish"))?;
        match self.confirm(reply, AckKind::Ack).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(false),
            Err(e) => Err(NatsError::broker("release ack")(e)),
        }
    }
}
