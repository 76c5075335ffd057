//! Scaling a queue mapping's pollers: one more per full batch (within the scale-up rate), one
//! fewer per empty receive down to one, half as many on function errors and throttles. Each
//! change of the target is told to the source as a [demand hint](QueueSource::demand).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::Shared;
use crate::queue::QueueSource;
use crate::status::panic_message;

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
            self.demand(scaling.target.saturating_mul(self.config.batch_size));
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
            self.note_surplus(&scaling);
            self.tell_demand(&scaling, before);
            return true;
        }
        false
    }

    /// A full batch: there is backlog, so add a poller if the scale-up rate allows.
    pub(super) fn grow(self: &Arc<Self>) {
        let spawn = {
            let mut scaling = self.scaling.lock();
            let before = scaling.target;
            if scaling.target < self.config.max_concurrency as usize && self.scale_up.try_take() {
                scaling.target += 1;
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
        self.note_surplus(&scaling);
        self.tell_demand(&scaling, before);
    }
}
