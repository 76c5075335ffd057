//! The CPU-share governor: holds a handler back so that it uses about its function's share of
//! one vCPU (see [the executor's docs](super#the-cpu-share-governor)).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};
use tokio::time::{Instant, Sleep};

use crate::util::BoxFuture;

/// Wraps an instance's future in the governor, with the share of a vCPU it may use (in
/// `(0, 1]`) and the invocation's start, from which its CPU debt is counted.
pub(crate) fn govern<'a, T: Send + 'a>(
    future: BoxFuture<'a, T>,
    share: f64,
    start: Instant,
) -> BoxFuture<'a, T> {
    Box::pin(Governed {
        future,
        share,
        start,
        cpu: Duration::ZERO,
        held: None,
        wait: None,
    })
}

/// A future polled no faster than its share of a vCPU: after using `cpu` of CPU time it is
/// not polled again, nor its output handed back, before `start + cpu / share`.
struct Governed<F: Future> {
    future: F,
    share: f64,
    start: Instant,
    /// The CPU time the future's polls have used on their threads.
    cpu: Duration,
    /// The output, held until the debt is paid.
    held: Option<F::Output>,
    /// The timer of the debt, reused from one wait to the next.
    wait: Option<Pin<Box<Sleep>>>,
}

// The output is never pinned (it is only moved in and out), and the timer is boxed: the
// governor is `Unpin` whenever its future is.
impl<F: Future + Unpin> Unpin for Governed<F> {}

impl<F: Future + Unpin> Governed<F> {
    /// When the CPU used so far is paid for.
    fn due(&self) -> Instant {
        self.start + self.cpu.div_f64(self.share)
    }

    /// Whether the debt is paid; if not, the timer is armed to wake the task when it is.
    fn paid(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cpu.is_zero() {
            return true;
        }
        let due = self.due();
        if Instant::now() >= due {
            return true;
        }
        let wait = match &mut self.wait {
            Some(wait) => {
                wait.as_mut().reset(due);
                wait
            }
            None => self.wait.insert(Box::pin(tokio::time::sleep_until(due))),
        };
        wait.as_mut().poll(cx).is_ready()
    }
}

impl<F: Future + Unpin> Future for Governed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        loop {
            if !this.paid(cx) {
                return Poll::Pending;
            }
            if let Some(output) = this.held.take() {
                return Poll::Ready(output);
            }
            let before = thread_cpu();
            let polled = Pin::new(&mut this.future).poll(cx);
            this.cpu += thread_cpu().saturating_sub(before);
            match polled {
                Poll::Pending => return Poll::Pending,
                // Held until its CPU is paid for, so that the latency is what the share gives.
                Poll::Ready(output) => this.held = Some(output),
            }
        }
    }
}

/// The calling thread's CPU time; zero if the clock cannot be read (the governor then holds
/// nothing back).
fn thread_cpu() -> Duration {
    #[cfg(test)]
    reads::count();
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Reads of the thread CPU clock on this thread, for tests to check that a function without
/// the governor reads none.
#[cfg(test)]
pub(crate) mod reads {
    use std::cell::Cell;

    thread_local! {
        static READS: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn count() {
        READS.with(|reads| reads.set(reads.get() + 1));
    }

    /// How many times this thread has read the thread CPU clock.
    pub(crate) fn so_far() -> u64 {
        READS.with(Cell::get)
    }
}
