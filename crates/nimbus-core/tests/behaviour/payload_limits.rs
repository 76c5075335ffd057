//! Payload limits of calls by name: Lambda's 6 MB each way for sync, 1 MB for async, counted
//! on the compact JSON; typed calls are not limited.

use std::time::Duration;

use nimbus_core::{
    handler_fn, AsyncCallError, CallError, Context, Function, FunctionError, InvokeError,
    OutcomeKind, PayloadLimits, RejectReason, Runtime, RuntimeConfig,
};
use serde_json::{json, Value};

/// A runtime with these limits, a function `echo` that answers a string of the length it is
/// asked for (a JSON string of `n` characters is `n + 2` bytes), and a function `caller` that
/// sends `echo` an event of the size it is given.
async fn runtime_with(limits: PayloadLimits) -> Runtime {
    let rt = Runtime::new(RuntimeConfig::default().with_payload_limits(limits)).unwrap();
    rt.register(Function::new(
        "echo",
        handler_fn(|event: Value, _ctx: Context| async move {
            let n = event.get("answer").and_then(Value::as_u64).unwrap_or(0) as usize;
            Ok::<_, FunctionError>("a".repeat(n))
        }),
    ))
    .await
    .unwrap();
    rt.register(Function::new(
        "caller",
        handler_fn(|bytes: usize, ctx: Context| async move {
            match ctx.invoke::<_, Value>("echo", &event_of(bytes)).await {
                Ok(_) => Ok::<_, FunctionError>("ok".to_owned()),
                Err(CallError::PayloadTooLarge { size, limit }) => Ok(format!("{size}>{limit}")),
                Err(other) => Err(FunctionError::from_error(other)),
            }
        }),
    ))
    .await
    .unwrap();
    rt
}

/// An event of exactly `bytes` bytes of JSON: `{"pad":"aaa…"}`.
fn event_of(bytes: usize) -> Value {
    let overhead = r#"{"pad":""}"#.len();
    let event = json!({ "pad": "a".repeat(bytes - overhead) });
    assert_eq!(serde_json::to_vec(&event).unwrap().len(), bytes);
    event
}

#[tokio::test(start_paused = true)]
async fn sync_requests_up_to_the_limit_pass_and_one_byte_more_is_refused() {
    let rt = runtime_with(PayloadLimits::default().with_sync_request(100)).await;
    assert_eq!(rt.invoke_json("echo", event_of(100)).await.unwrap(), "");
    match rt.invoke_json("echo", event_of(101)).await {
        Err(CallError::PayloadTooLarge { size, limit }) => assert_eq!((size, limit), (101, 100)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // The function was not invoked.
    assert_eq!(rt.metrics("echo").unwrap().invocations, 1);
    // A handler's call by name is limited the same way.
    assert_eq!(rt.invoke_json("caller", json!(100)).await.unwrap(), "ok");
    assert_eq!(
        rt.invoke_json("caller", json!(101)).await.unwrap(),
        "101>100"
    );
}

#[tokio::test(start_paused = true)]
async fn sync_responses_up_to_the_limit_pass_and_one_byte_more_is_a_function_error() {
    let rt = runtime_with(PayloadLimits::default().with_sync_response(100)).await;
    let ok = rt.invoke_json("echo", json!({"answer": 98})).await.unwrap();
    assert_eq!(ok.as_str().unwrap().len(), 98);
    match rt.invoke_json("echo", json!({"answer": 99})).await {
        Err(CallError::Invoke(
            error @ InvokeError::ResponseTooLarge {
                size: 101,
                limit: 100,
            },
        )) => {
            assert_eq!(error.error_type(), "Function.ResponseSizeTooLarge");
            assert_eq!(error.kind(), OutcomeKind::Error);
        }
        other => panic!("expected ResponseTooLarge, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn async_requests_up_to_the_limit_are_queued_and_one_byte_more_is_handed_back() {
    let rt = runtime_with(PayloadLimits::default().with_async_request(100)).await;
    rt.invoke_async_json("echo", event_of(100)).unwrap();
    match rt.invoke_async_json("echo", event_of(101)) {
        Err(AsyncCallError::Rejected(rejected)) => {
            assert_eq!(
                rejected.reason,
                RejectReason::TooLarge {
                    size: 101,
                    limit: 100
                }
            );
            assert_eq!(rejected.event, event_of(101));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(rt.metrics("echo").unwrap().invocations, 1);
}

#[tokio::test(start_paused = true)]
async fn lambdas_limits_are_the_defaults() {
    let limits = PayloadLimits::default();
    assert_eq!(
        (
            limits.sync_request,
            limits.sync_response,
            limits.async_request
        ),
        (6_291_456, 6_291_456, 1_048_576)
    );
    let rt = runtime_with(limits).await;
    rt.invoke_json("echo", event_of(6_291_456)).await.unwrap();
    assert!(matches!(
        rt.invoke_json("echo", event_of(6_291_457)).await,
        Err(CallError::PayloadTooLarge {
            size: 6_291_457,
            limit: 6_291_456
        })
    ));
    rt.invoke_async_json("echo", event_of(1_048_576)).unwrap();
    assert!(rt.invoke_async_json("echo", event_of(1_048_577)).is_err());
    rt.invoke_json("echo", json!({"answer": 6_291_454}))
        .await
        .unwrap();
    assert!(matches!(
        rt.invoke_json("echo", json!({"answer": 6_291_455})).await,
        Err(CallError::Invoke(InvokeError::ResponseTooLarge { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn typed_calls_are_not_limited() {
    let rt = runtime_with(PayloadLimits::default().with_sync_request(10)).await;
    let echo = rt.function::<Value, String>("echo").unwrap();
    assert!(echo.invoke(event_of(100)).await.is_ok());
}

#[test]
fn each_limit_is_validated() {
    for (limits, field) in [
        (
            PayloadLimits::default().with_sync_request(0),
            "payload_limits.sync_request",
        ),
        (
            PayloadLimits::default().with_sync_response(0),
            "payload_limits.sync_response",
        ),
        (
            PayloadLimits::default().with_async_request((1 << 30) + 1),
            "payload_limits.async_request",
        ),
    ] {
        let error = Runtime::new(RuntimeConfig::default().with_payload_limits(limits)).unwrap_err();
        assert_eq!(error.field, field);
        assert_eq!(error.allowed, "1..=1073741824 bytes");
    }
}
