//! The scenarios: each runs nimbus and its peers on the same events with the same no-op (or
//! fixed-duration) handler, interleaved over repetitions, and returns one row per system.

mod access;
mod autoscale;
mod idle;
mod latency;
mod record;
mod throughput;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use nimbus::{handler_fn, Context, FunctionError, Handler};

use crate::bench::stats::Row;

pub(crate) use access::access;
pub(crate) use autoscale::{autoscale, Curve};
pub(crate) use idle::idle;
pub(crate) use latency::latency;
pub(crate) use throughput::{async_invoke, invoke, queue, stream};

/// Sizes of one run of the harness.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Events per repetition of a throughput measurement.
    pub(crate) events: u64,
    /// Repetitions of every measurement; rows report the median.
    pub(crate) reps: usize,
    /// Messages per broker scenario run.
    pub(crate) broker_events: u64,
    /// How long each open-loop latency measurement sends for.
    pub(crate) latency_window: Duration,
    /// Latency arrival rates as fractions of the measured capacity (beside the fixed rates).
    pub(crate) rate_fractions: Vec<f64>,
    pub(crate) autoscale_load: Duration,
    pub(crate) idle_for: Duration,
    pub(crate) idle_functions: usize,
    pub(crate) idle_mappings: usize,
}

pub(super) fn noop() -> impl Handler<u64, u64> + Clone + Sync {
    handler_fn(|n: u64, _ctx: Context| async move { Ok::<_, FunctionError>(n) })
}

/// One measurement of one system: runs it once and returns the wall time of its events.
type Measure = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Duration>>>>;

/// Wraps a closure that starts one measurement as a [`Measure`].
fn measure<F, Fut>(mut start: F) -> Measure
where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    Box::new(move || Box::pin(start()))
}

/// Measures every system of a group `reps` times, interleaved: each repetition runs every
/// system once, the order rotated by one each time (rep 1: a, b, c; rep 2: b, c, a; ...), so
/// that a slow moment of a shared machine lands on all of them rather than on one, and no
/// system always runs after the same other. One row per system, in the given order, with the
/// median rate of its repetitions.
pub(super) async fn interleaved(
    scenario: &str,
    events: u64,
    reps: usize,
    mut systems: Vec<(&str, Measure)>,
) -> Vec<Row> {
    let mut took = vec![Vec::with_capacity(reps); systems.len()];
    for rep in 0..reps {
        for k in 0..systems.len() {
            let i = (rep + k) % systems.len();
            took[i].push((systems[i].1)().await);
        }
    }
    systems
        .iter()
        .zip(&took)
        .map(|((system, _), took)| Row::repeated(scenario, system, events, took))
        .collect()
}
