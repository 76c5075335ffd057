//! The JSON of a queue mapping's invocations is Lambda's: a `QueueBatch` is the SQS event of
//! Lambda's documentation (its standard-queue example, field for field), `aws_lambda_events`
//! reads it, and a `BatchResponse` is `{"batchItemFailures": [{"itemIdentifier": ...}]}`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime, RuntimeConfig};
use nimbus_sources::{
    Attributes, BatchResponse, MessageId, Outgoing, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig, QueueOrigin, QueueRecord, Receipt,
};
use parking_lot::Mutex;
use serde_json::json;

use crate::support::{eventually, queue};

/// The standard-queue example event of Lambda's "Using Lambda with Amazon SQS" page.
fn documented_example() -> serde_json::Value {
    json!({
        "Records": [
            {
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                "body": "Test message.",
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082649183",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1545082649185"
                },
                "messageAttributes": {
                    "myAttribute": {
                        "stringValue": "myValue",
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": "String"
                    }
                },
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
                "awsRegion": "us-east-2"
            },
            {
                "messageId": "2e1424d4-f796-459a-8184-9c92662be6da",
                "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
                "body": "Test message.",
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082650636",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1545082650649"
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
                "awsRegion": "us-east-2"
            }
        ]
    })
}

fn record(id: &str, receipt: &str, sent: u64, first: u64, attributes: Attributes) -> QueueRecord {
    let mut r = QueueRecord::new(MessageId::text(id), "Test message.", "my-queue");
    r.receipt_handle = Receipt::token(receipt);
    r.attributes = attributes;
    r.sent_at = UNIX_EPOCH + Duration::from_millis(sent);
    r.first_received_at = UNIX_EPOCH + Duration::from_millis(first);
    r.origin = Arc::new(QueueOrigin::with_values(
        "AIDAIENQZJOLO23YVJ4VO",
        "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "us-east-2",
    ));
    r
}

fn our_batch() -> QueueBatch {
    QueueBatch::new(
        "my-queue",
        vec![
            record(
                "059f36b4-87a3-44ab-83d2-661975830a7d",
                "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                1_545_082_649_183,
                1_545_082_649_185,
                Attributes::new().with("myAttribute", "myValue"),
            ),
            record(
                "2e1424d4-f796-459a-8184-9c92662be6da",
                "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq...",
                1_545_082_650_636,
                1_545_082_650_649,
                Attributes::new(),
            ),
        ],
    )
}

#[test]
fn a_batch_serialises_as_the_documented_sqs_event() {
    let ours = serde_json::to_value(our_batch()).unwrap();
    let expected = documented_example();
    // Field for field, so a difference names its place.
    for (i, (a, b)) in ours["Records"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["Records"].as_array().unwrap())
        .enumerate()
    {
        for (key, value) in b.as_object().unwrap() {
            assert_eq!(&a[key], value, "record {i}, field {key}");
        }
        assert_eq!(
            a.as_object().unwrap().len(),
            b.as_object().unwrap().len(),
            "record {i}: no other fields"
        );
    }
    assert_eq!(ours, expected);
}

#[test]
fn the_documented_event_reads_back_into_a_batch() {
    let batch: QueueBatch = serde_json::from_value(documented_example()).unwrap();
    assert_eq!(&*batch.mapping, "my-queue");
    let r = &batch.records[0];
    assert_eq!(
        r.message_id,
        MessageId::text("059f36b4-87a3-44ab-83d2-661975830a7d")
    );
    assert_eq!(
        r.receipt_handle.as_token(),
        Some("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...")
    );
    assert_eq!(r.body_str().unwrap(), "Test message.");
    assert_eq!(r.attributes.get("myAttribute"), Some("myValue"));
    assert_eq!(r.receive_count, 1);
    assert_eq!(
        r.sent_at,
        UNIX_EPOCH + Duration::from_millis(1_545_082_649_183)
    );
    assert_eq!(
        r.first_received_at,
        UNIX_EPOCH + Duration::from_millis(1_545_082_649_185)
    );
    assert_eq!(r.origin.sender_id, "AIDAIENQZJOLO23YVJ4VO");
    assert_eq!(
        r.origin.event_source_arn,
        "arn:aws:sqs:us-east-2:123456789012:my-queue"
    );
    assert_eq!(r.origin.aws_region, "us-east-2");
    assert_eq!(r.md5_of_body(), "e4e68fb7bd0e697a0ae8f1bb342846b3");
    assert_eq!(r.group_id, None);
    // And round-trips.
    assert_eq!(serde_json::to_value(&batch).unwrap(), documented_example());
}

