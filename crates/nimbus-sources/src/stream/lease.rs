//! Leases: which process works on which shard. Used even in one process, so that the same
//! engine spreads shards over several processes with a shared store.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
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
    /// When it expires unless renewed.
    pub expires: Instant,
    /// Bumped on every change of owner (a fencing counter).
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
}

/// Where leases are kept. Acquiring succeeds when the lease is free, expired, or already the
/// caller's; it is exclusive otherwise.
///
/// # Example
///
/// Several tenants sharing one store, each under its own key prefix so that their mappings'
/// leases never collide; the leases are kept in an [`InMemoryLeases`]. The `async_trait`
/// attribute is re-exported by this crate.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nimbus_sources::{async_trait, InMemoryLeases, Lease, LeaseStore, SourceError};
///
/// #[derive(Debug)]
/// struct Tenant {
///     shared: Arc<InMemoryLeases>,
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
/// let shared = Arc::new(InMemoryLeases::new());
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
    /// Takes or renews `key` for `owner` for `ttl`; `None` if someone else holds it.
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

    /// Gives `key` up if `owner` holds it.
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

/// Leases in memory.
#[derive(Debug, Default)]
pub struct InMemoryLeases {
    leases: Mutex<HashMap<String, Lease>>,
}

impl InMemoryLeases {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LeaseStore for InMemoryLeases {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        let now = Instant::now();
        let mut leases = self.leases.lock();
        let lease = leases.entry(key.to_owned()).or_insert_with(|| Lease {
            key: key.to_owned(),
            owner: owner.to_owned(),
            expires: now,
            counter: 0,
        });
        if lease.owner != owner && lease.expires > now {
            return Ok(None);
        }
        if lease.owner != owner || lease.counter == 0 {
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
        let mut leases = self.leases.lock();
        if let Some(lease) = leases.get_mut(key) {
            if lease.owner == owner {
                lease.expires = Instant::now();
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        let leases = self.leases.lock();
        Ok(leases
            .values()
            .filter(|lease| lease.key.starts_with(prefix))
            .cloned()
            .collect())
    }
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
