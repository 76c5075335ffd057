//! The Runtime API's answers, as `curl` sees them from a custom runtime (`fixtures/protocol`):
//! 202 for an answer, 400 `InvalidRequestID` for an unknown or already-answered id, 403 for a
//! late `/init/error`, 404 off the API, 413 above 6 MiB + 100 bytes, and error reports whose only
//! type is the header.

use std::time::Duration;

use nimbus_core::{InvokeError, Runtime};
use nimbus_process::ProcessConfig;
use serde_json::json;

use crate::support::{fixtures, register, unique};

/// A scratch folder for the runtime's state, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn protocol_runtime(state: &Scratch) -> ProcessConfig {
    let dir = fixtures().join("protocol");
    ProcessConfig::new(dir.join("bootstrap"))
        .with_working_dir(dir)
        .with_env("STATE_DIR", state.0.to_string_lossy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_accepted_once_and_other_ids_refused() {
    let state = Scratch::new("protocol-ids");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-ids"),
        protocol_runtime(&state),
        Duration::from_secs(10),
        |f| f,
    )
    .await;
    let probe = f.handle.invoke(json!({"op": "probe"})).await.unwrap();
    assert_eq!(probe["bogus"], 400);
    assert_eq!(probe["bogus_body"]["errorType"], "InvalidRequestID");
    assert_eq!(probe["init"], 403, "init/error after init is refused");
    assert_eq!(probe["unknown"], 404);
    let report = f.handle.invoke(json!({"op": "report"})).await.unwrap();
    assert_eq!(report["first"], 202);
    assert_eq!(report["first_body"], json!({"status": "OK"}));
    assert_eq!(report["again"], 400, "an answered id is refused");
    assert_eq!(report["again_error"], 400);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_above_the_limit_is_refused_and_fails_the_invocation() {
    let state = Scratch::new("protocol-big");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-big"),
        protocol_runtime(&state),
        Duration::from_secs(10),
        |f| f,
    )
    .await;
    match f.handle.invoke(json!({"op": "big"})).await {
        Err(InvokeError::Function(error)) => {
            assert_eq!(error.error_type(), "Function.ResponseSizeTooLarge");
            assert!(
                error.message().contains("6291557 bytes"),
                "{}",
                error.message()
            );
        }
        other => panic!("expected Function.ResponseSizeTooLarge, got {other:?}"),
    }
    let report = f.handle.invoke(json!({"op": "report"})).await.unwrap();
    assert_eq!(report["big"], 413);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_reports_of_any_shape_become_function_errors() {
    let state = Scratch::new("protocol-errors");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-errors"),
        protocol_runtime(&state),
        Duration::from_secs(10),
        |f| f,
    )
    .await;
    match f.handle.invoke(json!({"op": "raw-error"})).await {
        Err(InvokeError::Function(error)) => {
            assert_eq!(error.error_type(), "Runtime.Unknown");
            assert_eq!(error.message(), "plain failure");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    match f.handle.invoke(json!({"op": "header-error"})).await {
        Err(InvokeError::Function(error)) => {
            assert_eq!(error.error_type(), "Function.CustomFault");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    // The instance answered both and still serves.
    let echo = f
        .handle
        .invoke(json!({"op": "echo", "n": 1}))
        .await
        .unwrap();
    assert_eq!(echo["n"], 1);
    assert_eq!(f.handle.metrics().cold_starts, 1);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_exits_after_answering_fails_no_later_event() {
    let state = Scratch::new("protocol-exit");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-exit"),
        protocol_runtime(&state),
        Duration::from_secs(10),
        |f| f,
    )
    .await;
    for n in 0..5 {
        // Answered, then the runtime exits: that invocation succeeded, and the next one must
        // not be handed to the dead instance.
        let answer = f
            .handle
            .invoke(json!({"op": "answer-then-exit", "n": n}))
            .await;
        assert_eq!(answer.unwrap()["n"], n, "invocation {n}");
    }
    let metrics = f.handle.metrics();
    assert_eq!(
        (metrics.successes, metrics.cold_starts),
        (5, 5),
        "{metrics:?}"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// The same through async invocation: the worker that ran an event waits for its instance's
/// runtime to be back in `/next` before it hands it the next one, and finds it dead instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_event_is_not_handed_to_a_runtime_that_exited_after_answering() {
    let state = Scratch::new("protocol-exit-async");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-exit-async"),
        protocol_runtime(&state),
        Duration::from_secs(10),
        // One worker, which runs the events one after another; a failure is not retried.
        |f| f.with_max_concurrency(1).with_max_retries(0),
    )
    .await;
    for n in 0..5 {
        f.handle
            .invoke_async(json!({"op": "answer-then-exit", "n": n}))
            .expect("queued");
    }
    f.handle.async_idle().await;
    let m = f.handle.async_metrics();
    assert_eq!((m.succeeded, m.failed, m.retries), (5, 0, 0), "{m:?}");
    assert_eq!(f.handle.metrics().cold_starts, 5);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_flooding_its_output_still_times_out_and_serves() {
    let state = Scratch::new("protocol-flood");
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("protocol-flood"),
        protocol_runtime(&state),
        Duration::from_secs(1),
        |f| f.with_max_concurrency(1),
    )
    .await;
    f.handle.invoke(json!({"op": "flood"})).await.unwrap();
    for n in 0..5 {
        let echo = f
            .handle
            .invoke(json!({"op": "echo", "n": n}))
            .await
            .unwrap();
        assert_eq!(echo["n"], n);
    }
    let started = tokio::time::Instant::now();
    let outcome = f.handle.invoke(json!({"op": "sleep"})).await;
    assert!(
        matches!(outcome, Err(InvokeError::Timeout(_))),
        "{outcome:?}"
    );
    // The deadline fired while the log was flooded (generously bounded: the machine is shared).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}
