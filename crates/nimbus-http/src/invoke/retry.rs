//! SDK retries never run a function twice: answers kept by `amz-sdk-invocation-id`.
//!
//! The AWS SDKs retry a request after a read timeout, a 429 or a 5xx, with the same
//! `amz-sdk-invocation-id` on every attempt (boto3 three times, the AWS CLI v1 five). A retry
//! of an invocation that is still running attaches to it; a retry of one that finished gets the
//! same answer. Only answers the function produced are kept (a 200, with or without a function
//! error, and an `Event` invoke's 202 with its request id), never a throttle or a fault, and
//! each for at most the function's timeout, within a memory bound: the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// An answer as it is sent, and kept for retries.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
}

impl Stored {
    /// The memory the answer holds, roughly.
    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 128
    }

    pub(crate) fn to_response(&self) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        let headers = response.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }
}

/// What identifies a logical call: the function, the invocation type, the SDK's id and the
/// payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RetryKey {
    /// Who asked: the host, or the signer of the request.
    pub(crate) caller: nimbus_core::Principal,
    pub(crate) function: String,
    pub(crate) invocation_type: &'static str,
    pub(crate) invocation_id: String,
    /// A hash of the payload: one id reused for another payload is another call.
    pub(crate) payload: u64,
}

/// The memory a kept answer holds, roughly: the answer, and its key twice (in the map and in
/// the order of eviction).
fn entry_size(key: &RetryKey, stored: &Stored) -> usize {
    stored.size() + 2 * (key.function.len() + key.invocation_id.len() + 64)
}

/// What the retry memory holds, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryCacheStats {
    /// Answers kept now.
    pub entries: usize,
    /// Invocations running that a retry would attach to.
    pub in_flight: usize,
    /// Bytes the kept answers hold.
    pub bytes: usize,
    /// The bound on `bytes`.
    pub limit_bytes: usize,
    /// Retried requests answered from memory or by attaching to a running invocation.
    pub hits: u64,
    /// Answers evicted to stay within the bound before they expired.
    pub evictions: u64,
}

type Outcome = Option<Arc<Stored>>;

enum Slot {
    Running(watch::Receiver<Outcome>),
    Done {
        stored: Arc<Stored>,
        expires: Instant,
        generation: u64,
        size: usize,
    },
}

#[derive(Default)]
struct Inner {
    slots: HashMap<RetryKey, Slot>,
    /// Kept answers, oldest first, with their generation (a key answered again is a new one).
    order: VecDeque<(RetryKey, u64)>,
    bytes: usize,
    generation: u64,
    /// The earliest expiry of a kept answer (or earlier): no sweep finds anything before it.
    earliest_expiry: Option<Instant>,
}

/// The retry memory of one server.
#[derive(Clone)]
pub(crate) struct RetryCache {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    limit: usize,
    hits: AtomicU64,
    evictions: AtomicU64,
}

/// What a request with an invocation id does.
pub(crate) enum Claim {
    /// A finished invocation's answer.
    Answer(Arc<Stored>),
    /// Wait for the running invocation's answer.
    Wait(Waiter),
    /// Run the invocation, then finish the guard (which answers the others).
    Run(RunGuard),
}

/// Waits for a running invocation's answer.
pub(crate) struct Waiter(watch::Receiver<Outcome>);

impl Waiter {
    /// The answer, or `None` if the invocation's task ended without one.
    pub(crate) async fn answer(mut self) -> Option<Arc<Stored>> {
        match self.0.wait_for(Option::is_some).await {
            Ok(answer) => answer.clone(),
            Err(_) => None,
        }
    }
}

/// The right to run an invocation for a key; answers every waiter when finished, and
/// forgets the key if dropped unfinished.
pub(crate) struct RunGuard {
    cache: RetryCache,
    key: Option<RetryKey>,
    tx: watch::Sender<Outcome>,
}

impl RunGuard {
    /// Publishes the answer; keeps it for `keep_for` when given.
    pub(crate) fn finish(mut self, stored: Arc<Stored>, keep_for: Option<Duration>) {
        let Some(key) = self.key.take() else { return };
        self.cache.settle(key, Arc::clone(&stored), keep_for);
        self.tx.send_replace(Some(stored));
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.cache.shared.inner.lock();
            if matches!(inner.slots.get(&key), Some(Slot::Running(_))) {
                inner.slots.remove(&key);
            }
        }
    }
}

