//! Multi-process scale-out: three OS processes of the `redis_streams` example host share an
//! 8-shard Redis stream through leases (kept in Redis, then in PostgreSQL); one is killed with
//! SIGKILL mid-run. Its shards must be taken over within the lease timeout, every record
//! handled at least once, the order per key held; the duplicates are counted and reported.
//!
//! Needs Redis (and PostgreSQL for the second test); skips loudly when they are unreachable,
//! and fails under `NIMBUS_REQUIRE_SERVICES=1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::redis::{RedisConfig, RedisStream, RedisStreamStore};
use nimbus::sources::LeaseStore;

const SHARDS: usize = 8;
const KEYS: u64 = 64;
/// Records per key in each of the three phases (before, during and after the kill).
const PER_PHASE: u64 = 25;
const LEASE_TTL: Duration = Duration::from_secs(2);
/// Time each worker spends on a batch of 10, so that a run lasts long enough to kill one
/// worker in the middle of its work.
const WORK_PER_BATCH: Duration = Duration::from_millis(40);

fn redis_url() -> String {
    std::env::var("NIMBUS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("NIMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

/// Skips (returns false, loudly) or, under `NIMBUS_REQUIRE_SERVICES=1`, fails when a service
/// is unreachable.
fn reachable(service: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    assert!(
        std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{service} is unreachable and NIMBUS_REQUIRE_SERVICES=1"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {service} is unreachable (set NIMBUS_REQUIRE_SERVICES=1 to fail instead)"
    );
    false
}

async fn redis_up() -> bool {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return false;
    };
    let connect = client.get_multiplexed_async_connection();
    matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    )
}

async fn postgres_up() -> bool {
    let url = postgres_url();
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), connect).await,
        Ok(Ok(_))
    )
}

/// The example host, built by `cargo test` (which builds examples); built here if missing.
fn host() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join("examples").join("redis_streams");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", "redis_streams"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(
            build.status().expect("run cargo").success(),
            "building the example host failed"
        );
    }
    path
}

/// One worker process and the file it writes.
struct Worker {
    owner: String,
    child: Child,
    out: PathBuf,
}

impl Drop for Worker {
    /// A test that fails leaves no worker running (it would go on writing leases and
    /// checkpoints after the cleanup).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(key: &str, owner: &str, dir: &Path, store: &str) -> Worker {
    let out = dir.join(format!("{owner}.log"));
    let mut child = Command::new(host())
        .args([
            "worker",
            key,
            owner,
            out.to_str().expect("utf-8 path"),
            store,
            &LEASE_TTL.as_millis().to_string(),
            &WORK_PER_BATCH.as_millis().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the example host");
    // Wait for its "ready" line, so a failure to start shows here.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the host's output");
    assert_eq!(line.trim(), "ready", "worker {owner} did not start");
    Worker {
        owner: owner.to_owned(),
        child,
        out,
    }
}

/// A handled record as written by a worker: (nanos, index in batch, key, value).
type Line = (u128, usize, String, u64);

/// Reads a worker's file; a partial last line (cut by SIGKILL) is ignored.
fn read_lines(path: &Path) -> Vec<Line> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let nanos = parts.next()?.parse().ok()?;
            let index = parts.next()?.parse().ok()?;
            let key = parts.next()?.to_owned();
            let value = parts.next()?.parse().ok()?;
            Some((nanos, index, key, value))
        })
        .collect()
}

fn distinct(workers: &[Worker]) -> usize {
    workers
        .iter()
        .flat_map(|w| read_lines(&w.out))
        .map(|(_, _, key, value)| (key, value))
        .collect::<HashSet<_>>()
        .len()
}

/// Unexpired shard leases by shard key → owner.
async fn holders(leases: &dyn LeaseStore, mapping: &str) -> BTreeMap<String, String> {
    let listed = leases
        .list(&format!("{mapping}/"))
        .await
        .expect("list leases");
    let now = tokio::time::Instant::now();
    listed
        .into_iter()
        .filter(|l| !l.key.contains("~worker/") && l.expires > now)
        // A mapping's owner is the configured one with a per-start `#<nonce>` appended.
        .map(|l| {
            let owner = l
                .owner
                .rsplit_once('#')
                .map_or(&*l.owner, |(o, _)| o)
                .to_owned();
            (l.key, owner)
        })
        .collect()
}

/// Polls `check` every 25 ms until it holds; panics with `what` after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn put_phase(stream: &RedisStream, phase: u64) {
    for n in phase * PER_PHASE..(phase + 1) * PER_PHASE {
        for k in 0..KEYS {
            stream
                .put(&format!("k{k}"), n.to_string().as_bytes())
                .await
                .expect("append");
        }
    }
}

