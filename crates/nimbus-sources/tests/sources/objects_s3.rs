//! Object notifications in S3's shape: S3's documented example message, field for field,
//! read by Lambda's own `S3Event`, one event per invocation; region and account checked.

use std::sync::Arc;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    InMemoryObjectStore, NotificationConfig, NotificationRule, ObjectStore, S3Event,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// S3's example notification message, event structure version 2.1, as the S3 user guide
/// gives it ("Event message structure"), each value a description of what goes there. The
/// `glacierEventData` of restore events is left out: nimbus's stores have no archive tier.
const S3_EXAMPLE: &str = r#"{
   "Records":[
      {
         "eventVersion":"2.1",
         "eventSource":"aws:s3",
         "awsRegion":"us-west-2",
         "eventTime":"The time, in ISO-8601 format (for example, 1970-01-01T00:00:00.000Z) when Amazon S3 finished processing the request",
         "eventName":"The event type",
         "userIdentity":{
            "principalId":"The unique ID of the IAM resource that caused the event"
         },
         "requestParameters":{
            "sourceIPAddress":"The IP address where the request came from"
         },
         "responseElements":{
            "x-amz-request-id":"The Amazon S3 generated request ID",
            "x-amz-id-2":"The Amazon S3 host that processed the request"
         },
         "s3":{
            "s3SchemaVersion":"1.0",
            "configurationId":"The ID found in the bucket notification configuration",
            "bucket":{
               "name":"The name of the bucket, for example, amzn-s3-demo-bucket",
               "ownerIdentity":{
                  "principalId":"The Amazon retail customer ID of the bucket owner"
               },
               "arn":"The bucket Amazon Resource Name (ARN)"
            },
            "object":{
               "key":"The object key name",
               "size":"The object size in bytes (as a number)",
               "eTag":"The object entity tag (ETag)",
               "versionId":"The object version if bucket is versioning-enabled, otherwise null",
               "sequencer": "A string representation of a hexadecimal value used to determine event sequence, only used with PUTs and DELETEs"
            }
         }
      }
   ]
}"#;

