//! A function's warm pool: leases that discard a broken instance on drop, the check for
//! instances that died while idle, and the reaper that scales idle instances in.
//!
//! Idle instances are kept per group of threads ([`Striped`]), each group's as a stack: a
//! thread reuses the instance it used last, and only when it has none takes the most recent of
//! the first other stack that has one. So two threads invoking one function neither take one
//! lock by turns nor hand one instance's memory back and forth between their cores, and a new
//! instance is made only when the look finds none idle (it looks at one stack at a time, so an
//! instance given back meanwhile to a stack already passed can be missed: a cold start more,
//! rarely). Under falling load the instances at the bottom of each stack stay idle longest and
//! are the ones reaped; under a light load spread over threads, each thread's stack can keep
//! an instance warm (at most one per thread group more than one global stack would keep).
//!
//! The reaper sleeps until the oldest idle instance expires, and parks on a notification when
//! there is nothing it could reap; an idle function costs no wake-ups.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Instance;
use crate::handler::InstanceScope;
use crate::util::{guarded, BoxFuture, CatchUnwind, Striped};

type Boxed<E, O> = Box<dyn Instance<E, O>>;

/// Runs the rest of a disposal that did not finish at once, on a task the runtime tracks.
pub(crate) type Disposer = Box<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// An instance and its scope (cancellation token, log stream). The token belongs to the
/// instance, like a Lambda environment's lifetime: it fires when an invocation on it times out
/// (and the instance is discarded) or at shutdown, so work an earlier invocation left running
/// stops with it. Sharing one scope per instance also keeps an allocation off every invocation.
struct Slot<E, O> {
    instance: Boxed<E, O>,
    scope: Arc<InstanceScope>,
}

struct Idle<E, O> {
    slot: Slot<E, O>,
    since: Instant,
}

/// One thread group's idle instances, most recently used last.
type Stack<E, O> = Mutex<VecDeque<Idle<E, O>>>;

/// The instances of one function.
pub(crate) struct Pool<E, O> {
    idle: Striped<Stack<E, O>>,
    /// The function is gone (shutdown, unregister): instances given back are dropped.
    closed: AtomicBool,
    /// The reaper is parked waiting for a notification.
    ///
    /// `close` and the reaper set their flag, then (after a `SeqCst` fence) look at the stacks;
    /// `put_back` takes its stack, then (after a fence) reads both flags under the stack's
    /// lock, pushing in between. So either the look finds the instance (the stack exists for
    /// it and its lock orders the two), or the flags read show what was set: no instance stays
    /// after a close, and none sits idle behind a parked reaper (`notify_one` keeps the
    /// wake-up if the reaper is not waiting yet). The fences cover a stack created, or first
    /// used, while the look runs: it may miss such a stack, but then the reader sees the flag.
    reaper_parked: AtomicBool,
    /// Instances alive: idle, busy or just initialised.
    live: AtomicUsize,
    /// Provisioned instances alive, or claimed by an init in progress.
    provisioned: AtomicUsize,
    wake_reaper: Notify,
    disposer: Disposer,
}

impl<E, O> std::fmt::Debug for Pool<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("live", &self.live())
            .field("idle", &self.idle())
            .finish()
    }
}