async fn scale_out(store: &str, leases: Arc<dyn LeaseStore>, key: &str) {
    let dir = std::env::temp_dir().join(key.replace(':', "_"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stream = RedisStream::connect(RedisConfig::new(redis_url(), key).with_shards(SHARDS))
        .await
        .expect("connect the stream");
    put_phase(&stream, 0).await;

    let mut workers: Vec<Worker> = ["w0", "w1", "w2"]
        .iter()
        .map(|owner| spawn(key, owner, &dir, store))
        .collect();
    // Balanced: 3 + 3 + 2 shards.
    wait_for(
        Duration::from_secs(30),
        "shards balanced over three workers",
        || async {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for owner in holders(&*leases, key).await.into_values() {
                *counts.entry(owner).or_default() += 1;
            }
            let mut counts: Vec<usize> = counts.into_values().collect();
            counts.sort_unstable();
            counts == [2, 3, 3]
        },
    )
    .await;

    // Kill the busiest worker mid-run: after half of the second phase was handled.
    put_phase(&stream, 1).await;
    let half_way = (KEYS * PER_PHASE * 3 / 2) as usize;
    wait_for(
        Duration::from_secs(60),
        "half of the second phase handled",
        || async { distinct(&workers) >= half_way },
    )
    .await;
    let before_kill = holders(&*leases, key).await;
    let victim = workers
        .iter()
        .position(|w| before_kill.values().filter(|o| **o == w.owner).count() == 3)
        .expect("a worker with three shards");
    let victim_owner = workers[victim].owner.clone();
    let victim_shards: Vec<String> = before_kill
        .iter()
        .filter(|(_, owner)| **owner == victim_owner)
        .map(|(shard, _)| shard.clone())
        .collect();
    let killed_at = Instant::now();
    workers[victim].child.kill().expect("SIGKILL the worker");
    workers[victim].child.wait().expect("reap the worker");
    wait_for(
        LEASE_TTL * 3,
        "the killed worker's shards taken over",
        || async {
            let now = holders(&*leases, key).await;
            victim_shards
                .iter()
                .all(|shard| now.get(shard).is_some_and(|owner| *owner != victim_owner))
        },
    )
    .await;
    let takeover = killed_at.elapsed();
    put_phase(&stream, 2).await;

    let total = (KEYS * PER_PHASE * 3) as usize;
    wait_for(Duration::from_secs(120), "every record handled", || async {
        distinct(&workers) == total
    })
    .await;

    // Graceful stop: survivors give their leases back.
    for (i, worker) in workers.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        drop(worker.child.stdin.take());
        let status = worker.child.wait().expect("wait for the worker");
        assert!(
            status.success(),
            "worker {} exited with {status}",
            worker.owner
        );
    }
    let left = holders(&*leases, key).await;
    assert!(
        left.is_empty(),
        "leases still held after a graceful stop: {left:?}"
    );

    // Every record at least once; per key, values first handled in order (by time across
    // processes, then by place in the batch); the rest are duplicates.
    let mut lines: Vec<Line> = workers.iter().flat_map(|w| read_lines(&w.out)).collect();
    lines.sort();
    let mut next: HashMap<&str, u64> = HashMap::new();
    let mut duplicates = 0usize;
    for (_, _, key, value) in &lines {
        let want = next.entry(key.as_str()).or_default();
        if *value < *want {
            duplicates += 1;
        } else {
            assert_eq!(
                *value, *want,
                "key {key}: {value} handled before {want} was ever handled"
            );
            *want += 1;
        }
    }
    assert_eq!(next.len() as u64, KEYS);
    assert!(next.values().all(|n| *n == PER_PHASE * 3));
    assert!(
        takeover <= LEASE_TTL + Duration::from_millis(1_500),
        "take-over after {takeover:?}, lease TTL {LEASE_TTL:?}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "scale-out ({store} leases): {total} records, {SHARDS} shards, 3 workers; killed \
         {victim_owner} holding {} shards; taken over {} ms after the kill (lease TTL {} ms); \
         {duplicates} duplicates ({:.2}%)",
        victim_shards.len(),
        takeover.as_millis(),
        LEASE_TTL.as_millis(),
        duplicates as f64 * 100.0 / total as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Deletes what a run left in Redis (keys under the prefix) and PostgreSQL (the mapping's
/// lease and checkpoint rows) when dropped, also when the test fails.
struct Cleanup {
    key: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let key = self.key.clone();
        // A fresh thread with its own runtime: this runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = redis::Client::open(redis_url()).ok()?;
                let mut con = client.get_multiplexed_async_connection().await.ok()?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{key}*"))
                    .query_async(&mut con)
                    .await
                    .ok()?;
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
                }
                let (pg, connection) =
                    tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(connection);
                let _ = pg
                    .execute(
                        "DELETE FROM nimbus_leases WHERE starts_with(key, $1)",
                        &[&format!("{key}/")],
                    )
                    .await;
                let _ = pg
                    .execute("DELETE FROM nimbus_checkpoints WHERE mapping = $1", &[&key])
                    .await;
                Some(())
            })
        })
        .join();
    }
}

fn unique_key(tag: &str) -> String {
    format!(
        "nimbus-test:scale-{tag}:{}:{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_redis_stream_with_redis_leases() {
    if !reachable("Redis", redis_up().await) {
        return;
    }
    let key = unique_key("redis");
    let _cleanup = Cleanup { key: key.clone() };
    let config = RedisConfig::new(redis_url(), &key);
    let leases: Arc<dyn LeaseStore> = Arc::new(RedisStreamStore::connect(&config).await.unwrap());
    scale_out("redis", leases, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_redis_stream_with_postgres_leases() {
    if !reachable("Redis", redis_up().await) || !reachable("PostgreSQL", postgres_up().await) {
        return;
    }
    let key = unique_key("pg");
    let _cleanup = Cleanup { key: key.clone() };
    let leases: Arc<dyn LeaseStore> = Arc::new(
        nimbus::postgres::PostgresStreamStore::connect(&postgres_url())
            .await
            .unwrap(),
    );
    scale_out("postgres", leases, &key).await;
}
