//! What a stream mapping hands to its function, what the function answers, and what the
//! on-failure destination receives.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use nimbus_core::DeliveryError;
use serde::{Deserialize, Serialize};

use super::StreamFailure;
use crate::stream::{Sequence, ShardId, StreamRecord};

/// The records of one invocation by a stream mapping (Lambda's `KinesisEvent`), all from one
/// shard, in sequence order (per partition key, with a parallelization factor above 1).
///
/// In JSON it is Lambda's Kinesis event, `{"Records": [{"kinesis": {"kinesisSchemaVersion",
/// "partitionKey", "sequenceNumber", "data" (base64), "approximateArrivalTimestamp" (epoch
/// seconds)}, "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID":
/// "<shard>:<sequence>", "eventName": "aws:kinesis:record", "invokeIdentityArn", "awsRegion",
/// "eventSourceARN"}]}`, and with tumbling windows also Lambda's `window` (`start`, `end`),
/// `state`, `shardId`, `eventSourceARN`, `isFinalInvokeForWindow` and
/// `isWindowTerminatedEarly`. `invokeIdentityArn` names the mapping as a role
/// (`arn:aws:iam::<account>:role/<mapping>`; Lambda names the function's execution role), and
/// the mapping is read back from it. Arrival times keep milliseconds in JSON, as Lambda's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamBatch {
    /// The mapping's name.
    pub mapping: Arc<str>,
    /// The shard the records come from.
    pub shard_id: ShardId,
    /// The stream's ARN (`eventSourceARN`), as on-failure records name it.
    pub stream_arn: Arc<str>,
    /// The records.
    pub records: Vec<StreamRecord>,
    /// The tumbling window, when the mapping has one.
    pub window: Option<TumblingWindow>,
}

/// A tumbling window's facts and the state carried from the previous invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct TumblingWindow {
    /// When the window starts.
    pub start: SystemTime,
    /// When it ends.
    pub end: SystemTime,
    /// What the previous invocation in this window returned (`null` at the start).
    pub state: serde_json::Value,
    /// The last invocation of the window: no records, only the state to act on.
    pub is_final: bool,
    /// The window was ended early, on a final invocation, because the state outgrew
    /// [`MAX_WINDOW_STATE`]; the next invocation goes on in the same window with `null` state
    /// (Lambda's `isWindowTerminatedEarly`).
    #[serde(default)]
    pub terminated_early: bool,
}

/// The largest window state carried from one invocation to the next: 1 MiB (1,048,576 bytes
/// of JSON), Lambda's limit per shard. A larger state ends the window early.
pub const MAX_WINDOW_STATE: usize = 1_048_576;

/// A stream handler's answer: which records failed (by sequence number), and the window state.
///
/// With tumbling windows, an answer to a batch must carry a state (`null` counts as none), as
/// Lambda requires: one without fails the batch (`MissingWindowState`), which is retried.
///
/// In JSON it is Lambda's partial batch response, `{"batchItemFailures": [{"itemIdentifier":
/// "<sequence number>"}], "state": {...}}`: a missing or `null` list, `{}` and `null` are
/// success, `state` may be left out; an identifier that is empty, `null` or missing makes the
/// answer unreadable, which fails the whole batch, as in Lambda.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StreamResponse {
    /// Sequence numbers of failed records; the mapping checkpoints before the lowest and
    /// retries from it. A number not in the batch fails the whole batch. In JSON,
    /// `batchItemFailures[].itemIdentifier`, the strings the batch gave (integers up to 2^64
    /// are read too).
    pub item_failures: Vec<Sequence>,
    /// The state to carry to the next invocation of the tumbling window; required with
    /// tumbling windows, at most [`MAX_WINDOW_STATE`] bytes as JSON. In JSON, `state`.
    pub state: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFailure {
    item_identifier: Sequence,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    batch_item_failures: Option<Vec<WireFailure>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<serde_json::Value>,
}

impl Serialize for StreamResponse {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireResponse {
            batch_item_failures: Some(
                self.item_failures
                    .iter()
                    .map(|seq| WireFailure {
                        item_identifier: seq.clone(),
                    })
                    .collect(),
            ),
            state: self.state.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for StreamResponse {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Option::<WireResponse>::deserialize(d)?;
        Ok(wire.map_or_else(Self::default, |w| Self {
            item_failures: w
                .batch_item_failures
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            state: w.state,
        }))
    }
}

impl StreamResponse {
    /// Every record succeeded.
    pub fn success() -> Self {
        Self::default()
    }

