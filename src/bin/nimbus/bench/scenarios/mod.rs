//! The scenarios: each runs nimbus and its peers on the same events with the same no-op (or
//! fixed-duration) handler, and returns one row per system.

mod autoscale;
mod idle;
mod latency;
mod throughput;

use std::time::Duration;

use nimbus::{handler_fn, Context, FunctionError, Handler};

pub(crate) use autoscale::{autoscale, Curve};
pub(crate) use idle::idle;
pub(crate) use latency::latency;
pub(crate) use throughput::{async_invoke, invoke, queue, stream};

/// Sizes of one run of the harness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) events: u64,
    /// Messages per broker scenario run.
    pub(crate) broker_events: u64,
    pub(crate) latency_window: Duration,
    pub(crate) rate_fraction: f64,
    pub(crate) autoscale_load: Duration,
    pub(crate) idle_for: Duration,
    pub(crate) idle_functions: usize,
    pub(crate) idle_mappings: usize,
}

pub(super) fn noop() -> impl Handler<u64, u64> + Clone + Sync {
    handler_fn(|n: u64, _ctx: Context| async move { Ok::<_, FunctionError>(n) })
}
