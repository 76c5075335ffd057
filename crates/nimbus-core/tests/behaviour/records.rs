//! What destinations and dead-letter targets receive, in Lambda's shapes: the invocation record
//! field for field, and a dead letter's `RequestID`, `ErrorCode` and `ErrorMessage`.

use std::time::Duration;

use nimbus_core::util::aws::rfc3339_millis;
use nimbus_core::{
    handler_fn, Backoff, Condition, Context, DeadLetterMessage, Function, FunctionError,
    InvocationRecord, OutcomeKind, Runtime, RuntimeConfig,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The example invocation record of Lambda's documentation ("Capturing records of Lambda
/// asynchronous invocations"): an event that failed three processing attempts.
const LAMBDA_EXAMPLE: &str = r#"{
    "version": "1.0",
    "timestamp": "2019-11-14T18:16:05.568Z",
    "requestContext": {
        "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3
    },
    "requestPayload": {
        "ORDER_IDS": [
            "9e07af03-ce31-4ff3-xmpl-36dce652cb4f",
            "637de236-e7b2-464e-xmpl-baf57f86bb53",
            "a81ddca6-2c35-45c7-xmpl-c3a03a31ed15"
        ]
    },
    "responseContext": {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled"
    },
    "responsePayload": {
        "errorMessage": "RequestId: e4b46cbf-b738-xmpl-8880-a18cdf61200e Process exited before completing request"
    }
}"#;

type Records = mpsc::UnboundedReceiver<InvocationRecord<Value, Value>>;

/// A runtime in the example's region and account.
fn runtime() -> Runtime {
    Runtime::new(
        RuntimeConfig::default()
            .with_region("us-east-1")
            .with_account_id("123456789012"),
    )
    .unwrap()
}

