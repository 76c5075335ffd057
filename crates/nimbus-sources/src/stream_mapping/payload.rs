//! The payload a batch makes as Lambda's Kinesis event, estimated without serialising, and
//! the cut of a lane into batches under both the record and the byte limit.

use crate::stream::StreamRecord;

/// Lambda's payload limit for a synchronous invocation, and so for a stream batch: 6 MiB.
pub const MAX_BATCH_BYTES: usize = 6_291_456;

/// The JSON of one record of a Kinesis event without its variable values:
/// `{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"","sequenceNumber":"","data":"",
/// "approximateArrivalTimestamp":1545084650.987},"eventSource":"aws:kinesis",
/// "eventVersion":"1.0","eventID":":","eventName":"aws:kinesis:record","invokeIdentityArn":"",
/// "awsRegion":"","eventSourceARN":""},` — 290 bytes; the values repeated in every record are
/// counted by [`repeated_bytes`].
const RECORD_OVERHEAD: usize = 290;

/// The event's own JSON around its records (`{"Records":[...]}` and, with a window, its
/// bounds and flags; the window's shard id, stream ARN and state are counted by
/// [`Limits::with_state`]).
pub(super) const EVENT_OVERHEAD: usize = 512;

/// The bytes of the values every record of a batch repeats, as JSON: the shard id, the
/// stream ARN, the identity ARN (`arn:aws:iam::<account>:role/<mapping>`, 31 bytes and the
/// mapping's name) and the region.
pub(super) fn repeated_bytes(shard: &str, stream_arn: &str, mapping: &str) -> usize {
    let (region, account) = super::event::region_and_account(stream_arn);
    json_len(shard)
        + json_len(stream_arn)
        + json_len(&super::event::identity_arn(account, mapping))
        + json_len(region)
}

/// Bytes of `text` as a JSON string's contents: escapes counted, without writing them.
fn json_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// What one record adds to its batch's event: the data as base64, the partition key, the
/// sequence number twice (`sequenceNumber` and `eventID`), the values every record repeats
/// ([`repeated_bytes`]), and the fixed JSON of a record.
pub(super) fn record_size(record: &StreamRecord, repeated: usize) -> usize {
    record.data.len().div_ceil(3) * 4
        + json_len(&record.partition_key)
        + 2 * record.sequence.digits()
        + repeated
        + RECORD_OVERHEAD
}

/// At least [`record_size`], from lengths alone: six bytes per byte of the partition key (a
/// control character escaped as `\u0001`) and the most digits the sequence number can have.
/// It reads no key byte and counts no digit, which were most of [`record_size`]'s cost.
/// Saturating, never wrapping to a small size.
pub(super) fn record_bound(record: &StreamRecord, repeated: usize) -> usize {
    [
        record.data.len().div_ceil(3).saturating_mul(4),
        record.partition_key.len().saturating_mul(6),
        record.sequence.digits_at_most().saturating_mul(2),
        repeated,
    ]
    .into_iter()
    .fold(RECORD_OVERHEAD, usize::saturating_add)
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Records at most.
    pub(super) records: usize,
    /// Bytes of event at most.
    pub(super) bytes: usize,
    /// The bytes every record repeats ([`repeated_bytes`]).
    pub(super) repeated: usize,
}

impl Limits {
    /// The limits of a tumbling window's batch, which also carries `state` (up to 1 MiB) and
    /// the shard id and stream ARN once more: the byte limit less their JSON.
    #[must_use]
    pub(super) fn with_state(
        self,
        state: &serde_json::Value,
        shard: &str,
        stream_arn: &str,
    ) -> Self {
        let state = serde_json::to_vec(state).map_or(0, |json| json.len());
        Self {
            bytes: self
                .bytes
                .saturating_sub(state + json_len(shard) + json_len(stream_arn)),
            ..self
        }
    }

    /// How many of `records`, from the front, make the next batch: at most `self.records`
    /// (at least one), and no more than fit in `self.bytes`, but one at least when there is
    /// one (a record alone larger than the limit goes alone rather than never).
    ///
    /// While the bounds ([`record_bound`]) of the candidates stay within the byte limit,
    /// every candidate fits: exact sizes, each at most its bound, would cut nowhere either.
    /// That is the case for batches of up to a few thousand small records. Once the bounds
    /// pass the limit, the exact sizes decide; the bounds summed until then cost a few
    /// instructions per record more. They stop where they pass the limit, which is no later
    /// than the exact cut, so a lane's cuts stay linear.
    pub(super) fn fitting(&self, records: &[StreamRecord]) -> usize {
        let candidates = &records[..records.len().min(self.records.max(1))];
        let mut bound = EVENT_OVERHEAD;
        for record in candidates {
            bound = bound.saturating_add(record_bound(record, self.repeated));
            if bound > self.bytes {
                return self.fitting_exactly(candidates);
            }
        }
        candidates.len()
    }

    /// [`Limits::fitting`] from the exact size of each record.
    pub(super) fn fitting_exactly(&self, records: &[StreamRecord]) -> usize {
        let mut bytes = EVENT_OVERHEAD;
        let mut n = 0;
        for record in records.iter().take(self.records.max(1)) {
            bytes += record_size(record, self.repeated);
            if n > 0 && bytes > self.bytes {
                break;
            }
            n += 1;
        }
        n
    }

    /// A lane's batches, in order, each within the limits. Split off the back, so that each
    /// record is moved once whatever the lane's length (splitting off the front would copy the
    /// rest of the lane each time), and a lane that is one batch goes as it is.
    pub(super) fn batches(&self, mut lane: Vec<StreamRecord>) -> Vec<Vec<StreamRecord>> {
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < lane.len() {
            at += self.fitting(&lane[at..]);
            cuts.push(at);
        }
        let mut batches = Vec::with_capacity(cuts.len());
        cuts.pop();
        while let Some(cut) = cuts.pop() {
            batches.push(lane.split_off(cut));
        }
        if !lane.is_empty() {
            batches.push(lane);
        }
        batches.reverse();
        batches
    }
}
