//! `/metrics`: the runtime's counters in Prometheus' text format, read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::server::AppState;

/// What an event source mapping reports at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MappingSnapshot {
    /// The function the mapping invokes.
    pub function: String,
    /// Records waiting in the source (a queue's backlog), when the source knows.
    pub backlog: Option<u64>,
    /// The age of the oldest record a stream mapping has not yet handled (Lambda's
    /// `IteratorAge`), for stream mappings.
    pub iterator_age: Option<Duration>,
}

impl MappingSnapshot {
    /// A snapshot of a mapping that invokes `function`.
    pub fn new(function: impl Into<String>) -> Self {
        Self {
            function: function.into(),
            ..Self::default()
        }
    }
}

/// Reads a mapping's state at scrape time.
pub trait MappingProbe: Send + Sync + 'static {
    /// The mapping's state now.
    fn snapshot(&self) -> MappingSnapshot;
}

impl<F> MappingProbe for F
where
    F: Fn() -> MappingSnapshot + Send + Sync + 'static,
{
    fn snapshot(&self) -> MappingSnapshot {
        self()
    }
}

/// Renders the metrics of a runtime, its mappings and the server.
pub(crate) struct Exporter {
    mappings: Vec<(String, Arc<dyn MappingProbe>)>,
}

impl Exporter {
    pub(crate) fn new(mappings: Vec<(String, Arc<dyn MappingProbe>)>) -> Self {
        Self { mappings }
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let _ = state.metrics.mappings.len();
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        "# EOF\n",
    )
        .into_response()
}
