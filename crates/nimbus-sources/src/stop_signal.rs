//! [`StopSignal`]: a cancellation token whose "has it fired?" is one atomic load.
//!
//! `tokio_util`'s `CancellationToken::is_cancelled` takes the token's mutex. A queue
//! mapping's pollers ask several times per batch, all of the same token, so at batch size 1
//! that lock was a cache line both cores wrote on every record.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A stop signal: [`StopSignal::cancel`] sets a flag, then fires the token.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    fired: AtomicBool,
    token: CancellationToken,
}

impl StopSignal {
    /// Fires the signal; futures from [`StopSignal::cancelled`] complete.
    pub(crate) fn cancel(&self) {
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether [`StopSignal::cancel`] was called. Never false after a
    /// [`StopSignal::cancelled`] future completed.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Completes once the signal fires.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignal;

    #[tokio::test]
    async fn fires_once_cancelled() {
        let signal = StopSignal::default();
        assert!(!signal.is_cancelled());
        let waiting = signal.cancelled();
        signal.cancel();
        waiting.await;
        assert!(signal.is_cancelled());
    }
}
