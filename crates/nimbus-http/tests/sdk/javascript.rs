//! `@aws-sdk/client-lambda` 3.x (the AWS SDK for JavaScript v3) against the Invoke API, with
//! only `AWS_ENDPOINT_URL_LAMBDA` set: sync with the log tail, a function error, `Event`, and a
//! 404 and a 429 as the modelled exceptions.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use crate::support::{javascript, node_sdk, serve, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_invokes_and_gets_the_modelled_exceptions() {
    let Some(sdk) = node_sdk() else { return };
    let runtime = Runtime::default();
    let name = unique("js");
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    runtime
        .register(
            Function::new(
                &name,
                handler_fn(move |event: Value, _ctx: Context| {
                    let _ = started_tx.send(event.clone());
                    let gate = Arc::clone(&gate);
                    async move {
                        if event.get("hold").is_some() {
                            gate.notified().await;
                        }
                        match event.get("fail") {
                            Some(_) => Err(FunctionError::new("OrderError", "bad order")),
                            None => Ok(json!({"echo": event})),
                        }
                    }
                }),
            )
            .with_max_concurrency(1),
        )
        .await
        .unwrap();
    let serving = serve(&runtime).await;

    let out = javascript(
        &sdk,
        &serving,
        json!({"function": name, "payload": r#"{"n": 1}"#, "log_type": "Tail"}),
    )
    .await;
    assert_eq!(out["StatusCode"], 200, "{out}");
    assert_eq!(out["ExecutedVersion"], "$LATEST");
    assert_eq!(out["Payload"], r#"{"echo":{"n":1}}"#);
    assert!(out["Log"].as_str().unwrap().contains("REPORT RequestId:"));
    assert_eq!(started.recv().await.unwrap(), json!({"n": 1}));

    let out = javascript(
        &sdk,
        &serving,
        json!({"function": name, "payload": r#"{"fail": true}"#}),
    )
    .await;
    assert_eq!(out["FunctionError"], "Unhandled", "{out}");
    started.recv().await.unwrap();

    let out = javascript(
        &sdk,
        &serving,
        json!({"function": name, "invocation_type": "Event", "payload": r#"{"n": 2}"#}),
    )
    .await;
    assert_eq!(out["StatusCode"], 202, "{out}");
    assert_eq!(started.recv().await.unwrap(), json!({"n": 2}));

    let out = javascript(&sdk, &serving, json!({"function": unique("missing")})).await;
    assert_eq!(out["exception"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["status"], 404);

    // Its only instance held: the next invoke is throttled.
    let held = {
        let runtime = runtime.clone();
        let name = name.clone();
        tokio::spawn(async move { runtime.invoke_json(&name, json!({"hold": 1})).await })
    };
    started.recv().await.unwrap();
    let out = javascript(&sdk, &serving, json!({"function": name, "max_attempts": 1})).await;
    assert_eq!(out["exception"], "TooManyRequestsException", "{out}");
    assert_eq!(
        out["reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    release.notify_one();
    held.await.unwrap().unwrap();

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
