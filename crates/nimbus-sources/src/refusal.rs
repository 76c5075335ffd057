//! What a mapping may not do: the outcomes that refuse or fail an invocation, classified by
//! the outcome's class rather than by variant (so that an outcome added to the core, a crashed
//! instance say, is a failed attempt and never silently stops a mapping), and what its
//! function's role must allow on its source (checked when the mapping is attached).

use nimbus_core::{ConfigError, FunctionHandle, InvokeError, OutcomeKind};

/// What a queue mapping does to its queue, as SQS names it: the function's role must allow
/// all of it on the queue.
pub const QUEUE_ACTIONS: [&str; 3] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
];

/// What a stream mapping does to its stream, as Kinesis names it.
pub const STREAM_ACTIONS: [&str; 4] = [
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:DescribeStream",
    "kinesis:ListShards",
];

/// Refuses a mapping whose function's role does not allow `actions` on its source `arn`, as
/// Lambda refuses to create such a mapping.
pub(crate) fn check_on_attach<E, O>(
    function: &FunctionHandle<E, O>,
    actions: &[&str],
    arn: &str,
) -> Result<(), ConfigError>
where
    E: Send + 'static,
    O: Send + 'static,
{
    function.authorize_source(actions, arn).map_err(|denied| {
        ConfigError::new(
            "mapping",
            "role",
            denied.to_string(),
            format!("a role allowing {} on {arn}", actions.join(", ")),
        )
    })
}

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
