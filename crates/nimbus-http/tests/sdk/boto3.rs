//! boto3 1.44 against the Invoke API: sync, async and dry-run invokes, function errors, the
//! log tail, the client context, the modelled exceptions, `ListFunctions` / `GetFunction`, and
//! a retry after a read timeout that does not run the function twice.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::{boto3, python, serve, unique, Probe};

/// A function that answers with the event, its request id and the client context's custom
/// values; `{"fail": "..."}` makes it fail with that type.
fn echo(name: &str) -> Function<Value, Value> {
    Function::new(
        name,
        handler_fn(|event: Value, ctx: Context| async move {
            if let Some(kind) = event.get("fail").and_then(Value::as_str) {
                return Err(FunctionError::new(kind.to_owned(), "the order is invalid"));
            }
            let custom = ctx.client_context().map(|c| json!(c.custom));
            Ok(json!({"got": event, "request_id": ctx.request_id().to_string(), "custom": custom}))
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_invokes_return_the_output_the_log_tail_and_the_client_context() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("echo");
    runtime.register(echo(&name)).await.unwrap();
    let serving = serve(&runtime).await;

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "payload": r#"{"order": 7}"#,
               "log_type": "Tail", "client_context": {"custom": {"tenant": "blue"}}}),
    )
    .await;
    assert_eq!(out["StatusCode"], 200);
    assert_eq!(out["ExecutedVersion"], "$LATEST");
    assert_eq!(out["FunctionError"], Value::Null);
    let payload: Value = serde_json::from_str(out["Payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload["got"], json!({"order": 7}));
    assert_eq!(payload["custom"], json!({"tenant": "blue"}));
    let request_id = payload["request_id"].as_str().unwrap();
    assert_eq!(
        out["RequestId"], request_id,
        "x-amzn-RequestId is the invocation's id"
    );
    let log = out["Log"].as_str().unwrap();
    assert!(
        log.starts_with(&format!("START RequestId: {request_id}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("REPORT RequestId: {request_id}")),
        "{log}"
    );

    // A qualified name, a partial ARN and a full ARN reach the same function.
    for function in [
        format!("{name}:$LATEST"),
        format!("000000000000:function:{name}"),
        format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"),
    ] {
        let out = boto3(
            &python,
            &serving,
            json!({"op": "invoke", "function": function}),
        )
        .await;
        assert_eq!(out["StatusCode"], 200, "{function}: {out}");
        let payload: Value = serde_json::from_str(out["Payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            payload["got"],
            json!({}),
            "an empty payload is an empty object"
        );
    }
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_a_200_with_the_error_and_unhandled() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("echo");
    runtime.register(echo(&name)).await.unwrap();
    let serving = serve(&runtime).await;

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "payload": r#"{"fail": "OrderError"}"#,
               "log_type": "Tail"}),
    )
    .await;
    assert_eq!(out["StatusCode"], 200);
    assert_eq!(out["FunctionError"], "Unhandled");
    let error: Value = serde_json::from_str(out["Payload"].as_str().unwrap()).unwrap();
    assert_eq!(error["errorType"], "OrderError");
    assert_eq!(error["errorMessage"], "the order is invalid");
    assert!(out["Log"].as_str().unwrap().contains("OrderError"));
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_invokes_are_queued_and_dry_runs_only_check() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("async");
    let (done, mut handled) = mpsc::unbounded_channel();
    runtime
        .register(Function::new(
            &name,
            handler_fn(move |event: Value, ctx: Context| {
                let _ = done.send((event, ctx.request_id().to_string()));
                async { Ok::<_, FunctionError>(Value::Null) }
            }),
        ))
        .await
        .unwrap();
    let serving = serve(&runtime).await;

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "invocation_type": "Event",
               "payload": r#"{"n": 1}"#}),
    )
    .await;
    assert_eq!(out["StatusCode"], 202);
    assert_eq!(out["Payload"], "");
    let (event, request_id) = handled.recv().await.unwrap();
    assert_eq!(event, json!({"n": 1}));
    assert_eq!(
        out["RequestId"], request_id,
        "202 names the async request id"
    );

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "invocation_type": "DryRun"}),
    )
    .await;
    assert_eq!(out["StatusCode"], 204);
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
    assert!(handled.try_recv().is_err(), "a dry run runs nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_throttled_and_bad_requests_raise_the_modelled_exceptions() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("busy");
    let mut probe = Probe::register(&runtime, &name, true).await;
    let serving = serve(&runtime).await;

    let missing = unique("missing");
    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": missing}),
    )
    .await;
    assert_eq!(out["exception"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["status"], 404);
    assert!(out["message"]
        .as_str()
        .unwrap()
        .ends_with(&format!("function:{missing}")));
    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "qualifier": "prod"}),
    )
    .await;
    assert_eq!(
        out["exception"], "ResourceNotFoundException",
        "only $LATEST exists"
    );

    // The only instance is busy: the next invoke is throttled by the reserved concurrency.
    let held = probe.hold(&runtime, &name).await;
    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "max_attempts": 1}),
    )
    .await;
    assert_eq!(out["exception"], "TooManyRequestsException", "{out}");
    assert_eq!(out["status"], 429);
    assert_eq!(
        out["reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    assert_eq!(out["retry_after"], "1");
    probe.release();
    held.await.unwrap().unwrap();

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "payload": "not json"}),
    )
    .await;
    assert_eq!(out["exception"], "InvalidRequestContentException", "{out}");
    assert_eq!(out["status"], 400);
    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "invocation_type": "Event",
               "payload_string_of": 1_100_000}),
    )
    .await;
    assert_eq!(
        out["exception"], "RequestTooLargeException",
        "async over 1 MB: {out}"
    );
    assert_eq!(out["status"], 413);
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_function_have_the_shapes_boto3_accepts() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let prefix = unique("listed");
    let names: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        runtime
            .register(echo(name).with_max_concurrency(4).with_memory_mb(256))
            .await
            .unwrap();
    }
    let serving = serve(&runtime).await;

    let out = boto3(&python, &serving, json!({"op": "list", "max_items": 2})).await;
    assert_eq!(out["names"], json!(names), "three functions over two pages");
    let out = boto3(
        &python,
        &serving,
        json!({"op": "get", "function": names[1]}),
    )
    .await;
    let config = &out["Configuration"];
    assert_eq!(config["FunctionName"], names[1]);
    assert_eq!(
        config["FunctionArn"],
        format!(
            "arn:aws:lambda:us-east-1:000000000000:function:{}",
            names[1]
        )
    );
    assert_eq!(config["MemorySize"], 256);
    assert_eq!(out["Concurrency"]["ReservedConcurrentExecutions"], 4);
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_read_timeout_attaches_instead_of_running_again() {
    let Some(python) = python() else { return };
    let runtime = Runtime::default();
    let name = unique("slow");
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    runtime
        .register(
            Function::new(
                &name,
                handler_fn(move |_: Value, _ctx: Context| {
                    let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        // Longer than the client's read timeout: boto3 gives up on the first
                        // attempt and sends the same invocation again.
                        tokio::time::sleep(Duration::from_millis(2500)).await;
                        Ok::<_, FunctionError>(json!({"run": run}))
                    }
                }),
            )
            .with_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let serving = serve(&runtime).await;

    let out = boto3(
        &python,
        &serving,
        json!({"op": "invoke", "function": name, "read_timeout": 1, "max_attempts": 3}),
    )
    .await;
    assert_eq!(out["StatusCode"], 200, "{out}");
    assert!(
        out["Attempts"].as_u64().unwrap() >= 1,
        "boto3 retried: {out}"
    );
    assert_eq!(out["Payload"], r#"{"run":1}"#);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the function ran once");
    assert!(serving.retry_cache().hits >= 1);
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
