//! Leases: which process works on which shard, and the fencing counter that lets a
//! checkpoint store refuse writes from a worker that lost its lease. Used even in one process,
//! so that the same engine spreads shards over several processes with a shared store.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::SourceError;

/// A lease on a key (a mapping's shard).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The key.
    pub key: String,
    /// Who holds it.
    pub owner: String,
    /// When it expires unless renewed, on this process's clock.
    pub expires: Instant,
    /// A fencing counter, bumped on every acquire that is not the renewal of a live lease: a
    /// lease taken over, or taken again after it expired or was released (even by the same
    /// owner), never has the counter it had before.
    pub counter: u64,
}

impl Lease {
    /// A lease, for stores built outside this crate.
    pub fn new(
        key: impl Into<String>,
        owner: impl Into<String>,
        expires: Instant,
        counter: u64,
    ) -> Self {
        Self {
            key: key.into(),
            owner: owner.into(),
            expires,
            counter,
        }
    }

    /// Checks that this lease is the one on `shard` of `mapping`: its key is
    /// `<mapping>/<shard>`, the key a stream mapping leases a shard under. A checkpoint store
    /// calls it before [`Lease::fence`], so that a lease on one shard cannot write another's
    /// checkpoint.
    ///
    /// # Errors
    ///
    /// [`SourceError::Fenced`] naming both.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use nimbus_sources::Lease;
    /// use tokio::time::Instant;
    ///
    /// let lease = Lease::new("clicks/shard-0", "worker-1", Instant::now() + Duration::from_secs(30), 1);
    /// assert!(lease.check_shard("clicks", "shard-0").is_ok());
    /// assert!(lease.check_shard("clicks", "shard-1").is_err());
    /// ```
    pub fn check_shard(&self, mapping: &str, shard: &str) -> Result<(), SourceError> {
        let key = self.key.as_str();
        let matches = key
            .strip_prefix(mapping)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| rest == shard);
        if matches {
            Ok(())
        } else {
            Err(SourceError::fenced(
                self.key.clone(),
                format!("is not the lease on {mapping}/{shard}"),
            ))
        }
    }

    /// Checks that a write made under this lease may go ahead, given `held`, what the store
    /// keeps for the same key at `now` (on the store's clock): the same owner and counter, not
    /// expired. A store that keeps its leases in this process calls it under the lock that
    /// guards both leases and checkpoints, so that the check and the write are one step.
    ///
    /// # Errors
    ///
    /// [`SourceError::Fenced`] saying what changed.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use nimbus_sources::{Lease, SourceError};
    /// use tokio::time::Instant;
    ///
    /// let now = Instant::now();
    /// let mine = Lease::new("clicks/shard-0", "worker-1", now + Duration::from_secs(30), 4);
    /// assert!(mine.fence(Some(&mine), now).is_ok());
    /// let taken = Lease::new("clicks/shard-0", "worker-2", now + Duration::from_secs(30), 5);
    /// assert!(matches!(mine.fence(Some(&taken), now), Err(SourceError::Fenced { .. })));
    /// assert!(mine.fence(Some(&mine), now + Duration::from_secs(31)).is_err());
    /// assert!(mine.fence(None, now).is_err());
    /// ```
    pub fn fence(&self, held: Option<&Lease>, now: Instant) -> Result<(), SourceError> {
        let fenced = |detail: String| Err(SourceError::fenced(self.key.clone(), detail));
        match held {
            None => fenced("is not held by anyone".to_owned()),
            Some(held) if held.owner != self.owner || held.counter != self.counter => {
                fenced(format!(
                    "passed from {} (counter {}) to {} (counter {})",
                    self.owner, self.counter, held.owner, held.counter
                ))
            }
            Some(held) if held.expires <= now => fenced(format!("of {} has expired", self.owner)),
            Some(_) => Ok(()),
        }
    }
}

/// Where leases are kept. Acquiring succeeds when the lease is free, expired, or already the
/// caller's; it is exclusive otherwise. The counter rises on every acquire that is not the
/// renewal of a live lease (a new owner, or the same owner after the lease expired or was
/// released), so that a [`CheckpointStore`](super::CheckpointStore), which keeps leases too,
/// can refuse a write made under a lease that has since moved or lapsed, even when two
/// processes use the same owner name.
///
/// # Example
///
/// Several tenants sharing one store, each under its own key prefix so that their mappings'
/// leases never collide; the leases are kept in an [`InMemoryStreamStore`]. The `async_trait`
/// attribute is re-exported by this crate.
///
/// [`InMemoryStreamStore`]: super::InMemoryStreamStore
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nimbus_sources::{async_trait, InMemoryStreamStore, Lease, LeaseStore, SourceError};
///
/// #[derive(Debug)]
/// struct Tenant {
///     shared: Arc<InMemoryStreamStore>,
///     prefix: String,
/// }
///
/// impl Tenant {
///     /// The tenant's view of a lease: the key without the prefix.
///     fn own(&self, mut lease: Lease) -> Lease {
///         lease.key.replace_range(..self.prefix.len(), "");
///         lease
///     }
/// }
///
/// #[async_trait]
/// impl LeaseStore for Tenant {
///     async fn acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>, SourceError> {
///         let lease = self.shared.acquire(&format!("{}{key}", self.prefix), owner, ttl).await?;
///         Ok(lease.map(|lease| self.own(lease)))
///     }
///     async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
///         self.shared.release(&format!("{}{key}", self.prefix), owner).await
///     }
///     async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
///         let leases = self.shared.list(&format!("{}{prefix}", self.prefix)).await?;
///         Ok(leases.into_iter().map(|lease| self.own(lease)).collect())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shared = Arc::new(InMemoryStreamStore::new());
/// let acme = Tenant { shared: shared.clone(), prefix: "acme/".into() };
/// let globex = Tenant { shared, prefix: "globex/".into() };
/// let ttl = Duration::from_secs(30);
/// // The same key for two tenants: two leases.
/// assert!(acme.acquire("orders/shard-0", "worker-1", ttl).await?.is_some());
/// assert!(globex.acquire("orders/shard-0", "worker-2", ttl).await?.is_some());
/// // Within a tenant, a lease is exclusive.
/// assert!(acme.acquire("orders/shard-0", "worker-3", ttl).await?.is_none());
/// let held = acme.list("orders/").await?;
/// assert_eq!((held[0].key.as_str(), held[0].owner.as_str()), ("orders/shard-0", "worker-1"));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes or renews `key` for `owner` for `ttl`; `None` if someone else holds it. The
    /// counter of the returned lease stays the same only when `owner` renews a lease that has
    /// not expired; it rises otherwise (a new owner, or an expired or released lease taken
    /// again).
    ///
    /// # Errors
    ///
    /// A [`SourceError`] from the store.
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError>;

    /// Gives `key` up if `owner` holds it: it expires now, and writes made under it are
    /// refused from then on.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] from the store.
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError>;

    /// Every lease whose key starts with `prefix`, held or expired, with `expires` on this
    /// process's clock. A coordinator reads it to count live workers and balance shards.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] from the store.
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError>;
}

#[async_trait]
impl<L: LeaseStore + ?Sized> LeaseStore for std::sync::Arc<L> {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        (**self).acquire(key, owner, ttl).await
    }
    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        (**self).release(key, owner).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        (**self).list(prefix).await
    }
}