impl RetryCache {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                limit,
                hits: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// What to do with a request for `key`.
    pub(crate) fn claim(&self, key: RetryKey) -> Claim {
        let now = Instant::now();
        let mut inner = self.shared.inner.lock();
        match inner.slots.get(&key) {
            Some(Slot::Running(rx)) => {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                return Claim::Wait(Waiter(rx.clone()));
            }
            Some(Slot::Done {
                stored, expires, ..
            }) if *expires > now => {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                return Claim::Answer(Arc::clone(stored));
            }
            Some(Slot::Done { size, .. }) => {
                let size = *size;
                inner.bytes -= size;
                inner.slots.remove(&key);
            }
            None => {}
        }
        let (tx, rx) = watch::channel(None);
        inner.slots.insert(key.clone(), Slot::Running(rx));
        Claim::Run(RunGuard {
            cache: self.clone(),
            key: Some(key),
            tx,
        })
    }

    fn settle(&self, key: RetryKey, stored: Arc<Stored>, keep_for: Option<Duration>) {
        let size = entry_size(&key, &stored);
        let mut inner = self.shared.inner.lock();
        let keep = keep_for.filter(|_| size <= self.shared.limit);
        let Some(keep_for) = keep else {
            inner.slots.remove(&key);
            return;
        };
        inner.generation += 1;
        let generation = inner.generation;
        inner.slots.insert(
            key.clone(),
            Slot::Done {
                stored,
                expires: Instant::now() + keep_for,
                generation,
                size,
            },
        );
        inner.bytes += size;
        inner.order.push_back((key, generation));
        let expires = Instant::now() + keep_for;
        inner.earliest_expiry = Some(inner.earliest_expiry.map_or(expires, |e| e.min(expires)));
        self.trim(&mut inner);
    }

