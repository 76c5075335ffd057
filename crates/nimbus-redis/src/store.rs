//! Checkpoint and lease stores in Redis, atomic through Lua scripts.

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

/// Forward-only set: 1 if stored, 0 if it would move back.
const PUT_FORWARD: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and current > ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Checkpoints kept in Redis, shared by every process of a mapping.
pub struct RedisCheckpoints {
    key: String,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCheckpoints")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisCheckpoints {
    /// Connects; checkpoints live in the hash `<key>:checkpoints`.
    ///
    /// # Errors
    ///
    /// An invalid config, or the server cannot be reached.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())?;
        Ok(Self {
            key: format!("{}:checkpoints", config.key),
            manager: client
                .get_connection_manager_with_config(crate::config::shared())
                .await?,
        })
    }
}

#[async_trait]
impl CheckpointStore for RedisCheckpoints {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        let mut con = self.manager.clone();
        let value: Option<String> = redis::cmd("HGET")
            .arg(&self.key)
            .arg(format!("{mapping}/{shard}"))
            .query_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        Ok(value.as_deref().and_then(Checkpoint::from_sortable_text))
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        let mut con = self.manager.clone();
        let stored: i64 = redis::Script::new(PUT_FORWARD)
            .key(&self.key)
            .arg(format!("{mapping}/{shard}"))
            .arg(checkpoint.to_sortable_text())
            .invoke_async(&mut con)
            .await
            .map_err(RedisError::from)?;
        if stored == 1 {
            Ok(())
        } else {
            Err(SourceError::Invalid(format!(
                "checkpoint of {shard} would move back to {checkpoint:?}"
            )))
        }
    }
}

/// Take or renew: returns {counter, ttl_ms} or nil when another owner holds an unexpired lease.
/// Expiry uses the server's clock, so every process agrees on it.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires') or '0')
local counter = tonumber(redis.call('HGET', KEYS[1], 'counter') or '0')
if owner and owner ~= ARGV[1] and expires > now then return nil end
if owner ~= ARGV[1] or counter == 0 then counter = counter + 1 end
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

/// Leases kept in Redis: one hash per lease key.
pub struct RedisLeases {
    prefix: String,
    /// A set of the lease names, so that listing needs no `SCAN`.
    index: String,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLeases")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLeases {
    /// Connects; leases live under `<key>:lease:`.
    ///
    /// # Errors
    ///
    /// An invalid config, or the server cannot be reached.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())?;
        Ok(Self {
            prefix: format!("{}:lease:", config.key),
            index: format!("{}:leases", config.key),
            manager: client
                .get_connection_manager_with_config(crate::config::shared())
                .await?,
        })
    }
}

#[async_trait]
impl LeaseStore for RedisLeases {
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