#[test]
fn aws_lambda_events_parses_our_json_with_the_same_values() {
    let mut batch = our_batch();
    batch.records[1].group_id = Some(Arc::from("g1"));
    batch.records[1].receive_count = 3;
    let text = serde_json::to_string(&batch).unwrap();
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_str(&text).unwrap();
    assert_eq!(event.records.len(), 2);
    for (theirs, ours) in event.records.iter().zip(&batch.records) {
        assert_eq!(
            theirs.message_id.as_deref(),
            Some(&*ours.message_id.to_string())
        );
        assert_eq!(
            theirs.receipt_handle.as_deref(),
            ours.receipt_handle.as_token()
        );
        assert_eq!(theirs.body.as_deref(), Some("Test message."));
        assert_eq!(
            theirs.md5_of_body.as_deref(),
            Some("e4e68fb7bd0e697a0ae8f1bb342846b3")
        );
        assert_eq!(theirs.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            theirs.event_source_arn.as_deref(),
            Some(ours.origin.event_source_arn.as_str())
        );
        assert_eq!(theirs.aws_region.as_deref(), Some("us-east-2"));
        assert_eq!(
            theirs.attributes.get("ApproximateReceiveCount"),
            Some(&ours.receive_count.to_string())
        );
        assert_eq!(
            theirs.attributes.get("SenderId").map(String::as_str),
            Some("AIDAIENQZJOLO23YVJ4VO")
        );
        assert_eq!(
            theirs.attributes.get("MessageGroupId").map(String::as_str),
            ours.group_id.as_deref()
        );
        for (name, value) in ours.attributes.iter() {
            let attribute = &theirs.message_attributes[name];
            assert_eq!(attribute.string_value.as_deref(), Some(value));
            assert_eq!(attribute.data_type.as_deref(), Some("String"));
        }
        assert_eq!(
            theirs.message_attributes.len(),
            ours.attributes.iter().count()
        );
    }
    assert_eq!(
        event.records[0]
            .attributes
            .get("SentTimestamp")
            .map(String::as_str),
        Some("1545082649183")
    );
}

#[test]
fn batch_responses_are_lambdas_partial_batch_response() {
    let response = BatchResponse::failures([MessageId::text("a1"), MessageId::number(7)]);
    let value = serde_json::to_value(&response).unwrap();
    assert_eq!(
        value,
        json!({"batchItemFailures": [{"itemIdentifier": "a1"}, {"itemIdentifier": "7"}]})
    );
    assert_eq!(
        serde_json::from_value::<BatchResponse>(value).unwrap(),
        response
    );
    for success in [json!({"batchItemFailures": []}), json!({}), json!(null)] {
        assert_eq!(
            serde_json::from_value::<BatchResponse>(success).unwrap(),
            BatchResponse::success()
        );
    }
    let theirs: aws_lambda_events::sqs::SqsBatchResponse =
        serde_json::from_str(&serde_json::to_string(&response).unwrap()).unwrap();
    assert_eq!(theirs.batch_item_failures[0].item_identifier, "a1");
}

#[tokio::test(start_paused = true)]
async fn a_mapping_names_the_runtimes_region_account_and_the_queue() {
    let rt = Runtime::new(
        RuntimeConfig::default()
            .with_region("eu-west-3")
            .with_account_id("111122223333"),
    )
    .unwrap();
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let function = rt
        .register(Function::new(
            "orders-handler",
            handler_fn({
                let seen = seen.clone();
                move |batch: QueueBatch, _ctx: Context| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().push(serde_json::to_value(&batch).unwrap());
                        Ok::<_, FunctionError>(BatchResponse::success())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let q = queue(QueueConfig::default().fifo());
    q.send_message(
        Outgoing::new("hello")
            .with_group("g")
            .with_attribute("k", "v"),
    )
    .unwrap();
    let config = QueueMappingConfig::new("orders-mapping").with_queue_name("orders.fifo");
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(Duration::from_secs(60), || q.is_empty()).await;
    mapping.stop(Duration::from_secs(1)).await;
    let event = seen.lock()[0].clone();
    let r = &event["Records"][0];
    assert_eq!(
        r["eventSourceARN"],
        "arn:aws:sqs:eu-west-3:111122223333:orders.fifo"
    );
    assert_eq!(r["awsRegion"], "eu-west-3");
    assert_eq!(r["attributes"]["SenderId"], "111122223333");
    assert_eq!(r["attributes"]["MessageGroupId"], "g");
    assert_eq!(r["attributes"]["ApproximateReceiveCount"], "1");
    assert_eq!(r["messageAttributes"]["k"]["stringValue"], "v");
    assert_eq!(r["body"], "hello");
    assert_eq!(r["md5OfBody"], "5d41402abc4b2a76b9719d911017c592");
    assert!(r["receiptHandle"].as_str().is_some_and(|h| !h.is_empty()));
}
