//! Batches under the payload limit: the estimate of a record's bytes in Lambda's Kinesis
//! event against that JSON itself, lanes cut where the next record would not fit, and the
//! order and completeness of what is cut.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::json;

use super::super::payload::{
    record_bound, record_size, repeated_bytes, Limits, EVENT_OVERHEAD, MAX_BATCH_BYTES,
};
use super::super::{StreamBatch, TumblingWindow};
use crate::stream::{Sequence, StreamRecord};

/// A record's JSON as Lambda's Kinesis event writes it (base64 stood in for by as many
/// characters: only the length counts).
fn kinesis_json(
    record: &StreamRecord,
    shard: &str,
    arn: &str,
    mapping: &str,
    region: &str,
) -> usize {
    let seq = record.sequence.to_string();
    let value = json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": &*record.partition_key,
            "sequenceNumber": seq,
            "data": "A".repeat(record.data.len().div_ceil(3) * 4),
            "approximateArrivalTimestamp": 1_545_084_650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{shard}:{seq}"),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": format!("arn:aws:iam::123456789012:role/{mapping}"),
        "awsRegion": region,
        "eventSourceARN": arn,
    });
    serde_json::to_vec(&value).unwrap().len() + 1
}

/// The longest mapping name (128 characters) and a long region.
const LONG_REGION: &str = "us-isob-southeast-long-test-9";

fn long_mapping() -> String {
    "m".repeat(128)
}

fn long_arn() -> String {
    format!("arn:aws:kinesis:{LONG_REGION}:123456789012:stream/lambda-stream")
}

#[test]
fn a_records_estimate_covers_its_json_in_lambdas_event() {
    let shard = "shardId-000000000006";
    let (arn, mapping) = (long_arn(), long_mapping());
    let repeated = repeated_bytes(shard, &arn, &mapping);
    let at = UNIX_EPOCH + Duration::from_secs(1);
    let big: Sequence = "49590338271490256608559692538361571095921575989136588898"
        .parse()
        .unwrap();
    for (key, seq, len) in [
        ("1", Sequence::from(1u128), 0usize),
        ("user-42", big.clone(), 1),
        ("quote\"and\\slash\n", big.clone(), 2),
        ("k", big, 1_000_000),
    ] {
        let record = StreamRecord::new(key, seq, vec![7u8; len], at);
        let estimate = record_size(&record, repeated);
        let actual = kinesis_json(&record, shard, &arn, &mapping, LONG_REGION);
        assert!(
            estimate >= actual && estimate - actual <= 64,
            "{key}: estimate {estimate}, JSON {actual}"
        );
    }
}

/// The estimate of whole batches against the event nimbus writes, with a long mapping name
/// and region, and with a tumbling window's state of 1 MiB.
#[test]
fn a_batchs_estimate_is_never_below_its_json() {
    let shard = "shardId-000000000006";
    let (arn, mapping) = (long_arn(), long_mapping());
    let limits = Limits {
        records: 10_000,
        bytes: MAX_BATCH_BYTES,
        repeated: repeated_bytes(shard, &arn, &mapping),
    };
    let batch = |records: Vec<StreamRecord>, window: Option<TumblingWindow>| StreamBatch {
        mapping: mapping.as_str().into(),
        shard_id: shard.into(),
        stream_arn: arn.as_str().into(),
        records,
        window,
    };
    // Many small records: the repeated values weigh most.
    let small = records(10_000, 1);
    let estimate = EVENT_OVERHEAD
        + small
            .iter()
            .map(|r| record_size(r, limits.repeated))
            .sum::<usize>();
    let actual = serde_json::to_vec(&batch(small, None)).unwrap().len();
    assert!(estimate >= actual, "estimate {estimate}, JSON {actual}");
    // A window's state leaves less room for records: the cut batch, state included, stays
    // within 6 MiB.
    let state = serde_json::Value::String("s".repeat(1_048_000));
    let window = TumblingWindow {
        start: UNIX_EPOCH,
        end: UNIX_EPOCH + Duration::from_secs(60),
        state: state.clone(),
        is_final: false,
        terminated_early: false,
    };
    let lane = records(10, 1 << 20);
    let limits = limits.with_state(&state, shard, &arn);
    let cut = limits.fitting(&lane);
    let json = serde_json::to_vec(&batch(lane[..cut].to_vec(), Some(window))).unwrap();
    assert!(
        json.len() <= MAX_BATCH_BYTES,
        "{cut} records and the state make {} bytes",
        json.len()
    );
    assert_eq!(cut, 3);
}

fn records(n: u128, len: usize) -> Vec<StreamRecord> {
    (1..=n)
        .map(|i| StreamRecord::new("k", Sequence::from(i), vec![0u8; len], UNIX_EPOCH))
        .collect()
}

