//! Checkpoints: how far a mapping has finished each shard, kept by a store that also keeps the
//! leases fencing them.

use async_trait::async_trait;

use super::{Lease, LeaseStore, Sequence};
use crate::error::SourceError;

/// A shard's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is finished.
    At(Sequence),
    /// The shard is closed and finished; its children may start.
    ShardEnd,
}

impl Checkpoint {
    /// The checkpoint as text that sorts as checkpoints do, so that stores can keep it
    /// forward-only by comparing text byte by byte (a Lua script, an SQL `WHERE old <= new`
    /// under the `C` collation): a sequence number of up to 39 digits zero-padded to 39, a
    /// longer one as `:`, its count of digits in three, and the digits; `~` for the shard's
    /// end.
    pub fn to_sortable_text(&self) -> String {
        match self {
            Self::At(seq) => seq.to_sortable_text(),
            Self::ShardEnd => "~".to_owned(),
        }
    }

    /// Reads [`Checkpoint::to_sortable_text`]'s form.
    pub fn from_sortable_text(text: &str) -> Option<Self> {
        if text == "~" {
            Some(Self::ShardEnd)
        } else {
            Sequence::from_sortable_text(text).map(Self::At)
        }
    }
}

/// Where a stream mapping keeps its checkpoints, and the leases that fence them: a checkpoint
/// store is a [`LeaseStore`] too, so that it can refuse a checkpoint written by a worker that
/// no longer holds the shard. Checkpoints only move forward; a store refuses to move one back.
///
/// A mapping names one store for both (`StreamMapping::builder(..).store(..)`): the in-memory
/// [`InMemoryStreamStore`] for one process, a broker's (Redis, PostgreSQL) for several, which
/// then share the shards instead of each reading all of them.
///
/// [`InMemoryStreamStore`]: super::InMemoryStreamStore
///
/// # Example
///
/// Checkpoints kept as text in a map, as a Redis hash or an SQL table would keep them, behind
/// the same lock as the leases, so that checking the writer's lease and moving the checkpoint
/// are one step. [`Checkpoint::to_sortable_text`] sorts as checkpoints do, so refusing to move
/// back is a comparison of text; [`Lease::fence`] says whether the writer's lease still holds.
/// The `async_trait` attribute is re-exported by this crate.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::Duration;
/// use nimbus_sources::{async_trait, Checkpoint, CheckpointStore, Lease, LeaseStore, Sequence, SourceError};
/// use tokio::time::Instant;
///
/// #[derive(Debug, Default)]
/// struct Tables {
///     checkpoints: HashMap<(String, String), String>,
///     leases: HashMap<String, Lease>,
/// }
///
/// #[derive(Debug, Default)]
/// struct TextStore(Mutex<Tables>);
///
/// impl TextStore {
///     fn tables(&self) -> Result<std::sync::MutexGuard<'_, Tables>, SourceError> {
///         self.0.lock().map_err(|_| SourceError::Closed)
///     }
/// }
///
/// #[async_trait]
/// impl LeaseStore for TextStore {
///     async fn acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>, SourceError> {
///         let now = Instant::now();
///         let mut tables = self.tables()?;
///         let lease = tables.leases.entry(key.to_owned()).or_insert_with(|| Lease::new(key, owner, now, 0));
///         if lease.owner != owner && lease.expires > now {
///             return Ok(None);
///         }
///         // Only renewing a live lease keeps its counter.
///         if lease.owner != owner || lease.expires <= now || lease.counter == 0 {
///             lease.counter += 1;
///             lease.owner = owner.to_owned();
///         }
///         lease.expires = now + ttl;
///         Ok(Some(lease.clone()))
///     }
///     async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
///         if let Some(lease) = self.tables()?.leases.get_mut(key).filter(|l| l.owner == owner) {
///             lease.expires = Instant::now();
///         }
///         Ok(())
///     }
///     async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
///         Ok(self.tables()?.leases.values().filter(|l| l.key.starts_with(prefix)).cloned().collect())
///     }
/// }
///
/// #[async_trait]
/// impl CheckpointStore for TextStore {
///     async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
///         let tables = self.tables()?;
///         tables.checkpoints.get(&(mapping.to_owned(), shard.to_owned()))
///             .map(|text| {
///                 Checkpoint::from_sortable_text(text)
///                     .ok_or_else(|| SourceError::permanent(format!("corrupt checkpoint {text:?}")))
///             })
///             .transpose()
///     }
///
///     async fn put(&self, mapping: &str, shard: &str, checkpoint: Checkpoint, lease: &Lease) -> Result<(), SourceError> {
///         lease.check_shard(mapping, shard)?;
///         let text = checkpoint.to_sortable_text();
///         let mut tables = self.tables()?;
///         lease.fence(tables.leases.get(&lease.key), Instant::now())?;
///         let stored = tables.checkpoints.entry((mapping.to_owned(), shard.to_owned())).or_default();
///         if *stored > text {
///             return Err(SourceError::Invalid(format!("checkpoint of {shard} would move back")));
///         }
///         *stored = text;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = TextStore::default();
/// let ttl = Duration::from_secs(30);
/// let lease = store.acquire("clicks/shard-0", "worker-1", ttl).await?.expect("a free lease");
/// assert_eq!(store.get("clicks", "shard-0").await?, None);
/// store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(10)), &lease).await?;
/// assert!(store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(9)), &lease).await.is_err());
/// // Given up, the lease fences its holder's writes out.
/// store.release("clicks/shard-0", "worker-1").await?;
/// let late = store.put("clicks", "shard-0", Checkpoint::ShardEnd, &lease).await;
/// assert!(matches!(late, Err(SourceError::Fenced { .. })));
/// let lease = store.acquire("clicks/shard-0", "worker-2", ttl).await?.expect("released");
/// store.put("clicks", "shard-0", Checkpoint::ShardEnd, &lease).await?;
/// assert_eq!(store.get("clicks", "shard-0").await?, Some(Checkpoint::ShardEnd));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CheckpointStore: LeaseStore {
    /// The checkpoint of `shard` for `mapping`, if any.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] from the store; a permanent one naming the text if what is stored is
    /// not a checkpoint (never read as "no checkpoint", which would start the shard over from
    /// the starting position).
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError>;

    /// Moves the checkpoint of `shard` forward, if `lease` still holds: the store keeps a lease
    /// under `lease.key` with the same owner and counter, and it has not expired on the
    /// store's clock. Checking the lease and moving the checkpoint are one atomic step (one
    /// lock, one script, one statement), so that a worker that lost its lease cannot move a
    /// checkpoint past records its successor has not handled. A stream mapping passes the
    /// lease on `<mapping>/<shard>` it reads the shard under, and a store must refuse any other
    /// (check it with [`Lease::check_shard`]): a lease on one shard never writes another's
    /// checkpoint.
    ///
    /// # Errors
    ///
    /// [`SourceError::Fenced`] if the lease is not on `<mapping>/<shard>`, expired or moved; [`SourceError::Invalid`] if the
    /// checkpoint would move back; a store error otherwise.
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError>;
}

