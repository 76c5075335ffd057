//! Where finished async invocations go: on-success / on-failure [`Destination`]s receiving an
//! [`InvocationRecord`], and [`DeadLetter`] targets receiving the original event only.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use super::record::{DeadLetterAttributes, DeadLetterMessage, InvocationRecord};

/// A delivery that did not go through; it hands the value back so that nothing is lost.
#[derive(Debug)]
pub struct DeliveryError<T> {
    /// The record or event that was not delivered.
    pub value: T,
    /// Why.
    pub reason: String,
}

impl<T> DeliveryError<T> {
    /// A failed delivery of `value`.
    pub fn new(value: T, reason: impl Into<String>) -> Self {
        Self {
            value,
            reason: reason.into(),
        }
    }
}

/// A target for invocation records: the host through a channel, another function, a queue or
/// stream from `nimbus-sources`, anything that implements it.
///
/// # Example
///
/// ```
/// use nimbus_core::{Destination, InvocationRecord};
///
/// // A Tokio channel is a destination: the host reads records from the receiver.
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<InvocationRecord<String, u32>>();
/// fn takes<D: Destination<String, u32>>(_d: D) {}
/// takes(tx);
/// ```
///
/// Implementing it: a destination that writes one log line per failed invocation, for any
/// event and output type. The `async_trait` attribute is re-exported by this crate.
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::{async_trait, handler_fn, Context, DeliveryError, Destination, Function, FunctionError, InvocationRecord, Runtime};
/// use tokio::sync::mpsc;
///
/// #[derive(Debug)]
/// struct ErrorLog(mpsc::UnboundedSender<String>);
///
/// #[async_trait]
/// impl<E: Send + 'static, O: Send + 'static> Destination<E, O> for ErrorLog {
///     async fn deliver(&self, record: InvocationRecord<E, O>) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
///         let error = record.error.as_ref().map_or("none", |e| e.message.as_str());
///         let line = format!("{} {}: {error}", record.function, record.request_id);
///         // Refused: the record is handed back, and the event tries the dead-letter target.
///         self.0.send(line).map_err(|_| DeliveryError::new(record, "the log is closed"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let (log, mut lines) = mpsc::unbounded_channel();
/// let charge = runtime
///     .register(
///         Function::new("charge", handler_fn(|cents: u64, _ctx: Context| async move {
///             Err::<u64, _>(FunctionError::msg(format!("card declined for {cents}")).not_retryable())
///         }))
///         .with_on_failure(ErrorLog(log)),
///     )
///     .await?;
/// let request_id = charge.invoke_async(500)?;
/// assert_eq!(lines.recv().await, Some(format!("charge {request_id}: card declined for 500")));
/// runtime.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Destination<E, O>: Send + Sync + 'static {
    /// Delivers one record.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] that hands the record back.
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>>;

    /// What the destination reaches, as IAM names it: the function's execution role must
    /// allow it, checked when the function is registered. `None` (the default): the host's
    /// own code, not checked.
    fn target(&self) -> Option<DestinationTarget> {
        None
    }
}

/// A resource a destination or dead-letter target reaches and the action it takes on it, as
/// IAM names them (`sqs:SendMessage` on a queue's ARN, `lambda:InvokeFunction` on a
/// function's): a function's execution role must allow it when the destination is configured,
/// as Lambda checks its role when a destination or dead-letter queue is set, not at the first
/// failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationTarget {
    /// The action, as `sqs:SendMessage`.
    pub action: String,
    /// The resource's ARN.
    pub arn: String,
}

impl DestinationTarget {
    /// `action` on `arn`.
    pub fn new(action: impl Into<String>, arn: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            arn: arn.into(),
        }
    }
}

/// A target for events that failed for good: it receives the original event and, as Lambda's
/// message attributes, its request id, an HTTP status code and the error message
/// ([`DeadLetterAttributes`]). A channel of events keeps the event only; a channel of
/// [`DeadLetterMessage`]s keeps both.
///
/// # Example
///
/// A dead-letter target that keeps failed events as JSON lines, for any event that can be
/// serialised. Tokio channels of the event type are targets already. The `async_trait`
/// attribute is re-exported by this crate.
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::{async_trait, handler_fn, Context, DeadLetter, DeadLetterAttributes, DeliveryError, Function, FunctionError, Runtime};
/// use tokio::sync::mpsc;
///
/// #[derive(Debug)]
/// struct JsonLines(mpsc::UnboundedSender<String>);
///
/// #[async_trait]
/// impl<E: serde::Serialize + Send + 'static> DeadLetter<E> for JsonLines {
///     async fn send(&self, event: E, attributes: DeadLetterAttributes) -> Result<(), DeliveryError<E>> {
///         // The request id, the HTTP status and the error message go beside the event, as
///         // Lambda's message attributes do; here only the event is written.
///         let _ = attributes.request_id;
///         let line = match serde_json::to_string(&event) {
///             Ok(line) => line,
///             Err(e) => return Err(DeliveryError::new(event, e.to_string())),
///         };
///         // Refused: the event is handed back to the host at shutdown, not lost.
///         self.0.send(line).map_err(|_| DeliveryError::new(event, "the file is closed"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let (dead_letters, mut lines) = mpsc::unbounded_channel();
/// let ship = runtime
///     .register(
///         Function::new("ship", handler_fn(|_order: serde_json::Value, _ctx: Context| async move {
///             Err::<(), _>(FunctionError::msg("no courier"))
///         }))
///         .with_max_retries(0)
///         .with_dead_letter(JsonLines(dead_letters)),
///     )
///     .await?;
/// ship.invoke_async(serde_json::json!({ "order": 17 }))?;
/// assert_eq!(lines.recv().await.as_deref(), Some(r#"{"order":17}"#));
/// runtime.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait DeadLetter<E>: Send + Sync + 'static {
    /// Stores one event, with what Lambda sends beside it as message attributes.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] that hands the event back.
    async fn send(
        &self,
        event: E,
        attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<E>>;

    /// What the target reaches (see [`Destination::target`]); `None` by default.
    fn target(&self) -> Option<DestinationTarget> {
        None
    }
}