fn shape(batches: &[Vec<StreamRecord>]) -> Vec<usize> {
    batches.iter().map(Vec::len).collect()
}

#[test]
fn a_lane_is_cut_where_the_next_record_would_pass_six_mib() {
    let limits = Limits {
        records: 10_000,
        bytes: MAX_BATCH_BYTES,
        repeated: 80,
    };
    // 1 MiB of data is 1,398,104 bytes of base64: four fit in 6 MiB, five do not.
    let lane = records(10, 1 << 20);
    let batches = limits.batches(lane.clone());
    assert_eq!(shape(&batches), [4, 4, 2]);
    // In order, every record once.
    let flat: Vec<StreamRecord> = batches.iter().flatten().cloned().collect();
    assert_eq!(flat, lane);
    for batch in &batches {
        let bytes: usize = batch.iter().map(|r| record_size(r, 80)).sum();
        assert!(bytes <= MAX_BATCH_BYTES);
    }
    // The record limit still holds for small records; the byte limit for large ones.
    let limits = Limits {
        records: 3,
        ..limits
    };
    assert_eq!(shape(&limits.batches(records(7, 10))), [3, 3, 1]);
    // A record larger than the limit goes alone, never held back.
    let tiny = Limits {
        records: 100,
        bytes: 1,
        repeated: 0,
    };
    assert_eq!(shape(&tiny.batches(records(3, 10))), [1, 1, 1]);
    assert_eq!(tiny.fitting(&records(3, 10)), 1);
    assert!(tiny.batches(Vec::new()).is_empty());
}

/// A record with a key of `key_len` characters drawn from `fill` (plain, escaped or control),
/// `data_len` bytes of data, and `sequence`.
fn record(key_len: usize, fill: char, data_len: usize, sequence: Sequence) -> StreamRecord {
    StreamRecord::new(
        fill.to_string().repeat(key_len),
        sequence,
        vec![7u8; data_len],
        UNIX_EPOCH,
    )
}

/// Sequences of every length that sizes differ on: short, the longest that fit in 128 bits
/// (39 digits, `u128::MAX` among them), and longer ones kept as digits.
fn sequences() -> Vec<Sequence> {
    let mut all = vec![
        Sequence::new(1),
        Sequence::new(10u128.pow(37)),
        Sequence::new(10u128.pow(38)),
        Sequence::new(u128::MAX),
    ];
    all.extend([40, 160].map(|digits| "9".repeat(digits).parse::<Sequence>().unwrap()));
    all
}

#[test]
fn a_records_bound_is_never_below_its_size() {
    for fill in ['k', '"', '\\', '\n', '\u{1}', 'é'] {
        for sequence in sequences() {
            for (key_len, data_len) in [(0, 0), (1, 1), (7, 2), (256, 1 << 20)] {
                let record = record(key_len, fill, data_len, sequence.clone());
                for repeated in [0, 300] {
                    assert!(
                        record_bound(&record, repeated) >= record_size(&record, repeated),
                        "{fill:?} x {key_len}, {data_len} bytes, {sequence}"
                    );
                }
            }
        }
    }
}

proptest! {
    /// Cutting with bounds first cuts every lane where exact sizes alone cut it, near the byte
    /// limit and far below it, for keys that escape and sequences of every length.
    #[test]
    fn bounds_cut_lanes_where_exact_sizes_do(
        lane in prop::collection::vec(
            (
                0usize..40,
                prop::sample::select(vec!['k', '"', '\n', '\u{1}', 'é']),
                0usize..6_000,
                prop::sample::select(sequences()),
            ),
            0..120,
        ),
        records in 0usize..150,
        bytes in 1usize..400_000,
        repeated in 0usize..400,
    ) {
        let lane: Vec<StreamRecord> = lane
            .into_iter()
            .map(|(key_len, fill, data_len, sequence)| record(key_len, fill, data_len, sequence))
            .collect();
        let limits = Limits { records, bytes, repeated };
        let mut at = 0;
        while at < lane.len() {
            let cut = limits.fitting(&lane[at..]);
            prop_assert_eq!(cut, limits.fitting_exactly(&lane[at..]));
            prop_assert!(cut >= 1);
            at += cut;
        }
        prop_assert_eq!(limits.fitting(&[]), 0);
    }

    /// A record's bound is at least its size for any key and any 128-bit sequence.
    #[test]
    fn a_bound_covers_any_key_and_sequence(
        key in ".{0,40}",
        sequence in any::<u128>(),
        data_len in 0usize..100,
    ) {
        let record = StreamRecord::new(key, Sequence::new(sequence), vec![0u8; data_len], UNIX_EPOCH);
        prop_assert!(record_bound(&record, 0) >= record_size(&record, 0));
    }
}
