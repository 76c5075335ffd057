//! Finding the real clients and the fixture functions, and small helpers on processes.

use std::path::PathBuf;
use std::time::Duration;

use nimbus_core::{Function, FunctionHandle, Runtime};
use nimbus_process::{LogTails, ProcessBackend, ProcessConfig};
use serde_json::Value;

/// The real runtime interface clients the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    /// A binary built with the `lambda_runtime` crate (this package's `lambda-fixture`).
    Rust,
    /// Python's `awslambdaric`, from PyPI.
    Python,
    /// Node.js's `aws-lambda-ric`, from npm.
    Node,
    /// A `bootstrap` shell script speaking the API with `curl`.
    Shell,
}

impl Client {
    /// The name the fixture reports as `lang`.
    pub(crate) fn lang(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Node => "node",
            Self::Shell => "shell",
        }
    }

    /// The configuration that runs this client's fixture function, or `None` (after saying
    /// why) when the client is not installed and the run does not require it.
    pub(crate) fn config(self) -> Option<ProcessConfig> {
        let fixtures = fixtures();
        let config = match self {
            Self::Rust => ProcessConfig::new(env!("CARGO_BIN_EXE_lambda-fixture")),
            Self::Shell => ProcessConfig::new(fixtures.join("shell/bootstrap"))
                .with_working_dir(fixtures.join("shell")),
            Self::Python => {
                let python = clients_dir().join("venv/bin/python");
                if !installed(self, &python) {
                    return None;
                }
                ProcessConfig::new(python)
                    // No bytecode beside the fixture: tests leave nothing behind.
                    .with_env("PYTHONDONTWRITEBYTECODE", "1")
                    .with_args(["-m", "awslambdaric"])
                    .with_handler("app.handler")
                    .with_handler_as_argument()
                    .with_working_dir(fixtures.join("python"))
            }
            Self::Node => {
                let ric = clients_dir().join("node/node_modules/.bin/aws-lambda-ric");
                if !installed(self, &ric) {
                    return None;
                }
                ProcessConfig::new(ric)
                    .with_handler("app.handler")
                    .with_handler_as_argument()
                    .with_working_dir(fixtures.join("node"))
            }
        };
        Some(config)
    }
}

/// Where `.ci/clients` installs the Python and Node.js clients.
pub(crate) fn clients_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIMBUS_CLIENTS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/nimbus/clients")
}

/// The fixture functions' folder.
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn installed(client: Client, path: &std::path::Path) -> bool {
    if path.exists() {
        return true;
    }
    let message = format!(
        "the {client:?} client is not installed at {} (run `.ci/clients`)",
        path.display()
    );
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// A registered process function, with its log tails.
pub(crate) struct Registered {
    pub(crate) handle: FunctionHandle<Value, Value>,
    pub(crate) logs: LogTails,
}

/// Registers `config` as function `name` with `timeout`, after `adjust`.
pub(crate) async fn register(
    runtime: &Runtime,
    name: &str,
    config: ProcessConfig,
    timeout: Duration,
    adjust: impl FnOnce(Function<Value, Value>) -> Function<Value, Value>,
) -> Registered {
    let backend = ProcessBackend::<Value, Value>::new(config).expect("a valid configuration");
    let logs = backend.log_tails();
    let function = adjust(backend.into_function(name).with_timeout(timeout));
    let handle = runtime.register(function).await.expect("registered");
    Registered { handle, logs }
}

/// The process id an answer of the fixtures carries.
pub(crate) fn pid_of(answer: &serde_json::Value) -> u64 {
    answer["pid"]
        .as_u64()
        .expect("the answer carries the process id")
}

/// Whether process `pid` still exists (a zombie counts: it was not reaped).
pub(crate) fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until process `pid` is gone. The process is not this test's to wait on (the runtime
/// reaps it), so its `/proc` entry is watched, for at most `limit`.
pub(crate) async fn gone_within(pid: u64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// A function name unique to this test run.
pub(crate) fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}
