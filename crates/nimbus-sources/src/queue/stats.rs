//! [`QueueStats`]: the counts a queue may report, for metrics and for telling when it is
//! drained.

/// Counts a queue may report, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages visible now.
    pub visible: u64,
    /// Messages received and not yet acknowledged or visible again.
    pub in_flight: u64,
    /// Messages waiting for their delay (sent with a delay, or made visible later).
    pub delayed: u64,
    /// Messages moved to the dead-letter queue so far.
    pub dead_lettered: u64,
}

impl QueueStats {
    /// Messages not yet handled: visible, in flight or delayed. Zero means the queue is
    /// drained. (Saturates: the counts come from a broker.)
    pub fn backlog(&self) -> u64 {
        self.visible
            .saturating_add(self.in_flight)
            .saturating_add(self.delayed)
    }
}