#[async_trait]
impl<E, O> Destination<E, O> for tokio::sync::mpsc::UnboundedSender<InvocationRecord<E, O>>
where
    E: Send + 'static,
    O: Send + 'static,
{
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
        self.send(record)
            .map_err(|e| DeliveryError::new(e.0, "the receiving channel is closed"))
    }
}

#[async_trait]
impl<E, O> Destination<E, O> for tokio::sync::mpsc::Sender<InvocationRecord<E, O>>
where
    E: Send + 'static,
    O: Send + 'static,
{
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
        self.send(record)
            .await
            .map_err(|e| DeliveryError::new(e.0, "the receiving channel is closed"))
    }
}

/// A channel of events is a dead-letter target that keeps the event only, as a queue
/// consumer that ignores message attributes sees it.
#[async_trait]
impl<E: Send + 'static> DeadLetter<E> for tokio::sync::mpsc::UnboundedSender<E> {
    async fn send(
        &self,
        event: E,
        _attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<E>> {
        tokio::sync::mpsc::UnboundedSender::send(self, event)
            .map_err(|e| DeliveryError::new(e.0, "the receiving channel is closed"))
    }
}

#[async_trait]
impl<E: Send + 'static> DeadLetter<E> for tokio::sync::mpsc::Sender<E> {
    async fn send(
        &self,
        event: E,
        _attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<E>> {
        tokio::sync::mpsc::Sender::send(self, event)
            .await
            .map_err(|e| DeliveryError::new(e.0, "the receiving channel is closed"))
    }
}

/// A channel of [`DeadLetterMessage`]s keeps the event and its attributes.
#[async_trait]
impl<E: Send + 'static> DeadLetter<E> for tokio::sync::mpsc::UnboundedSender<DeadLetterMessage<E>> {
    async fn send(
        &self,
        event: E,
        attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<E>> {
        tokio::sync::mpsc::UnboundedSender::send(self, DeadLetterMessage::new(event, attributes))
            .map_err(|e| DeliveryError::new(e.0.event, "the receiving channel is closed"))
    }
}

#[async_trait]
impl<E: Send + 'static> DeadLetter<E> for tokio::sync::mpsc::Sender<DeadLetterMessage<E>> {
    async fn send(
        &self,
        event: E,
        attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<E>> {
        tokio::sync::mpsc::Sender::send(self, DeadLetterMessage::new(event, attributes))
            .await
            .map_err(|e| DeliveryError::new(e.0.event, "the receiving channel is closed"))
    }
}

/// A destination made from an async closure; see [`destination_fn`].
pub struct DestinationFn<F, E, O> {
    f: F,
    _types: PhantomData<fn(E, O)>,
}

impl<F, E, O> std::fmt::Debug for DestinationFn<F, E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationFn").finish_non_exhaustive()
    }
}

/// Turns `async fn(InvocationRecord) -> Result<(), DeliveryError<InvocationRecord>>` into a
/// [`Destination`].
pub fn destination_fn<F, Fut, E, O>(f: F) -> DestinationFn<F, E, O>
where
    F: Fn(InvocationRecord<E, O>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeliveryError<InvocationRecord<E, O>>>> + Send + 'static,
{
    DestinationFn {
        f,
        _types: PhantomData,
    }
}

#[async_trait]
impl<F, Fut, E, O> Destination<E, O> for DestinationFn<F, E, O>
where
    F: Fn(InvocationRecord<E, O>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeliveryError<InvocationRecord<E, O>>>> + Send + 'static,
    E: Send + 'static,
    O: Send + 'static,
{
    async fn deliver(
        &self,
        record: InvocationRecord<E, O>,
    ) -> Result<(), DeliveryError<InvocationRecord<E, O>>> {
        (self.f)(record).await
    }
}

/// The destinations of one function.
pub(crate) struct Destinations<E, O> {
    pub(crate) on_success: Option<Arc<dyn Destination<E, O>>>,
    pub(crate) on_failure: Option<Arc<dyn Destination<E, O>>>,
    pub(crate) dead_letter: Option<Arc<dyn DeadLetter<E>>>,
}

impl<E: 'static, O: 'static> Destinations<E, O> {
    /// The targets the configured destinations name, each with its setting's name.
    pub(crate) fn targets(&self) -> Vec<(&'static str, DestinationTarget)> {
        let mut targets = Vec::new();
        if let Some(target) = self.on_success.as_ref().and_then(|d| d.target()) {
            targets.push(("on_success", target));
        }
        if let Some(target) = self.on_failure.as_ref().and_then(|d| d.target()) {
            targets.push(("on_failure", target));
        }
        if let Some(target) = self.dead_letter.as_ref().and_then(|d| d.target()) {
            targets.push(("dead_letter", target));
        }
        targets
    }
}

impl<E, O> Default for Destinations<E, O> {
    fn default() -> Self {
        Self {
            on_success: None,
            on_failure: None,
            dead_letter: None,
        }
    }
}
