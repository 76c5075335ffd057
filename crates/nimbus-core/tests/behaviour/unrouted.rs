//! Failed async events that no destination or dead-letter target took: kept for the host
//! apart from the queue capacity and bounded on their own (the default), or logged and dropped
//! as Lambda does.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, Condition, Context, Function, FunctionError, FunctionHandle, RejectReason,
    UnroutedFailures,
};
use parking_lot::Mutex;

use crate::support::runtime;

/// A function whose every attempt fails for good.
fn failing() -> Function<u32, u32> {
    Function::new(
        "failing",
        handler_fn(|event: u32, _ctx: Context| async move {
            Err::<u32, _>(
                FunctionError::new("Declined", format!("declined {event}")).not_retryable(),
            )
        }),
    )
}

/// Queues `event` and waits until its failure has been dealt with.
async fn fail_one(handle: &FunctionHandle<u32, u32>, event: u32) {
    handle.invoke_async(event).unwrap();
    handle.async_idle().await;
}

#[tokio::test(start_paused = true)]
async fn kept_failures_are_bounded_apart_from_the_queue_capacity() {
    let rt = runtime(10);
    let handle = rt
        .register(
            failing()
                .with_async_queue_capacity(2)
                .with_max_kept_failures(3),
        )
        .await
        .unwrap();
    for event in 0..3 {
        fail_one(&handle, event).await;
    }
    let m = handle.async_metrics();
    assert_eq!(
        (m.kept_failures, m.pending, m.failed),
        (3, 0, 3),
        "three kept with a queue capacity of two"
    );
    let rejected = handle.invoke_async(9).unwrap_err();
    assert_eq!(rejected.reason, RejectReason::KeptFailuresFull { limit: 3 });
    assert_eq!(rejected.event, 9, "the event is handed back");
    assert!(rejected.to_string().contains("take_failed"), "{rejected}");

    let taken = handle.take_failed();
    let mut events: Vec<u32> = taken.iter().map(|r| r.request).collect();
    events.sort_unstable();
    assert_eq!(events, [0, 1, 2]);
    for record in &taken {
        assert_eq!(record.condition, Condition::NotRetryable);
        assert_eq!(record.approximate_invoke_count, 1);
        assert!(record.response.is_none());
        let error = record.error.as_ref().expect("the last error");
        assert_eq!(error.error_type, "Declined");
        assert_eq!(error.message, format!("declined {}", record.request));
    }
    assert_eq!(handle.async_metrics().kept_failures, 0);
    assert!(handle.take_failed().is_empty());
    fail_one(&handle, 4).await;
    assert_eq!(handle.async_metrics().kept_failures, 1, "room again");
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_back_the_kept_failures() {
    let rt = runtime(10);
    let handle = rt.register(failing()).await.unwrap();
    fail_one(&handle, 1).await;
    fail_one(&handle, 2).await;
    let report = rt.shutdown(Duration::from_secs(1)).await;
    let mut back: Vec<u32> = report
        .handed_back
        .into_iter()
        .map(|h| {
            assert_eq!(h.condition, Some(Condition::NotRetryable));
            assert_eq!(
                h.error.as_ref().map(|e| e.error_type.as_str()),
                Some("Declined")
            );
            h.downcast::<u32>().expect("u32 events")
        })
        .collect();
    back.sort_unstable();
    assert_eq!(back, [1, 2]);
    assert_eq!(handle.async_metrics().handed_back, 2);
}

#[tokio::test(start_paused = true)]
async fn the_first_kept_failure_warns_once() {
    let warnings = Warnings::capture();
    let rt = runtime(10);
    let handle = rt.register(failing()).await.unwrap();
    fail_one(&handle, 1).await;
    fail_one(&handle, 2).await;
    let warned = warnings.lines();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("add an on-failure destination")
            && warned[0].contains("UnroutedFailures::Discard")
            && warned[0].contains("function=failing"),
        "{warned:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn discard_logs_counts_and_drops_like_lambda() {
    let warnings = Warnings::capture();
    let rt = runtime(10);
    let handle = rt
        .register(
            failing()
                .with_unrouted_failures(UnroutedFailures::Discard)
                .with_max_kept_failures(1),
        )
        .await
        .unwrap();
    for event in 0..3 {
        fail_one(&handle, event).await;
    }
    let m = handle.async_metrics();
    assert_eq!(
        (m.discarded, m.kept_failures, m.failed, m.pending),
        (3, 0, 3, 0)
    );
    assert!(handle.take_failed().is_empty());
    let warned = warnings.lines();
    assert_eq!(warned.len(), 3, "one line per event: {warned:?}");
    for line in &warned {
        assert!(
            line.contains("discarded")
                && line.contains("request_id=")
                && line.contains("condition=NotRetryable")
                && line.contains("error_type=Declined")
                && line.contains("error_message=declined "),
            "{line}"
        );
    }
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert!(report.handed_back.is_empty(), "dropped, as configured");
}

/// Captures `warn` events of this thread (the test's current-thread runtime) as lines of
/// `field=value`.
struct Warnings {
    lines: Arc<Mutex<Vec<String>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Warnings {
    fn capture() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let guard = tracing::subscriber::set_default(WarnSink(Arc::clone(&lines)));
        Self {
            lines,
            _guard: guard,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().clone()
    }
}

struct WarnSink(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for WarnSink {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::WARN
    }
    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!(" {}={value}", field.name()));
            }
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        self.0.lock().push(line.0);
    }
    fn enter(&self, _span: &tracing::span::Id) {}
    fn exit(&self, _span: &tracing::span::Id) {}
}
