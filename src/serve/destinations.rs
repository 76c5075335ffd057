//! Async destinations the file can name: another function (invoked asynchronously with Lambda's
//! invocation record) or an in-memory queue (sent the record as JSON).

use std::sync::Arc;

use nimbus_sources::InMemoryQueue;
use serde::Serialize;

use crate::util::aws;
use crate::{
    async_trait, DeliveryError, Destination, DestinationTarget, InvocationRecord, Runtime,
};

/// Invokes a function of the runtime asynchronously with the record.
#[derive(Debug, Clone)]
pub(crate) struct FunctionDestination {
    runtime: Runtime,
    function: String,
}

impl FunctionDestination {
    pub(crate) fn new(runtime: Runtime, function: &str) -> Self {
        Self {
            runtime,
            function: function.to_owned(),
        }
    }
}

#[async_trait]
impl<E, O> Destination<E, O> for FunctionDestination
where
    E: Serialize + Send + 'static,
    O: Serialize + Send + 'static,
{
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
        let event = match serde_json::to_value(&record) {
            Ok(event) => event,
            Err(e) => return Err(DeliveryError::new(record, e.to_string())),
        };
        // Refused (a full queue, shutdown): the record goes back to the runtime, which keeps
        // the event for the host during shutdown and otherwise counts a delivery failure.
        match self.runtime.invoke_async_json(&self.function, event) {
            Ok(_) => Ok(()),
            Err(e) => Err(DeliveryError::new(record, e.to_string())),
        }
    }

    fn target(&self) -> Option<DestinationTarget> {
        let config = self.runtime.config();
        let arn = aws::function_arn(&config.region, &config.account_id, &self.function);
        Some(DestinationTarget::new("lambda:InvokeFunction", arn))
    }
}

/// Sends the record, as JSON, to an in-memory queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueDestination {
    queue: Arc<InMemoryQueue>,
    /// `arn:aws:sqs:<region>:<account>:<name>`.
    arn: String,
}

impl QueueDestination {
    pub(crate) fn new(queue: Arc<InMemoryQueue>, arn: String) -> Self {
        Self { queue, arn }
    }
}

#[async_trait]
impl<E, O> Destination<E, O> for QueueDestination
where
    E: Serialize + Send + 'static,
    O: Serialize + Send + 'static,
{
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
        let body = match serde_json::to_vec(&record) {
            Ok(body) => body,
            Err(e) => return Err(DeliveryError::new(record, e.to_string())),
        };
        match self.queue.send(body) {
            Ok(_) => Ok(()),
            Err(e) => Err(DeliveryError::new(record, e.to_string())),
        }
    }

    fn target(&self) -> Option<DestinationTarget> {
        Some(DestinationTarget::new("sqs:SendMessage", self.arn.clone()))
    }
}
