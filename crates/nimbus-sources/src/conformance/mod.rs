//! The conformance kit (feature `conformance`): reusable checks of the source contracts, for
//! the in-memory sources and for every adapter, against the real broker.
//!
//! Each suite takes a factory that makes a fresh, empty source (use a unique key, stream,
//! subject or table prefix per call, so that suites can run in parallel and leave nothing
//! behind) and returns the first broken rule as a [`Violation`]. The suites run in real time,
//! with short timeouts: a queue made by the factory should have a visibility timeout of about
//! one second.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use nimbus_sources::conformance;
//! use nimbus_sources::{InMemoryQueue, QueueConfig};
//!
//! # #[tokio::main]
//! # async fn main() {
//! let report = conformance::queue(|| async {
//!     InMemoryQueue::new(QueueConfig::default().with_visibility_timeout(Duration::from_secs(1))).unwrap()
//! })
//! .await;
//! assert!(report.is_ok(), "{report:?}");
//! # }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::SourceError;
use crate::queue::QueueSource;
use crate::stream::{Checkpoint, CheckpointStore, LeaseStore, Position};

/// A broken rule of a source contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct Violation {
    /// Which check failed.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

fn fail(check: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        check,
        detail: detail.into(),
    }
}

fn source(check: &'static str) -> impl Fn(SourceError) -> Violation {
    move |e| fail(check, format!("source error: {e}"))
}

pub use crate::{QueueProducer, StreamProducer};

/// Receives until `want` messages came or `within` passed.
async fn receive_all<Q: QueueSource>(
    queue: &Q,
    want: usize,
    within: Duration,
) -> Result<Vec<crate::Message>, SourceError> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        got.extend(queue.receive(want - got.len(), left).await?);
    }
    Ok(got)
}

/// The queue contract: at-least-once delivery, ack, visibility and redelivery with receive
/// counts, making a message visible again, and long polls woken by a send.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn queue<Q, F, Fut>(make: F) -> Result<(), Violation>
where
    Q: QueueProducer,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    // Delivery: every message sent is received, once, with its body.
    let q = make().await;
    let sent: HashSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    for body in &sent {
        q.produce(Bytes::from(body.clone()))
            .await
            .map_err(source("delivery"))?;
    }
    let got = receive_all(&q, 20, Duration::from_secs(5))
        .await
        .map_err(source("delivery"))?;
    let bodies: HashSet<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    if bodies != sent {
        return Err(fail(
            "delivery",
            format!(
                "sent 20, received {} distinct of {}",
                bodies.len(),
                got.len()
            ),
        ));
    }
    if got.iter().any(|m| m.receive_count != 1) {
        return Err(fail("receive count", "a first receive must count 1"));
    }
    // Ack: deleted messages do not come back.
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    q.ack(&receipts).await.map_err(source("ack"))?;
    let visibility = q.visibility_timeout().unwrap_or(Duration::from_secs(1));
    let again = q
        .receive(20, visibility + Duration::from_millis(500))
        .await
        .map_err(source("ack"))?;
    if !again.is_empty() {
        return Err(fail(
            "ack",
            format!("{} acknowledged messages came back", again.len()),
        ));
    }

    // Visibility: an unacknowledged message is invisible, then redelivered with count 2.
    let q = make().await;
    q.produce(Bytes::from_static(b"lost"))
        .await
        .map_err(source("visibility"))?;
    let first = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("visibility"))?;
    let Some(first) = first.into_iter().next() else {
        return Err(fail("visibility", "the message never arrived"));
    };
    let hidden = q
        .receive(1, Duration::ZERO)
        .await
        .map_err(source("visibility"))?;
    if !hidden.is_empty() {
        return Err(fail("visibility", "a received message was visible at once"));
    }
    let redelivered = receive_all(&q, 1, visibility + Duration::from_secs(5))
        .await
        .map_err(source("visibility"))?;
    match redelivered.first() {
        Some(m) if m.id == first.id && m.receive_count == 2 => {
            q.ack(std::slice::from_ref(&m.receipt))
                .await
                .map_err(source("visibility"))?;
        }
        Some(m) => {
            return Err(fail(
                "visibility",
                format!("redelivered {:?} with count {}", m.id, m.receive_count),
            ))
        }
        None => {
            return Err(fail(
                "visibility",
                "not redelivered after the visibility timeout",
            ))
        }
    }

    // Retry later: a message made visible again at once is received again promptly.
    let q = make().await;
    q.produce(Bytes::from_static(b"again"))
        .await
        .map_err(source("retry later"))?;
    let m = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("retry later"))?;
    let Some(m) = m.into_iter().next() else {
        return Err(fail("retry later", "the message never arrived"));
    };
    q.retry_later(&m.receipt, Duration::ZERO)
        .await
        .map_err(source("retry later"))?;
    let started = Instant::now();
    let back = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("retry later"))?;
    if back.first().map(|b| &b.id) != Some(&m.id) || started.elapsed() >= visibility {
        return Err(fail(
            "retry later",
            "not visible again before the visibility timeout",
        ));
    }

    // Long poll: a waiting receive returns soon after a send, not at the end of its wait.
    let q = make().await;
    let started = Instant::now();
    let (got, ()) = tokio::join!(q.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = q.produce(Bytes::from_static(b"wake")).await;
    });
    let got = got.map_err(source("long poll"))?;
    if got.is_empty() || started.elapsed() > Duration::from_secs(3) {
        return Err(fail(
            "long poll",
            format!(
                "woke after {:?} with {} messages",
                started.elapsed(),
                got.len()
            ),
        ));
    }
    Ok(())
}

