//! The reply subject of a JetStream delivery (`$JS.ACK.…`): what the server says about the
//! delivery, and the address its acknowledgement is published to.
//!
//! The adapter parses it itself rather than through the client's `Message::info`, to check that
//! a receipt handed back by a caller really belongs to this queue's consumer before publishing
//! anything to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One delivery, as its reply subject describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery<'a> {
    pub(crate) stream: &'a str,
    pub(crate) consumer: &'a str,
    /// How many times the message has been delivered, this time included.
    pub(crate) delivered: u64,
    pub(crate) stream_sequence: u64,
    /// The consumer's count of deliveries, this one included: later deliveries have higher.
    pub(crate) consumer_sequence: u64,
    /// When the stream stored the message, in nanoseconds since the Unix epoch.
    pub(crate) published_nanos: u64,
}

const PREFIX: &str = "$JS.ACK.";

impl<'a> Delivery<'a> {
    /// Parses `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
    /// or the ADR-15 form with `<domain>.<account hash>.` before the stream and optional tokens
    /// after the pending count. `None` for anything else.
    pub(crate) fn parse(reply: &'a str) -> Option<Self> {
        let mut tokens: [&str; 9] = [""; 9];
        let mut count = 0;
        for token in reply.strip_prefix(PREFIX)?.split('.') {
            if count < tokens.len() {
                tokens[count] = token;
            }
            count += 1;
        }
        let fields = match count {
            7 => &tokens[..7],
            n if n >= 9 => &tokens[2..9],
            _ => return None,
        };
        let number = |i: usize| fields[i].parse::<u64>().ok();
        let delivery = Delivery {
            stream: fields[0],
            consumer: fields[1],
            delivered: number(2)?,
            stream_sequence: number(3)?,
            consumer_sequence: number(4)?,
            published_nanos: number(5)?,
        };
        (!delivery.stream.is_empty() && !delivery.consumer.is_empty()).then_some(delivery)
    }

    pub(crate) fn published_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.published_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: u64 = 1_790_230_470_084_404_000;

    #[test]
    fn parses_the_nine_token_form() {
        let reply = format!("$JS.ACK.ORDERS.nimbus.3.100.7.{TS}.42");
        let d = Delivery::parse(&reply).unwrap();
        assert_eq!(
            d,
            Delivery {
                stream: "ORDERS",
                consumer: "nimbus",
                delivered: 3,
                stream_sequence: 100,
                consumer_sequence: 7,
                published_nanos: TS,
            }
        );
        assert_eq!(crate::release::Lineage::default().receive_count(&d), 3);
        assert_eq!(d.published_at(), UNIX_EPOCH + Duration::from_nanos(TS));
    }

    #[test]
    fn parses_the_adr_15_forms() {
        let reply = format!("$JS.ACK._.hash.ORDERS.nimbus.2.50.9.{TS}.0");
        let d = Delivery::parse(&reply).unwrap();
        assert_eq!((d.stream, d.consumer, d.delivered), ("ORDERS", "nimbus", 2));
        let reply = format!("$JS.ACK.hub.hash.ORDERS.nimbus.2.50.9.{TS}.0.token.more");
        assert_eq!(Delivery::parse(&reply).unwrap().stream_sequence, 50);
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "orders",
            "$JS.ACK.",
            "$JS.ACK.S.C.1.2.3",
            "$JS.ACK.S.C.x.2.3.4.5",
            "$JS.ACK.S.C.1.2.3.-4.5",
            "$JS.ACK..C.1.2.3.4.5",
            "$JS.ACK.a.b.S.C.1.2.3.4",
            "_INBOX.S.C.1.2.3.4.5",
        ] {
            assert_eq!(Delivery::parse(bad), None, "{bad:?}");
        }
        // Huge counts saturate instead of wrapping.
        let d = Delivery::parse("$JS.ACK.S.C.99999999999.2.3.4.5").unwrap();
        assert_eq!(
            crate::release::Lineage::default().receive_count(&d),
            u32::MAX
        );
    }
}