    /// Keeps the memory within its bound: expired answers go first, wherever they are (each
    /// function has its own timeout, so the oldest answer is not always the first to expire),
    /// then the oldest live ones.
    fn trim(&self, inner: &mut Inner) {
        let stale = inner.order.len() > 2 * inner.slots.len() + 64;
        if inner.bytes > self.shared.limit || stale {
            Self::sweep_expired(inner);
        }
        while inner.bytes > self.shared.limit {
            let Some((key, generation)) = inner.order.pop_front() else {
                break;
            };
            if let Some(Slot::Done {
                generation: g,
                size,
                ..
            }) = inner.slots.get(&key)
            {
                if *g == generation {
                    inner.bytes -= *size;
                    inner.slots.remove(&key);
                    self.shared.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Removes every expired answer, and the order's entries of answers no longer kept. A
    /// walk over every answer, done only once the earliest expiry has passed.
    fn sweep_expired(inner: &mut Inner) {
        let now = Instant::now();
        if inner.earliest_expiry.is_none_or(|e| e > now)
            && inner.order.len() <= 2 * inner.slots.len() + 64
        {
            return;
        }
        let mut freed = 0;
        let mut earliest: Option<Instant> = None;
        inner.slots.retain(|_, slot| match slot {
            Slot::Done { expires, size, .. } if *expires <= now => {
                freed += *size;
                false
            }
            Slot::Done { expires, .. } => {
                earliest = Some(earliest.map_or(*expires, |e| e.min(*expires)));
                true
            }
            Slot::Running(_) => true,
        });
        inner.earliest_expiry = earliest;
        inner.bytes -= freed;
        let Inner { order, slots, .. } = inner;
        order.retain(|(key, generation)| {
            matches!(slots.get(key), Some(Slot::Done { generation: g, .. }) if g == generation)
        });
    }

    pub(crate) fn stats(&self) -> RetryCacheStats {
        let mut inner = self.shared.inner.lock();
        Self::sweep_expired(&mut inner);
        let in_flight = inner
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Running(_)))
            .count();
        RetryCacheStats {
            entries: inner.slots.len() - in_flight,
            in_flight,
            bytes: inner.bytes,
            limit_bytes: self.shared.limit,
            hits: self.shared.hits.load(Ordering::Relaxed),
            evictions: self.shared.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> RetryKey {
        RetryKey {
            caller: nimbus_core::Principal::Host,
            function: "f".into(),
            invocation_type: "RequestResponse",
            invocation_id: id.into(),
            payload: 0,
        }
    }

    fn answer(body: &str) -> Arc<Stored> {
        Arc::new(Stored {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Bytes::from(body.to_owned()),
        })
    }

    fn run(cache: &RetryCache, id: &str) -> RunGuard {
        match cache.claim(key(id)) {
            Claim::Run(guard) => guard,
            _ => panic!("{id} should run"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_attaches_to_the_running_invocation_then_gets_the_kept_answer() {
        let cache = RetryCache::new(1 << 20);
        let guard = run(&cache, "a");
        let Claim::Wait(second) = cache.claim(key("a")) else {
            panic!("a retry while running attaches")
        };
        guard.finish(answer("42"), Some(Duration::from_secs(3)));
        assert_eq!(second.answer().await.unwrap().body, "42");
        let Claim::Answer(kept) = cache.claim(key("a")) else {
            panic!("a retry after the end gets the kept answer")
        };
        assert_eq!(kept.body, "42");
        assert_eq!(cache.stats().hits, 2);
        // Kept for the function's timeout only.
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(cache.claim(key("a")), Claim::Run(..)));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_not_kept_are_forgotten_and_waiters_still_get_them() {
        let cache = RetryCache::new(1 << 20);
        let guard = run(&cache, "t");
        let Claim::Wait(second) = cache.claim(key("t")) else {
            panic!()
        };
        guard.finish(answer("throttled"), None);
        assert_eq!(second.answer().await.unwrap().body, "throttled");
        assert!(matches!(cache.claim(key("t")), Claim::Run(..)));
        assert_eq!(cache.stats().entries, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_dropped_unfinished_releases_the_key_and_its_waiters() {
        let cache = RetryCache::new(1 << 20);
        let guard = run(&cache, "x");
        let Claim::Wait(waiter) = cache.claim(key("x")) else {
            panic!()
        };
        drop(guard);
        assert!(waiter.answer().await.is_none());
        assert!(matches!(cache.claim(key("x")), Claim::Run(..)));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_answers_go_before_a_live_older_one_is_evicted() {
        let one = answer(&"x".repeat(1000));
        let cache = RetryCache::new(3 * 1400);
        run(&cache, "long").finish(Arc::clone(&one), Some(Duration::from_secs(900)));
        for id in ["short-1", "short-2"] {
            run(&cache, id).finish(Arc::clone(&one), Some(Duration::from_secs(3)));
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        run(&cache, "new").finish(Arc::clone(&one), Some(Duration::from_secs(3)));
        assert!(
            matches!(cache.claim(key("long")), Claim::Answer(_)),
            "the 15-minute answer is still valid and kept"
        );
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_answers_are_not_counted_as_kept() {
        let cache = RetryCache::new(1 << 20);
        run(&cache, "a").finish(answer("1"), Some(Duration::from_secs(3)));
        assert_eq!(cache.stats().entries, 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_bound_evicts_the_oldest_answers() {
        let one = answer(&"x".repeat(1000));
        let limit = entry_size(&key("1"), &one) * 3;
        let cache = RetryCache::new(limit);
        for id in ["1", "2", "3", "4", "5"] {
            let guard = run(&cache, id);
            guard.finish(Arc::clone(&one), Some(Duration::from_secs(60)));
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.evictions), (3, 2));
        assert!(stats.bytes <= limit);
        assert!(
            matches!(cache.claim(key("1")), Claim::Run(..)),
            "oldest gone"
        );
        assert!(
            matches!(cache.claim(key("5")), Claim::Answer(_)),
            "newest kept"
        );
        // An answer larger than the whole bound is not kept at all.
        let guard = run(&cache, "big");
        guard.finish(answer(&"y".repeat(limit)), Some(Duration::from_secs(60)));
        assert!(matches!(cache.claim(key("big")), Claim::Run(..)));
    }
}
