//! What a record adds to an invocation's payload: an upper bound on the size of a message's
//! record in the SQS event JSON (see [`super::QueueBatch`]), computed without serialising, so
//! that a batch is cut before it passes the mapping's `max_batch_bytes` (6 MB by default, as
//! Lambda's invocation payload limit).

use crate::queue::{Message, MessageId};

/// The record's fixed part, generously: field names and punctuation, `eventSource`,
/// `eventSourceARN` (region, account and a queue name of up to 80 characters), `awsRegion`,
/// `md5OfBody`, the four or five system attributes with their timestamps and `SenderId`.
const RECORD_ENVELOPE: usize = 1_024;

/// What each message attribute adds besides its escaped name and value:
/// `"":{"stringValue":"","stringListValues":[],"binaryListValues":[],"dataType":"String"},`.
const ATTRIBUTE_ENVELOPE: usize = 96;

/// The length of `bytes` written as a JSON string (quotes included) when it is UTF-8, as
/// `serde_json` writes it; otherwise as a JSON array of numbers (the fallback of the body's
/// serialisation).
pub(super) fn json_len(bytes: &[u8]) -> usize {
    if std::str::from_utf8(bytes).is_err() {
        // `[` `]` and, per byte, up to three digits and a comma.
        return 2 + bytes.len() * 4;
    }
    2 + bytes
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The size of `message`'s record in the event JSON, each string sized as `serde_json`
/// writes it (the fixed part generously): at least what serialising writes.
pub(super) fn record_size(message: &Message) -> usize {
    sized_with(message, json_len, MessageId::text_len)
}

/// At least what [`json_len`] says, from the length alone: six bytes per byte (a control
/// character escaped as `\u0001`) and the quotes. Reading lengths only, it costs a few
/// instructions where [`json_len`] reads every byte twice (the UTF-8 check, then the escapes).
fn json_len_bound(bytes: &[u8]) -> usize {
    bytes.len().saturating_mul(6).saturating_add(2)
}

/// At least [`record_size`], from lengths only (saturating, never wrapping to a small size),
/// with a numeric id counted at its longest (see [`NUMERIC_ID_DIGITS`]).
fn record_bound(message: &Message) -> usize {
    sized_with(message, json_len_bound, |_| NUMERIC_ID_DIGITS)
}

/// The most digits a numeric id has (`u64::MAX`). Counting every numeric id at this length
/// adds at most 38 bytes to a bound whose fixed part is [`RECORD_ENVELOPE`], and spares a
/// base-10 logarithm per record (a third of [`Payload::fit`]'s instructions at batch 100, by
/// callgrind).
const NUMERIC_ID_DIGITS: usize = u64::MAX.ilog10() as usize + 1;

/// The size of `message`'s record with each string sized by `len`, and a numeric id by
/// `numeric_id_len`.
fn sized_with(
    message: &Message,
    len: impl Fn(&[u8]) -> usize,
    numeric_id_len: impl Fn(&MessageId) -> usize,
) -> usize {
    // A numeric id needs no escaping; a text one may (a source's own ids).
    let id = match message.id.as_text() {
        Some(text) => len(text.as_bytes()),
        None => numeric_id_len(&message.id),
    };
    let receipt = match message.receipt.as_token() {
        Some(token) => len(token.as_bytes()),
        // Two numbers and a separator.
        None => 2 + NUMERIC_ID_DIGITS + 1 + 10,
    };
    let group = message
        .group_id
        .as_deref()
        .map_or(0, |g| len(g.as_bytes()).saturating_add(32));
    let attributes = message.attributes.iter().fold(0, |sum: usize, (k, v)| {
        sum.saturating_add(ATTRIBUTE_ENVELOPE)
            .saturating_add(len(k.as_bytes()))
            .saturating_add(len(v.as_bytes()))
    });
    [
        id.saturating_mul(2),
        receipt,
        group,
        attributes,
        len(&message.body),
    ]
    .into_iter()
    .fold(RECORD_ENVELOPE, usize::saturating_add)
}

/// How many of `messages`, from the front, fit in `cap` bytes of records, given `used` bytes
/// already taken. At least one when nothing is taken yet: a message alone larger than the cap
/// (a queue fed by another producer) is still handed over, not left to go round forever.
fn fitting(messages: &[Message], used: &mut usize, cap: usize) -> usize {
    let mut n = 0;
    for message in messages {
        let size = record_size(message);
        if used.saturating_add(size) > cap && !(n == 0 && *used == 0) {
            break;
        }
        *used = used.saturating_add(size);
        n += 1;
    }
    n
}

/// The payload of the records a batch has gathered so far. Far below the cap, bounds from
/// the lengths alone ([`record_bound`]) decide that everything fits (sizing each record with
/// [`record_size`] was a fifth of a poller's instructions at batch 100); once the bounds come
/// near the cap, the records gathered so far are sized with [`record_size`] and so is every
/// later record, so a batch is cut where [`record_size`] alone would cut it.
///
/// Each call passes the records gathered so far: exactly those this payload was told of.
#[derive(Debug, Default)]
pub(super) struct Payload {
    /// The gathered records' size by [`record_size`] once `exact`; before, a bound of it.
    bytes: usize,
    exact: bool,
    /// How many records the payload holds (checked against the records each call passes).
    records: usize,
}

impl Payload {
    /// How many of `new`, from the front, fit after `gathered` (the records this payload
    /// holds so far), as [`fitting`] decides; adds them.
    pub(super) fn fit(&mut self, gathered: &[Message], new: &[Message], cap: usize) -> usize {
        debug_assert_eq!(gathered.len(), self.records, "the records gathered so far");
        if !self.exact {
            let bound = new
                .iter()
                .map(record_bound)
                .fold(self.bytes, usize::saturating_add);
            if bound <= cap {
                self.bytes = bound;
                self.records += new.len();
                return new.len();
            }
            self.make_exact(gathered);
        }
        let kept = fitting(new, &mut self.bytes, cap);
        self.records += kept;
        kept
    }

    /// Whether another record could still fit after `gathered`: room for a record's fixed
    /// part at least.
    pub(super) fn has_room(&mut self, gathered: &[Message], cap: usize) -> bool {
        debug_assert_eq!(gathered.len(), self.records, "the records gathered so far");
        if self.bytes.saturating_add(RECORD_ENVELOPE) > cap && !self.exact {
            self.make_exact(gathered);
        }
        self.bytes.saturating_add(RECORD_ENVELOPE) <= cap
    }

    fn make_exact(&mut self, gathered: &[Message]) {
        self.bytes = gathered.iter().map(record_size).sum();
        self.exact = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Attributes, MessageId, Receipt};
    use proptest::prelude::*;

    /// A message whose strings are `len` bytes of `fill` (escaped or not, UTF-8 or not).
    fn message(n: u64, len: usize, fill: u8, grouped: bool, attributes: bool) -> Message {
        let text = |len: usize| String::from_utf8_lossy(&vec![fill; len]).into_owned();
        let mut message = Message::new(
            // Every third id numeric, from the longest down (a text id never parses as one).
            if n % 3 == 0 {
                MessageId::number(u64::MAX - n)
            } else {
                MessageId::text(&format!("id-{}", text(len % 7)))
            },
            vec![fill; len],
            if n % 2 == 0 {
                Receipt::from_parts(n, 0)
            } else {
                Receipt::token(text(len % 5))
            },
        );
        if grouped {
            message = message.with_group(text(len % 11));
        }
        if attributes {
            message = message.with_attributes(Attributes::new().with(text(3), text(len % 13)));
        }
        message
    }

    /// One batch gathered from `receives`, deciding with `Payload`, and with exact sizes
    /// alone (the way batches were cut before bounds): how many of each receive were kept,
    /// and whether the window loop would have asked for more after each.
    fn gathered(receives: &[Vec<Message>], cap: usize) -> [Vec<(usize, bool)>; 2] {
        let mut payload = Payload::default();
        let mut exact = 0;
        let (mut by_payload, mut by_exact) = (Vec::new(), Vec::new());
        let mut batch: Vec<Message> = Vec::new();
        for receive in receives {
            let kept = payload.fit(&batch, receive, cap);
            by_payload.push((kept, false));
            by_exact.push((
                fitting(receive, &mut exact, cap),
                exact + RECORD_ENVELOPE <= cap,
            ));
            batch.extend(receive[..kept].iter().cloned());
            let room = payload.has_room(&batch, cap);
            if let Some(last) = by_payload.last_mut() {
                last.1 = room;
            }
            if kept < receive.len() {
                break;
            }
        }
        by_exact.truncate(by_payload.len());
        [by_payload, by_exact]
    }

    proptest! {
        #[test]
        fn bounds_cut_a_batch_where_exact_sizes_cut_it(
            receives in proptest::collection::vec(
                proptest::collection::vec(
                    (0usize..3_000, prop::sample::select(vec![b'a', b'"', 1u8, 0xff]), any::<bool>(), any::<bool>()),
                    1..12,
                ),
                1..6,
            ),
            cap in 1_000usize..40_000,
        ) {
            let receives: Vec<Vec<Message>> = receives
                .iter()
                .enumerate()
                .map(|(r, messages)| {
                    messages
                        .iter()
                        .enumerate()
                        .map(|(i, &(len, fill, grouped, attributes))| {
                            message((r * 100 + i) as u64, len, fill, grouped, attributes)
                        })
                        .collect()
                })
                .collect();
            let [by_payload, by_exact] = gathered(&receives, cap);
            prop_assert_eq!(by_payload, by_exact);
        }
    }

    #[test]
    fn a_numeric_id_is_bounded_by_its_longest() {
        for n in [0, 9, 10, 1_000_000, u64::MAX] {
            // An empty body: the bound's slack on it would hide a shortfall on the id.
            let message = Message::new(MessageId::number(n), "", Receipt::from_parts(n, 0));
            assert!(record_bound(&message) >= record_size(&message), "{n}");
        }
        assert_eq!(MessageId::number(u64::MAX).text_len(), NUMERIC_ID_DIGITS);
    }

    #[test]
    fn a_bound_is_never_below_the_exact_size() {
        for fill in [b'a', b'"', 1u8, 0xff, b'\n'] {
            for len in [0, 1, 5, 1_000] {
                let message = message(u64::from(fill), len, fill, true, true);
                assert!(
                    record_bound(&message) >= record_size(&message),
                    "{fill} x {len}"
                );
            }
        }
    }

    #[test]
    fn json_len_matches_serde_json() {
        for text in [
            "",
            "plain",
            "quote \" and \\ back",
            "tab\tnl\ncr\r",
            "\u{1}\u{1f}",
            "é €",
        ] {
            assert_eq!(
                json_len(text.as_bytes()),
                serde_json::to_string(text).unwrap().len(),
                "{text:?}"
            );
        }
        let raw = [0xff_u8, 0, 10];
        assert!(json_len(&raw) >= serde_json::to_string(&raw).unwrap().len());
    }

    #[test]
    fn a_text_id_is_sized_as_escaped() {
        use crate::queue::{MessageId, Receipt};
        // A control character takes six bytes escaped (`\u0001`).
        let id = "\u{1}".repeat(2_000);
        let message = Message::new(MessageId::text(&id), "body", Receipt::from_parts(1, 0));
        let record = crate::mapping::QueueRecord::new(message.id.clone(), "body", "q");
        let written = serde_json::to_string(&record).unwrap().len();
        assert!(
            record_size(&message) >= written,
            "{} < {written}",
            record_size(&message)
        );
    }
}
