//! The mapping's own permission, as Lambda has it for a mapping that polls: the function's
//! execution role must allow reading its queue, checked when the mapping is attached (see
//! `refusal`) and again whenever the role changes. A mapping the role no longer allows stops and says why,
//! handing back what it received uncounted: nothing moves towards a dead-letter queue.

use std::sync::atomic::Ordering;

use super::Shared;
use crate::refusal::QUEUE_ACTIONS;
use crate::status::MappingStatus;

impl Shared {
    /// Whether the role still allows the mapping; if not, stops it with the reason. One
    /// atomic load while the role is unchanged.
    pub(super) fn still_allowed(&self) -> bool {
        let version = self.function.role_version();
        if version == self.role_checked.load(Ordering::Acquire) {
            return true;
        }
        match self
            .function
            .authorize_source(&QUEUE_ACTIONS, &self.origin.event_source_arn)
        {
            Ok(()) => {
                self.role_checked.store(version, Ordering::Release);
                true
            }
            Err(denied) => {
                tracing::warn!(mapping = %self.name, %denied, "the function's role no longer allows the mapping; stopping it");
                self.halt(MappingStatus::Stopped {
                    reason: format!("access denied: {denied}"),
                });
                false
            }
        }
    }
}
