//! `/metrics` of a real server, scraped with `curl` and parsed by Python's `prometheus_client`
//! (its OpenMetrics parser, as strict as Prometheus): the numbers match what was invoked.
//!
//! Needs the venv `.ci/clients` installs; without it the test says `SKIPPED` and passes,
//! unless `NIMBUS_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_http::{HttpConfig, MappingSnapshot, Server};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

/// Where `.ci/clients` installs the Python client (as `nimbus-process-clients`' tests find it).
fn clients_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIMBUS_CLIENTS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/nimbus/clients")
}

/// Whether `path` exists; if not, fails under `NIMBUS_REQUIRE_SERVICES=1` and says
/// `SKIPPED` otherwise.
fn installed(what: &str, path: &Path) -> bool {
    if path.exists() {
        return true;
    }
    let message = format!(
        "{what} is not installed at {} (run `.ci/clients`)",
        path.display()
    );
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// Parses OpenMetrics text from stdin, prints its families and samples as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": family.name, "type": family.type, "unit": family.unit,
        "help": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples],
    })
json.dump(families, sys.stdout)
"#;

/// Runs `curl` with `args` off the runtime's threads; returns its stdout.
async fn curl(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30"])
            .args(&args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    })
    .await
    .expect("joined")
}

/// Invokes `function` through the Invoke API; returns the HTTP status.
async fn invoke(base: &str, function: &str, invocation_id: Option<&str>) -> u16 {
    let mut args = vec![
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-X".into(),
        "POST".into(),
        "-d".into(),
        "{}".into(),
    ];
    if let Some(id) = invocation_id {
        args.extend(["-H".into(), format!("amz-sdk-invocation-id: {id}")]);
    }
    args.push(format!(
        "{base}/2015-03-31/functions/{function}/invocations"
    ));
    curl(args).await.parse().expect("a status")
}

/// A parsed sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