    /// These records failed.
    pub fn failures(sequences: impl IntoIterator<Item = Sequence>) -> Self {
        Self {
            item_failures: sequences.into_iter().collect(),
            state: None,
        }
    }

    /// Carries `state` to the next invocation of the window.
    #[must_use]
    pub fn with_state(mut self, state: serde_json::Value) -> Self {
        self.state = Some(state);
        self
    }
}

/// Why records went to the on-failure destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StreamCondition {
    /// The batch failed `max_retry_attempts` + 1 times.
    RetryAttemptsExhausted,
    /// The records were older than `max_record_age`.
    RecordAgeExceeded,
}

/// Where a stream mapping sends records it gives up on. A Tokio channel of [`StreamFailure`]s
/// is one already; a host implements it for anything else.
///
/// # Example
///
/// A destination that puts each failure, as JSON, on a queue (an [`InMemoryQueue`] here; a
/// broker's in production). The `async_trait` attribute is re-exported by this crate.
///
/// [`InMemoryQueue`]: crate::InMemoryQueue
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nimbus_core::{handler_fn, Context, DeliveryError, Function, FunctionError, Runtime};
/// use nimbus_sources::{async_trait, FailureDestination, InMemoryQueue, InMemoryStream, QueueConfig, QueueSource, SourceError, StreamBatch, StreamConfig, StreamFailure, StreamMapping, StreamMappingConfig, StreamResponse};
///
/// #[derive(Debug)]
/// struct ToQueue(Arc<InMemoryQueue>);
///
/// #[async_trait]
/// impl FailureDestination for ToQueue {
///     async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
///         let body = match serde_json::to_vec(&failure) {
///             Ok(body) => body,
///             Err(e) => return Err(DeliveryError::new(failure, e.to_string())),
///         };
///         match self.0.send(body) {
///             Ok(_) => Ok(()),
///             // Too large with the records (the queue takes 1 MiB): send Lambda's own
///             // record, which names them; they stay readable from the stream.
///             Err(refused) if matches!(refused.error, SourceError::TooLarge { .. }) => {
///                 let lambdas = failure.without_records();
///                 let body = serde_json::to_vec(&lambdas).unwrap_or_default();
///                 self.0
///                     .send(body)
///                     .map(|_| ())
///                     .map_err(|refused| DeliveryError::new(lambdas, refused.error.to_string()))
///             }
///             // Refused for now: hand the failure back, and the mapping tries again.
///             Err(refused) => Err(DeliveryError::new(failure, refused.error.to_string())),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let broken = runtime
///     .register(Function::new("broken", handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
///         Err::<StreamResponse, _>(FunctionError::msg("database is down"))
///     })))
///     .await?;
/// let stream = Arc::new(InMemoryStream::new(StreamConfig::default())?);
/// stream.put("order-9", "paid")?;
/// let failures = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
/// let config = StreamMappingConfig::new("orders").with_max_retry_attempts(0);
/// let mapping = StreamMapping::builder(stream, broken, config)
///     .in_memory_store()
///     .on_failure(ToQueue(failures.clone()))
///     .start()?;
/// runtime.attach(mapping)?;
/// // Waits (long poll) for the failure to arrive.
/// let received = failures.receive(1, Duration::from_secs(30)).await?;
/// let failure: serde_json::Value = serde_json::from_slice(&received[0].body)?;
/// assert_eq!(failure["requestContext"]["condition"], "RetryAttemptsExhausted");
/// assert_eq!(failure["KinesisBatchInfo"]["batchSize"], 1);
/// assert_eq!(failure["responseContext"]["functionError"], "Unhandled");
/// assert_eq!(failure["nimbus"]["error"]["errorMessage"], "database is down");
/// runtime.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait FailureDestination: Send + Sync + 'static {
    /// Delivers one failure record.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] handing the record back; the mapping retries, and does not move its
    /// checkpoint past the records until a delivery succeeds. A record refused for good
    /// because of its size would be retried forever: deliver
    /// [`StreamFailure::without_records`] (Lambda's own record) instead.
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>>;
}

#[async_trait]
impl FailureDestination for tokio::sync::mpsc::UnboundedSender<StreamFailure> {
    async fn deliver(&self, failure: StreamFailure) -> Result<(), DeliveryError<StreamFailure>> {
        self.send(failure)
            .map_err(|e| DeliveryError::new(e.0, "the receiving channel is closed"))
    }
}
