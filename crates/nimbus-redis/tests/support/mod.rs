//! Shared by the Redis test binaries: the server's URL, a stream's length, and a unique key
//! prefix per test that skips (or fails under `NIMBUS_REQUIRE_SERVICES=1`) when the server is
//! unreachable.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::time::Duration;

use nimbus_redis::RedisConfig;

pub(crate) fn url() -> String {
    std::env::var("NIMBUS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The length of stream `key`, asked on a connection of its own (0 for no such key).
pub(crate) async fn stream_len(key: &str) -> i64 {
    let client = redis::Client::open(url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut con)
        .await
        .unwrap()
}

/// A unique key prefix, and the keys under it deleted when dropped.
pub(crate) struct Prefix(pub(crate) String);

impl Prefix {
    /// Checks the server first: `None` (after saying so) to skip.
    pub(crate) async fn new() -> Option<Self> {
        let reachable = async {
            let client = redis::Client::open(url()).ok()?;
            let mut con = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()?
            .ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .ok()
        };
        if reachable.await.is_none() {
            if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "Redis is unreachable at {} and NIMBUS_REQUIRE_SERVICES=1",
                    url()
                );
            }
            // Straight to stderr, past the test harness's capture, so the skip is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: Redis is unreachable at {} (set NIMBUS_REQUIRE_SERVICES=1 to fail instead)",
                url()
            );
            return None;
        }
        Some(Self(format!(
            "nimbus-test:{}:{:016x}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }

    pub(crate) fn config(&self, name: &str) -> RedisConfig {
        RedisConfig::new(url(), format!("{}:{name}", self.0))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(url()) {
            if let Ok(mut con) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.0))
                    .query(&mut con)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
                }
            }
        }
    }
}
