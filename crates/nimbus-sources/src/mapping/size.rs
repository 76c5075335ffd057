//! What a record adds to an invocation's payload: an upper bound on the size of a message's
//! record in the SQS event JSON (see [`super::QueueBatch`]), computed without serialising, so
//! that a batch is cut before it passes the mapping's `max_batch_bytes` (6 MB by default, as
//! Lambda's invocation payload limit).

use crate::queue::Message;

/// The record's fixed part, generously: field names and punctuation, `eventSource`,
/// `eventSourceARN` (region, account and a queue name of up to 80 characters), `awsRegion`,
/// `md5OfBody`, the four or five system attributes with their timestamps and `SenderId`.
pub(super) const RECORD_ENVELOPE: usize = 1_024;

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

/// An upper bound on the size of `message`'s record in the event JSON.
pub(super) fn record_size(message: &Message) -> usize {
    // A numeric id needs no escaping; a text one may (a source's own ids).
    let id = match message.id.as_text() {
        Some(text) => json_len(text.as_bytes()),
        None => message.id.text_len(),
    };
    let receipt = match message.receipt.as_token() {
        Some(token) => json_len(token.as_bytes()),
        // Two numbers and a separator.
        None => 2 + 20 + 1 + 10,
    };
    let group = message
        .group_id
        .as_deref()
        .map_or(0, |g| 32 + json_len(g.as_bytes()));
    let attributes: usize = message
        .attributes
        .iter()
        .map(|(k, v)| ATTRIBUTE_ENVELOPE + json_len(k.as_bytes()) + json_len(v.as_bytes()))
        .sum();
    RECORD_ENVELOPE + id * 2 + receipt + group + attributes + json_len(&message.body)
}

/// How many of `messages`, from the front, fit in `cap` bytes of records, given `used` bytes
/// already taken. At least one when nothing is taken yet: a message alone larger than the cap
/// (a queue fed by another producer) is still handed over, not left to go round forever.
pub(super) fn fitting(messages: &[Message], used: &mut usize, cap: usize) -> usize {
    let mut n = 0;
    for message in messages {
        let size = record_size(message);
        if *used + size > cap && !(n == 0 && *used == 0) {
            break;
        }
        *used += size;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

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
