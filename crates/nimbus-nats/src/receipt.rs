//! A JetStream queue receipt: the delivery's reply subject and when it arrived here, so that
//! the adapter can refuse a receipt whose `ack_wait` has passed.
//!
//! JetStream honours an acknowledgement of an old delivery for as long as the message is
//! pending, even after `ack_wait` (and after a later delivery to another receiver): an `+ACK`
//! with an expired reply subject deletes the message. The queue contract says an expired
//! receipt deletes nothing, so the adapter checks the receipt's age itself, on this process's
//! clock, from the moment the delivery arrived. The server starts its `ack_wait` when it sends
//! the delivery, a network hop earlier, so an acknowledgement sent in the last moments of
//! `ack_wait` may reach the server after it expired there; the server then still deletes the
//! message (the adapter answers `Ok`, and the message, handled, is gone: at worst it was
//! delivered again meanwhile and is handled twice).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::Subject;
use nimbus_sources::Receipt;

use crate::delivery::Delivery;
use crate::superseded::Superseded;

/// The clock receipts are stamped on: milliseconds since the first receive of the process
/// (real time, as the server's `ack_wait` is).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, on the receipts' clock.
pub(crate) fn now_millis() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The receipt of a delivery that arrived at `arrived` (see [`now_millis`]): its reply
/// subject, a space (never part of a subject), and the arrival time.
pub(crate) fn receipt_of(reply: &str, arrived: u64) -> Receipt {
    Receipt::token(format!("{reply} {arrived}"))
}

/// Why a receipt does not name a current delivery of the queue's consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotCurrent {
    /// Not a receipt of this queue's consumer.
    Foreign,
    /// Its `ack_wait` has passed.
    Expired,
}

/// The reply subject of `receipt`, if it is a delivery of `stream`'s `consumer` whose
/// `ack_wait` has not passed.
pub(crate) fn current_reply(
    receipt: &Receipt,
    stream: &str,
    consumer: &str,
    ack_wait: Duration,
) -> Result<Subject, NotCurrent> {
    let token = receipt.as_token().ok_or(NotCurrent::Foreign)?;
    let (reply, arrived) = token.split_once(' ').ok_or(NotCurrent::Foreign)?;
    let arrived: u64 = arrived.parse().map_err(|_| NotCurrent::Foreign)?;
    let delivery = Delivery::parse(reply).ok_or(NotCurrent::Foreign)?;
    if delivery.stream != stream || delivery.consumer != consumer {
        return Err(NotCurrent::Foreign);
    }
    let ack_wait = u64::try_from(ack_wait.as_millis()).unwrap_or(u64::MAX);
    if now_millis() >= arrived.saturating_add(ack_wait) {
        return Err(NotCurrent::Expired);
    }
    Ok(Subject::from(reply))
}

/// Deliveries this process released, kept until their `ack_wait` passes (then their receipts
/// are refused for their age anyway). A release acknowledges the delivery's stream message
/// (see `release.rs`), and JetStream answers a later ack of that delivery as if it were
/// current, though the message it deletes is gone and its copy is untouched: the adapter
/// must refuse it itself. A receipt released by another process is not known here; its ack
/// answers `Ok` and deletes nothing.
#[derive(Debug, Default)]
pub(crate) struct Released(parking_lot::Mutex<HashMap<String, u64>>);

impl Released {
    /// Remembers a released delivery's receipt, and forgets those past their `ack_wait`.
    pub(crate) fn insert(&self, receipt: &Receipt, ack_wait: Duration) {
        let Some((reply, arrived)) = receipt
            .as_token()
            .and_then(|token| token.split_once(' '))
            .and_then(|(reply, arrived)| Some((reply, arrived.parse::<u64>().ok()?)))
        else {
            return;
        };
        let ack_wait = u64::try_from(ack_wait.as_millis()).unwrap_or(u64::MAX);
        let now = now_millis();
        let mut released = self.0.lock();
        released.retain(|_, arrived| now < arrived.saturating_add(ack_wait));
        released.insert(reply.to_owned(), arrived);
    }
}

/// The current deliveries an ack or a release names: each reply subject once, and which of
/// them each receipt named (`None`: not current, or not a receipt of this consumer). A receipt
/// is not current past its `ack_wait`, once released here, or while a later delivery of its
/// message runs (see `superseded.rs`).
#[derive(Debug)]
pub(crate) struct Replies {
    pub(crate) subjects: Vec<Subject>,
    of: Vec<Option<usize>>,
}