/// `my-function`: fails every attempt for events with `"fail": true`, echoes the others.
fn my_function() -> Function<Value, Value> {
    Function::new(
        "my-function",
        handler_fn(|event: Value, ctx: Context| async move {
            if event.get("fail").is_some() {
                return Err(FunctionError::new(
                    "OrderError",
                    format!(
                        "RequestId: {} Process exited before completing request",
                        ctx.request_id()
                    ),
                ));
            }
            Ok::<_, FunctionError>(
                json!({ "orders": event["ORDER_IDS"].as_array().map_or(0, Vec::len) }),
            )
        }),
    )
    .with_retry_backoff(Backoff::fixed(Duration::from_secs(1)).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_failure_record_is_lambdas_example_with_our_values() {
    let rt = runtime();
    let (fail_tx, mut fail_rx): (_, Records) = mpsc::unbounded_channel();
    let handle = rt
        .register(my_function().with_on_failure(fail_tx))
        .await
        .unwrap();
    let example: Value = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
    let mut event = example["requestPayload"].clone();
    event["fail"] = json!(true);
    let request_id = handle.invoke_async(event.clone()).unwrap();
    let record = fail_rx.recv().await.unwrap();
    let written = serde_json::to_value(&record).unwrap();

    // Lambda's example, with what differs in this run put in: the request id, the time, the
    // payload (ours carries the flag that makes it fail), and the error as our handler said it
    // (with its type, which Lambda writes for a handler's error, and no stack trace).
    let message = format!("RequestId: {request_id} Process exited before completing request");
    let mut expected = example;
    expected["timestamp"] = json!(rfc3339_millis(record.timestamp));
    expected["requestContext"]["requestId"] = json!(request_id.to_string());
    expected["requestPayload"] = event;
    expected["responsePayload"] = json!({
        "errorMessage": message,
        "errorType": "OrderError",
        "stackTrace": [],
    });
    assert_eq!(written, expected);
    assert_eq!(
        written["requestContext"]["functionArn"],
        format!("{}:$LATEST", handle.arn()),
        "the ARN comes from the handle's runtime"
    );
    let timestamp = written["timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        "2019-11-14T18:16:05.568Z".len(),
        "{timestamp}"
    );

    // Read back, it is the same record.
    let read: InvocationRecord<Value, Value> = serde_json::from_value(written).unwrap();
    assert_eq!(read.request_id, request_id);
    assert_eq!(&*read.function, "my-function");
    assert_eq!(&*read.function_arn, handle.arn());
    assert_eq!(read.condition, Condition::RetriesExhausted);
    assert_eq!(read.approximate_invoke_count, 3);
    assert_eq!(read.request, record.request);
    assert!(read.response.is_none());
    let error = read.error.unwrap();
    assert_eq!(
        (error.error_type.as_str(), error.message.as_str()),
        ("OrderError", message.as_str())
    );
    assert_eq!(error.kind, OutcomeKind::Error);
    assert_eq!(
        read.timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        record
            .timestamp
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_record_carries_the_output_and_no_function_error() {
    let rt = runtime();
    let (ok_tx, mut ok_rx): (_, Records) = mpsc::unbounded_channel();
    let handle = rt
        .register(my_function().with_on_success(ok_tx))
        .await
        .unwrap();
    let request_id = handle
        .invoke_async(json!({ "ORDER_IDS": ["a", "b"] }))
        .unwrap();
    let record = ok_rx.recv().await.unwrap();
    let written = serde_json::to_value(&record).unwrap();
    assert_eq!(
        written,
        json!({
            "version": "1.0",
            "timestamp": rfc3339_millis(record.timestamp),
            "requestContext": {
                "requestId": request_id.to_string(),
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST",
                "condition": "Success",
                "approximateInvokeCount": 1
            },
            "requestPayload": { "ORDER_IDS": ["a", "b"] },
            "responseContext": { "statusCode": 200, "executedVersion": "$LATEST" },
            "responsePayload": { "orders": 2 }
        })
    );
    let read: InvocationRecord<Value, Value> = serde_json::from_value(written).unwrap();
    assert_eq!(read.response, Some(json!({ "orders": 2 })));
    assert!(read.error.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_event_that_never_ran_has_the_throttle_status_and_no_payload() {
    let rt = runtime();
    let (fail_tx, mut fail_rx): (_, Records) = mpsc::unbounded_channel();
    let handle = rt
        .register(
            my_function()
                .with_max_concurrency(0)
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(json!({})).unwrap();
    let record = fail_rx.recv().await.unwrap();
    let written = serde_json::to_value(&record).unwrap();
    assert_eq!(
        written["requestContext"]["condition"],
        "ZeroReservedConcurrency"
    );
    assert_eq!(written["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(
        written["responseContext"],
        json!({ "statusCode": 429, "executedVersion": "$LATEST" })
    );
    assert!(written.get("responsePayload").is_none());
}

#[tokio::test(start_paused = true)]
async fn dead_letters_carry_lambdas_attributes() {
    let rt = runtime();
    let (dlq_tx, mut dlq_rx) = mpsc::unbounded_channel::<DeadLetterMessage<Value>>();
    let failing = rt
        .register(
            my_function()
                .with_max_retries(0)
                .with_dead_letter(dlq_tx.clone()),
        )
        .await
        .unwrap();
    let request_id = failing.invoke_async(json!({ "fail": true })).unwrap();
    let letter = dlq_rx.recv().await.unwrap();
    assert_eq!(
        letter.event,
        json!({ "fail": true }),
        "the event is the body"
    );
    assert_eq!(letter.attributes.request_id, request_id);
    assert_eq!(letter.attributes.error_code, 200);
    assert_eq!(
        letter.attributes.error_message,
        format!("RequestId: {request_id} Process exited before completing request")
    );
    assert_eq!(
        serde_json::to_value(&letter.attributes).unwrap(),
        json!({
            "RequestID": request_id.to_string(),
            "ErrorCode": 200,
            "ErrorMessage": letter.attributes.error_message,
        })
    );

    let never = rt
        .register(
            Function::new(
                "never",
                handler_fn(
                    |event: Value, _ctx: Context| async move { Ok::<_, FunctionError>(event) },
                ),
            )
            .with_max_concurrency(0)
            .with_dead_letter(dlq_tx),
        )
        .await
        .unwrap();
    let request_id = never.invoke_async(json!(7)).unwrap();
    let letter = dlq_rx.recv().await.unwrap();
    assert_eq!(
        (letter.event, letter.attributes.request_id),
        (json!(7), request_id)
    );
    assert_eq!(letter.attributes.error_code, 429, "it never ran");
    assert!(letter
        .attributes
        .error_message
        .contains("reserved concurrency is 0"));
}
