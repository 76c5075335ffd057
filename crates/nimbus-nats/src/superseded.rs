//! [`Superseded`]: the latest delivery this process handed out of each message still in play,
//! by stream sequence, so that:
//!
//! - a receipt for an earlier delivery of a message that has since been delivered again is
//!   stale, whatever its age says. (The age check alone misses it when the first delivery was
//!   stamped late here: the server's `ack_wait` had started earlier, so it redelivered while
//!   the old receipt still looked current on this clock, and a `-NAK` through the old reply
//!   subject would make the new delivery's message visible.) Deliveries are ordered by their
//!   consumer sequence, which the server raises on every delivery; a later delivery
//!   supersedes earlier ones while its own `ack_wait` runs, which outlasts theirs.
//! - a second copy of a message whose latest delivery is held here, sent before that
//!   delivery's `ack_wait` passed and without a higher delivery count, is left out. JetStream
//!   servers from before a 2024 fix (nats-server pull request 5305; 2.9.10 has the bug) send
//!   one after a delivery to a pull request that had ended: they start the message over as if
//!   new, with delivery count 1, while a redelivery of it is held, and the queue would hand
//!   out a message in flight. Left out, the copy is pending on the server like any delivery:
//!   the held receipt still acknowledges the message (JetStream acknowledges by stream
//!   sequence), and if nobody does, the server delivers it again after `ack_wait`. Nothing is
//!   lost. A delivery let go with `retry_later` is not held: a copy after it is handed out.
//! - the receive counts this process reports of a message do not go back while it remembers
//!   the message's last delivery (two `ack_wait`s): the same servers restart the delivery
//!   count then, so a delivery reports at least one more than that one. (Another process,
//!   which has not seen the message, reports the server's count.)
//!
//! Entries are told apart by stream sequence and the time the stream stored the message, so
//! that a stream made anew, whose sequences start over, is not taken for the old one.

use std::collections::HashMap;
use std::time::Duration;

use crate::delivery::Delivery;

/// The latest delivery handed out of each message (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Superseded(parking_lot::Mutex<Latest>);

#[derive(Debug, Default)]
pub(crate) struct Latest {
    /// Stream sequence -> the latest delivery of it handed out here.
    deliveries: HashMap<u64, Seen>,
    /// Forget entries past their use once the map reaches this size (amortised pruning).
    prune_at: usize,
}

/// A delivery handed out by this process.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the stream stored the message (another message if it differs: the stream was
    /// made anew).
    published_nanos: u64,
    consumer_sequence: u64,
    delivered: u64,
    receive_count: u32,
    arrived: u64,
    /// Not let go by `retry_later` since.
    held: bool,
}

