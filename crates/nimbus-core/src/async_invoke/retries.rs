//! Retries of async events: what follows a failed attempt (a retry after the policy's delay, or
//! the failure path), and the timer that moves due retries back to the ready queue.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::queue::Delayed;
use super::AsyncInvoker;
use super::{Condition, ErrorInfo, Queued};
use crate::error::{InvokeError, OutcomeKind, RetryHint};
use crate::util::{far_future, panic_message};

/// What to do with an event after a failed attempt.
enum Next {
    Retry(Duration),
    Fail(Condition, Option<ErrorInfo>),
}

impl<E, O> AsyncInvoker<E, O>
where
    E: Clone + Send + Sync + 'static,
    O: Send + 'static,
{
    /// Decides and carries out what follows a failed attempt. The retry policy is user code:
    /// a panic in it means no retry, and the failure says why.
    pub(super) async fn after_failure(self: &Arc<Self>, queued: Queued<E>, error: &InvokeError) {
        let policy = &self.state.retry;
        let decided = catch_unwind(AssertUnwindSafe(|| policy.retry(queued.attempts, error)));
        let next = match decided {
            // A delay past any instant is past the event's maximum age too.
            Ok(Some(delay)) => match Instant::now().checked_add(delay) {
                Some(due) if !self.expired(&queued, due) => Next::Retry(delay),
                _ => Next::Fail(Condition::EventAgeExceeded, Some(error.into())),
            },
            Ok(None) => Next::Fail(give_up_condition(error), Some(error.into())),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::warn!(function = %self.exec.name(), request_id = %queued.request_id,
                    panic = %message, "retry policy panicked; the event is not retried");
                let mut info = ErrorInfo::from(error);
                info.message = format!(
                    "{} (not retried: the retry policy panicked: {message})",
                    info.message
                );
                Next::Fail(give_up_condition(error), Some(info))
            }
        };
        match next {
            Next::Retry(delay) => {
                let mut queued = queued;
                queued.last_error = Some(Box::new(error.into()));
                self.schedule_retry(queued, delay);
            }
            Next::Fail(condition, info) => self.fail(queued, condition, info).await,
        }
    }

    fn schedule_retry(self: &Arc<Self>, queued: Queued<E>, delay: Duration) {
        let state = &self.state;
        state.counters.retries.fetch_add(1, Ordering::Relaxed);
        let due = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        let seq = state.delay_seq.fetch_add(1, Ordering::Relaxed);
        state.delayed.lock().push(Delayed { due, seq, queued });
        state.delayed_changed.notify_one();
        if !state.timer_started.swap(true, Ordering::SeqCst) {
            let this = Arc::clone(self);
            self.exec.spawn(async move { this.retry_timer().await });
        }
    }

    /// Moves retries to the ready queue when they are due. Sleeps until the earliest is due,
    /// parks when there is none; stops at the end of the grace period.
    async fn retry_timer(self: Arc<Self>) {
        let state = &self.state;
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let next = {
                let mut delayed = state.delayed.lock();
                while delayed.peek().is_some_and(|d| d.due <= now) {
                    if let Some(d) = delayed.pop() {
                        due.push(d.queued);
                    }
                }
                delayed.peek().map(|d| d.due)
            };
            if let Some(oldest) = due.iter().map(|q| q.accepted_at).min() {
                let depth = {
                    let mut ready = state.lock_ready();
                    ready.extend(due);
                    ready.len()
                };
                state.wake_parked();
                self.watch_age(oldest);
                self.kick(depth, false);
            }
            let changed = state.delayed_changed.notified();
            tokio::select! {
                () = changed => {}
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = self.exec.hard_stop().cancelled() => return,
            }
        }
    }
}

/// The condition of an event the retry policy gave up on.
fn give_up_condition(error: &InvokeError) -> Condition {
    let never = matches!(error, InvokeError::Function(e) if e.retry_hint() == RetryHint::Never)
        || !matches!(
            error.kind(),
            OutcomeKind::Error
                | OutcomeKind::Timeout
                | OutcomeKind::Panic
                | OutcomeKind::InitFailure
        );
    if never {
        Condition::NotRetryable
    } else {
        Condition::RetriesExhausted
    }
}
