//! What a stream mapping needs before it starts: the source, the function and the
//! configuration, then where its leases and checkpoints live (chosen explicitly, in memory
//! included), and an on-failure destination when it may give records up.

use std::sync::Arc;

use super::{FailureDestination, Stores, StreamFunction, StreamMapping, StreamMappingConfig};
use crate::error::ConfigError;
use crate::stream::{CheckpointStore, InMemoryStreamStore, StreamSource};

/// A stream mapping being built, by [`StreamMapping::builder`]. `start` exists only once the
/// store of leases and checkpoints is chosen: [`StreamMappingBuilder::store`] for one shared by
/// several processes (they then split the shards between them), or
/// [`StreamMappingBuilder::in_memory_store`] for one process.
///
/// # Example
///
/// Two mappings of one host sharing a store: each reads half of the shards.
///
/// ```
/// use std::sync::Arc;
/// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
/// use nimbus_sources::{InMemoryStream, InMemoryStreamStore, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let handler = handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
///     Ok::<_, FunctionError>(StreamResponse::success())
/// });
/// let function = runtime.register(Function::new("clicks", handler)).await?;
/// let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(4))?);
/// let store = Arc::new(InMemoryStreamStore::new());
/// let mut workers = Vec::new();
/// for owner in ["worker-1", "worker-2"] {
///     let config = StreamMappingConfig::new("clicks").with_owner(owner);
///     workers.push(
///         StreamMapping::builder(stream.clone(), function.clone(), config)
///             .store(store.clone())
///             .start()?,
///     );
/// }
/// for worker in &workers {
///     worker.stop(std::time::Duration::from_secs(1)).await;
/// }
/// # Ok(())
/// # }
/// ```
///
/// Without a store there is nothing to start:
///
/// ```compile_fail
/// # use std::sync::Arc;
/// # use nimbus_sources::{InMemoryStream, StreamConfig, StreamFunction, StreamMapping, StreamMappingConfig};
/// # fn build(stream: Arc<InMemoryStream>, function: StreamFunction) {
/// let mapping = StreamMapping::builder(stream, function, StreamMappingConfig::new("clicks")).start();
/// # }
/// ```
#[must_use = "a builder does nothing until it starts"]
pub struct StreamMappingBuilder<S = NeedsStore> {
    source: Arc<dyn crate::stream::StreamSource>,
    function: StreamFunction,
    config: StreamMappingConfig,
    on_failure: Option<Arc<dyn FailureDestination>>,
    store: S,
}

/// A [`StreamMappingBuilder`] that has no store of leases and checkpoints yet, and so cannot
/// start.
#[derive(Debug)]
pub struct NeedsStore(());

/// A [`StreamMappingBuilder`] whose store of leases and checkpoints is chosen.
pub struct HasStore(Stores);

impl std::fmt::Debug for HasStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HasStore").finish_non_exhaustive()
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for StreamMappingBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMappingBuilder")
            .field("name", &self.config.name)
            .field("store", &self.store)
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

impl StreamMappingBuilder<NeedsStore> {
    pub(super) fn new(
        source: Arc<dyn StreamSource>,
        function: StreamFunction,
        config: StreamMappingConfig,
    ) -> Self {
        Self {
            source,
            function,
            config,
            on_failure: None,
            store: NeedsStore(()),
        }
    }

    /// Keeps leases and checkpoints in `store` (pass an `Arc` to share it). Every process of a
    /// mapping given the same store, under the same mapping name, splits the shards with the
    /// others and resumes from their checkpoints.
    pub fn store(self, store: impl CheckpointStore) -> StreamMappingBuilder<HasStore> {
        self.with_store(Stores::new(store))
    }

    /// Keeps leases and checkpoints in a new [`InMemoryStreamStore`] of this mapping's own: for
    /// one process. Another process, or another mapping in this one, cannot see them, so it
    /// would read every shard again; share a store with [`StreamMappingBuilder::store`] then.
    pub fn in_memory_store(self) -> StreamMappingBuilder<HasStore> {
        self.with_store(Stores::new(InMemoryStreamStore::new()))
    }

    fn with_store(self, stores: Stores) -> StreamMappingBuilder<HasStore> {
        StreamMappingBuilder {
            source: self.source,
            function: self.function,
            config: self.config,
            on_failure: self.on_failure,
            store: HasStore(stores),
        }
    }
}

impl<S> StreamMappingBuilder<S> {
    /// Sends records the mapping gives up on to `destination` (required when
    /// `max_retry_attempts` or `max_record_age` can give records up).
    pub fn on_failure(mut self, destination: impl FailureDestination) -> Self {
        self.on_failure = Some(Arc::new(destination));
        self
    }
}

impl StreamMappingBuilder<HasStore> {
    /// Starts the mapping. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field (`on_failure` when the mapping may give
    /// records up and has nowhere to send them).
    pub fn start(self) -> Result<StreamMapping, ConfigError> {
        StreamMapping::launch(
            self.source,
            self.function,
            self.config,
            self.store.0,
            self.on_failure,
        )
    }
}
