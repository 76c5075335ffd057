//! The AWS CLI v1 (1.46) against the Invoke API: `aws lambda invoke` with only
//! `AWS_ENDPOINT_URL_LAMBDA` set, sync, `Event` and `DryRun`, `--log-type Tail`, a function
//! error (exit 0, `FunctionError`), an unknown function and a throttle (exit 255, the modelled
//! exception).

use std::time::Duration;

use base64::Engine as _;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::{json, Value};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use crate::support::{aws, aws_cli, serve, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_invokes_sync_async_and_dry_run_and_tails_the_log() {
    let Some(cli) = aws_cli() else { return };
    let runtime = Runtime::default();
    let name = unique("cli");
    let (done, mut handled) = mpsc::unbounded_channel();
    runtime
        .register(Function::new(
            &name,
            handler_fn(move |event: Value, _ctx: Context| {
                let _ = done.send(event.clone());
                async move {
                    match event.get("fail") {
                        Some(_) => Err(FunctionError::new("OrderError", "bad order")),
                        None => Ok(json!({"doubled": event["n"].as_i64().unwrap_or(0) * 2})),
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let serving = serve(&runtime).await;
    let dir = std::env::temp_dir().join(unique("nimbus-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("out.json");
    let out_path = out_file.to_str().unwrap();

    let out = aws(
        &cli,
        &serving,
        &[
            "lambda",
            "invoke",
            "--function-name",
            &name,
            "--payload",
            r#"{"n": 21}"#,
            "--log-type",
            "Tail",
            out_path,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["StatusCode"], 200);
    assert_eq!(printed["ExecutedVersion"], "$LATEST");
    let log = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(log)
        .unwrap()
        .contains("REPORT RequestId:"));
    let written: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(written, json!({"doubled": 42}));
    assert_eq!(handled.recv().await.unwrap(), json!({"n": 21}));

    let out = aws(
        &cli,
        &serving,
        &[
            "lambda",
            "invoke",
            "--function-name",
            &name,
            "--payload",
            r#"{"fail": 1}"#,
            out_path,
        ],
    )
    .await;
    assert!(out.status.success(), "a function error exits 0: {out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["FunctionError"], "Unhandled");
    let written: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(written["errorType"], "OrderError");
    handled.recv().await.unwrap();

    let out = aws(
        &cli,
        &serving,
        &[
            "lambda",
            "invoke",
            "--function-name",
            &name,
            "--invocation-type",
            "Event",
            "--payload",
            r#"{"n": 5}"#,
            out_path,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["StatusCode"], 202);
    assert_eq!(handled.recv().await.unwrap(), json!({"n": 5}));

    let out = aws(
        &cli,
        &serving,
        &[
            "lambda",
            "invoke",
            "--function-name",
            &name,
            "--invocation-type",
            "DryRun",
            out_path,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["StatusCode"], 204);

    let missing = unique("missing");
    let out = aws(
        &cli,
        &serving,
        &["lambda", "invoke", "--function-name", &missing, out_path],
    )
    .await;
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");

    std::fs::remove_dir_all(&dir).unwrap();
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
    assert!(
        handled.try_recv().is_err(),
        "the dry run and the 404 ran nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_invoke_is_too_many_requests_for_the_aws_cli() {
    let Some(cli) = aws_cli() else { return };
    let runtime = Runtime::default();
    let name = unique("cli-busy");
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    runtime
        .register(
            Function::new(
                &name,
                handler_fn(move |_: Value, _ctx: Context| {
                    let _ = started_tx.send(());
                    let gate = Arc::clone(&gate);
                    async move {
                        gate.notified().await;
                        Ok::<_, FunctionError>(Value::Null)
                    }
                }),
            )
            .with_max_concurrency(1),
        )
        .await
        .unwrap();
    let serving = serve(&runtime).await;
    let held = {
        let runtime = runtime.clone();
        let name = name.clone();
        tokio::spawn(async move { runtime.invoke_json(&name, json!({})).await })
    };
    started.recv().await.unwrap();
    let dir = std::env::temp_dir().join(unique("nimbus-cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("out.json");
    let out = aws(
        &cli,
        &serving,
        &[
            "lambda",
            "invoke",
            "--function-name",
            &name,
            out_file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TooManyRequestsException"), "{stderr}");
    release.notify_one();
    held.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