impl<E, O> Pool<E, O> {
    pub(crate) fn new(disposer: Disposer) -> Self {
        Self {
            idle: Striped::default(),
            closed: AtomicBool::new(false),
            reaper_parked: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            provisioned: AtomicUsize::new(0),
            wake_reaper: Notify::new(),
            disposer,
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Idle instances: exact when nothing runs, approximate while instances come and go (the
    /// stacks are counted one after another).
    pub(crate) fn idle(&self) -> usize {
        self.idle.iter().map(|stack| stack.lock().len()).sum()
    }

    /// Claims a place for a new provisioned instance if fewer than `min` are alive (or being
    /// initialised); the instance's disposal gives it back.
    pub(crate) fn claim_provisioned(&self, min: usize) -> bool {
        self.provisioned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < min).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a claim whose instance was never created.
    pub(crate) fn unclaim_provisioned(&self) {
        self.provisioned.fetch_sub(1, Ordering::AcqRel);
    }

    /// Leases the idle instance this thread used last, or else the most recent of another
    /// thread's stack, if any is still alive; instances that died while idle are discarded on
    /// the way.
    pub(crate) fn take_warm(&self) -> Option<Lease<'_, E, O>>
    where
        E: 'static,
        O: 'static,
    {
        loop {
            let slot = self.pop_idle()?.slot;
            let mut lease = Lease {
                pool: self,
                slot: Some(slot),
            };
            // The backend's answer is user code, asked outside the lock.
            if !lease.is_faulted() {
                return Some(lease);
            }
            // Dropped unreleased: discarded.
        }
    }

    /// The most recent idle instance of this thread's stack, or of another's.
    fn pop_idle(&self) -> Option<Idle<E, O>> {
        let local = self.idle.local();
        if let Some(idle) = local.lock().pop_back() {
            return Some(idle);
        }
        self.idle
            .iter()
            .filter(|stack| !std::ptr::eq(*stack, local))
            .find_map(|stack| stack.lock().pop_back())
    }

    /// Adds a freshly initialised instance, leased to the caller.
    pub(crate) fn lease_new(
        &self,
        instance: Boxed<E, O>,
        scope: Arc<InstanceScope>,
    ) -> Lease<'_, E, O> {
        self.live.fetch_add(1, Ordering::Relaxed);
        Lease {
            pool: self,
            slot: Some(Slot { instance, scope }),
        }
    }

    /// Adds a freshly initialised instance straight to the idle pool (provisioning).
    pub(crate) fn add_idle(&self, instance: Boxed<E, O>, scope: Arc<InstanceScope>) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.put_back(Slot { instance, scope }, Instant::now());
    }

    fn put_back(&self, slot: Slot<E, O>, now: Instant) {
        let idle = Idle { slot, since: now };
        let stack = self.idle.local();
        fence(Ordering::SeqCst);
        {
            let mut stack = stack.lock();
            if !self.closed.load(Ordering::SeqCst) {
                stack.push_back(idle);
                let parked = self.reaper_parked.load(Ordering::SeqCst);
                drop(stack);
                // Read first: the reaper is rarely parked while instances come and go.
                if parked && self.reaper_parked.swap(false, Ordering::SeqCst) {
                    self.wake_reaper.notify_one();
                }
                return;
            }
        }
        self.discard();
        self.dispose(idle.slot);
    }

    fn discard(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Drops every idle instance, and from now on every instance given back (shutdown,
    /// unregister). Returns how many were dropped now.
    pub(crate) fn close(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let drained: Vec<_> = self
            .idle
            .iter()
            .flat_map(|stack| std::mem::take(&mut *stack.lock()))
            .collect();
        self.live.fetch_sub(drained.len(), Ordering::Relaxed);
        let dropped = drained.len();
        for idle in drained {
            self.dispose(idle.slot);
        }
        dropped
    }

    /// Reaps idle instances until `stop` fires, keeping at least `min` alive; provisioned
    /// instances are never reaped.
    pub(crate) async fn reap(&self, min: usize, idle_timeout: Duration, stop: &CancellationToken) {
        loop {
            // Parked before looking, so that an instance given back during the look wakes it.
            self.reaper_parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let next_expiry = match self.oldest_reapable() {
                Some(since) if self.live() > min => {
                    self.reaper_parked.store(false, Ordering::SeqCst);
                    Some(since + idle_timeout)
                }
                _ => None,
            };
            match next_expiry {
                None => tokio::select! {
                    () = self.wake_reaper.notified() => {}
                    () = stop.cancelled() => return,
                },
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = stop.cancelled() => return,
                    }
                    self.reap_expired(min, idle_timeout);
                }
            }
        }
    }

    /// When the longest-idle instance that may be reaped (not provisioned) became idle.
    fn oldest_reapable(&self) -> Option<Instant> {
        self.idle
            .iter()
            .filter_map(|stack| {
                let stack = stack.lock();
                // Each stack holds its longest idle at the bottom (near enough: two threads
                // of one group may push out of their end times' order).
                let oldest = stack.iter().find(|idle| !idle.slot.scope.provisioned);
                oldest.map(|idle| idle.since)
            })
            .min()
    }

    fn reap_expired(&self, min: usize, idle_timeout: Duration) {
        let now = Instant::now();
        let mut reaped = Vec::new();
        for stack in self.idle.iter() {
            let mut stack = stack.lock();
            while self.live() > min {
                let oldest = stack.iter().position(|idle| !idle.slot.scope.provisioned);
                match oldest {
                    Some(at) if stack[at].since + idle_timeout <= now => {
                        if let Some(idle) = stack.remove(at) {
                            reaped.push(idle.slot);
                        }
                        self.discard();
                    }
                    _ => break,
                }
            }
        }
        // Instances are disposed of outside the lock: their backends are user code.
        for slot in reaped {
            self.dispose(slot);
        }
    }

    /// Disposes of an instance: its token fires (work it started stops), the backend's
    /// disposal is polled once here, and what is left of it runs on a tracked task. A panic in
    /// it is caught.
    fn dispose(&self, slot: Slot<E, O>) {
        slot.scope.cancel.cancel();
        if slot.scope.provisioned {
            self.provisioned.fetch_sub(1, Ordering::AcqRel);
        }
        let instance = slot.instance;
        let Some(disposal) = guarded(|| Some(instance.dispose()), None) else {
            tracing::warn!("an instance panicked while being disposed of");
            return;
        };
        let mut disposal = CatchUnwind(disposal);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        if std::pin::Pin::new(&mut disposal).poll(&mut cx).is_pending() {
            (self.disposer)(Box::pin(async move {
                if disposal.await.is_err() {
                    tracing::warn!("an instance panicked while being disposed of");
                }
            }));
        }
    }
}

impl<E, O> Drop for Pool<E, O> {
    /// A pool dropped with idle instances (a registration that failed or was abandoned)
    /// disposes of them as closing it would.
    fn drop(&mut self) {
        let idle: Vec<_> = self
            .idle
            .iter()
            .flat_map(|stack| std::mem::take(&mut *stack.lock()))
            .collect();
        for idle in idle {
            self.dispose(idle.slot);
        }
    }
}

/// An instance lent to one invocation. Give it back with [`Lease::release`]; dropped any other
/// way (panic, timeout, cancelled invocation) the instance is discarded, as a crashed execution
/// environment is.
pub(crate) struct Lease<'a, E, O> {
    pool: &'a Pool<E, O>,
    slot: Option<Slot<E, O>>,
}

impl<E, O> Lease<'_, E, O> {
    /// The instance and its scope.
    pub(crate) fn parts(&mut self) -> (&mut Boxed<E, O>, &Arc<InstanceScope>) {
        let slot = self
            .slot
            .as_mut()
            .expect("a lease holds its instance until released");
        (&mut slot.instance, &slot.scope)
    }

    /// Whether the backend says the instance died (a panic in its answer counts as yes).
    pub(crate) fn is_faulted(&mut self) -> bool
    where
        E: 'static,
        O: 'static,
    {
        match self.slot.as_mut() {
            Some(slot) => guarded(|| slot.instance.fault().is_some(), true),
            None => true,
        }
    }

    /// Returns the instance to the warm pool; `now` is when its invocation ended.
    ///
    /// Its token may have fired only if shutdown began, and then no invocation takes it again.
    pub(crate) fn release(mut self, now: Instant) {
        if let Some(slot) = self.slot.take() {
            self.pool.put_back(slot, now);
        }
    }
}

impl<E, O> Drop for Lease<'_, E, O> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.discard();
            self.pool.dispose(slot);
        }
    }
}