/// The redrive contract, for a queue whose `max_receive_count` is 2: a message received twice
/// without being acknowledged is not delivered a third time but moved to the dead-letter
/// queue, once; `dead_letters` counts what the dead-letter queue holds.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn redrive<Q, D, Fut>(queue: &Q, dead_letters: D) -> Result<(), Violation>
where
    Q: QueueProducer,
    D: Fn() -> Fut,
    Fut: Future<Output = Result<u64, SourceError>>,
{
    let check = "redrive";
    queue
        .produce(Bytes::from_static(b"poison"))
        .await
        .map_err(source(check))?;
    queue
        .produce(Bytes::from_static(b"fine"))
        .await
        .map_err(source(check))?;
    let visibility = queue.visibility_timeout().unwrap_or(Duration::from_secs(1));
    let mut fine_acked = false;
    for attempt in 1..=2u32 {
        let got = receive_all(
            queue,
            if fine_acked { 1 } else { 2 },
            visibility + Duration::from_secs(5),
        )
        .await
        .map_err(source(check))?;
        let Some(poison) = got.iter().find(|m| &m.body[..] == b"poison") else {
            return Err(fail(
                check,
                format!("receive {attempt} did not deliver the message"),
            ));
        };
        if poison.receive_count != attempt {
            return Err(fail(
                check,
                format!("receive {attempt} counted {}", poison.receive_count),
            ));
        }
        for m in &got {
            if &m.body[..] == b"fine" {
                queue
                    .ack(std::slice::from_ref(&m.receipt))
                    .await
                    .map_err(source(check))?;
                fine_acked = true;
            }
        }
        queue
            .retry_later(&poison.receipt, Duration::ZERO)
            .await
            .map_err(source(check))?;
    }
    let third = receive_all(queue, 1, visibility + Duration::from_secs(2))
        .await
        .map_err(source(check))?;
    if let Some(m) = third.first() {
        return Err(fail(
            check,
            format!(
                "delivered again with receive count {} past max_receive_count 2",
                m.receive_count
            ),
        ));
    }
    let dead = dead_letters().await.map_err(source(check))?;
    if dead != 1 {
        return Err(fail(
            check,
            format!("{dead} dead letters, expected the one message"),
        ));
    }
    Ok(())
}

