//! `@aws-sdk/client-lambda` 3.x (the AWS SDK for JavaScript v3) against the Invoke API, with
//! only `AWS_ENDPOINT_URL_LAMBDA` set: sync with the log tail, a function error, `Event`, and a
//! 404 and a 429 as the modelled exceptions.

use std::time::Duration;

use nimbus_core::Runtime;
use serde_json::json;

use crate::support::{javascript, node_sdk, serve, unique, Probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_invokes_and_gets_the_modelled_exceptions() {
    let Some(sdk) = node_sdk() else { return };
    let runtime = Runtime::default();
    let name = unique("js");
    let mut probe = Probe::register(&runtime, &name, true).await;
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
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 1}));

    let out = javascript(
        &sdk,
        &serving,
        json!({"function": name, "payload": r#"{"fail": true}"#}),
    )
    .await;
    assert_eq!(out["FunctionError"], "Unhandled", "{out}");
    probe.events.recv().await.unwrap();

    let out = javascript(
        &sdk,
        &serving,
        json!({"function": name, "invocation_type": "Event", "payload": r#"{"n": 2}"#}),
    )
    .await;
    assert_eq!(out["StatusCode"], 202, "{out}");
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 2}));

    let out = javascript(&sdk, &serving, json!({"function": unique("missing")})).await;
    assert_eq!(out["exception"], "ResourceNotFoundException", "{out}");
    assert_eq!(out["status"], 404);

    // Its only instance held: the next invoke is throttled.
    let held = probe.hold(&runtime, &name).await;
    let out = javascript(&sdk, &serving, json!({"function": name, "max_attempts": 1})).await;
    assert_eq!(out["exception"], "TooManyRequestsException", "{out}");
    assert_eq!(
        out["reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    probe.release();
    held.await.unwrap().unwrap();

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
