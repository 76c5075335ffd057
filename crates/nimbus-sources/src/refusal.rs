//! What a failed invocation means to a mapping engine, by the outcome's class rather than by
//! variant, so that an outcome added to the core (a crashed instance, say) is a failed attempt
//! and never silently stops a mapping.

use nimbus_core::{InvokeError, OutcomeKind};

/// What a refused or failed invocation means to a mapping.
pub(crate) enum Refusal {
    /// No capacity now: wait and retry, uncounted.
    Throttled,
    /// The function ran and failed (error, timeout, panic or crash, init failure): a failed
    /// attempt.
    Failed,
    /// The function will not run anything (shutting down, cancelled, unregistered, access
    /// denied): stop the mapping, leaving the messages in the source.
    Stop,
}

pub(crate) fn classify(error: &InvokeError) -> Refusal {
    // Not the function's failure: a denied mapping stops, its messages left untouched.
    if matches!(error, InvokeError::AccessDenied(_)) {
        return Refusal::Stop;
    }
    match error.kind() {
        OutcomeKind::Throttled => Refusal::Throttled,
        OutcomeKind::Cancelled => Refusal::Stop,
        _ => Refusal::Failed,
    }
}