/// The stream contract: order per shard, positions, and long polls woken by an append.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn stream<S, F, Fut>(make: F) -> Result<(), Violation>
where
    S: StreamProducer,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let s = make().await;
    let mut shard = None;
    for i in 0..30 {
        shard = Some(
            s.append("one-key", Bytes::from(format!("{i}")))
                .await
                .map_err(source("append"))?,
        );
    }
    let Some(shard) = shard else { return Ok(()) };
    let read = s
        .read(&shard, Position::TrimHorizon, 100, Duration::from_secs(1))
        .await
        .map_err(source("order"))?;
    let data: Vec<String> = read
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    if data != (0..30).map(|i| i.to_string()).collect::<Vec<_>>() {
        return Err(fail(
            "order",
            format!("one key's records came back as {data:?}"),
        ));
    }
    if read
        .records
        .windows(2)
        .any(|w| w[0].sequence >= w[1].sequence)
    {
        return Err(fail("order", "sequence numbers do not increase"));
    }
    if read.records.iter().any(|r| r.sequence == 0) {
        return Err(fail(
            "order",
            "sequence 0 is reserved (a checkpoint at 0 means before the first record)",
        ));
    }
    let middle = read.records[14].sequence;
    let after = s
        .read(&shard, Position::After(middle), 100, Duration::from_secs(1))
        .await
        .map_err(source("positions"))?;
    if after.records.first().map(|r| r.sequence) != Some(read.records[15].sequence) {
        return Err(fail(
            "positions",
            "reading after a sequence number did not resume right after it",
        ));
    }
    if after.next != Position::After(read.records[29].sequence) {
        return Err(fail("positions", format!("next position {:?}", after.next)));
    }
    let latest = s
        .read(&shard, Position::Latest, 100, Duration::ZERO)
        .await
        .map_err(source("positions"))?;
    if !latest.records.is_empty() {
        return Err(fail("positions", "LATEST returned old records"));
    }
    let started = Instant::now();
    let (woken, appended) = tokio::join!(
        s.read(&shard, latest.next, 10, Duration::from_secs(10)),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.append("one-key", Bytes::from_static(b"wake")).await
        }
    );
    appended.map_err(source("long poll"))?;
    let woken = woken.map_err(source("long poll"))?;
    if woken.records.is_empty() || started.elapsed() > Duration::from_secs(3) {
        return Err(fail(
            "long poll",
            format!("woke after {:?}", started.elapsed()),
        ));
    }
    Ok(())
}

/// The checkpoint contract: absent until put, read back, forward only.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn checkpoints<C: CheckpointStore>(store: &C, mapping: &str) -> Result<(), Violation> {
    let check = "checkpoints";
    if store
        .get(mapping, "shard-a")
        .await
        .map_err(source(check))?
        .is_some()
    {
        return Err(fail(check, "a new mapping already has a checkpoint"));
    }
    store
        .put(mapping, "shard-a", Checkpoint::At(10))
        .await
        .map_err(source(check))?;
    store
        .put(mapping, "shard-a", Checkpoint::At(20))
        .await
        .map_err(source(check))?;
    if store
        .put(mapping, "shard-a", Checkpoint::At(15))
        .await
        .is_ok()
    {
        return Err(fail(check, "a checkpoint moved back"));
    }
    if store.get(mapping, "shard-a").await.map_err(source(check))? != Some(Checkpoint::At(20)) {
        return Err(fail(check, "did not read back the latest checkpoint"));
    }
    store
        .put(mapping, "shard-a", Checkpoint::ShardEnd)
        .await
        .map_err(source(check))?;
    if store.get(mapping, "shard-a").await.map_err(source(check))? != Some(Checkpoint::ShardEnd) {
        return Err(fail(check, "ShardEnd was not kept"));
    }
    if store
        .get(mapping, "shard-b")
        .await
        .map_err(source(check))?
        .is_some()
    {
        return Err(fail(check, "shards share checkpoints"));
    }
    Ok(())
}

/// The lease contract: exclusive while held, renewable, listed by prefix, taken over after
/// expiry with a higher counter, free after release.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn leases<L: LeaseStore>(store: &L, key: &str) -> Result<(), Violation> {
    let check = "leases";
    let ttl = Duration::from_millis(600);
    let first = store
        .acquire(key, "owner-a", ttl)
        .await
        .map_err(source(check))?;
    let Some(first) = first else {
        return Err(fail(check, "a free lease was refused"));
    };
    if store
        .acquire(key, "owner-b", ttl)
        .await
        .map_err(source(check))?
        .is_some()
    {
        return Err(fail(check, "a held lease was given to another owner"));
    }
    if store
        .acquire(key, "owner-a", ttl)
        .await
        .map_err(source(check))?
        .is_none()
    {
        return Err(fail(check, "the holder could not renew"));
    }
    let listed = store.list(key).await.map_err(source(check))?;
    let now = tokio::time::Instant::now();
    if !listed
        .iter()
        .any(|l| l.key == key && l.owner == "owner-a" && l.expires > now)
    {
        return Err(fail(
            check,
            format!("listing the prefix did not show the held lease: {listed:?}"),
        ));
    }
    let other = format!("{key}/other");
    if store
        .list(&other)
        .await
        .map_err(source(check))?
        .iter()
        .any(|l| l.key == key)
    {
        return Err(fail(check, "listing a longer prefix showed a shorter key"));
    }
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let taken = store
        .acquire(key, "owner-b", ttl)
        .await
        .map_err(source(check))?;
    match taken {
        Some(lease) if lease.counter > first.counter => {}
        Some(_) => return Err(fail(check, "a take-over did not raise the counter")),
        None => return Err(fail(check, "an expired lease was not taken over")),
    }
    store.release(key, "owner-b").await.map_err(source(check))?;
    if store
        .acquire(key, "owner-a", ttl)
        .await
        .map_err(source(check))?
        .is_none()
    {
        return Err(fail(check, "a released lease was not free"));
    }
    Ok(())
}

