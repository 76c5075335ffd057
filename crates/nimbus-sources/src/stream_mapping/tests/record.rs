//! The on-failure record against Lambda's documented example of an invocation record for a
//! Kinesis stream: same fields, same shape, our values; read back, and Lambda's own read.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::super::progress::Round;
use super::super::{StreamBatch, StreamCondition, StreamFailure, StreamResponse};
use super::support::{config, hold, run_batch, Parts};
use crate::stream::{Sequence, ShardId, StreamRecord};

/// Lambda's example invocation record for a Kinesis stream, as its developer guide gives it
/// ("Retain discarded batch records for a Kinesis Data Streams event source").
const LAMBDA_EXAMPLE: &str = r#"{
    "requestContext": {
        "requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled"
    },
    "version": "1.0",
    "timestamp": "2019-11-14T00:38:06.021Z",
    "KinesisBatchInfo": {
        "shardId": "shardId-000000000001",
        "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
        "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
        "batchSize": 500,
        "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
    }
}"#;

/// Every key path of a JSON value, for comparing shapes.
fn shape(value: &Value, path: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let p = format!("{path}/{k}");
            out.push(p.clone());
            shape(v, &p, out);
        }
    }
    out.sort();
}

#[tokio::test(start_paused = true)]
async fn the_on_failure_record_is_lambdas_invocation_record_with_the_records_added() {
    let runtime = Runtime::new(
        RuntimeConfig::default()
            .with_region("us-east-2")
            .with_account_id("123456789012"),
    )
    .unwrap();
    let request_ids = Arc::new(Mutex::new(Vec::new()));
    let function = runtime
        .register(Function::new(
            "myfunction",
            handler_fn({
                let request_ids = request_ids.clone();
                move |_batch: StreamBatch, ctx: Context| {
                    request_ids.lock().push(ctx.request_id().to_string());
                    async move { Err::<StreamResponse, _>(FunctionError::new("Oops", "bad record")) }
                }
            }),
        ))
        .await
        .unwrap();
    let (tx, mut given_up) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(
        config("orders")
            .with_stream_name("mystream")
            .with_max_retry_attempts(0),
    );
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("shardId-000000000001");
    hold(&shared, &shard).await;
    let first_at = UNIX_EPOCH + Duration::from_millis(1_573_691_884_835);
    let last_at = UNIX_EPOCH + Duration::from_millis(1_573_691_885_580);
    let seq = |s: &str| s.parse::<Sequence>().unwrap();
    let records = vec![
        StreamRecord::new(
            "k",
            seq("49601189658422359378836298521827638475320189012309704722"),
            "one",
            first_at,
        ),
        StreamRecord::new(
            "k",
            seq("49601189658422359378836298522902373528957594348623495186"),
            "two",
            last_at,
        ),
    ];
    let round = Round::new(&records);
    run_batch(&shared, &shard, records.clone(), &round).await;
    let failure = given_up.try_recv().unwrap();
    let ours = serde_json::to_value(&failure).unwrap();

    // Lambda's fields, in Lambda's shape; `nimbus` is the one addition.
    let lambda: Value = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
    let mut lambdas_part = ours.clone();
    let addition = lambdas_part
        .as_object_mut()
        .unwrap()
        .remove("nimbus")
        .unwrap();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    shape(&lambda, "", &mut want);
    shape(&lambdas_part, "", &mut got);
    assert_eq!(got, want);
    // Field for field: Lambda's example with what differs in this run put in.
    let mut expected = lambda.clone();
    let request_id = request_ids.lock()[0].clone();
    expected["requestContext"]["requestId"] = json!(request_id);
    expected["timestamp"] = json!(nimbus_core::util::aws::rfc3339_millis(failure.timestamp));
    expected["KinesisBatchInfo"]["batchSize"] = json!(2);
    assert_eq!(lambdas_part, expected);
    // The values taken from Lambda's example unchanged are ours too.
    assert_eq!(
        ours["requestContext"]["functionArn"],
        lambda["requestContext"]["functionArn"]
    );
    assert_eq!(
        ours["KinesisBatchInfo"]["streamArn"],
        lambda["KinesisBatchInfo"]["streamArn"]
    );
    assert_eq!(
        ours["KinesisBatchInfo"]["approximateArrivalOfLastRecord"],
        "2019-11-14T00:38:05.580Z"
    );
    // The addition: the mapping, the last error, the records themselves.
    assert_eq!(addition["mapping"], "orders");
    assert_eq!(
        addition["error"],
        json!({"errorType": "Oops", "errorMessage": "bad record"})
    );
    assert_eq!(addition["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        addition["records"][1]["sequence"],
        "49601189658422359378836298522902373528957594348623495186"
    );

    // Read back: the same record.
    let back: StreamFailure = serde_json::from_value(ours).unwrap();
    assert_eq!(back.records, records);
    assert_eq!(back.function.as_ref(), "myfunction");
    assert_eq!(
        back.error.as_ref().map(|e| e.message.as_str()),
        Some("bad record")
    );
    assert_eq!(back.request_id, failure.request_id);
    // Lambda's own record reads too, without the addition.
    let theirs: StreamFailure = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
    assert_eq!(theirs.condition, StreamCondition::RetryAttemptsExhausted);
    assert_eq!(theirs.batch_size, 500);
    assert_eq!(theirs.first_arrival, first_at);
    assert_eq!(theirs.shard_id.as_ref(), "shardId-000000000001");
    assert!(theirs.records.is_empty());
    assert_eq!(
        serde_json::to_value(&theirs).unwrap()["KinesisBatchInfo"],
        lambda["KinesisBatchInfo"]
    );
}

#[tokio::test(start_paused = true)]
async fn records_too_old_before_any_attempt_say_so() {
    let runtime = Runtime::default();
    let (function, calls) = super::support::succeeding(&runtime).await;
    let (tx, mut given_up) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(config("m").with_max_record_age(Duration::from_secs(60)));
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("s");
    hold(&shared, &shard).await;
    let old = crate::stream::stream_now() - Duration::from_secs(120);
    let records = vec![super::support::record_at("k", 1, old)];
    let round = Round::new(&records);
    run_batch(&shared, &shard, records, &round).await;
    assert!(calls.lock().is_empty());
    let json = serde_json::to_value(given_up.try_recv().unwrap()).unwrap();
    assert_eq!(json["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(json["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(json["requestContext"]["requestId"], Value::Null);
    assert_eq!(json["responseContext"]["functionError"], Value::Null);
    // Defaults: the mapping's name as the stream's, the runtime's region and account.
    assert_eq!(
        json["KinesisBatchInfo"]["streamArn"],
        "arn:aws:kinesis:us-east-1:000000000000:stream/m"
    );
}
