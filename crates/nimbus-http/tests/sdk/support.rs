//! Finding the installed clients, serving a runtime on a free port, running the clients.

use std::path::PathBuf;
use std::process::Output;

use std::sync::Arc;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_http::{HttpConfig, Server, Serving};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// Where `.ci/clients` installs boto3 (`venv`) and the AWS CLI (`cli`).
fn clients_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIMBUS_CLIENTS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/nimbus/clients")
}

/// `path` if it exists; otherwise fails under `NIMBUS_REQUIRE_SERVICES=1`, or says loudly that
/// the test is skipped.
fn installed(what: &str, path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{what} is not installed at {}: run .ci/clients first",
        path.display()
    );
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// The venv's Python with boto3.
pub(crate) fn python() -> Option<PathBuf> {
    installed("boto3", clients_dir().join("venv/bin/python"))
}

/// The AWS CLI v1.
pub(crate) fn aws_cli() -> Option<PathBuf> {
    installed("the AWS CLI", clients_dir().join("cli/bin/aws"))
}

/// The node project with `@aws-sdk/client-lambda`.
pub(crate) fn node_sdk() -> Option<PathBuf> {
    let modules = clients_dir().join("node/node_modules");
    installed(
        "@aws-sdk/client-lambda",
        modules.join("@aws-sdk/client-lambda"),
    )
    .map(|_| modules)
}

/// Runs the JavaScript SDK with one command; its JSON result.
pub(crate) async fn javascript(modules: &PathBuf, serving: &Serving, command: Value) -> Value {
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/drivers/lambda_client.cjs"
    );
    let output = tokio::process::Command::new("node")
        .arg(driver)
        .arg(command.to_string())
        .envs(client_env(serving))
        .env("NODE_PATH", modules)
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .expect("node runs");
    parse(&output, &command)
}

/// Serves `runtime` on a free loopback port.
pub(crate) async fn serve(runtime: &Runtime) -> Serving {
    serve_with(runtime, HttpConfig::default()).await
}

/// Serves `runtime` on a free loopback port, with `config` otherwise.
pub(crate) async fn serve_with(runtime: &Runtime, config: HttpConfig) -> Serving {
    Server::new(runtime.clone())
        .with_config(config.with_bind("127.0.0.1:0".parse().unwrap()))
        .bind()
        .await
        .expect("server starts")
}

/// The environment of an unmodified client: the endpoint, dummy credentials and a region.
pub(crate) fn client_env(serving: &Serving) -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_ENDPOINT_URL_LAMBDA",
            format!("http://{}", serving.local_addr()),
        ),
        ("AWS_ACCESS_KEY_ID", "nimbus-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "nimbus-test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        // No shared config or credentials of the machine's user leak in.
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

/// Runs boto3 with one command; its JSON result.
pub(crate) async fn boto3(python: &PathBuf, serving: &Serving, command: Value) -> Value {
    let driver = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/drivers/lambda_client.py"
    );
    let output = tokio::process::Command::new(python)
        .arg(driver)
        .arg(command.to_string())
        .envs(client_env(serving))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("python runs");
    parse(&output, &command)
}

fn parse(output: &Output, command: &Value) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{command}: {e}: {stdout}"))
}

/// Runs the AWS CLI with `args`: its output. One attempt per call: a 429 is reported at once
/// rather than after the CLI's five.
pub(crate) async fn aws(cli: &PathBuf, serving: &Serving, args: &[&str]) -> Output {
    tokio::process::Command::new(cli)
        .args(args)
        .envs(client_env(serving))
        .env("AWS_RETRY_MODE", "standard")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("the AWS CLI runs")
}

/// A name unique to this process and call, so that tests never share a function.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A function the tests watch: it reports every event it gets; `{"fail": ..}` fails it with
/// `OrderError`, `{"hold": ..}` keeps it running until released; otherwise it answers
/// `{"echo": event}`.
pub(crate) struct Probe {
    pub(crate) events: mpsc::UnboundedReceiver<Value>,
    release: Arc<Notify>,
}

impl Probe {
    /// Registers the probe as `name`, with one instance at most when `single`.
    pub(crate) async fn register(runtime: &Runtime, name: &str, single: bool) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let gate = Arc::clone(&release);
        let mut function = Function::new(
            name,
            handler_fn(move |event: Value, _ctx: Context| {
                let _ = events_tx.send(event.clone());
                let gate = Arc::clone(&gate);
                async move {
                    if event.get("hold").is_some() {
                        gate.notified().await;
                    }
                    match event.get("fail") {
                        Some(_) => Err(FunctionError::new("OrderError", "bad order")),
                        None => Ok(json!({ "echo": event })),
                    }
                }
            }),
        );
        if single {
            function = function.with_max_concurrency(1);
        }
        runtime.register(function).await.unwrap();
        Self { events, release }
    }

    /// Starts an invocation that holds the function's only instance; resolves once it runs.
    pub(crate) async fn hold(
        &mut self,
        runtime: &Runtime,
        name: &str,
    ) -> tokio::task::JoinHandle<Result<Value, nimbus_core::CallError>> {
        let held = {
            let runtime = runtime.clone();
            let name = name.to_owned();
            tokio::spawn(async move { runtime.invoke_json(&name, json!({"hold": true})).await })
        };
        self.events.recv().await.unwrap();
        held
    }

    /// Lets the held invocation finish.
    pub(crate) fn release(&self) {
        self.release.notify_one();
    }
}
