//! [`Shared`]: the runtime-wide state every function's executor works against: the unreserved
//! concurrency pool and its reservations, the in-flight gate, the shutdown tokens, request ids,
//! and the tasks the runtime waits for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, Weak};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::concurrency::{Gate, Limiter};
use crate::config::RuntimeConfig;
use crate::error::ConfigError;
use crate::handler::{RequestId, RuntimeServices};
use crate::util::Padded;

/// State shared by the runtime and every function.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RuntimeConfig,
    /// The pool of functions without reserved concurrency.
    pub(crate) unreserved: Limiter,
    reserved_total: parking_lot::Mutex<u64>,
    pub(crate) gate: Padded<Gate>,
    /// Fires when shutdown begins: contexts' tokens fire, reapers stop.
    pub(crate) shutting_down: CancellationToken,
    /// Fires when the grace period ends: running invocations are dropped.
    pub(crate) hard_stop: CancellationToken,
    /// Set with `hard_stop`; a plain flag for hot loops (the token's check takes a lock).
    stopped: Padded<AtomicBool>,
    pub(crate) cancelled: AtomicU64,
    request_prefix: u64,
    request_seq: Padded<AtomicU64>,
    pub(crate) tasks: TaskTracker,
    /// The Tokio runtime this one was built on (or, if it was built outside one, the one its
    /// first function was registered on), where tasks spawned from other threads run.
    tokio: OnceLock<tokio::runtime::Handle>,
    /// The runtime's services, for handlers' contexts (set once the runtime exists).
    services: OnceLock<Weak<dyn RuntimeServices>>,
}

impl Shared {
    pub(crate) fn new(config: RuntimeConfig) -> Self {
        let limit = usize::try_from(config.concurrency_limit).unwrap_or(usize::MAX);
        Self {
            config,
            unreserved: Limiter::new(limit),
            reserved_total: parking_lot::Mutex::new(0),
            gate: Padded::default(),
            shutting_down: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            stopped: Padded(AtomicBool::new(false)),
            cancelled: AtomicU64::new(0),
            request_prefix: fastrand::u64(..),
            request_seq: Padded(AtomicU64::new(1)),
            tasks: TaskTracker::new(),
            tokio: tokio::runtime::Handle::try_current()
                .map(OnceLock::from)
                .unwrap_or_default(),
            services: OnceLock::new(),
        }
    }

    /// The Tokio runtime for tasks spawned from threads without one; the first call from
    /// inside a Tokio runtime fixes it if the runtime was built outside one.
    pub(crate) fn tokio(&self) -> Option<&tokio::runtime::Handle> {
        match self.tokio.get() {
            Some(handle) => Some(handle),
            None => {
                let current = tokio::runtime::Handle::try_current().ok()?;
                Some(self.tokio.get_or_init(|| current))
            }
        }
    }

    /// Records the runtime's services (once).
    pub(crate) fn set_services(&self, services: Weak<dyn RuntimeServices>) {
        let _ = self.services.set(services);
    }

    pub(crate) fn services(&self) -> Option<Weak<dyn RuntimeServices>> {
        self.services.get().cloned()
    }

    /// Whether the shutdown grace period has ended.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The grace period has ended: hot loops stop at their next check.
    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn next_request_id(&self) -> RequestId {
        self.request_id(self.reserve_request_ids(1))
    }

    /// Reserves `n` request ids for the caller to give out: returns the first's sequence
    /// number; the others follow it.
    pub(crate) fn reserve_request_ids(&self, n: u64) -> u64 {
        self.request_seq.fetch_add(n, Ordering::Relaxed)
    }

    /// The request id of a reserved sequence number.
    pub(crate) fn request_id(&self, seq: u64) -> RequestId {
        RequestId::from_u128(u128::from(self.request_prefix) << 64 | u128::from(seq))
    }

    /// Carves `amount` out of the unreserved pool, keeping the configured minimum free; `field`
    /// names the setting asking for it in the error.
    pub(crate) fn reserve(
        &self,
        amount: u32,
        field: &'static str,
    ) -> Result<Reservation<'_>, ConfigError> {
        let mut reserved = self.reserved_total.lock();
        let limit = u64::from(self.config.concurrency_limit);
        let keep = u64::from(self.config.effective_min_unreserved());
        let available = limit - keep - *reserved;
        if u64::from(amount) > available {
            return Err(ConfigError::new(
                "function",
                field,
                amount,
                format!(
                    "0..={available} (runtime limit {limit}, {reserved} already reserved, {keep} kept unreserved)",
                    reserved = *reserved
                ),
            ));
        }
        *reserved += u64::from(amount);
        self.unreserved
            .set_limit(usize::try_from(limit - *reserved).unwrap_or(usize::MAX));
        Ok(Reservation {
            shared: self,
            amount: Some(amount),
        })
    }

    pub(crate) fn unreserve(&self, amount: u32) {
        let mut reserved = self.reserved_total.lock();
        *reserved -= u64::from(amount);
        let limit = u64::from(self.config.concurrency_limit);
        self.unreserved
            .set_limit(usize::try_from(limit - *reserved).unwrap_or(usize::MAX));
    }
}

/// A reservation taken for a registration in progress; given back when dropped unless the
/// registration completed ([`Reservation::keep`]).
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    shared: &'a Shared,
    amount: Option<u32>,
}

impl Reservation<'_> {
    /// The registration completed: the function owns the reservation now.
    pub(crate) fn keep(mut self) {
        self.amount = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(amount) = self.amount.take() {
            self.shared.unreserve(amount);
        }
    }
}