struct Scrape {
    families: Vec<Value>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn family(&self, name: &str) -> &Value {
        self.families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k) == Some(&json!(v)))
            })
            .collect();
        assert_eq!(matching.len(), 1, "{name} {labels:?}: {matching:?}");
        matching[0].value
    }

    /// `(le, cumulative count)` of a histogram's buckets for `function`, in `le` order.
    fn buckets(&self, name: &str, function: &str) -> Vec<(f64, f64)> {
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("function") == Some(&json!(function)))
            .map(|s| {
                let le = s.labels["le"]
                    .as_str()
                    .expect("le")
                    .parse()
                    .expect("a bound");
                (le, s.value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// Scrapes `/metrics` and parses it with Python's `prometheus_client`.
async fn scrape(base: &str, python: &Path) -> Scrape {
    let response = curl(vec!["-i".into(), format!("{base}/metrics")]).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("headers, then the body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    let body = body.to_owned();
    let python = python.to_owned();
    let parsed = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), body.as_bytes())
            .expect("written");
        let out = child.wait_with_output().expect("python ends");
        assert!(
            out.status.success(),
            "prometheus_client refused the scrape: {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    })
    .await
    .expect("joined");
    let families: Vec<Value> = serde_json::from_slice(&parsed).expect("JSON");
    let samples = families
        .iter()
        .flat_map(|f| f["samples"].as_array().expect("samples").iter())
        .map(|s| Sample {
            name: s["name"].as_str().expect("name").to_owned(),
            labels: s["labels"].as_object().expect("labels").clone(),
            value: s["value"].as_f64().expect("value"),
        })
        .collect();
    Scrape { families, samples }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_parser_reads_what_was_invoked() {
    let python = clients_dir().join("venv/bin/python");
    if !installed("the Python client venv", &python) {
        return;
    }
    let runtime = Runtime::default();
    runtime
        .register(
            Function::new(
                "echo",
                handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
            )
            // Answers are kept for retries for the function's timeout: long enough for a slow
            // machine to scrape before they expire.
            .with_timeout(Duration::from_secs(300)),
        )
        .await
        .expect("registered");
    runtime
        .register(Function::new(
            "fail",
            handler_fn(|_: Value, _ctx: Context| async move {
                Err::<Value, _>(FunctionError::msg("no"))
            }),
        ))
        .await
        .expect("registered");
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    runtime
        .register(
            Function::new(
                "gate",
                handler_fn({
                    let (entered, release) = (entered.clone(), release.clone());
                    move |v: Value, _ctx: Context| {
                        let (entered, release) = (entered.clone(), release.clone());
                        async move {
                            entered.notify_one();
                            release.acquire().await.expect("open").forget();
                            Ok::<_, FunctionError>(v)
                        }
                    }
                }),
            )
            .with_max_concurrency(1),
        )
        .await
        .expect("registered");
    let serving = Server::new(runtime.clone())
        .with_config(HttpConfig::default().with_bind("127.0.0.1:0".parse().unwrap()))
        .observe_mapping("orders-queue", || {
            MappingSnapshot::new("echo").with_backlog(7)
        })
        .observe_mapping("clicks-stream", || {
            MappingSnapshot::new("fail").with_iterator_age(Duration::from_millis(2500))
        })
        .bind()
        .await
        .expect("bound");
    let base = format!("http://{}", serving.local_addr());

    for i in 0..4 {
        assert_eq!(invoke(&base, "echo", Some(&format!("echo-{i}"))).await, 200);
    }
    // An SDK's retry of the last call is answered from memory: no fifth invocation.
    assert_eq!(invoke(&base, "echo", Some("echo-3")).await, 200);
    for _ in 0..2 {
        assert_eq!(
            invoke(&base, "fail", None).await,
            200,
            "a function error is a 200"
        );
    }
    let held = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.invoke_json("gate", json!("held")).await }
    });
    entered.notified().await;
    assert_eq!(
        invoke(&base, "gate", None).await,
        429,
        "the one instance allowed is busy"
    );

    let scrape = scrape(&base, &python).await;
    let echo = [("function", "echo")];
    let fail = [("function", "fail")];
    let gate = [("function", "gate")];

    let invocations = scrape.family("nimbus_function_invocations");
    assert_eq!(invocations["type"], "counter");
    assert!(
        invocations["help"]
            .as_str()
            .unwrap()
            .contains("(CloudWatch: Invocations)"),
        "{invocations}"
    );
    assert_eq!(
        scrape.value("nimbus_function_invocations_total", &echo),
        4.0
    );
    assert_eq!(
        scrape.value("nimbus_function_invocations_total", &fail),
        2.0
    );
    assert_eq!(scrape.value("nimbus_function_errors_total", &echo), 0.0);
    assert_eq!(scrape.value("nimbus_function_errors_total", &fail), 2.0);
    assert_eq!(
        scrape.value(
            "nimbus_function_throttles_total",
            &[("function", "gate"), ("reason", "function_limit")]
        ),
        1.0
    );
    assert!(scrape.family("nimbus_function_throttles")["help"]
        .as_str()
        .unwrap()
        .contains("Throttles"));
    assert_eq!(
        scrape.value("nimbus_function_concurrent_executions", &gate),
        1.0
    );
    assert_eq!(
        scrape.value("nimbus_runtime_concurrent_executions", &[]),
        1.0
    );

    // The duration histogram: one observation per finished invocation, cumulative buckets.
    let duration = scrape.family("nimbus_function_duration_seconds");
    assert_eq!(duration["type"], "histogram");
    assert_eq!(duration["unit"], "seconds");
    for (function, invoked) in [("echo", 4.0), ("fail", 2.0)] {
        let labels = [("function", function)];
        let count = scrape.value("nimbus_function_duration_seconds_count", &labels);
        assert_eq!(count, invoked, "{function}");
        let buckets = scrape.buckets("nimbus_function_duration_seconds_bucket", function);
        assert_eq!(buckets.len(), 16, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, invoked)));
        assert!(scrape.value("nimbus_function_duration_seconds_sum", &labels) > 0.0);
    }

    // Mappings: what their probes know, and nothing else.
    let orders = [("mapping", "orders-queue"), ("function", "echo")];
    assert_eq!(scrape.value("nimbus_mapping_backlog", &orders), 7.0);
    let clicks = [("mapping", "clicks-stream"), ("function", "fail")];
    assert_eq!(
        scrape.value("nimbus_mapping_iterator_age_seconds", &clicks),
        2.5
    );
    assert_eq!(
        scrape
            .samples
            .iter()
            .filter(|s| s.name == "nimbus_mapping_backlog")
            .count(),
        1
    );

    // The retry memory: four answers kept, one retry answered from it.
    assert_eq!(scrape.value("nimbus_http_retry_memory_entries", &[]), 4.0);
    assert_eq!(scrape.value("nimbus_http_retry_hits_total", &[]), 1.0);
    assert!(scrape.value("nimbus_http_retry_memory_bytes", &[]) > 0.0);
    assert_eq!(
        scrape.value("nimbus_http_retry_memory_limit_bytes", &[]),
        serving.retry_cache().limit_bytes as f64
    );

    release.add_permits(1);
    held.await.expect("joined").expect("released");
    // A second scrape reads the numbers anew.
    let scrape = self::scrape(&base, &python).await;
    assert_eq!(
        scrape.value("nimbus_function_duration_seconds_count", &gate),
        1.0
    );
    assert_eq!(
        scrape.value("nimbus_function_concurrent_executions", &gate),
        0.0
    );

    serving.stop().await;
    runtime.shutdown(Duration::from_secs(5)).await;
}
