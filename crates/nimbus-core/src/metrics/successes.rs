//! [`Successes`]: successful runs a worker has counted and not yet added to its function's
//! counters, so that a worker running events back to back pays the counters' atomic adds once
//! per batch rather than once per event.

/// Successful runs not yet added to a function's counters (`FunctionCounters::flush`).
#[derive(Debug, Default)]
pub(crate) struct Successes {
    pub(super) runs: u64,
    pub(super) billed_nanos: u64,
    /// The duration histogram's bucket of the last `in_bucket` runs (a fast handler's runs
    /// mostly share one).
    pub(super) bucket: usize,
    pub(super) in_bucket: u64,
}
