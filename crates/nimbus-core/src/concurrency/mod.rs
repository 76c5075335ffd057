//! Concurrency: permits that travel with the work, the scale-rate token bucket, and the
//! in-flight gate that shutdown closes.
//!
//! A limiter counts permits with one atomic compare-and-swap; nothing spins. Sync
//! invocations never wait for a permit (Lambda throttles them at once), so the fast path is a
//! `try_acquire`. Waiters (the async queue) park on a [`tokio::sync::Notify`] and are woken when
//! a permit comes back. Changing a limit only stores the new number: permits already out stay
//! valid and the count converges as they are returned.

mod bucket;
mod gate;

pub use bucket::TokenBucket;
pub(crate) use gate::Gate;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A counting limit of concurrent work.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: AtomicUsize,
    in_use: AtomicUsize,
    /// Tasks waiting in `acquire`; releases skip the notification when there are none.
    waiting: AtomicUsize,
    returned: Notify,
}

impl Limiter {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            in_use: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            returned: Notify::new(),
        }
    }

    /// Takes a permit if one is free, without waiting.
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut current = self.in_use.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_use.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Permit { limiter: self }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Waits until a permit is free.
    pub(crate) async fn acquire(&self) -> Permit<'_> {
        if let Some(permit) = self.try_acquire() {
            return permit;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = WaitingGuard(&self.waiting);
        loop {
            // Register interest before checking, so a permit returned in between still wakes us.
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            notified.await;
        }
    }

    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.returned.notify_waiters();
    }

    fn release(&self) {
        // SeqCst pairs with `acquire`: either it sees this release, or we see it waiting.
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.returned.notify_one();
        }
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One unit of concurrency; dropping it gives it back.
#[derive(Debug)]
#[must_use = "dropping a permit releases it at once"]
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_and_returned() {
        let limiter = Limiter::new(2);
        let a = limiter.try_acquire().expect("first");
        let b = limiter.try_acquire().expect("second");
        assert!(limiter.try_acquire().is_none());
        assert_eq!(limiter.in_use(), 2);
        drop(a);
        let c = limiter.try_acquire().expect("returned permit is reusable");
        drop((b, c));
        assert_eq!(limiter.in_use(), 0);
    }

    #[test]
    fn lowering_the_limit_takes_effect_as_permits_return() {
        let limiter = Limiter::new(3);
        let held: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
        limiter.set_limit(1);
        drop(held);
        let one = limiter.try_acquire().expect("one under the new limit");
        assert!(limiter.try_acquire().is_none());
        drop(one);
    }

    #[tokio::test]
    async fn acquire_waits_for_a_returned_permit() {
        let limiter = std::sync::Arc::new(Limiter::new(1));
        let held = limiter.try_acquire().unwrap();
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _p = limiter.acquire().await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
    }
}
