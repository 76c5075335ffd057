//! Recursive loop detection: how many invocations a piece of work has passed through (its
//! *hop count*), carried with the work as Lambda carries it, so that a function that feeds its
//! own trigger is stopped instead of running for ever.
//!
//! Work the host starts has hop count 0. An invocation with hop count `h` gives `h + 1` to
//! everything it starts: calls through its [`Context`](super::Context) or through a
//! [`FunctionHandle`](crate::FunctionHandle) used inside the handler, async events, whatever
//! its destinations and dead-letter target send, messages it sends to a queue (each adapter
//! writes the count in the [`ATTRIBUTE`] message attribute and its mapping reads it back), and
//! the notifications of objects it writes through nimbus's object stores (which notify from the
//! writing call). A queue mapping invokes with the highest count of its batch's records, so
//! one looping record in a batch makes what the handler sends for the others count from it
//! too. An invocation whose hop count reaches [`LIMIT`] (16,
//! as Lambda) is not run unless the function allows loops ([`RecursiveLoop::Allow`]): a sync
//! caller gets [`InvokeError::RecursiveLoop`](crate::error::InvokeError::RecursiveLoop), an
//! async event goes to the on-failure destination or dead letter with that error, and a
//! mapping's records take the mapping's failure path.
//!
//! The count of the running invocation is set on the thread only while the handler's future is
//! polled (as a Tokio task-local is, in a plain cell, which is cheaper than a task-local's
//! scope): code the handler awaits sees it, a task it spawns does not (its work starts at 0
//! again, as work from another process does), nor do destructors the runtime runs when it
//! drops a timed-out handler's future on its own (dropped inside an outer handler's poll, as
//! a nested invocation's are, they see the outer count). Pass
//! [`Context::hop_count`](super::Context::hop_count) along by hand where that matters.
//!
//! # Example
//!
//! ```
//! use nimbus_core::handler::hops;
//!
//! // Outside any invocation there is no count to pass on.
//! assert_eq!(hops::outgoing(), None);
//! assert_eq!(hops::parse("3"), Some(3));
//! assert_eq!(hops::parse("three"), None);
//! ```

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The message attribute (a Redis field, a NATS header) that carries the hop count of work sent
/// by an invocation: decimal digits.
pub const ATTRIBUTE: &str = "nimbus-hops";

/// The hop count at which an invocation is stopped (Lambda stops a loop after 16 invocations).
pub const LIMIT: u32 = 16;

/// What a function does when one of its invocations reaches [`LIMIT`] hops (Lambda's
/// `RecursiveLoop` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RecursiveLoop {
    /// Stop the invocation (the default, as in Lambda).
    #[default]
    Terminate,
    /// Run it anyway: the function loops on purpose.
    Allow,
}

thread_local! {
    /// The hop count of the invocation whose code this thread is running, if any.
    static RUNNING: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The hop count of the invocation whose handler is being polled on this thread (so, seen
/// from the handler's code, on its task), if any.
pub fn current() -> Option<u32> {
    RUNNING.get()
}

/// The hop count that work started now carries: one more than the running invocation's, or
/// `None` outside an invocation (work from outside starts at 0 and carries no attribute).
pub fn outgoing() -> Option<u32> {
    current().map(|hops| hops.saturating_add(1))
}

/// Reads a hop count written in [`ATTRIBUTE`]; anything but decimal digits is no count.
pub fn parse(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

/// Runs `future` as the work of an invocation with hop count `hops`: what it sends carries
/// `hops + 1`. The runtime does this around every handler; an adapter that restores a count it
/// stored (an object store notifying later, from another task) and tests use it too.
pub fn scope<F: Future + Unpin>(hops: u32, future: F) -> Scoped<F> {
    Scoped { hops, future }
}

/// A future polled as the work of an invocation with a hop count. Unlike Tokio's
/// `TaskLocalFuture` it is `Unpin` when its future is, so the executor's guarded run takes it
/// without boxing again.
#[derive(Debug)]
pub struct Scoped<F> {
    hops: u32,
    future: F,
}

impl<F: Future + Unpin> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let hops = self.hops;
        sync_scope(hops, || Pin::new(&mut self.future).poll(cx))
    }
}

/// Runs `f` as the work of an invocation with hop count `hops` (as [`scope`], for synchronous
/// code).
pub fn sync_scope<R>(hops: u32, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(RUNNING.replace(Some(hops)));
    f()
}

/// Puts back the count that was set before a scope, when the scope ends or unwinds.
struct Restore(Option<u32>);

impl Drop for Restore {
    fn drop(&mut self) {
        RUNNING.set(self.0);
    }
}

/// Whether an invocation with this hop count must be stopped under `setting`.
pub(crate) fn stops(hops: u32, setting: RecursiveLoop) -> bool {
    hops >= LIMIT && setting == RecursiveLoop::Terminate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_count_is_seen_inside_the_scope_only() {
        assert_eq!(current(), None);
        let inside = scope(4, Box::pin(async { (current(), outgoing()) })).await;
        assert_eq!(inside, (Some(4), Some(5)));
        assert_eq!(sync_scope(u32::MAX, outgoing), Some(u32::MAX));
        assert_eq!(current(), None);
    }

    #[test]
    fn a_scope_puts_back_the_outer_count_when_it_ends_or_unwinds() {
        sync_scope(3, || {
            assert_eq!(sync_scope(7, current), Some(7));
            assert_eq!(current(), Some(3));
            let unwound = std::panic::catch_unwind(|| sync_scope(9, || panic!("inside")));
            assert!(unwound.is_err());
            assert_eq!(current(), Some(3));
        });
        assert_eq!(current(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn another_task_on_the_thread_does_not_see_the_count() {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let other = tokio::spawn(async move {
            let _ = go_rx.await;
            let _ = seen_tx.send(current());
        });
        // The scoped future wakes the other task and waits for its answer, so the other task
        // runs on this thread while the scoped future is pending.
        let inside = scope(
            5,
            Box::pin(async move {
                let _ = go_tx.send(());
                let seen = seen_rx.await.expect("the other task answers");
                (current(), seen)
            }),
        )
        .await;
        assert_eq!(inside, (Some(5), None));
        other.await.ok();
    }

    #[test]
    fn the_limit_stops_only_terminating_functions() {
        assert!(!stops(LIMIT - 1, RecursiveLoop::Terminate));
        assert!(stops(LIMIT, RecursiveLoop::Terminate));
        assert!(!stops(LIMIT, RecursiveLoop::Allow));
    }
}