/// Every key path of a JSON value (arrays by index), sorted, for comparing shapes.
fn shape(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}/{k}");
                out.push(p.clone());
                shape(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                shape(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
    out.sort();
}

#[tokio::test]
async fn a_function_receives_s3s_notification_message_one_event_at_a_time() {
    let runtime = Runtime::default();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<S3Event>();
    let function = runtime
        .register(Function::new(
            "thumbnail",
            handler_fn(move |event: S3Event, _ctx: Context| {
                let seen_tx = seen_tx.clone();
                async move {
                    seen_tx
                        .send(event)
                        .map_err(|_| FunctionError::msg("closed"))?;
                    Ok::<(), FunctionError>(())
                }
            }),
        ))
        .await
        .unwrap();
    let config = NotificationConfig::new(vec![NotificationRule::new(
        "thumbnails",
        &["s3:ObjectCreated:*"],
        Arc::new(function),
    )
    .unwrap()])
    .unwrap()
    .with_region("us-west-2")
    .unwrap()
    .with_account_id("123456789012")
    .unwrap();
    let store = InMemoryObjectStore::new(config);
    store.create_bucket("amzn-s3-demo-bucket").await.unwrap();
    let info = store
        .put(
            "amzn-s3-demo-bucket",
            "photos/red flower.jpg",
            "petals".into(),
        )
        .await
        .unwrap();
    store
        .put(
            "amzn-s3-demo-bucket",
            "photos/tulip.jpg",
            "more petals".into(),
        )
        .await
        .unwrap();
    let first = seen.recv().await.unwrap();
    let second = seen.recv().await.unwrap();
    // One event per invocation, in the Records wrapper.
    assert_eq!((first.records.len(), second.records.len()), (1, 1));
    let ours = serde_json::to_value(&first).unwrap();
    let example: Value = serde_json::from_str(S3_EXAMPLE).unwrap();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    shape(&example, "", &mut want);
    shape(&ours, "", &mut got);
    assert_eq!(
        got, want,
        "the same fields as S3's example, no more, no fewer"
    );
    // Field for field: S3's example, with each description replaced by our value.
    let event = &first.records[0];
    let mut expected = example.clone();
    let record = &mut expected["Records"][0];
    record["eventTime"] = json!(event.event_time);
    record["eventName"] = json!("ObjectCreated:Put");
    record["userIdentity"]["principalId"] = json!("123456789012");
    record["requestParameters"]["sourceIPAddress"] = json!("127.0.0.1");
    record["responseElements"]["x-amz-request-id"] = json!(event.response_elements.request_id);
    record["responseElements"]["x-amz-id-2"] = json!(event.response_elements.id_2);
    let s3 = &mut record["s3"];
    s3["configurationId"] = json!("thumbnails");
    s3["bucket"]["name"] = json!("amzn-s3-demo-bucket");
    s3["bucket"]["ownerIdentity"]["principalId"] = json!("123456789012");
    s3["bucket"]["arn"] = json!("arn:aws:s3:::amzn-s3-demo-bucket");
    s3["object"]["key"] = json!("photos/red+flower.jpg");
    s3["object"]["size"] = json!(6);
    s3["object"]["eTag"] = json!(info.etag);
    s3["object"]["versionId"] = Value::Null;
    s3["object"]["sequencer"] = json!(event.s3.object.sequencer);
    assert_eq!(ours, expected);
    // The generated values have S3's forms.
    let time = event.event_time.as_str();
    assert_eq!((time.len(), &time[10..11], &time[23..]), (24, "T", "Z"));
    assert_eq!(event.response_elements.request_id.len(), 16);
    assert!(event
        .s3
        .object
        .sequencer
        .bytes()
        .all(|b| b.is_ascii_hexdigit()));
    assert!(second.records[0].s3.object.sequencer > event.s3.object.sequencer);
    // Lambda's own type reads it, with the same values.
    let parsed: aws_lambda_events::s3::S3Event = serde_json::from_value(ours.clone()).unwrap();
    let theirs = &parsed.records[0];
    assert_eq!(theirs.event_version.as_deref(), Some("2.1"));
    assert_eq!(theirs.event_source.as_deref(), Some("aws:s3"));
    assert_eq!(theirs.aws_region.as_deref(), Some("us-west-2"));
    assert_eq!(theirs.event_name.as_deref(), Some("ObjectCreated:Put"));
    assert_eq!(
        theirs
            .event_time
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
        event.event_time
    );
    assert_eq!(
        theirs.principal_id.principal_id.as_deref(),
        Some("123456789012")
    );
    assert_eq!(
        theirs.request_parameters.source_ip_address.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        theirs.response_elements.get("x-amz-request-id"),
        Some(&event.response_elements.request_id)
    );
    assert_eq!(theirs.s3.schema_version.as_deref(), Some("1.0"));
    assert_eq!(theirs.s3.configuration_id.as_deref(), Some("thumbnails"));
    assert_eq!(
        theirs.s3.bucket.name.as_deref(),
        Some("amzn-s3-demo-bucket")
    );
    assert_eq!(
        theirs.s3.bucket.arn.as_deref(),
        Some("arn:aws:s3:::amzn-s3-demo-bucket")
    );
    assert_eq!(
        theirs
            .s3
            .bucket
            .owner_identity
            .as_ref()
            .and_then(|o| o.principal_id.as_deref()),
        Some("123456789012")
    );
    assert_eq!(
        theirs.s3.object.key.as_deref(),
        Some("photos/red+flower.jpg")
    );
    assert_eq!(theirs.s3.object.size, Some(6));
    assert_eq!(theirs.s3.object.e_tag.as_deref(), Some(info.etag.as_str()));
    assert_eq!(theirs.s3.object.version_id, None);
    assert_eq!(
        theirs.s3.object.sequencer.as_deref(),
        Some(event.s3.object.sequencer.as_str())
    );
    // And ours reads back.
    assert_eq!(serde_json::from_value::<S3Event>(ours).unwrap(), first);
    assert_eq!(event.key(), "photos/red flower.jpg");
}

#[test]
fn region_and_account_are_checked() {
    let err = NotificationConfig::default()
        .with_region("mars")
        .unwrap_err();
    assert_eq!(err.field, "region");
    let err = NotificationConfig::default()
        .with_account_id("42")
        .unwrap_err();
    assert_eq!(err.field, "account_id");
}
