//! Checkpoint and lease tables.

use std::time::Duration;

use async_trait::async_trait;
use nimbus_sources::{Checkpoint, CheckpointStore, Lease, LeaseStore, SourceError};

use crate::db::{migrate, Db};
use crate::error::PostgresError;

/// The longest lease accepted: a longer `ttl` is refused rather than cut (a lease that ended
/// before its holder thought would let two owners read one shard).
const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// `now + after`, saturating at a day (server values are not trusted to be small).
fn instant_after(now: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    now + after.min(MAX_LEASE_TTL)
}

/// Checkpoints in the table `nimbus_checkpoints`, forward only (zero-padded text compares as
/// the numbers do; `~` for the shard's end sorts after them).
pub struct PostgresCheckpoints {
    db: Db,
}

impl std::fmt::Debug for PostgresCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheckpoints")
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpoints {
    /// Connects and creates the table if needed.
    ///
    /// # Errors
    ///
    /// The database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        let db = Db::new(url);
        migrate(&*db.client().await?, None).await?;
        Ok(Self { db })
    }
}

#[async_trait]
impl CheckpointStore for PostgresCheckpoints {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM nimbus_checkpoints WHERE mapping = $1 AND shard = $2",
                &[&mapping, &shard],
            )
            .await
            .map_err(PostgresError::from)?;
        Ok(row.and_then(|r| Checkpoint::from_sortable_text(r.get::<_, &str>(0))))
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        let client = self.db.client().await?;
        let value = checkpoint.to_sortable_text();
        let stored = client
            .execute(
                "INSERT INTO nimbus_checkpoints (mapping, shard, value) VALUES ($1, $2, $3)
                 ON CONFLICT (mapping, shard) DO UPDATE SET value = excluded.value
                 WHERE nimbus_checkpoints.value <= excluded.value",
                &[&mapping, &shard, &value],
            )
            .await
            .map_err(PostgresError::from)?;
        if stored == 0 {
            return Err(SourceError::Invalid(format!(
                "checkpoint of {shard} would move back to {checkpoint:?}"
            )));
        }
        Ok(())
    }
}

/// Leases in the table `nimbus_leases`; expiry on the database's clock.
pub struct PostgresLeases {
    db: Db,
}

impl std::fmt::Debug for PostgresLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLeases").finish_non_exhaustive()
    }
}

impl PostgresLeases {
    /// Connects and creates the table if needed.
    ///
    /// # Errors
    ///
    /// The database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        let db = Db::new(url);
        migrate(&*db.client().await?, None).await?;
        Ok(Self { db })
    }
}

#[async_trait]
impl LeaseStore for PostgresLeases {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        if ttl > MAX_LEASE_TTL {
            return Err(SourceError::Invalid(format!(
                "lease ttl = {ttl:?} is outside 0s..=24h"
            )));
        }
        let client = self.db.client().await?;
        let ttl_ms = ttl.as_millis() as f64;
        // Insert, or take over if expired or already ours; the counter rises on a change of owner.
        let row = client
            .query_opt(
                "INSERT INTO nimbus_leases (key, owner, expires, counter)
                 VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000.0), 1)
                 ON CONFLICT (key) DO UPDATE SET
                     counter = CASE WHEN nimbus_leases.owner = excluded.owner THEN nimbus_leases.counter
                                    ELSE nimbus_leases.counter + 1 END,
                     owner = excluded.owner,
                     expires = excluded.expires
                 WHERE nimbus_leases.owner = excluded.owner OR nimbus_leases.expires <= now()
                 RETURNING counter",
                &[&key, &owner, &ttl_ms],
            )
            .await
            .map_err(PostgresError::from)?;
        Ok(row.map(|r| {
            let counter: i64 = r.get(0);
            Lease::new(
                key,
                owner,
                instant_after(tokio::time::Instant::now(), ttl),
                counter as u64,
            )
        }))
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        let client = self.db.client().await?;
        client
            .execute(
                "UPDATE nimbus_leases SET expires = now() WHERE key = $1 AND owner = $2",
                &[&key, &owner],
            )
            .await
            .map_err(PostgresError::from)?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        let client = self.db.client().await?;
        // Leases over for an hour are forgotten, so departed workers' rows do not pile up.
        client
            .execute(
                "DELETE FROM nimbus_leases
                 WHERE starts_with(key, $1) AND expires < now() - interval '1 hour'",
                &[&prefix],
            )
            .await
            .map_err(PostgresError::from)?;
        let rows = client
            .query(
                "SELECT key, owner,
                        GREATEST(0, EXTRACT(EPOCH FROM expires - now()) * 1000)::float8,
                        counter
                 FROM nimbus_leases WHERE starts_with(key, $1)",
                &[&prefix],
            )
            .await
            .map_err(PostgresError::from)?;
        let now = tokio::time::Instant::now();
        Ok(rows
            .iter()
            .map(|row| {
                let left_ms: f64 = row.get(2);
                let counter: i64 = row.get(3);
                Lease::new(
                    row.get::<_, String>(0),
                    row.get::<_, String>(1),
                    instant_after(
                        now,
                        Duration::try_from_secs_f64(left_ms.max(0.0) / 1000.0)
                            .unwrap_or(MAX_LEASE_TTL),
                    ),
                    counter as u64,
                )
            })
            .collect())
    }
}
