//! A batch as JSON against Lambda's documented Kinesis event, and its tumbling-window event:
//! the same JSON for the same records, read by Lambda's own types, and read back.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use super::super::{StreamBatch, TumblingWindow};
use crate::stream::{Sequence, StreamRecord};

/// Lambda's example Kinesis event ("Using Lambda with Kinesis", developer guide).
const LAMBDA_EXAMPLE: &str = r#"{
    "Records": [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                "approximateArrivalTimestamp": 1545084650.987
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
        },
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": "49590338271490256608559692540925702759324208523137515618",
                "data": "VGhpcyBpcyBvbmx5IGEgdGVzdC4=",
                "approximateArrivalTimestamp": 1545084711.166
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "shardId-000000000006:49590338271490256608559692540925702759324208523137515618",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
        }
    ]
}"#;

fn example_batch(window: Option<TumblingWindow>) -> StreamBatch {
    let seq = |s: &str| s.parse::<Sequence>().unwrap();
    let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
    StreamBatch {
        // The role in `invokeIdentityArn` names the mapping.
        mapping: Arc::from("lambda-role"),
        shard_id: Arc::from("shardId-000000000006"),
        stream_arn: Arc::from("arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"),
        records: vec![
            StreamRecord::new(
                "1",
                seq("49590338271490256608559692538361571095921575989136588898"),
                "Hello, this is a test.",
                at(1_545_084_650_987),
            ),
            StreamRecord::new(
                "1",
                seq("49590338271490256608559692540925702759324208523137515618"),
                "This is only a test.",
                at(1_545_084_711_166),
            ),
        ],
        window,
    }
}

#[test]
fn a_batch_is_lambdas_kinesis_event() {
    let batch = example_batch(None);
    let ours = serde_json::to_value(&batch).unwrap();
    let lambda: Value = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
    assert_eq!(ours, lambda);

    // Lambda's own type reads it, with the same values.
    let theirs: aws_lambda_events::kinesis::KinesisEvent =
        serde_json::from_value(ours.clone()).unwrap();
    assert_eq!(theirs.records.len(), 2);
    for (record, mine) in theirs.records.iter().zip(&batch.records) {
        assert_eq!(record.kinesis.data.0, mine.data.to_vec());
        assert_eq!(record.kinesis.partition_key, &*mine.partition_key);
        assert_eq!(record.kinesis.sequence_number, mine.sequence.to_string());
        assert_eq!(
            record
                .kinesis
                .approximate_arrival_timestamp
                .0
                .timestamp_millis(),
            mine.arrived_at
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        );
        assert_eq!(record.event_source.as_deref(), Some("aws:kinesis"));
        assert_eq!(record.aws_region.as_deref(), Some("us-east-2"));
        assert_eq!(
            record.event_source_arn.as_deref(),
            Some("arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream")
        );
        assert_eq!(
            record.event_id.as_deref(),
            Some(format!("shardId-000000000006:{}", mine.sequence).as_str())
        );
    }

    // And it reads back: Lambda's example is a batch.
    let back: StreamBatch = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
    assert_eq!(back.records, batch.records);
    assert_eq!(back.shard_id, batch.shard_id);
    assert_eq!(back.stream_arn, batch.stream_arn);
    assert_eq!(back.mapping, batch.mapping);
    assert!(back.window.is_none());
    // Binary data survives, as base64.
    let mut binary = example_batch(None);
    binary.records[0].data = vec![0u8, 159, 146, 150, 255].into();
    let json = serde_json::to_value(&binary).unwrap();
    assert_eq!(json["Records"][0]["kinesis"]["data"], "AJ+Slv8=");
    let back: StreamBatch = serde_json::from_value(json).unwrap();
    assert_eq!(back.records[0].data, binary.records[0].data);
}

