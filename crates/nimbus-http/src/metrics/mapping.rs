//! What `/metrics` reads from an event source mapping: [`MappingSnapshot`], from a
//! [`MappingProbe`] called at each scrape.

use std::time::Duration;

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

    /// With the source's backlog.
    #[must_use]
    pub fn with_backlog(mut self, records: u64) -> Self {
        self.backlog = Some(records);
        self
    }

    /// With the age of the oldest record not yet handled.
    #[must_use]
    pub fn with_iterator_age(mut self, age: Duration) -> Self {
        self.iterator_age = Some(age);
        self
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
