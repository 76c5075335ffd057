//! Draining: the future that resolves once every shard is finished or caught up and nothing is
//! in flight, so that hosts and tests need not poll metrics.
//!
//! Each call is a numbered request. Readers note the request current when a read of theirs
//! came back empty with everything before it finished and checkpointed; the coordinator notes
//! the request current when it listed the shards it published. A request is met when the
//! listing is that recent and every shard it says this worker must read has a reader caught up
//! that recently. A new request wakes readers out of their long polls, so that they look again
//! at once with a read that does not wait.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use super::{Shared, StreamMapping};
use crate::status::MappingStatus;
use crate::stream::{Position, ShardId};

pub(super) struct Drain {
    /// The number of the latest request (0: none yet).
    pub(super) requests: watch::Sender<u64>,
    /// Woken when a reader catches up, the listing changes or the mapping stops.
    pub(super) changed: Notify,
    listing: Mutex<Listing>,
    /// What the balancing under way found; published by the coordinator when it succeeds.
    /// `None`: it could not read every checkpoint, so the last listing stands.
    staged: Mutex<Option<Vec<ShardId>>>,
}

/// The shards this worker must read, as of a listing.
#[derive(Default)]
struct Listing {
    /// The request current when the listing started (`None` before the first).
    request: Option<u64>,
    /// Ready shards not held by another live worker: finished shards are done, children wait
    /// for their parents (which are listed), and another worker's shards are its own to drain.
    pending: Vec<ShardId>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            requests: watch::Sender::new(0),
            changed: Notify::new(),
            listing: Mutex::new(Listing::default()),
            staged: Mutex::new(None),
        }
    }
}

impl Drain {
    /// Notes what a balancing found, to publish if it completes; `None` if it could not read
    /// every checkpoint (it may have missed a shard).
    pub(super) fn stage(&self, pending: Option<Vec<ShardId>>) {
        *self.staged.lock() = pending;
    }

    /// Publishes the staged listing, made by a balancing that began at `request`; nothing if
    /// none is staged.
    pub(super) fn publish(&self, request: u64) {
        let Some(pending) = self.staged.lock().take() else {
            return;
        };
        *self.listing.lock() = Listing {
            request: Some(request),
            pending,
        };
        self.changed.notify_waiters();
    }
}

impl Shared {
    /// Notes that `shard`'s reader is caught up as of `request`, or (`None`) has read records.
    pub(super) fn set_caught_up(&self, shard: &ShardId, request: Option<u64>) {
        if let Some(reader) = self.running.lock().get_mut(shard) {
            reader.caught_up = request;
        }
        if request.is_some() {
            self.drain.changed.notify_waiters();
        }
    }

    /// Whether everything read up to `position` is checkpointed; settles the checkpoint there
    /// first if it is behind (a write that failed within the round).
    pub(super) async fn checkpointed(&self, shard: &ShardId, position: &Position) -> bool {
        let Position::After(sequence) = position else {
            // Nothing read yet, or pinned and settled when the reader started.
            return true;
        };
        let covered = || {
            self.metrics
                .lock()
                .get(shard)
                .and_then(|m| m.checkpoint.as_ref())
                .is_some_and(|c| c >= sequence)
        };
        if covered() {
            return true;
        }
        self.settle(shard, position.clone()).await;
        covered()
    }

    /// Whether request `request` is met: the listing began after it, and every shard it says
    /// this worker reads has a live reader caught up since.
    pub(super) fn is_drained(&self, request: u64) -> bool {
        let listing = self.drain.listing.lock();
        if listing.request.is_none_or(|r| r < request) {
            return false;
        }
        let running = self.running.lock();
        listing.pending.iter().all(|id| {
            running.get(id).is_some_and(|r| {
                !r.ending
                    && !r.cancel.is_cancelled()
                    && !r.hand_off.is_cancelled()
                    && r.caught_up.is_some_and(|c| c >= request)
            })
        })
    }
}

/// A stream mapping that stopped before its source was drained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream mapping {mapping} stopped before its source was drained: {status:?}")]
#[non_exhaustive]
pub struct DrainError {
    /// The mapping's name.
    pub mapping: String,
    /// Why it stopped.
    pub status: MappingStatus,
}

impl StreamMapping {
    /// A future that resolves once the source is drained: every shard is finished, or caught
    /// up (its last read returned nothing new, and every record read before is finished and
    /// checkpointed) with no tumbling window open, and nothing is in flight, at some moment
    /// after this call (the call, not the first poll, is the start). Every record in the stream
    /// when it was called has then been handled or sent to the on-failure destination, and
    /// checkpointed. Records that arrive meanwhile are read as usual, but need not be handled
    /// by the time it resolves. Readers idle in a long poll are woken to look again at once, so
    /// it does not wait for `poll_wait`.
    ///
    /// With several workers sharing a store, each one speaks for the shards it reads: a shard
    /// another live worker holds is that worker's to drain. It is per worker, not a barrier
    /// across them: two workers' `drained()` both resolving does not prove that a shard being
    /// handed off between them is drained (the first gave it up, the second had not yet taken
    /// it, and neither counted it). To know a whole stream is drained, check its checkpoints,
    /// or drain with the shards settled (no worker joining or leaving).
    ///
    /// # Errors
    ///
    /// A [`DrainError`] with the mapping's status, if it stops (or has stopped) before it is
    /// drained.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
    /// use nimbus_sources::{InMemoryStream, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig, StreamResponse};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let runtime = Runtime::default();
    /// let handler = handler_fn(|_batch: StreamBatch, _ctx: Context| async move {
    ///     Ok::<_, FunctionError>(StreamResponse::success())
    /// });
    /// let function = runtime.register(Function::new("orders", handler)).await?;
    /// let stream = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(3))?);
    /// for i in 0..100 {
    ///     stream.put(&format!("order-{i}"), "placed")?;
    /// }
    /// let mapping = StreamMapping::builder(stream.clone(), function, StreamMappingConfig::new("orders"))
    ///     .in_memory_store()
    ///     .start()?;
    /// mapping.drained().await?;
    /// assert_eq!(mapping.metrics().records, 100);
    /// stream.put("order-100", "placed")?;
    /// mapping.drained().await?;
    /// assert_eq!(mapping.metrics().records, 101);
    /// # Ok(())
    /// # }
    /// ```
    pub fn drained(&self) -> impl Future<Output = Result<(), DrainError>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        // Numbered now, not when first polled: "after this call" starts here.
        let mut request = 0;
        shared.drain.requests.send_modify(|current| {
            *current += 1;
            request = *current;
        });
        async move { shared.drained(request).await }
    }
}

impl Shared {
    async fn drained(&self, request: u64) -> Result<(), DrainError> {
        let shared = self;
        loop {
            let changed = shared.drain.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let status = shared.status.lock().clone();
            if !status.is_running() {
                return Err(DrainError {
                    mapping: shared.name.to_string(),
                    status,
                });
            }
            if shared.is_drained(request) {
                return Ok(());
            }
            changed.await;
        }
    }
}
