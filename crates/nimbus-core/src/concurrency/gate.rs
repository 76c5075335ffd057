//! The in-flight gate: counts running invocations and refuses new ones once shutdown begins,
//! in one atomic operation so that no invocation slips in between the check and the count.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

const CLOSED: usize = 1 << (usize::BITS - 1);

#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: AtomicUsize,
    drained: Notify,
}

impl Gate {
    /// Counts one invocation in, unless the gate is closed.
    pub(crate) fn enter(&self) -> Option<GateGuard<'_>> {
        let before = self.state.fetch_add(1, Ordering::Acquire);
        if before & CLOSED != 0 {
            self.leave();
            return None;
        }
        Some(GateGuard { gate: self })
    }

    fn leave(&self) {
        if self.state.fetch_sub(1, Ordering::Release) == CLOSED | 1 {
            self.drained.notify_waiters();
        }
    }

    /// Closes the gate; returns how many invocations were in flight.
    pub(crate) fn close(&self) -> usize {
        self.state.fetch_or(CLOSED, Ordering::AcqRel) & !CLOSED
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.load(Ordering::Acquire) & !CLOSED
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
pub(crate) struct GateGuard<'a> {
    gate: &'a Gate,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_refuses_new_work_and_drains_old() {
        let gate = std::sync::Arc::new(Gate::default());
        let held = gate.enter().unwrap();
        assert_eq!(gate.close(), 1);
        assert!(gate.enter().is_none());
        assert_eq!(gate.in_flight(), 1);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        assert!(gate.is_closed());
    }
}
