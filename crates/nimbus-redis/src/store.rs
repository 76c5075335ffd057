//! The store of a stream mapping's leases and checkpoints in Redis, atomic through Lua
//! scripts.

use std::time::Duration;

use async_trait::async_trait;
use nimbus_sources::{Checkpoint, CheckpointStore, Lease, LeaseStore, SourceError};
use redis::aio::ConnectionManager;

use crate::config::RedisConfig;
use crate::error::RedisError;

/// The longest lease accepted: a longer `ttl` is refused rather than cut (a lease that ended
/// before its holder thought would let two owners read one shard).
const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

fn check_ttl(ttl: Duration) -> Result<(), SourceError> {
    if ttl > MAX_LEASE_TTL {
        return Err(SourceError::Invalid(format!(
            "lease ttl = {ttl:?} is outside 0s..=24h"
        )));
    }
    Ok(())
}

/// `now + after`, saturating at a day (server values are not trusted to be small).
fn instant_after(now: tokio::time::Instant, after: Duration) -> tokio::time::Instant {
    now + after.min(MAX_LEASE_TTL)
}

/// A fenced, forward-only set. KEYS: the checkpoint hash, the writer's lease hash. ARGV: the
/// field, the sortable text, the lease's owner and counter. Returns 1 if stored, 0 if it would
/// move back, -1 if the lease is unknown or held by another owner or counter, -2 if it
/// expired (on the server's clock). Texts compare byte by byte, not by the server's locale.
const PUT_FENCED: &str = r"
local lease = redis.call('HMGET', KEYS[2], 'owner', 'expires', 'counter')
if not lease[1] or lease[1] ~= ARGV[3] or tonumber(lease[3]) ~= tonumber(ARGV[4]) then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(lease[2]) <= now then return -2 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local new = ARGV[2]
  local n = math.min(#current, #new)
  local i = 1
  while i <= n and string.byte(current, i) == string.byte(new, i) do i = i + 1 end
  local back
  if i <= n then back = string.byte(current, i) > string.byte(new, i) else back = #current > #new end
  if back then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Take or renew: returns {counter, ttl_ms} or nil when another owner holds an unexpired lease.
/// Expiry uses the server's clock, so every process agrees on it.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
local counter = tonumber(redis.call('HGET', KEYS[1], 'counter') or '0')
if owner and owner ~= ARGV[1] and expires > now then return nil end
-- Only the renewal of a live lease keeps its counter.
if owner ~= ARGV[1] or expires <= now or counter == 0 then counter = counter + 1 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires', now + tonumber(ARGV[2]), 'counter', counter)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 3600000)
redis.call('SADD', KEYS[2], ARGV[3])
return counter
";

/// Lists the leases named in the index (KEYS[1]) that start with ARGV[2], under the key prefix
/// ARGV[1], as flat {key, owner, ms left, counter} groups; forgets names whose hash expired
/// (an hour after the lease ended, see ACQUIRE).
const LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(name, 1, #ARGV[2]) == ARGV[2] then
    local h = redis.call('HMGET', ARGV[1] .. name, 'owner', 'expires', 'counter')
    if h[1] then
      local left = tonumber(h[2]) - now
      if left < 0 then left = 0 end
      table.insert(out, name)
      table.insert(out, h[1])
      table.insert(out, left)
      table.insert(out, tonumber(h[3]))
    else
      redis.call('SREM', KEYS[1], name)
    end
  end
end
return out
";

const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'expires', 0)
end
return 1
";

/// Leases and checkpoints in Redis, shared by every process of a mapping: one hash per lease
/// (`<key>:lease:<name>`: `owner`, `expires` in server milliseconds, `counter`), a set of their
/// names (`<key>:leases`), and the hash `<key>:checkpoints` (field `<mapping>/<shard>`, value
/// the checkpoint's sortable text). A checkpoint write checks the writer's lease and moves the
/// checkpoint in one Lua script, on the server's clock.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use nimbus_redis::{RedisConfig, RedisStream, RedisStreamStore};
/// use nimbus_sources::{StreamFunction, StreamMapping, StreamMappingConfig};
///
/// # async fn run(function: StreamFunction) -> Result<(), Box<dyn std::error::Error>> {
/// let config = RedisConfig::new("redis://127.0.0.1:6379", "clicks").with_shards(4);
/// let stream = RedisStream::connect(config.clone()).await?;
/// // Every process that starts this mapping with a store on the same key shares the shards.
/// let mapping = StreamMapping::builder(stream, function, StreamMappingConfig::new("clicks"))
///     .store(RedisStreamStore::connect(&config).await?)
///     .start()?;
/// # let _ = mapping;
/// # Ok(())
/// # }
/// ```
pub struct RedisStreamStore {
    checkpoints: String,
    prefix: String,
    /// A set of the lease names, so that listing needs no `SCAN`.
    index: String,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStreamStore {
    /// Connects; leases live under `<key>:lease:`, checkpoints in `<key>:checkpoints`.
    ///
    /// # Errors
    ///
    /// An invalid config, or the server cannot be reached.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())?;
        Ok(Self {
            checkpoints: format!("{}:checkpoints", config.key),
            prefix: format!("{}:lease:", config.key),
            index: format!("{}:leases", config.key),
            manager: client
                .get_connection_manager_with_config(crate::config::shared())
                .await?,
        })
    }
}

#[async_trait]
impl CheckpointStore for RedisStreamStore {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        let mut con = self.manager.clone();
        let value: Option<String> = redis::cmd("HGET")
            .arg(&self.checkpoints)
            .arg(format!("{mapping}/{shard}"))
            .query_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        // Unreadable is an error, not "no checkpoint": that would start the shard over.
        value
            .map(|text| {
                Checkpoint::from_sortable_text(&text).ok_or_else(|| {
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
        let mut con = self.manager.clone();
        let stored: i64 = redis::Script::new(PUT_FENCED)
            .key(&self.checkpoints)
            .key(format!("{}{}", self.prefix, lease.key))
            .arg(format!("{mapping}/{shard}"))
            .arg(checkpoint.to_sortable_text())
            .arg(&lease.owner)
            .arg(lease.counter)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        let fenced = |detail: String| SourceError::fenced(lease.key.clone(), detail);
        match stored {
            1 => Ok(()),
            0 => Err(SourceError::Invalid(format!(
                "checkpoint of {shard} would move back to {checkpoint:?}"
            ))),
            -2 => Err(fenced(format!("of {} has expired", lease.owner))),
            _ => Err(fenced(format!(
                "is no longer held by {} under counter {}",
                lease.owner, lease.counter
            ))),
        }
    }
}

#[async_trait]
impl LeaseStore for RedisStreamStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, SourceError> {
        check_ttl(ttl)?;
        let mut con = self.manager.clone();
        let counter: Option<u64> = redis::Script::new(ACQUIRE)
            .key(format!("{}{key}", self.prefix))
            .key(&self.index)
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .arg(key)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        Ok(counter.map(|counter| {
            Lease::new(
                key,
                owner,
                instant_after(tokio::time::Instant::now(), ttl),
                counter,
            )
        }))
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), SourceError> {
        let mut con = self.manager.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(format!("{}{key}", self.prefix))
            .arg(owner)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Lease>, SourceError> {
        let mut con = self.manager.clone();
        let flat: Vec<(String, String, u64, u64)> = redis::Script::new(LIST)
            .key(&self.index)
            .arg(&self.prefix)
            .arg(prefix)
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        let now = tokio::time::Instant::now();
        Ok(flat
            .into_iter()
            .map(|(key, owner, left_ms, counter)| {
                Lease::new(
                    key,
                    owner,
                    instant_after(now, Duration::from_millis(left_ms)),
                    counter,
                )
            })
            .collect())
    }
}
