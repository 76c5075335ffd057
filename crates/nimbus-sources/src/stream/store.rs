//! The in-memory store of a stream mapping's leases and checkpoints: one lock over both, so
//! that a checkpoint write and the check of the writer's lease are one step.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Checkpoint, CheckpointStore, Lease, LeaseStore};
use crate::error::SourceError;

/// Leases and checkpoints in memory, for mappings in one process (tests, a single host). Every
/// mapping given the same store (an `Arc` of it) shares its shards through its leases; mappings
/// in other processes cannot see it, so several processes need a broker's store instead, or
/// each reads every shard.
///
/// Lease expiry follows Tokio's clock, so tests can pause it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::{Checkpoint, CheckpointStore, InMemoryStreamStore, LeaseStore, Sequence, SourceError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStreamStore::new();
/// let lease = store.acquire("clicks/shard-0", "worker-1", Duration::from_secs(30)).await?.expect("free");
/// store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(7)), &lease).await?;
/// assert_eq!(store.get("clicks", "shard-0").await?, Some(Checkpoint::At(Sequence::new(7))));
/// store.release("clicks/shard-0", "worker-1").await?;
/// let late = store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(8)), &lease).await;
/// assert!(matches!(late, Err(SourceError::Fenced { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryStreamStore {
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    checkpoints: HashMap<(String, String), Checkpoint>,
    leases: HashMap<String, Lease>,
}

impl InMemoryStreamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LeaseStore for InMemoryStreamStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        let now = Instant::now();
        let mut tables = self.tables.lock();
        let lease = tables
            .leases
            .entry(key.to_owned())
            .or_insert_with(|| Lease::new(key, owner, now, 0));
        if lease.owner != owner && lease.expires > now {
            return Ok(None);
        }
        // Only the renewal of a live lease keeps its counter: one taken again after it
        // expired or was released (even by the same owner) fences every earlier copy out.
        let renewal = lease.owner == owner && lease.expires > now && lease.counter != 0;
        if !renewal {
            lease.counter += 1;
            lease.owner = owner.to_owned();
        }
        // A TTL too long to add to the clock is "for as long as anyone will wait".
        lease.expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        Ok(Some(lease.clone()))
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        let mut tables = self.tables.lock();
        if let Some(lease) = tables.leases.get_mut(key) {
            if lease.owner == owner {
                lease.expires = Instant::now();
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        let tables = self.tables.lock();
        Ok(tables
            .leases
            .values()
            .filter(|lease| lease.key.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl CheckpointStore for InMemoryStreamStore {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        Ok(self
            .tables
            .lock()
            .checkpoints
            .get(&(mapping.to_owned(), shard.to_owned()))
            .cloned())
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        lease.check_shard(mapping, shard)?;
        let mut tables = self.tables.lock();
        lease.fence(tables.leases.get(&lease.key), Instant::now())?;
        let entry = tables
            .checkpoints
            .entry((mapping.to_owned(), shard.to_owned()));
        match entry {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if checkpoint < *e.get() {
                    return Err(SourceError::Invalid(format!(
                        "checkpoint of {shard} would move back from {:?} to {checkpoint:?}",
                        e.get()
                    )));
                }
                e.insert(checkpoint);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(checkpoint);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Sequence;

    const TTL: Duration = Duration::from_secs(30);

    fn at(n: u128) -> Checkpoint {
        Checkpoint::At(Sequence::new(n))
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_under_an_expired_lease_is_fenced() {
        let store = InMemoryStreamStore::new();
        let lease = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        store.put("m", "s", at(1), &lease).await.unwrap();
        tokio::time::sleep(TTL).await;
        let refused = store.put("m", "s", at(2), &lease).await.unwrap_err();
        assert!(matches!(refused, SourceError::Fenced { .. }), "{refused}");
        assert!(refused.to_string().contains("expired"), "{refused}");
        assert_eq!(store.get("m", "s").await.unwrap(), Some(at(1)));
        // Taken again by the same owner once expired, the lease has a new counter: the
        // expired copy stays fenced (another process configured with the same owner may hold it).
        let again = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        assert!(again.counter > lease.counter);
        assert!(matches!(
            store.put("m", "s", at(2), &lease).await,
            Err(SourceError::Fenced { .. })
        ));
        store.put("m", "s", at(2), &again).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_of_a_live_lease_keeps_its_counter() {
        let store = InMemoryStreamStore::new();
        let lease = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        tokio::time::sleep(TTL / 2).await;
        let renewed = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        assert_eq!(renewed.counter, lease.counter);
        store.put("m", "s", at(1), &lease).await.unwrap();
        // Released, then taken again by the same owner: a new counter.
        store.release("m/s", "a").await.unwrap();
        let again = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        assert!(again.counter > lease.counter);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_under_a_lease_that_moved_is_fenced() {
        let store = InMemoryStreamStore::new();
        let first = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        tokio::time::sleep(TTL).await;
        let taken = store.acquire("m/s", "b", TTL).await.unwrap().unwrap();
        let refused = store.put("m", "s", at(5), &first).await.unwrap_err();
        assert!(refused.to_string().contains("passed from a"), "{refused}");
        store.put("m", "s", at(5), &taken).await.unwrap();
        // Back with its first owner, under a new counter: the old lease stays fenced out.
        store.release("m/s", "b").await.unwrap();
        let again = store.acquire("m/s", "a", TTL).await.unwrap().unwrap();
        assert!(again.counter > first.counter);
        assert!(matches!(
            store.put("m", "s", at(6), &first).await,
            Err(SourceError::Fenced { .. })
        ));
        assert!(matches!(
            store.put("m", "s", at(6), &taken).await,
            Err(SourceError::Fenced { .. })
        ));
        store.put("m", "s", at(6), &again).await.unwrap();
        // A lease the store never gave out fences too.
        let made_up = Lease::new("m/other", "a", Instant::now() + TTL, 1);
        assert!(store.put("m", "other", at(1), &made_up).await.is_err());
        // A live lease on one shard does not write another's checkpoint.
        assert!(matches!(
            store.put("m", "other", at(1), &again).await,
            Err(SourceError::Fenced { .. })
        ));
        assert_eq!(store.get("m", "s").await.unwrap(), Some(at(6)));
    }
}