#[test]
fn a_windowed_batch_is_lambdas_tumbling_window_event() {
    let start = UNIX_EPOCH + Duration::from_secs(1_607_497_440);
    let window = TumblingWindow {
        start,
        end: start + Duration::from_secs(120),
        state: json!({"1": "282", "2": "715"}),
        is_final: false,
        terminated_early: false,
    };
    let batch = example_batch(Some(window.clone()));
    let ours = serde_json::to_value(&batch).unwrap();
    // Lambda's KinesisTimeWindowEvent example's fields beside the records.
    let mut extra = ours.as_object().unwrap().clone();
    extra.remove("Records");
    assert_eq!(
        Value::Object(extra),
        json!({
            "window": {"start": "2020-12-09T07:04:00Z", "end": "2020-12-09T07:06:00Z"},
            "state": {"1": "282", "2": "715"},
            "shardId": "shardId-000000000006",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
            "isFinalInvokeForWindow": false,
            "isWindowTerminatedEarly": false
        })
    );
    let theirs: aws_lambda_events::kinesis::KinesisTimeWindowEvent =
        serde_json::from_value(ours.clone()).unwrap();
    let props = &theirs.time_window_properties;
    assert_eq!(props.window.start.timestamp(), 1_607_497_440);
    assert_eq!(props.window.end.timestamp(), 1_607_497_560);
    assert_eq!(props.state.get("2").map(String::as_str), Some("715"));
    assert_eq!(props.shard_id.as_deref(), Some("shardId-000000000006"));
    assert!(!props.is_final_invoke_for_window && !props.is_window_terminated_early);
    assert_eq!(theirs.kinesis_event.records.len(), 2);

    // The final invocation: no records, the shard and stream still named, read back.
    let mut last = example_batch(Some(TumblingWindow {
        is_final: true,
        terminated_early: true,
        state: Value::Null,
        ..window
    }));
    last.records.clear();
    let json = serde_json::to_value(&last).unwrap();
    assert_eq!(json["Records"], json!([]));
    assert_eq!(json["state"], Value::Null);
    let theirs: aws_lambda_events::kinesis::KinesisTimeWindowEvent =
        serde_json::from_value(json.clone()).unwrap();
    assert!(theirs.time_window_properties.is_final_invoke_for_window);
    assert!(theirs.time_window_properties.is_window_terminated_early);
    let back: StreamBatch = serde_json::from_value(json).unwrap();
    assert_eq!(back.shard_id.as_ref(), "shardId-000000000006");
    let w = back.window.unwrap();
    assert_eq!(
        (w.start, w.is_final, w.terminated_early, w.state),
        (start, true, true, Value::Null)
    );
}

/// Lambda's documented partial batch response for Kinesis, and its tumbling-window response.
#[test]
fn responses_are_lambdas_partial_batch_and_window_responses() {
    use super::super::StreamResponse;
    let failed: StreamResponse = serde_json::from_str(
        r#"{"batchItemFailures": [{"itemIdentifier": "49590338271490256608559692538361571095921575989136588898"}]}"#,
    )
    .unwrap();
    assert_eq!(
        failed,
        StreamResponse::failures(["49590338271490256608559692538361571095921575989136588898"
            .parse::<Sequence>()
            .unwrap()])
    );
    // Lambda's tumbling-window example answer.
    let windowed: StreamResponse =
        serde_json::from_str(r#"{"state": {"1": 282, "2": 715}, "batchItemFailures": []}"#)
            .unwrap();
    assert_eq!(
        windowed,
        StreamResponse::success().with_state(json!({"1": 282, "2": 715}))
    );
    // Success, as Lambda reads it: an empty answer, a null list, a null answer.
    for success in ["{}", r#"{"batchItemFailures": null}"#, "null"] {
        let read: StreamResponse = serde_json::from_str(success).unwrap();
        assert_eq!(read, StreamResponse::success(), "{success}");
    }
    // Written in the same shape.
    let written = serde_json::to_value(
        StreamResponse::failures([Sequence::from(7u128)]).with_state(json!({"n": 1})),
    )
    .unwrap();
    assert_eq!(
        written,
        json!({"batchItemFailures": [{"itemIdentifier": "7"}], "state": {"n": 1}})
    );
    assert_eq!(
        serde_json::to_value(StreamResponse::success()).unwrap(),
        json!({"batchItemFailures": []})
    );
    // An identifier that is empty, null or under another name fails the whole batch, as
    // Lambda's: the answer cannot be read.
    for broken in [
        r#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
        r#"{"batchItemFailures": [{"itemIdentifier": null}]}"#,
        r#"{"batchItemFailures": [{"id": "7"}]}"#,
    ] {
        assert!(
            serde_json::from_str::<StreamResponse>(broken).is_err(),
            "{broken}"
        );
    }
}
