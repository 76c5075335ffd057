//! The same scenarios for every real client: sync and async invokes, a queue mapping, a function
//! error, a timeout, a crash, an init failure, the context headers and the captured log.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    ClientApplication, ClientContext, CognitoIdentity, Condition, InitFailure, InvokeError,
    InvokeOptions, Runtime,
};
use nimbus_process::ProcessBackend;
use nimbus_sources::{
    BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig,
};
use serde_json::json;

use crate::support::{gone_within, pid_of, register, unique, Client};

const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn sync_invokes_reuse_a_warm_instance(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique(&format!("echo-{}", client.lang())),
        config,
        TIMEOUT,
        |f| f,
    )
    .await;
    let first = f
        .handle
        .invoke(json!({"op": "echo", "n": 1}))
        .await
        .unwrap();
    let second = f
        .handle
        .invoke(json!({"op": "echo", "n": 2}))
        .await
        .unwrap();
    assert_eq!(first["lang"], client.lang());
    assert_eq!(first["event"], json!({"op": "echo", "n": 1}));
    assert_eq!(second["event"]["n"], 2);
    assert_eq!(
        pid_of(&first),
        pid_of(&second),
        "the warm instance served both"
    );
    assert_eq!(
        (first["count"].as_u64(), second["count"].as_u64()),
        (Some(1), Some(2))
    );
    let metrics = f.handle.metrics();
    assert_eq!((metrics.cold_starts, metrics.successes), (1, 2));
    assert!(
        f.handle.usage().init_duration > Duration::ZERO,
        "init is measured and billed"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn a_function_error_is_typed_and_keeps_the_instance(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique(&format!("fail-{}", client.lang())),
        config,
        TIMEOUT,
        |f| f,
    )
    .await;
    let before = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    match f.handle.invoke(json!({"op": "fail"})).await {
        Err(InvokeError::Function(error)) => {
            assert_eq!(error.error_type(), "OrderError");
            assert_eq!(error.message(), "bad order");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let after = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    assert_eq!(
        pid_of(&before),
        pid_of(&after),
        "a function error does not discard the instance"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn a_timeout_kills_the_process(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique(&format!("slow-{}", client.lang())),
        config,
        Duration::from_secs(2),
        |f| f.with_max_concurrency(1),
    )
    .await;
    let pid = pid_of(&f.handle.invoke(json!({"op": "echo"})).await.unwrap());
    let outcome = f.handle.invoke(json!({"op": "sleep", "ms": 60_000})).await;
    match outcome {
        Err(InvokeError::Timeout(after)) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        gone_within(pid, Duration::from_secs(5)).await,
        "process {pid} outlived its timeout"
    );
    let next = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    assert_ne!(
        pid_of(&next),
        pid,
        "a new instance serves after the timeout"
    );
    assert_eq!(f.handle.metrics().cold_starts, 2);
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn a_crash_discards_the_instance(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique(&format!("crash-{}", client.lang())),
        config,
        TIMEOUT,
        |f| f,
    )
    .await;
    let pid = pid_of(&f.handle.invoke(json!({"op": "echo"})).await.unwrap());
    match f.handle.invoke(json!({"op": "crash"})).await {
        Err(error @ InvokeError::Crashed(_)) => {
            assert_eq!(error.error_type(), "Runtime.ExitError");
            assert!(error.to_string().contains("exit status 3"), "{error}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    let next = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    assert_ne!(pid_of(&next), pid);
    assert_eq!(next["count"], 1, "a fresh process");
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn an_init_failure_is_typed(client: Client, expected_type: &str) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let config = config.with_env("FIXTURE_FAIL_INIT", "1");
    let f = register(
        &runtime,
        &unique(&format!("init-{}", client.lang())),
        config,
        TIMEOUT,
        |f| f,
    )
    .await;
    match f.handle.invoke(json!({"op": "echo"})).await {
        Err(InvokeError::Init(InitFailure::Error {
            error_type,
            message,
        })) => {
            assert_eq!(error_type, expected_type, "{message}");
        }
        other => panic!("expected an init failure, got {other:?}"),
    }
    assert_eq!(f.handle.metrics().init_failures, 1);
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn async_invokes_reach_their_destinations(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let (successes, mut succeeded) = tokio::sync::mpsc::unbounded_channel();
    let (failures, mut failed) = tokio::sync::mpsc::unbounded_channel();
    let f = register(
        &runtime,
        &unique(&format!("async-{}", client.lang())),
        config,
        TIMEOUT,
        |f| {
            f.with_max_retries(0)
                .with_on_success(successes)
                .with_on_failure(failures)
        },
    )
    .await;
    let ok_id = f
        .handle
        .invoke_async(json!({"op": "echo", "n": 7}))
        .unwrap();
    let fail_id = f.handle.invoke_async(json!({"op": "fail"})).unwrap();
    let success = succeeded.recv().await.unwrap();
    assert_eq!(success.request_id, ok_id);
    assert_eq!(success.condition, Condition::Success);
    assert_eq!(success.response.as_ref().unwrap()["event"]["n"], 7);
    let failure = failed.recv().await.unwrap();
    assert_eq!(failure.request_id, fail_id);
    assert_eq!(failure.error.as_ref().unwrap().error_type, "OrderError");
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn a_queue_mapping_feeds_the_process(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let backend = ProcessBackend::<QueueBatch, BatchResponse>::new(config).unwrap();
    let name = unique(&format!("queue-{}", client.lang()));
    let handle = runtime
        .register(backend.into_function(&name).with_timeout(TIMEOUT))
        .await
        .unwrap();
    let queue = Arc::new(InMemoryQueue::new(QueueConfig::default()).unwrap());
    for n in 0..25 {
        queue
            .send(json!({"op": "echo", "n": n}).to_string())
            .unwrap();
    }
    let mapping = QueueMapping::builder(
        queue.clone(),
        handle.clone(),
        QueueMappingConfig::new(&name).with_batch_size(10),
    )
    .attach(&runtime)
    .start()
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), mapping.drained())
        .await
        .expect("the queue drains")
        .expect("the mapping runs");
    assert!(queue.is_empty());
    assert_eq!(mapping.metrics().deleted, 25);
    assert!(handle.metrics().successes >= 3, "batches of at most 10");
    mapping.stop(Duration::from_secs(5)).await;
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn the_context_reaches_the_runtime(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let name = unique(&format!("ctx-{}", client.lang()));
    let f = register(&runtime, &name, config, TIMEOUT, |f| f.with_memory_mb(256)).await;
    let client_context = ClientContext {
        client: ClientApplication {
            installation_id: "install-1".into(),
            app_title: "orders".into(),
            app_version_name: "1.0".into(),
            app_version_code: "1".into(),
            app_package_name: "com.example".into(),
        },
        custom: [("tenant".to_owned(), "acme".to_owned())].into(),
        environment: [("platform".to_owned(), "linux".to_owned())].into(),
    };
    let options = InvokeOptions::default()
        .with_trace_id("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
        .with_client_context(client_context)
        .with_identity(CognitoIdentity {
            identity_id: "us-east-1:id".into(),
            identity_pool_id: "us-east-1:pool".into(),
        });
    let invocation = f
        .handle
        .invoke_with(json!({"op": "context"}), options)
        .await;
    let answer = invocation.result.unwrap();
    let report = invocation.report.unwrap();
    let ctx = &answer["context"];
    assert_eq!(ctx["request_id"], report.request_id.to_string());
    assert_eq!(ctx["function_arn"], f.handle.arn());
    assert_eq!(ctx["function_name"], name.as_str());
    assert_eq!(
        ctx["memory_limit_in_mb"].to_string().trim_matches('"'),
        "256"
    );
    assert_eq!(ctx["function_version"], "$LATEST");
    assert_eq!(ctx["log_group_name"], format!("/aws/lambda/{name}"));
    assert!(ctx["log_stream_name"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let remaining = ctx["remaining_ms"].as_u64().unwrap();
    assert!(
        remaining > 0 && remaining <= 5_000,
        "deadline in epoch ms: {remaining}"
    );
    assert_eq!(
        ctx["trace_id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    let text = ctx.to_string();
    for expected in [
        "install-1",
        "acme",
        "linux",
        "us-east-1:id",
        "us-east-1:pool",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    runtime.shutdown(Duration::from_secs(5)).await;
}

pub(crate) async fn the_log_is_captured_per_invocation(client: Client) {
    let Some(config) = client.config() else {
        return;
    };
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique(&format!("log-{}", client.lang())),
        config,
        TIMEOUT,
        |f| f,
    )
    .await;
    let invocation = f
        .handle
        .invoke_with(json!({"op": "print"}), InvokeOptions::default())
        .await;
    invocation.result.unwrap();
    let id = invocation.report.unwrap().request_id;
    let tail = f.logs.get(id).expect("the invocation's log is kept");
    let lang = client.lang();
    let start = tail
        .find(&format!("START RequestId: {id} Version: $LATEST"))
        .expect(&tail);
    let out = tail.find(&format!("hello stdout {lang}")).expect(&tail);
    let err = tail.find(&format!("hello stderr {lang}")).expect(&tail);
    let end = tail.find(&format!("END RequestId: {id}")).expect(&tail);
    let report = tail
        .find(&format!("REPORT RequestId: {id}\tDuration: "))
        .expect(&tail);
    assert!(
        start < out && start < err && out.max(err) < end && end < report,
        "{tail}"
    );
    assert!(
        tail.contains("Init Duration: "),
        "a cold start reports its init: {tail}"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}