#[async_trait]
impl<C: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<C> {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        (**self).get(mapping, shard).await
    }
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        (**self).put(mapping, shard, checkpoint, lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_text_sorts_as_checkpoints_do() {
        let at = |text: &str| Checkpoint::At(text.parse().unwrap());
        let values = [
            at("0"),
            at("9"),
            at("10"),
            Checkpoint::At(Sequence::new(u128::MAX)),
            at("340282366920938463463374607431768211456"),
            at("49590338271490256608559692538361571095921575989136588898"),
            at(&"9".repeat(crate::stream::MAX_SEQUENCE_DIGITS)),
            Checkpoint::ShardEnd,
        ];
        for pair in values.windows(2) {
            assert!(
                pair[0].to_sortable_text() < pair[1].to_sortable_text(),
                "{pair:?}"
            );
        }
        for value in values {
            assert_eq!(
                Checkpoint::from_sortable_text(&value.to_sortable_text()),
                Some(value)
            );
        }
        // Checkpoints written when sequence numbers were 128-bit read back the same.
        assert_eq!(
            Checkpoint::from_sortable_text("000000000000000000000000000000000000042"),
            Some(Checkpoint::At(Sequence::new(42)))
        );
        assert_eq!(Checkpoint::from_sortable_text("nope"), None);
    }
}
