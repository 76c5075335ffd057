//! The collector's output for a runtime with a few invoked functions.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

use super::*;

/// The value of the sample `series` (name and labels, as written) in `text`.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .expect("a number")
}

fn render(collector: RuntimeCollector) -> String {
    Exporter::new(collector).render().expect("rendered")
}

/// A function that holds each invocation until released, with one instance at most.
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

async fn runtime_with_functions() -> (Runtime, Gate) {
    let runtime = Runtime::default();
    runtime
        .register(Function::new(
            "echo",
            handler_fn(|v: Value, _ctx: Context| async move { Ok::<_, FunctionError>(v) }),
        ))
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
    let gate = Gate {
        entered: Arc::new(Notify::new()),
        release: Arc::new(Semaphore::new(0)),
    };
    let (entered, release) = (gate.entered.clone(), gate.release.clone());
    runtime
        .register(
            Function::new(
                "gate",
                handler_fn(move |v: Value, _ctx: Context| {
                    let (entered, release) = (entered.clone(), release.clone());
                    async move {
                        entered.notify_one();
                        release.acquire().await.expect("open").forget();
                        Ok::<_, FunctionError>(v)
                    }
                }),
            )
            .with_max_concurrency(1),
        )
        .await
        .expect("registered");
    (runtime, gate)
}

#[tokio::test]
async fn counters_histograms_and_gauges_are_read_at_scrape_time() {
    let (runtime, gate) = runtime_with_functions().await;
    for i in 0..3 {
        runtime.invoke_json("echo", json!(i)).await.expect("echo");
    }
    for _ in 0..2 {
        runtime.invoke_json("fail", json!(null)).await.unwrap_err();
    }
    let held = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.invoke_json("gate", json!("held")).await }
    });
    gate.entered.notified().await;
    runtime
        .invoke_json("gate", json!("refused"))
        .await
        .expect_err("throttled: the one instance allowed is busy");

    let text = render(RuntimeCollector::new(runtime.clone()));
    assert!(text.ends_with("# EOF\n"), "{text}");
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v(r#"nimbus_function_invocations_total{function="echo"}"#),
        3.0
    );
    assert_eq!(
        v(r#"nimbus_function_invocations_total{function="fail"}"#),
        2.0
    );
    assert_eq!(v(r#"nimbus_function_errors_total{function="echo"}"#), 0.0);
    assert_eq!(v(r#"nimbus_function_errors_total{function="fail"}"#), 2.0);
    assert_eq!(
        v(r#"nimbus_function_throttles_total{function="gate",reason="function_limit"}"#),
        1.0
    );
    assert_eq!(
        v(r#"nimbus_function_throttles_total{function="gate",reason="runtime_limit"}"#),
        0.0
    );
    assert_eq!(
        v(r#"nimbus_function_concurrent_executions{function="gate"}"#),
        1.0
    );
    assert_eq!(
        v(r#"nimbus_function_concurrent_executions{function="echo"}"#),
        0.0
    );
    assert_eq!(
        v(r#"nimbus_function_instances{function="gate",state="busy"}"#),
        1.0
    );
    assert_eq!(
        v(r#"nimbus_function_instances{function="echo",state="idle"}"#),
        1.0
    );
    assert_eq!(
        v(r#"nimbus_function_cold_starts_total{function="echo"}"#),
        1.0
    );
    assert_eq!(v("nimbus_runtime_concurrent_executions"), 1.0);
    assert_eq!(
        v("nimbus_runtime_concurrency_limit"),
        runtime.config().concurrency_limit as f64
    );
    assert_eq!(v("nimbus_runtime_reserved_concurrency"), 1.0);

    // Every handler that ran is in the histogram; in-process echoes take well under 5 s.
    assert_eq!(
        v(r#"nimbus_function_duration_seconds_count{function="echo"}"#),
        3.0
    );
    assert_eq!(
        v(r#"nimbus_function_duration_seconds_bucket{le="+Inf",function="echo"}"#),
        3.0
    );
    assert_eq!(
        v(r#"nimbus_function_duration_seconds_bucket{le="5.0",function="echo"}"#),
        3.0
    );
    assert!(v(r#"nimbus_function_duration_seconds_sum{function="echo"}"#) > 0.0);
    // The held invocation has not finished: not in the histogram yet.
    assert_eq!(
        v(r#"nimbus_function_duration_seconds_count{function="gate"}"#),
        0.0
    );

    // No mapping, no retry memory: those families are left out.
    assert!(!text.contains("nimbus_mapping_"), "{text}");
    assert!(!text.contains("nimbus_http_retry"), "{text}");

    gate.release.add_permits(1);
    held.await.expect("joined").expect("released");
    let text = render(RuntimeCollector::new(runtime.clone()));
    assert_eq!(
        value(
            &text,
            r#"nimbus_function_duration_seconds_count{function="gate"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"nimbus_function_concurrent_executions{function="gate"}"#
        ),
        0.0
    );
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn histogram_buckets_are_cumulative_up_to_the_count() {
    let (runtime, _gate) = runtime_with_functions().await;
    for i in 0..5 {
        runtime.invoke_json("echo", json!(i)).await.expect("echo");
    }
    let text = render(RuntimeCollector::new(runtime.clone()));
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("nimbus_function_duration_seconds_bucket{")
                && l.contains(r#"function="echo""#)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&5.0));
    runtime.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn mappings_report_what_their_probes_know() {
    let runtime = Runtime::default();
    let collector = RuntimeCollector::new(runtime.clone())
        .with_mapping("orders-queue", || {
            MappingSnapshot::new("orders").with_backlog(42)
        })
        .with_mapping("clicks \"stream\"", || {
            MappingSnapshot::new("clicks").with_iterator_age(Duration::from_millis(1500))
        });
    let text = render(collector);
    assert_eq!(
        value(
            &text,
            r#"nimbus_mapping_backlog{mapping="orders-queue",function="orders"}"#
        ),
        42.0
    );
    assert_eq!(
        value(
            &text,
            r#"nimbus_mapping_iterator_age_seconds{mapping="clicks \"stream\"",function="clicks"}"#
        ),
        1.5
    );
    // The stream mapping has no backlog and the queue no iterator age: no sample for either.
    assert_eq!(text.matches("nimbus_mapping_backlog{").count(), 1, "{text}");
    assert_eq!(
        text.matches("nimbus_mapping_iterator_age_seconds{").count(),
        1
    );
    assert!(text.contains("# UNIT nimbus_mapping_iterator_age_seconds seconds"));
    assert!(text.contains("(CloudWatch: IteratorAge)"));
}

#[tokio::test]
async fn the_retry_memory_is_reported() {
    let runtime = Runtime::default();
    let collector =
        RuntimeCollector::new(runtime).with_retry_memory(crate::invoke::RetryCache::new(4096));
    let text = render(collector);
    assert_eq!(value(&text, "nimbus_http_retry_memory_entries"), 0.0);
    assert_eq!(value(&text, "nimbus_http_retry_memory_bytes"), 0.0);
    assert_eq!(value(&text, "nimbus_http_retry_memory_limit_bytes"), 4096.0);
    assert_eq!(value(&text, "nimbus_http_retry_hits_total"), 0.0);
    assert_eq!(value(&text, "nimbus_http_retry_evictions_total"), 0.0);
}
