//! The store of a stream mapping's leases and checkpoints: two tables, one fenced write.

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

/// Leases and checkpoints in the tables `nimbus_leases` (`key`, `owner`, `expires`, `counter`;
/// expiry on the database's clock) and `nimbus_checkpoints` (`mapping`, `shard`, `value`: the
/// checkpoint's sortable text, compared under the `C` collation so that it sorts as checkpoints
/// do whatever the database's locale). A checkpoint write checks the writer's lease (locking
/// its row against a concurrent take-over) and moves the checkpoint in one statement.
///
/// # Example
///
/// ```no_run
/// use nimbus_postgres::PostgresStreamStore;
/// use nimbus_sources::{InMemoryStream, StreamConfig, StreamFunction, StreamMapping, StreamMappingConfig};
///
/// # async fn run(function: StreamFunction) -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStreamStore::connect("host=127.0.0.1 user=postgres dbname=test").await?;
/// let stream = InMemoryStream::new(StreamConfig::default())?;
/// let mapping = StreamMapping::builder(stream, function, StreamMappingConfig::new("clicks"))
///     .store(store)
///     .start()?;
/// # let _ = mapping;
/// # Ok(())
/// # }
/// ```
pub struct PostgresStreamStore {
    db: Db,
}

impl std::fmt::Debug for PostgresStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStreamStore")
            .finish_non_exhaustive()
    }
}

impl PostgresStreamStore {
    /// Connects and creates the tables if needed.
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

/// Writes a checkpoint if the writer's lease holds: `$1` mapping, `$2` shard, `$3` the lease's
/// key, `$4` its owner, `$5` its counter, `$6` the sortable text. Answers whether the lease is
/// the writer's (NULL: no such lease), whether it is live, and how many rows were written.
const PUT_FENCED: &str = r#"
WITH lease AS (
    SELECT owner = $4 AND counter = $5 AS ours, expires > now() AS live
    FROM nimbus_leases WHERE key = $3
    FOR SHARE
), stored AS (
    INSERT INTO nimbus_checkpoints (mapping, shard, value)
    SELECT $1, $2, $6 FROM lease WHERE ours AND live
    ON CONFLICT (mapping, shard) DO UPDATE SET value = excluded.value
    WHERE nimbus_checkpoints.value COLLATE "C" <= excluded.value COLLATE "C"
    RETURNING 1
)
SELECT (SELECT ours FROM lease), (SELECT live FROM lease), (SELECT count(*) FROM stored)
"#;

#[async_trait]
impl CheckpointStore for PostgresStreamStore {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM nimbus_checkpoints WHERE mapping = $1 AND shard = $2",
                &[&mapping, &shard],
            )
            .await
            .map_err(PostgresError::from)?;
        // Unreadable is an error, not "no checkpoint": that would start the shard over.
        row.map(|r| {
            let text: &str = r.get(0);
            Checkpoint::from_sortable_text(text).ok_or_else(|| {
                SourceError::permanent(format!(
                    "the checkpoint of {mapping}/{shard} is stored as {text:?}, which is not a checkpoint"
                ))
            })
        })
        .transpose()
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
        lease: &Lease,
    ) -> Result<(), SourceError> {
        lease.check_shard(mapping, shard)?;
        let client = self.db.client().await?;
        let value = checkpoint.to_sortable_text();
        // A counter above i64::MAX was never stored: no lease has it.
        let counter = i64::try_from(lease.counter).unwrap_or(-1);
        let row = client
            .query_one(
                PUT_FENCED,
                &[&mapping, &shard, &lease.key, &lease.owner, &counter, &value],
            )
            .await
            .map_err(PostgresError::from)?;
        let (ours, live, stored): (Option<bool>, Option<bool>, i64) =
            (row.get(0), row.get(1), row.get(2));
        let fenced = |detail: String| SourceError::fenced(lease.key.clone(), detail);
        match (ours, live) {
            (None, _) => Err(fenced("is not held by anyone".to_owned())),
            (Some(false), _) => Err(fenced(format!(
                "is no longer held by {} under counter {}",
                lease.owner, lease.counter
            ))),
            (Some(true), Some(false) | None) => {
                Err(fenced(format!("of {} has expired", lease.owner)))
            }
            (Some(true), Some(true)) if stored == 0 => Err(SourceError::Invalid(format!(
                "checkpoint of {shard} would move back to {checkpoint:?}"
            ))),
            (Some(true), Some(true)) => Ok(()),
        }
    }
}

#[async_trait]
impl LeaseStore for PostgresStreamStore {
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
        // Insert, or take over if expired or already ours; the counter stays only when the
        // owner renews a live lease (SET sees the row as it was).
        let row = client
            .query_opt(
                "INSERT INTO nimbus_leases (key, owner, expires, counter)
                 VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000.0), 1)
                 ON CONFLICT (key) DO UPDATE SET
                     counter = CASE WHEN nimbus_leases.owner = excluded.owner
                                        AND nimbus_leases.expires > now() THEN nimbus_leases.counter
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
