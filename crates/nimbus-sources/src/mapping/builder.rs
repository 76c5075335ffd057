//! [`QueueMappingBuilder`]: a queue mapping started with its place said out loud, attached to
//! the runtime that stops it, or explicitly on its own.

use nimbus_core::{ConfigError, RegisterError, Runtime};

use super::{QueueFunction, QueueMapping, QueueMappingConfig};
use crate::queue::QueueSource;

/// Where a mapping goes once started.
#[derive(Debug, Clone, Copy)]
enum Place<'r> {
    Unsaid,
    Attached(&'r Runtime),
    Detached,
}

/// Builds a [`QueueMapping`] that cannot be started half-wired: it must be
/// [attached](QueueMappingBuilder::attach) to a runtime, which then stops it (releasing what it
/// holds) before the function it feeds when it shuts down, or said to be
/// [detached](QueueMappingBuilder::detached), and then its owner stops it. Forgetting both is
/// an error at [`start`](QueueMappingBuilder::start), not a mapping that outlives its runtime's
/// shutdown, and a runtime already shutting down refuses the mapping before anything starts.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
/// use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let function = runtime
///     .register(Function::new("consume", handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
///         Ok::<_, FunctionError>(BatchResponse::success())
///     })))
///     .await?;
/// let queue = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
/// let config = QueueMappingConfig::new("consume");
/// // Neither attached nor detached: refused, naming what is missing.
/// let err = QueueMapping::builder(queue.clone(), function.clone(), config.clone()).start().unwrap_err();
/// assert!(err.to_string().contains("runtime"));
/// let mapping = QueueMapping::builder(queue, function, config).attach(&runtime).start()?;
/// let report = runtime.shutdown(Duration::from_secs(1)).await;
/// assert_eq!(report.attachments[0].name, mapping.name());
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder starts nothing until `start`"]
pub struct QueueMappingBuilder<'r, S> {
    source: S,
    function: QueueFunction,
    config: QueueMappingConfig,
    place: Place<'r>,
}

impl<S> std::fmt::Debug for QueueMappingBuilder<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMappingBuilder")
            .field("name", &self.config.name)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl QueueMapping {
    /// A builder of a mapping from `source` to `function`; see [`QueueMappingBuilder`].
    pub fn builder<S: QueueSource>(
        source: S,
        function: QueueFunction,
        config: QueueMappingConfig,
    ) -> QueueMappingBuilder<'static, S> {
        QueueMappingBuilder {
            source,
            function,
            config,
            place: Place::Unsaid,
        }
    }
}

impl<'r, S: QueueSource> QueueMappingBuilder<'r, S> {
    /// Attaches the mapping to `runtime` (the one its function is registered with) when it
    /// starts: the runtime's shutdown stops it before the function, and unregistering the
    /// function stops it.
    pub fn attach<'a>(self, runtime: &'a Runtime) -> QueueMappingBuilder<'a, S> {
        QueueMappingBuilder {
            source: self.source,
            function: self.function,
            config: self.config,
            place: Place::Attached(runtime),
        }
    }

    /// Starts the mapping on its own: no runtime stops it, its owner does
    /// ([`QueueMapping::stop`]).
    pub fn detached(mut self) -> Self {
        self.place = Place::Detached;
        self
    }

    /// Checks the configuration, attaches the mapping if asked, and starts its pollers. Must
    /// be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Config`]: a field out of range, a filter that does not parse, a
    /// function timeout and batching window that do not fit in the queue's visibility
    /// timeout with room for the acknowledgement, no Tokio runtime, or
    /// neither [`attach`](Self::attach) nor [`detached`](Self::detached) said (the field
    /// `runtime`). [`RegisterError::ShuttingDown`]: the runtime to attach to is shutting down;
    /// nothing was started.
    pub fn start(self) -> Result<QueueMapping, RegisterError> {
        if matches!(self.place, Place::Unsaid) {
            return Err(ConfigError::new(
                "mapping",
                "runtime",
                "unsaid",
                "attach(&runtime), or detached() for a mapping its owner stops",
            )
            .into());
        }
        let mapping = QueueMapping::prepare(self.source, self.function, self.config)?;
        if let Place::Attached(runtime) = self.place {
            // Before any poller runs: a refused attachment leaves nothing behind.
            runtime.attach(mapping.clone())?;
        }
        mapping.launch();
        Ok(mapping)
    }
}