/// What becomes of a delivery that arrived (see [`Superseded::accept`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Hand it out, with this receive count.
    Fresh(u32),
    /// A second copy of a delivery held here whose `ack_wait` has not passed: leave it out.
    Duplicate,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Superseded {
    /// Notes a delivery that arrived at `arrived` (milliseconds on the receipts' clock, see
    /// `receipt.rs`) and whose headers count
    /// `counted` receives, and says whether to hand it out, with which receive count.
    pub(crate) fn accept(
        &self,
        delivery: &Delivery<'_>,
        counted: u32,
        arrived: u64,
        ack_wait: Duration,
    ) -> Arrival {
        let wait = millis(ack_wait);
        let mut latest = self.0.lock();
        let receive_count = match latest
            .deliveries
            .get(&delivery.stream_sequence)
            .filter(|seen| seen.published_nanos == delivery.published_nanos)
        {
            // An earlier delivery than the latest, reaching this process late (two receives
            // at once): its receipt is stale already; it keeps its own count. (Past the
            // latest's ack_wait, a lower consumer sequence means the consumer started over,
            // made anew: the delivery is the latest, below.)
            Some(seen)
                if delivery.consumer_sequence <= seen.consumer_sequence
                    && arrived < seen.arrived.saturating_add(wait) =>
            {
                return Arrival::Fresh(counted)
            }
            Some(seen)
                if seen.held
                    && delivery.delivered <= seen.delivered
                    && arrived < seen.arrived.saturating_add(wait) =>
            {
                return Arrival::Duplicate
            }
            Some(seen) => counted.max(seen.receive_count.saturating_add(1)),
            None => counted,
        };
        latest.deliveries.insert(
            delivery.stream_sequence,
            Seen {
                published_nanos: delivery.published_nanos,
                consumer_sequence: delivery.consumer_sequence,
                delivered: delivery.delivered,
                receive_count,
                arrived,
                held: true,
            },
        );
        if latest.deliveries.len() >= latest.prune_at {
            // A delivery that arrived over two ack_waits ago is expired by its age already,
            // and so is any copy sent before its ack_wait passed.
            let keep = wait.saturating_mul(2);
            let now = arrived;
            latest
                .deliveries
                .retain(|_, seen| now < seen.arrived.saturating_add(keep));
            latest.prune_at = (latest.deliveries.len() * 2).max(1024);
        }
        Arrival::Fresh(receive_count)
    }

    /// Notes that `delivery` was let go (`-NAK`): the server may deliver it again at once, and
    /// a copy of it is no longer one to leave out.
    pub(crate) fn let_go(&self, delivery: &Delivery<'_>) {
        if let Some(seen) = self.0.lock().deliveries.get_mut(&delivery.stream_sequence) {
            if (seen.published_nanos, seen.consumer_sequence)
                == (delivery.published_nanos, delivery.consumer_sequence)
            {
                seen.held = false;
            }
        }
    }

    /// Whether a later delivery of the message than `delivery` has been handed out, whose
    /// `ack_wait` has not passed at `now`.
    pub(crate) fn supersedes(&self, delivery: &Delivery<'_>, ack_wait: Duration, now: u64) -> bool {
        self.0
            .lock()
            .deliveries
            .get(&delivery.stream_sequence)
            .is_some_and(|seen| {
                seen.published_nanos == delivery.published_nanos
                    && seen.consumer_sequence > delivery.consumer_sequence
                    && now < seen.arrived.saturating_add(millis(ack_wait))
            })
    }

    /// The receive count `delivery` was handed out with, if it is the latest here.
    pub(crate) fn receive_count_of(&self, delivery: &Delivery<'_>) -> Option<u32> {
        self.0
            .lock()
            .deliveries
            .get(&delivery.stream_sequence)
            .filter(|seen| {
                (seen.published_nanos, seen.consumer_sequence)
                    == (delivery.published_nanos, delivery.consumer_sequence)
            })
            .map(|seen| seen.receive_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply subject of delivery `delivered` of stream message 100, the consumer's
    /// delivery number `consumer_sequence`.
    fn reply(delivered: u64, consumer_sequence: u64) -> String {
        format!("$JS.ACK.ORDERS.nimbus.{delivered}.100.{consumer_sequence}.1790230470084404000.0")
    }

    /// Notes the delivery `reply` names, arrived at `arrived`, counted as its subject says.
    fn note(superseded: &Superseded, reply: &str, arrived: u64, wait: Duration) -> Arrival {
        let delivery = Delivery::parse(reply).unwrap();
        let counted = crate::release::Lineage::default().receive_count(&delivery);
        superseded.accept(&delivery, counted, arrived, wait)
    }

    /// Whether `reply`'s delivery is still the latest at `now`, for receipts whose `ack_wait`
    /// is 30 s.
    fn is_current(superseded: &Superseded, reply: &str, now: u64) -> bool {
        !superseded.supersedes(
            &Delivery::parse(reply).unwrap(),
            Duration::from_secs(30),
            now,
        )
    }

    /// A moment on the receipts' clock.
    const T0: u64 = 1_000_000;

    #[test]
    fn a_delivery_superseded_by_a_later_one_is_refused_however_young() {
        let wait = Duration::from_secs(30);
        let first = reply(1, 7);
        let arrived = T0;
        let superseded = Superseded::default();
        assert_eq!(note(&superseded, &first, arrived, wait), Arrival::Fresh(1));
        assert!(is_current(&superseded, &first, arrived), "still the latest");
        // Delivered again (after a -NAK, say), with the count one higher.
        assert_eq!(note(&superseded, &reply(2, 9), T0, wait), Arrival::Fresh(2));
        assert!(
            !is_current(&superseded, &first, arrived),
            "delivered again since"
        );
        // A late arrival of the older delivery does not make it current again.
        assert_eq!(note(&superseded, &first, T0, wait), Arrival::Fresh(1));
        assert!(!is_current(&superseded, &first, arrived));
    }

    #[test]
    fn a_second_copy_sent_while_a_delivery_is_held_is_left_out_and_counts_go_on() {
        // What a JetStream 2.9 server does after a delivery to a pull request that had gone:
        // the message's third delivery is held here when it sends the message again with
        // delivery count 1.
        let wait = Duration::from_secs(1);
        let superseded = Superseded::default();
        let held = reply(3, 12);
        let t = T0;
        let at = |reply: &str, arrived: u64| note(&superseded, reply, arrived, wait);
        assert_eq!(at(&held, t), Arrival::Fresh(3));
        assert_eq!(at(&reply(1, 13), t + 1), Arrival::Duplicate);
        assert_eq!(at(&reply(3, 14), t + 999), Arrival::Duplicate);
        // The held receipt is still current, and its count is the one handed out.
        assert!(is_current(&superseded, &held, t));
        assert_eq!(
            superseded.receive_count_of(&Delivery::parse(&held).unwrap()),
            Some(3)
        );
        // Once the held delivery's ack_wait has passed, the server's next delivery is handed
        // out, counted after the held one although the server restarted its count.
        let next = reply(2, 15);
        assert_eq!(at(&next, t + 1000), Arrival::Fresh(4));
        assert_eq!(
            superseded.receive_count_of(&Delivery::parse(&next).unwrap()),
            Some(4)
        );
        assert_eq!(
            superseded.receive_count_of(&Delivery::parse(&held).unwrap()),
            None,
            "no longer the latest"
        );
        // The held receipt is stale now, judged by the consumer's sequence: the next delivery
        // has a lower delivery count than the held one.
        assert!(!is_current(&superseded, &held, t), "superseded by {next}");
    }

    #[test]
    fn a_copy_after_retry_later_is_handed_out() {
        let wait = Duration::from_secs(1);
        let superseded = Superseded::default();
        let t = T0;
        let held = reply(3, 12);
        let at = |reply: &str, arrived: u64| note(&superseded, reply, arrived, wait);
        assert_eq!(at(&held, t), Arrival::Fresh(3));
        // A -NAK of another delivery lets nothing go.
        superseded.let_go(&Delivery::parse(&reply(2, 11)).unwrap());
        assert_eq!(at(&reply(1, 13), t + 1), Arrival::Duplicate);
        superseded.let_go(&Delivery::parse(&held).unwrap());
        assert_eq!(at(&reply(1, 14), t + 2), Arrival::Fresh(4));
    }

    #[test]
    fn a_consumer_made_anew_is_not_refused_for_long() {
        // The consumer was deleted and made again: its sequences start over.
        let wait = Duration::from_millis(50);
        let superseded = Superseded::default();
        let t = T0;
        let old = reply(1, 40);
        let again = reply(1, 2);
        let accept = |reply: &str, arrived: u64| note(&superseded, reply, arrived, wait);
        assert_eq!(accept(&old, t), Arrival::Fresh(1));
        // Inside the old delivery's ack_wait a lower sequence is an earlier delivery, late.
        assert_eq!(accept(&again, t + 10), Arrival::Fresh(1));
        // Past it, the new consumer's delivery is the latest, and its receipt current.
        assert_eq!(accept(&again, t + 50), Arrival::Fresh(2));
        assert!(is_current(&superseded, &again, t + 50));
        // And a receipt the old latest once superseded is current again once its ack_wait
        // passed: the refusal does not outlive the delivery that caused it.
        let fresh = Superseded::default();
        assert_eq!(note(&fresh, &old, t, wait), Arrival::Fresh(1));
        let newer_consumer = Delivery::parse(&again).unwrap();
        assert!(fresh.supersedes(&newer_consumer, wait, t + 49));
        assert!(!fresh.supersedes(&newer_consumer, wait, t + 50));
    }

    #[test]
    fn a_message_of_a_stream_made_anew_is_another_message() {
        // The stream was deleted and made again: sequence 100 is a new message, stored later.
        let wait = Duration::from_secs(1);
        let superseded = Superseded::default();
        let t = T0;
        let old = reply(5, 40);
        assert_eq!(note(&superseded, &old, t, wait), Arrival::Fresh(5));
        let new = "$JS.ACK.ORDERS.nimbus.1.100.2.1790230470999999999.0";
        let delivery = Delivery::parse(new).unwrap();
        assert_eq!(
            superseded.accept(&delivery, 1, t + 1, wait),
            Arrival::Fresh(1)
        );
        assert_eq!(superseded.receive_count_of(&delivery), Some(1));
        assert!(!superseded.supersedes(&delivery, wait, t + 2));
    }
}
