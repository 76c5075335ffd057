//! The payload a batch makes as Lambda's Kinesis event, estimated without serialising, and
//! the cut of a lane into batches under both the record and the byte limit.

use crate::stream::StreamRecord;

/// Lambda's payload limit for a synchronous invocation, and so for a stream batch: 6 MiB.
pub const MAX_BATCH_BYTES: usize = 6_291_456;

/// The JSON of one record of a Kinesis event without its variable values:
/// `{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"","sequenceNumber":"","data":"",
/// "approximateArrivalTimestamp":1545084650.987},"eventSource":"aws:kinesis",
/// "eventVersion":"1.0","eventID":":","eventName":"aws:kinesis:record","invokeIdentityArn":"",
/// "awsRegion":"","eventSourceARN":""},` — 290 bytes — plus room for the identity ARN and the
/// region (64 bytes).
const RECORD_OVERHEAD: usize = 290 + 64;

/// The event's own JSON around its records (`{"Records":[...]}` and the window, if any).
const EVENT_OVERHEAD: usize = 512;

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
/// sequence number twice (`sequenceNumber` and `eventID`), the shard id and stream ARN, and
/// the fixed JSON of a record.
pub(super) fn record_size(record: &StreamRecord, shard_and_arn: usize) -> usize {
    record.data.len().div_ceil(3) * 4
        + json_len(&record.partition_key)
        + 2 * record.sequence.digits()
        + shard_and_arn
        + RECORD_OVERHEAD
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Records at most.
    pub(super) records: usize,
    /// Bytes of event at most.
    pub(super) bytes: usize,
    /// The shard id's and stream ARN's length, repeated in every record.
    pub(super) shard_and_arn: usize,
}

impl Limits {
    /// How many of `records`, from the front, make the next batch: at most `self.records`,
    /// and no more than fit in `self.bytes`, but always one (a record alone larger than the
    /// limit goes alone rather than never).
    pub(super) fn fitting(&self, records: &[StreamRecord]) -> usize {
        let mut bytes = EVENT_OVERHEAD;
        let mut n = 0;
        for record in records.iter().take(self.records.max(1)) {
            bytes += record_size(record, self.shard_and_arn);
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
