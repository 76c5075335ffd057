//! `/metrics`: the runtime's counters in the OpenMetrics text format (which Prometheus
//! scrapes), read at scrape time by a [`RuntimeCollector`]. Nothing is recorded per
//! invocation: the runtime already counts, and a scrape reads its counters.
//!
//! The HELP text of each metric names the CloudWatch metric of Lambda it matches.
//!
//! Per function (label `function`):
//!
//! | Metric | Type | CloudWatch |
//! |---|---|---|
//! | `nimbus_function_invocations_total` | counter | `Invocations` |
//! | `nimbus_function_errors_total` | counter | `Errors` (function errors, timeouts, panics, init failures) |
//! | `nimbus_function_timeouts_total` | counter | part of `Errors` |
//! | `nimbus_function_throttles_total` (label `reason`: `function_limit`, `runtime_limit`, `scale_rate`) | counter | `Throttles` |
//! | `nimbus_function_cold_starts_total` | counter | — (`Init Duration` in REPORT lines) |
//! | `nimbus_function_recursive_loops_total` | counter | `RecursiveInvocationsDropped` |
//! | `nimbus_function_duration_seconds` | histogram | `Duration` |
//! | `nimbus_function_concurrent_executions` | gauge | `ConcurrentExecutions` |
//! | `nimbus_function_instances` (label `state`: `busy`, `idle`) | gauge | — |
//! | `nimbus_function_async_events_received_total` | counter | `AsyncEventsReceived` |
//! | `nimbus_function_async_events_failed_total` | counter | `AsyncEventsDropped` |
//! | `nimbus_function_async_retries_total` | counter | — |
//! | `nimbus_function_async_queue_depth` | gauge | — |
//! | `nimbus_function_async_events_pending` | gauge | — |
//! | `nimbus_function_async_oldest_event_age_seconds` | gauge | `AsyncEventAge` |
//!
//! Per event source mapping (labels `mapping`, `function`), when its probe knows:
//! `nimbus_mapping_backlog` (SQS's `ApproximateNumberOfMessagesVisible`) and
//! `nimbus_mapping_iterator_age_seconds` (`IteratorAge`).
//!
//! Runtime-wide: `nimbus_runtime_concurrent_executions`, `nimbus_runtime_concurrency_limit`,
//! `nimbus_runtime_reserved_concurrency`, `nimbus_runtime_unreserved_concurrent_executions`.
//!
//! The server's retry memory: `nimbus_http_retry_memory_entries`,
//! `nimbus_http_retry_memory_in_flight`, `nimbus_http_retry_memory_bytes`,
//! `nimbus_http_retry_memory_limit_bytes`, `nimbus_http_retry_hits_total`,
//! `nimbus_http_retry_evictions_total`.
//!
//! The duration histogram's buckets are [`DURATION_BUCKETS`]. The runtime keeps a log-linear
//! histogram and no sum: `_sum` is estimated from the middle of its buckets (within 12.5 %), and
//! a duration within 12.5 % below a bucket's bound may be counted in the next bucket.

mod collector;
mod label;
mod mapping;

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use prometheus_client::registry::Registry;

pub use collector::{RuntimeCollector, DURATION_BUCKETS};
pub use mapping::{MappingProbe, MappingSnapshot};

/// The content type of prometheus-client's text encoding (OpenMetrics 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the metrics of a runtime, its mappings and the server.
pub(crate) struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub(crate) fn new(collector: RuntimeCollector) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        Self { registry }
    }

    /// The metrics now, in the OpenMetrics text format, `# EOF` included.
    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(exporter): State<Arc<Exporter>>) -> Response {
    match exporter.render() {
        Ok(text) => ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render /metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