/// A queue mapping over `queue` keeps every message through a disruption: sends `total`
/// messages, drains them through a mapping (2 to 4 concurrent batches, a little work per
/// batch), calls `disrupt` once a sixth is handled (kill the adapter's connections, cut a
/// proxy, restart nothing: whatever the adapter must survive), and checks that every message
/// was handled at least once and that, after the mapping stops and whatever an acknowledgement
/// lost to the disruption left pending comes back, nothing unhandled remains. Returns how many
/// handlings were duplicates.
///
/// Runs in real time; with a visibility timeout of about two seconds it takes a few seconds.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn mapping_survives<Q, D, Fut>(
    queue: std::sync::Arc<Q>,
    total: usize,
    disrupt: D,
) -> Result<usize, Violation>
where
    Q: QueueProducer,
    D: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    use std::sync::Arc;

    use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};

    use crate::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig};

    let check = "mapping survives";
    for i in 0..total {
        queue
            .produce(Bytes::from(format!("m{i}")))
            .await
            .map_err(source(check))?;
    }
    let runtime = Runtime::default();
    // Distinct bodies handled, and handlings in all; the handler publishes the distinct count.
    let seen: Arc<parking_lot::Mutex<(HashSet<String>, usize)>> = Arc::default();
    let (progress, watched) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let visibility = queue.visibility_timeout().unwrap_or(Duration::from_secs(2));
    let function = runtime
        .register(
            Function::new(
                "conformance",
                handler_fn({
                    let seen = Arc::clone(&seen);
                    move |batch: QueueBatch, _ctx: Context| {
                        let (seen, progress) = (Arc::clone(&seen), Arc::clone(&progress));
                        async move {
                            // A little work, so the disruption lands while batches are in flight.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let count = {
                                let mut seen = seen.lock();
                                for r in &batch.records {
                                    seen.0.insert(r.body_str().unwrap_or_default().to_owned());
                                }
                                seen.1 += batch.records.len();
                                seen.0.len()
                            };
                            progress.send_replace(count);
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout((visibility / 2).max(Duration::from_millis(100))),
        )
        .await
        .map_err(|e| fail(check, format!("registering the function: {e}")))?;
    let mapping = QueueMapping::start(
        Arc::clone(&queue),
        function,
        QueueMappingConfig::new("conformance")
            .with_poll_wait(Duration::from_millis(500))
            .with_max_concurrency(4)
            .with_initial_concurrency(2),
    )
    .map_err(|e| fail(check, format!("starting the mapping: {e}")))?;
    let reached = |want: usize, within: Duration| {
        let mut watched = watched.clone();
        async move {
            matches!(
                tokio::time::timeout(within, watched.wait_for(|n| *n >= want)).await,
                Ok(Ok(_))
            )
        }
    };
    if !reached((total / 6).max(1), Duration::from_secs(20)).await {
        return Err(fail(check, "no progress before the disruption"));
    }
    disrupt().await;
    let all = reached(total, Duration::from_secs(60)).await;
    mapping.stop(Duration::from_secs(15)).await;
    runtime.shutdown(Duration::from_secs(5)).await;
    if !all {
        return Err(fail(
            check,
            format!(
                "{} of {total} handled after the disruption",
                seen.lock().0.len()
            ),
        ));
    }
    // What an acknowledgement lost to the disruption left pending returns after the visibility
    // timeout; it must be something already handled, and then nothing remains.
    loop {
        let left = queue
            .receive(100, visibility + Duration::from_secs(1))
            .await
            .map_err(source(check))?;
        if left.is_empty() {
            break;
        }
        for m in &left {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            if !seen.lock().0.contains(&body) {
                return Err(fail(
                    check,
                    format!("{body} came back but was never handled"),
                ));
            }
        }
        let receipts: Vec<_> = left.iter().map(|m| m.receipt.clone()).collect();
        queue.ack(&receipts).await.map_err(source(check))?;
    }
    let (distinct, handlings) = {
        let seen = seen.lock();
        (seen.0.len(), seen.1)
    };
    Ok(handlings - distinct)
}
