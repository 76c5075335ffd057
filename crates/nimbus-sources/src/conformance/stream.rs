//! The stream, checkpoint and lease suites.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{fail, source, StreamProducer, Violation};
use crate::error::SourceError;
use crate::stream::{Checkpoint, CheckpointStore, Lease, LeaseStore, Position, Sequence};

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
    if read.records.iter().any(|r| r.sequence == Sequence::new(0)) {
        return Err(fail(
            "order",
            "sequence 0 is reserved (a checkpoint at 0 means before the first record)",
        ));
    }
    let middle = read.records[14].sequence.clone();
    let after = s
        .read(&shard, Position::After(middle), 100, Duration::from_secs(1))
        .await
        .map_err(source("positions"))?;
    if after.records.first().map(|r| &r.sequence) != Some(&read.records[15].sequence) {
        return Err(fail(
            "positions",
            "reading after a sequence number did not resume right after it",
        ));
    }
    if after.next != Position::After(read.records[29].sequence.clone()) {
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

/// The checkpoint contract: absent until put, read back, forward only, sequence numbers of any
/// size (a Redis stream position, a 56-digit Kinesis number) kept exactly and ordered as
/// numbers; and fencing: a write is refused with [`SourceError::Fenced`] once its lease has
/// expired, been released, or passed to another owner or counter. Leases are taken under
/// `<mapping>/<shard>` keys; the check waits out one short lease (about a second).
///
/// # Errors
///
/// The first [`Violation`].
pub async fn checkpoints<C: CheckpointStore>(store: &C, mapping: &str) -> Result<(), Violation> {
    let check = "checkpoints";
    let at = |n: u128| Checkpoint::At(Sequence::new(n));
    let ttl = Duration::from_secs(30);
    let key = format!("{mapping}/shard-a");
    let Some(lease) = store
        .acquire(&key, "owner-a", ttl)
        .await
        .map_err(source(check))?
    else {
        return Err(fail(check, "a free lease was refused"));
    };
    if store
        .get(mapping, "shard-a")
        .await
        .map_err(source(check))?
        .is_some()
    {
        return Err(fail(check, "a new mapping already has a checkpoint"));
    }
    let put = |checkpoint: Checkpoint| store.put(mapping, "shard-a", checkpoint, &lease);
    put(at(10)).await.map_err(source(check))?;
    put(at(20)).await.map_err(source(check))?;
    if put(at(15)).await.is_ok() {
        return Err(fail(check, "a checkpoint moved back"));
    }
    if store.get(mapping, "shard-a").await.map_err(source(check))? != Some(at(20)) {
        return Err(fail(check, "did not read back the latest checkpoint"));
    }
    // A Redis stream position (ms << 64 | seq), then a Kinesis sequence number.
    let redis = Checkpoint::At(Sequence::new((1_700_000_000_123 << 64) | 7));
    let kinesis = Checkpoint::At(
        "49590338271490256608559692538361571095921575989136588898"
            .parse()
            .map_err(|e| fail(check, format!("{e}")))?,
    );
    for large in [&redis, &kinesis] {
        put(large.clone()).await.map_err(source(check))?;
        let read = store.get(mapping, "shard-a").await.map_err(source(check))?;
        if read.as_ref() != Some(large) {
            return Err(fail(check, format!("stored {large:?}, read back {read:?}")));
        }
    }
    // Fewer digits is a smaller number, whatever the text.
    let shorter = Checkpoint::At(
        "9999999999999999999999999999999999999999"
            .parse()
            .map_err(|e| fail(check, format!("{e}")))?,
    );
    if put(shorter).await.is_ok() {
        return Err(fail(
            check,
            "a 56-digit checkpoint moved back to a 40-digit one",
        ));
    }
    put(Checkpoint::ShardEnd).await.map_err(source(check))?;
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
    store
        .release(&key, "owner-a")
        .await
        .map_err(source(check))?;
    fencing(store, mapping).await
}

/// The fencing half of [`checkpoints`].
async fn fencing<C: CheckpointStore>(store: &C, mapping: &str) -> Result<(), Violation> {
    let check = "fencing";
    let at = |n: u128| Checkpoint::At(Sequence::new(n));
    let (short, ttl) = (Duration::from_millis(600), Duration::from_secs(30));
    let key = format!("{mapping}/shard-c");
    let acquire = |owner: &'static str, ttl: Duration| {
        let key = key.clone();
        async move {
            store
                .acquire(&key, owner, ttl)
                .await
                .map_err(source(check))?
                .ok_or_else(|| fail(check, format!("{owner} could not take a free lease")))
        }
    };
    let refused = |result: Result<(), SourceError>, when: &str| match result {
        Err(SourceError::Fenced { .. }) => Ok(()),
        Err(other) => Err(fail(
            check,
            format!("a write under {when} failed with {other} instead of Fenced"),
        )),
        Ok(()) => Err(fail(check, format!("a write under {when} was accepted"))),
    };
    let first = acquire("owner-a", short).await?;
    store
        .put(mapping, "shard-c", at(1), &first)
        .await
        .map_err(source(check))?;
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    refused(
        store.put(mapping, "shard-c", at(2), &first).await,
        "an expired lease",
    )?;
    // Taken again by the same owner (two processes configured alike), the expired copy stays
    // fenced.
    let retaken = acquire("owner-a", ttl).await?;
    if retaken.counter <= first.counter {
        return Err(fail(
            check,
            "an expired lease taken again by its owner kept its counter",
        ));
    }
    refused(
        store.put(mapping, "shard-c", at(2), &first).await,
        "an expired lease its owner has taken again",
    )?;
    store
        .release(&key, "owner-a")
        .await
        .map_err(source(check))?;
    let taken = acquire("owner-b", ttl).await?;
    refused(
        store.put(mapping, "shard-c", at(2), &first).await,
        "a lease taken over by another owner",
    )?;
    store
        .put(mapping, "shard-c", at(2), &taken)
        .await
        .map_err(source(check))?;
    store
        .release(&key, "owner-b")
        .await
        .map_err(source(check))?;
    refused(
        store.put(mapping, "shard-c", at(3), &taken).await,
        "a released lease",
    )?;
    let again = acquire("owner-a", ttl).await?;
    refused(
        store.put(mapping, "shard-c", at(3), &first).await,
        "an old lease of an owner that has taken it again",
    )?;
    store
        .put(mapping, "shard-c", at(3), &again)
        .await
        .map_err(source(check))?;
    if store.get(mapping, "shard-c").await.map_err(source(check))? != Some(at(3)) {
        return Err(fail(check, "a refused write moved the checkpoint"));
    }
    let made_up = Lease::new(
        format!("{mapping}/shard-d"),
        "owner-a",
        tokio::time::Instant::now() + ttl,
        1,
    );
    refused(
        store.put(mapping, "shard-d", at(1), &made_up).await,
        "a lease the store never gave out",
    )?;
    refused(
        store.put(mapping, "shard-d", at(1), &again).await,
        "a live lease on another shard",
    )?;
    store
        .release(&key, "owner-a")
        .await
        .map_err(source(check))?;
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
    match &taken {
        Some(lease) if lease.counter > first.counter => {}
        Some(_) => return Err(fail(check, "a take-over did not raise the counter")),
        None => return Err(fail(check, "an expired lease was not taken over")),
    }
    let Some(taken) = taken else {
        return Err(fail(check, "an expired lease was not taken over"));
    };
    store.release(key, "owner-b").await.map_err(source(check))?;
    match store
        .acquire(key, "owner-b", ttl)
        .await
        .map_err(source(check))?
    {
        Some(lease) if lease.counter > taken.counter => {}
        Some(_) => {
            return Err(fail(
                check,
                "a released lease taken again by its owner kept its counter",
            ))
        }
        None => return Err(fail(check, "a released lease was not free")),
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
