//! Fencing in a running mapping: a worker that lost its lease without knowing (its renewals
//! "succeeded" against a store that had moved on) has its checkpoint refused, stops that
//! reader, and leaves the shard to the next owner; nothing is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    async_trait, Checkpoint, CheckpointStore, InMemoryStream, InMemoryStreamStore, Lease,
    LeaseStore, Position, SourceError, StreamBatch, StreamConfig, StreamFunction, StreamMapping,
    StreamMappingConfig, StreamResponse, StreamSource,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::support::{eventually, forward_checkpoints, runtime};

const LIMIT: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(3);

/// A lease store that, once `stale` is set, answers owner `a`'s acquisitions with the lease it
/// last gave out instead of asking the store: `a` believes it renews while its leases expire.
#[derive(Default)]
struct Stale {
    inner: InMemoryStreamStore,
    stale: AtomicBool,
    given: Mutex<HashMap<String, Lease>>,
}

#[async_trait]
impl LeaseStore for Stale {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        // A mapping configured with owner `a` leases as `a#<per-start nonce>`.
        let is_a = owner.split_once('#').map_or(owner, |(o, _)| o) == "a";
        if is_a && self.stale.load(Ordering::SeqCst) {
            if let Some(lease) = self.given.lock().get(key) {
                return Ok(Some(lease.clone()));
            }
        }
        let lease = self.inner.acquire(key, owner, ttl).await?;
        if let (Some(lease), true) = (&lease, is_a) {
            self.given.lock().insert(key.to_owned(), lease.clone());
        }
        Ok(lease)
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        self.inner.release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        self.inner.list(prefix).await
    }
}

forward_checkpoints!(Stale, inner);

/// A function that logs the data it handles; with a gate, each batch first takes a permit.
async fn logging(
    rt: &Runtime,
    name: &str,
    gate: Option<Arc<Semaphore>>,
) -> (StreamFunction, Arc<Mutex<Vec<String>>>) {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let handle = rt
        .register(
            Function::new(
                name,
                handler_fn({
                    let log = log.clone();
                    move |batch: StreamBatch, _ctx: Context| {
                        let (log, gate) = (log.clone(), gate.clone());
                        async move {
                            if let Some(gate) = gate {
                                let _permit = gate.acquire().await;
                            }
                            log.lock().extend(
                                batch
                                    .records
                                    .iter()
                                    .map(|r| r.data_str().unwrap().to_owned()),
                            );
                            Ok::<_, FunctionError>(StreamResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    (handle, log)
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_lease_moved_cannot_checkpoint_and_stops_reading() {
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let shard = stream.shards().await.unwrap()[0].id.clone();
    for i in 0..5 {
        stream.put("k", format!("r{i}")).unwrap();
    }
    let store = Arc::new(Stale::default());
    let gate = Arc::new(Semaphore::new(0));
    let (fa, log_a) = logging(&rt, "a", Some(gate.clone())).await;
    let config = |owner: &str| {
        StreamMappingConfig::new("fenced")
            .with_owner(owner)
            .with_lease_ttl(TTL)
            .with_poll_wait(Duration::from_secs(1))
    };
    let a = StreamMapping::builder(stream.clone(), fa, config("a"))
        .store(store.clone())
        .start()
        .unwrap();
    eventually(LIMIT, || a.metrics().shards_running == 1).await;
    // `a` is in the middle of its first batch when its lease quietly runs out.
    tokio::task::yield_now().await;
    store.stale.store(true, Ordering::SeqCst);
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(a.metrics().shards_running, 1, "a believes it still reads");

    let (fb, log_b) = logging(&rt, "b", None).await;
    let b = StreamMapping::builder(stream.clone(), fb, config("b"))
        .store(store.clone())
        .start()
        .unwrap();
    eventually(LIMIT, || log_b.lock().len() == 5).await;
    let end = stream
        .read(&shard, Position::TrimHorizon, 100, Duration::ZERO)
        .await
        .unwrap()
        .records
        .pop()
        .unwrap()
        .sequence;
    eventually(LIMIT, || {
        b.metrics()
            .shards
            .get(&*shard)
            .is_some_and(|m| m.checkpoint.as_ref() == Some(&end))
    })
    .await;

    // `a` finishes its batch: its checkpoint is refused and its reader stops.
    gate.add_permits(100);
    eventually(LIMIT, || a.metrics().shards_running == 0).await;
    assert!(a.status().is_running(), "a fenced write is not a failure");
    assert_eq!(
        a.metrics()
            .shards
            .get(&*shard)
            .and_then(|m| m.checkpoint.clone()),
        None,
        "a's checkpoint never landed"
    );
    assert_eq!(
        store.inner.get("fenced", &shard).await.unwrap(),
        Some(Checkpoint::At(end))
    );
    assert_eq!(log_a.lock().len(), 5, "a handled its one batch");

    // The shard stays b's: new records go to b alone.
    stream.put("k", "r5").unwrap();
    eventually(LIMIT, || log_b.lock().len() == 6).await;
    assert_eq!(log_a.lock().len(), 5);
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}