impl Replies {
    pub(crate) fn of(
        receipts: &[Receipt],
        stream: &str,
        consumer: &str,
        ack_wait: Duration,
        released: &Released,
        superseded: &Superseded,
    ) -> Self {
        let released = released.0.lock();
        let now = now_millis();
        let mut subjects: Vec<Subject> = Vec::with_capacity(receipts.len());
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(receipts.len());
        let of = receipts
            .iter()
            .map(|r| {
                let reply = current_reply(r, stream, consumer, ack_wait).ok()?;
                if !released.is_empty() && released.contains_key(reply.as_str()) {
                    return None;
                }
                let delivery = Delivery::parse(reply.as_str())?;
                if superseded.supersedes(&delivery, ack_wait, now) {
                    return None;
                }
                Some(*seen.entry(reply.to_string()).or_insert_with(|| {
                    subjects.push(reply);
                    subjects.len() - 1
                }))
            })
            .collect();
        Self { subjects, of }
    }

    /// The positions of the receipts refused, given whether each subject's call took effect.
    pub(crate) fn refused(&self, done: &[bool]) -> Vec<usize> {
        self.of
            .iter()
            .enumerate()
            .filter(|(_, named)| named.is_none_or(|n| !done.get(n).copied().unwrap_or(false)))
            .map(|(at, _)| at)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "$JS.ACK.ORDERS.nimbus.1.100.7.1790230470084404000.0";

    #[test]
    fn a_receipt_is_current_until_its_ack_wait_passes() {
        let wait = Duration::from_secs(30);
        let fresh = receipt_of(REPLY, now_millis());
        assert_eq!(
            current_reply(&fresh, "ORDERS", "nimbus", wait).map(|s| s.to_string()),
            Ok(REPLY.to_owned())
        );
        assert_eq!(
            current_reply(&fresh, "ORDERS", "nimbus", Duration::ZERO),
            Err(NotCurrent::Expired)
        );
        assert_eq!(
            current_reply(&fresh, "OTHER", "nimbus", wait),
            Err(NotCurrent::Foreign)
        );
        for bad in [
            Receipt::token(REPLY),
            Receipt::token(format!("{REPLY} soon")),
            Receipt::token("orders 5"),
            Receipt::from_parts(1, 2),
        ] {
            assert_eq!(
                current_reply(&bad, "ORDERS", "nimbus", wait),
                Err(NotCurrent::Foreign),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_delivery_is_named_once_and_stale_ones_are_refused() {
        let wait = Duration::from_secs(30);
        let fresh = receipt_of(REPLY, now_millis());
        let none = Released::default();
        let replies = Replies::of(
            &[fresh.clone(), Receipt::token("x"), fresh.clone()],
            "ORDERS",
            "nimbus",
            wait,
            &none,
            &Superseded::default(),
        );
        assert_eq!(replies.subjects.len(), 1);
        assert_eq!(replies.refused(&[true]), [1]);
        assert_eq!(replies.refused(&[false]), [0, 1, 2]);
        let expired = Replies::of(
            std::slice::from_ref(&fresh),
            "ORDERS",
            "nimbus",
            Duration::ZERO,
            &none,
            &Superseded::default(),
        );
        assert!(expired.subjects.is_empty());
        assert_eq!(expired.refused(&[]), [0]);
        let released = Released::default();
        released.insert(&fresh, wait);
        let replies = Replies::of(
            std::slice::from_ref(&fresh),
            "ORDERS",
            "nimbus",
            wait,
            &released,
            &Superseded::default(),
        );
        assert!(
            replies.subjects.is_empty(),
            "a released delivery is refused"
        );
    }

    #[test]
    fn a_receipt_superseded_by_a_later_delivery_is_refused_however_young() {
        let wait = Duration::from_secs(30);
        let first = "$JS.ACK.ORDERS.nimbus.1.100.7.1790230470084404000.0";
        let later = "$JS.ACK.ORDERS.nimbus.2.100.9.1790230470084404000.0";
        let superseded = Superseded::default();
        let arrived = now_millis();
        let accept = |reply: &str| {
            superseded.accept(&Delivery::parse(reply).unwrap(), 1, now_millis(), wait)
        };
        let current = |superseded: &Superseded| {
            Replies::of(
                &[receipt_of(first, arrived)],
                "ORDERS",
                "nimbus",
                wait,
                &Released::default(),
                superseded,
            )
            .subjects
            .len()
        };
        accept(first);
        assert_eq!(current(&superseded), 1, "young and the latest");
        accept(later);
        assert_eq!(current(&superseded), 0, "young, but delivered again since");
    }
}
