//! The mapping's own permission, as Lambda has it for a mapping that polls: the function's
//! execution role must allow reading its queue, checked when the mapping is attached and
//! again whenever the role changes. A mapping the role no longer allows stops and says why,
//! handing back what it received uncounted: nothing moves towards a dead-letter queue.

use std::sync::atomic::Ordering;

use nimbus_core::ConfigError;

use super::{QueueFunction, Shared};
use crate::status::MappingStatus;

/// What a queue mapping does to its queue, as SQS names it.
pub const QUEUE_ACTIONS: [&str; 3] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

/// Refuses a mapping whose function's role does not allow reading `queue_arn`.
pub(super) fn check_on_attach(
    function: &QueueFunction,
    queue_arn: &str,
) -> Result<(), ConfigError> {
    function
        .authorize_source(&QUEUE_ACTIONS, queue_arn)
        .map_err(|denied| {
            ConfigError::new(
                "mapping",
                "role",
                denied.to_string(),
                format!(
                    "a role allowing {} on {queue_arn}",
                    QUEUE_ACTIONS.join(", ")
                ),
            )
        })
}

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
