//! Scaling a queue mapping's pollers: one more per full batch (within the scale-up rate), one
//! fewer per empty receive down to one, half as many on function errors and throttles. Each
//! change of the target is told to the source as a [demand hint](QueueSource::demand).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::MutexGuard;
use tokio::time::Instant;

use super::pace::MOST_HELD;
use super::Shared;
use crate::queue::QueueSource;
use crate::status::panic_message;

/// When a full batch may next add a poller: with the target at its maximum or the scale-up
/// budget spent, every full batch would otherwise take the `scaling` lock and the budget's
/// lock for nothing (at batch size 1, twice per receive, shared by every poller). Set under
/// the `scaling` lock; read without it, and a stale value only delays growth by one batch.
#[derive(Debug)]
pub(super) struct Growth {
    /// The moment nanoseconds count from.
    epoch: Instant,
    /// Nanoseconds after `epoch` before which growing cannot succeed (`u64::MAX`: not until
    /// the target comes down).
    not_before: AtomicU64,
    /// Fewer pollers run than the target (a poller left without retiring, or one was not
    /// spawned as the mapping stopped): grow at once.
    short: AtomicBool,
}

impl Default for Growth {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            not_before: AtomicU64::new(0),
            short: AtomicBool::new(false),
        }
    }
}

impl Growth {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether growing could succeed now. The clock is read only while the budget refills:
    /// a batch of one message would otherwise pay a clock read here too.
    fn may_grow(&self) -> bool {
        if self.short.load(Ordering::Relaxed) {
            return true;
        }
        match self.not_before.load(Ordering::Relaxed) {
            0 => true,
            u64::MAX => false,
            not_before => self.nanos(Instant::now()) >= not_before,
        }
    }

    /// Growing cannot succeed for `wait` (`Duration::MAX`: until the target comes down).
    fn hold(&self, wait: Duration) {
        let until = if wait == Duration::MAX {
            u64::MAX
        } else {
            self.nanos(Instant::now())
                .saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX))
        };
        self.not_before.store(until, Ordering::Relaxed);
    }

    /// The target came down (or a poller can be added): ask again at the next full batch.
    fn reopen(&self) {
        self.not_before.store(0, Ordering::Relaxed);
    }
}

/// Pollers running and the number the scaler aims for.
#[derive(Debug)]
pub(super) struct Scaling {
    pub(super) target: usize,
    pub(super) active: usize,
}

impl Shared {
    /// Tells the source how many messages the mapping wants in flight, if that changed.
    /// Called with the scaling lock held, so that the source sees the changes in order; a
    /// panic in the source is caught (the hint is lost, the poller lives).
    fn tell_demand(&self, scaling: &MutexGuard<'_, Scaling>, before: usize) {
        if scaling.target != before && !self.cancel.is_cancelled() {
            self.demand(scaling.target.saturating_mul(self.held_per_poller()));
        }
    }

    /// The most messages a poller holds: its batch, or at batch size 1 as many as
    /// [`MOST_HELD`] (see `pace`).
    pub(super) fn held_per_poller(&self) -> usize {
        if self.config.batch_size == 1 {
            MOST_HELD
        } else {
            self.config.batch_size
        }
    }

    /// The mapping stops: it wants nothing more. After the stop was signalled, so that no
    /// scaling decision tells the source otherwise afterwards.
    pub(super) fn want_nothing(&self) {
        let _scaling = self.scaling.lock();
        self.demand(0);
    }

    /// Calls the source's demand hint, catching a panic.
    pub(super) fn demand(&self, wanted: usize) {
        let told = std::panic::catch_unwind(AssertUnwindSafe(|| self.source.demand(wanted)));
        if let Err(panic) = told {
            tracing::warn!(mapping = %self.name, panic = %panic_message(panic.as_ref()), "the source's demand hint panicked");
        }
    }

    /// Records whether more pollers run than the target, for the check each poller makes
    /// per batch. Called under the `scaling` lock after every change.
    pub(super) fn note_surplus(&self, scaling: &Scaling) {
        self.over_target
            .store(scaling.active > scaling.target, Ordering::Relaxed);
        self.growth
            .short
            .store(scaling.active < scaling.target, Ordering::Relaxed);
    }

    /// Retires the calling poller if there are more than the target. The lock is taken only
    /// when the last change left a surplus (a stale answer delays a retirement by one batch).
    pub(super) fn retire_if_over_target(&self) -> bool {
        if !self.over_target.load(Ordering::Relaxed) {
            return false;
        }
        let mut scaling = self.scaling.lock();
        if scaling.active > scaling.target {
            scaling.active -= 1;
            self.note_surplus(&scaling);
            return true;
        }
        false
    }

    /// An empty receive: scale in, keeping one poller to notice new messages. Returns whether
    /// the calling poller retired.
    pub(super) fn retire_if_idle(&self) -> bool {
        let mut scaling = self.scaling.lock();
        if scaling.active > 1 {
            let before = scaling.target;
            scaling.active -= 1;
            scaling.target = scaling.target.min(scaling.active).max(1);
            self.growth.reopen();
            self.note_surplus(&scaling);
            self.tell_demand(&scaling, before);
            return true;
        }
        false
    }

    /// A full batch: there is backlog, so add a poller if the scale-up rate allows.
    pub(super) fn grow(self: &Arc<Self>) {
        if !self.growth.may_grow() {
            return;
        }
        let spawn = {
            let mut scaling = self.scaling.lock();
            let before = scaling.target;
            if scaling.target >= self.config.max_concurrency as usize {
                self.growth.hold(Duration::MAX);
            } else if self.scale_up.try_take() {
                scaling.target += 1;
            } else {
                self.growth.hold(self.scale_up.time_to_token());
            }
            let spawn = scaling.active < scaling.target && !self.cancel.is_cancelled();
            if spawn {
                scaling.active += 1;
            }
            self.note_surplus(&scaling);
            self.tell_demand(&scaling, before);
            spawn
        };
        if spawn {
            self.tasks.spawn(Arc::clone(self).poll());
        }
    }

    /// Function errors and throttles: halve the concurrency.
    pub(super) fn back_off(&self) {
        let mut scaling = self.scaling.lock();
        let before = scaling.target;
        scaling.target = (scaling.target / 2).max(1);
        self.growth.reopen();
        self.note_surplus(&scaling);
        self.tell_demand(&scaling, before);
    }
}
