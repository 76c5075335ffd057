//! The AWS CLI v1 (1.46) against the Invoke API: `aws lambda invoke` with only
//! `AWS_ENDPOINT_URL_LAMBDA` set, sync, `Event` and `DryRun`, `--log-type Tail`, a function
//! error (exit 0, `FunctionError`), an unknown function and a throttle (exit 255, the modelled
//! exception).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use nimbus_core::Runtime;
use nimbus_http::Serving;
use serde_json::{json, Value};

use crate::support::{aws, aws_cli, serve, unique, Probe};

/// A folder for the CLI's output file, removed when dropped.
struct OutDir(PathBuf);

impl OutDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("nimbus-cli"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("out.json")
    }

    fn written(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.file()).unwrap()).unwrap()
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `aws lambda invoke --function-name NAME ARGS.. OUT`: the output and, when it succeeded,
/// what it printed.
async fn invoke(
    cli: &Path,
    serving: &Serving,
    name: &str,
    args: &[&str],
    out: &OutDir,
) -> (Output, Value) {
    let file = out.file();
    let mut all = vec!["lambda", "invoke", "--function-name", name];
    all.extend_from_slice(args);
    all.push(file.to_str().unwrap());
    let output = aws(&cli.to_path_buf(), serving, &all).await;
    let printed = if output.status.success() {
        serde_json::from_slice(&output.stdout).unwrap()
    } else {
        Value::Null
    };
    (output, printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_invokes_sync_async_and_dry_run_and_tails_the_log() {
    let Some(cli) = aws_cli() else { return };
    let runtime = Runtime::default();
    let name = unique("cli");
    let mut probe = Probe::register(&runtime, &name, false).await;
    let serving = serve(&runtime).await;
    let out = OutDir::new();

    let args = ["--payload", r#"{"n": 21}"#, "--log-type", "Tail"];
    let (output, printed) = invoke(&cli, &serving, &name, &args, &out).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(printed["StatusCode"], 200);
    assert_eq!(printed["ExecutedVersion"], "$LATEST");
    let log = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(log)
        .unwrap()
        .contains("REPORT RequestId:"));
    assert_eq!(out.written(), json!({"echo": {"n": 21}}));
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 21}));

    let args = ["--payload", r#"{"fail": 1}"#];
    let (output, printed) = invoke(&cli, &serving, &name, &args, &out).await;
    assert!(
        output.status.success(),
        "a function error exits 0: {output:?}"
    );
    assert_eq!(printed["FunctionError"], "Unhandled");
    assert_eq!(out.written()["errorType"], "OrderError");
    probe.events.recv().await.unwrap();

    let args = ["--invocation-type", "Event", "--payload", r#"{"n": 5}"#];
    let (_, printed) = invoke(&cli, &serving, &name, &args, &out).await;
    assert_eq!(printed["StatusCode"], 202);
    assert_eq!(probe.events.recv().await.unwrap(), json!({"n": 5}));

    let args = ["--invocation-type", "DryRun"];
    let (_, printed) = invoke(&cli, &serving, &name, &args, &out).await;
    assert_eq!(printed["StatusCode"], 204);

    let (output, _) = invoke(&cli, &serving, &unique("missing"), &[], &out).await;
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
    assert!(
        probe.events.try_recv().is_err(),
        "the dry run and the 404 ran nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_invoke_is_too_many_requests_for_the_aws_cli() {
    let Some(cli) = aws_cli() else { return };
    let runtime = Runtime::default();
    let name = unique("cli-busy");
    let mut probe = Probe::register(&runtime, &name, true).await;
    let serving = serve(&runtime).await;
    let held = probe.hold(&runtime, &name).await;
    let out = OutDir::new();

    let (output, _) = invoke(&cli, &serving, &name, &[], &out).await;
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TooManyRequestsException"), "{stderr}");

    probe.release();
    held.await.unwrap().unwrap();
    serving.stop().await;
    runtime.shutdown(Duration::from_secs(1)).await;
}
