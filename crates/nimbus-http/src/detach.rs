//! Invocations outlive their requests: a future polled in place that, if its request is
//! dropped first (the client went away, an SDK's read timeout), goes on as a task of its own.
//!
//! Lambda does not cancel an invocation whose caller disconnects. Spawning every invocation
//! would give that too, but costs a task and often a wake-up of another worker thread per
//! request; this costs one allocation, and a spawn only for the rare request that is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `F` in place; on drop before completion, spawns the rest of it.
struct Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
}

impl<F> Future for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending; // polled after completion: never happens through `outliving`
        };
        // A panic must not leave the future here for `drop` to poll again.
        let poll =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx)));
        match poll {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(ready) => {
                self.future = None;
                ready
            }
            Err(panic) => {
                self.future = None;
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl<F> Drop for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            // The box keeps the future where it was pinned; the task finishes it.
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(future)),
                // Only outside any runtime (a host dropping the router's future there).
                Err(_) => tracing::warn!("an invocation was dropped outside a Tokio runtime"),
            }
        }
    }
}

/// Runs `future` to its output in place; if dropped first, the future still runs to the end
/// (its output is then dropped).
pub(crate) fn outliving<F>(future: F) -> impl Future<Output = F::Output> + Send
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Detachable {
        future: Some(Box::pin(future)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_leaves_its_invocation_running_to_the_end() {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let request = tokio::spawn(outliving(async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = done_tx.send("finished");
        }));
        started.await.unwrap();
        request.abort(); // the client went away
        assert!(request.await.unwrap_err().is_cancelled());
        assert_eq!(done.await.unwrap(), "finished");
    }

    #[tokio::test]
    async fn a_request_that_waits_gets_the_output() {
        assert_eq!(outliving(async { 7 }).await, 7);
    }
}
