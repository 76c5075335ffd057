//! The Redis adapters against a real server: the conformance kit and redrive.
//!
//! The server is `NIMBUS_REDIS_URL` (default `redis://127.0.0.1:6379`). When it cannot be
//! reached the tests skip with a loud message, unless `NIMBUS_REQUIRE_SERVICES=1`, where they
//! fail. Every test uses its own key prefix and deletes its keys at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nimbus_redis::{RedisQueue, RedisStream, RedisStreamStore};
use nimbus_sources::conformance::{QueueHarness, QueueSpec};
use nimbus_sources::{async_trait, conformance, QueueSource, SourceError};

mod support;

use support::{stream_len, url, Prefix};

/// Redis queues under the test's prefix, for the conformance kit: each one its own key, and
/// its keys deleted at teardown.
struct Harness<'a> {
    prefix: &'a Prefix,
    made: AtomicU64,
}

#[async_trait]
impl QueueHarness for Harness<'_> {
    type Queue = RedisQueue;

    async fn make(&self, spec: QueueSpec) -> Result<RedisQueue, SourceError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let mut config = self
            .prefix
            .config(&format!("queue-{n}"))
            .with_visibility_timeout(spec.visibility_timeout);
        if let Some(max) = spec.max_receive_count {
            config = config.with_max_receive_count(max);
        }
        Ok(RedisQueue::connect(config).await?)
    }

    async fn dead_letters(&self, queue: &RedisQueue) -> Result<u64, SourceError> {
        Ok(queue.dead_letters().await?)
    }

    async fn teardown(&self, queue: &RedisQueue) -> Result<(), SourceError> {
        let key = &queue.config().key;
        let client =
            redis::Client::open(url()).map_err(|e| SourceError::transient(e.to_string()))?;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| SourceError::transient(e.to_string()))?;
        redis::cmd("DEL")
            .arg(key)
            .arg(format!("{key}:dlq"))
            .arg(format!("{key}:released"))
            .query_async::<i64>(&mut con)
            .await
            .map_err(|e| SourceError::transient(e.to_string()))?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_passes_the_conformance_kit() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let harness = Harness {
        prefix: &prefix,
        made: AtomicU64::new(0),
    };
    conformance::queue(&harness).await.unwrap();
    // Every queue the kit made was torn down.
    let client = redis::Client::open(url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:queue-*", prefix.0))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert!(harness.made.load(Ordering::Relaxed) > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_checkpoints_and_leases_pass_the_conformance_kit() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let counter = std::sync::atomic::AtomicU64::new(0);
    conformance::stream(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = prefix.config(&format!("stream-{n}")).with_shards(4);
        async move { RedisStream::connect(config).await.unwrap() }
    })
    .await
    .unwrap();
    let config = prefix.config("stores");
    let store = RedisStreamStore::connect(&config).await.unwrap();
    conformance::checkpoints(&store, "kit").await.unwrap();
    conformance::leases(&store, "kit/shard").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_receive_limit_are_redriven() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix
        .config("redrive")
        .with_visibility_timeout(Duration::from_millis(300))
        .with_max_receive_count(2);
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    queue.send("poison".into()).await.unwrap();
    for expected in 1..=2 {
        let got = queue.receive(1, Duration::from_secs(3)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, expected);
    }
    // The third receive, once the visibility timeout has passed inside its long poll, finds it
    // over the limit and moves it to <key>:dlq instead of returning it.
    assert!(queue
        .receive(1, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(stream_len(&format!("{}:dlq", config.key)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_naming_its_entry_by_another_spelling_deletes_nothing() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("spelling");
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    queue.send("kept".into()).await.unwrap();
    let got = queue.receive(1, Duration::from_secs(3)).await.unwrap();
    let token = got[0].receipt.as_token().unwrap().to_owned();
    // The millisecond part alone is a range of ids to Redis, which finds this entry: it is
    // not the entry's own id, so the receipt is not current.
    let (millis, _) = token.split_once('-').unwrap();
    let refused = queue.ack(&[nimbus_sources::Receipt::token(millis)]).await;
    assert_eq!(refused, Err(SourceError::Refused { positions: vec![0] }));
    assert_eq!(stream_len(&config.key).await, 1, "still there");
    // Its own receipt deletes it.
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    assert_eq!(stream_len(&config.key).await, 0);
}

#[tokio::test]
async fn an_ack_checks_each_receipt_of_a_batch_beyond_the_range_it_reads_at_once() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("batch-ack");
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    for i in 0..40 {
        queue.send(format!("m{i}").into()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        got.extend(queue.receive(40, Duration::from_secs(3)).await.unwrap());
    }
    let token = |i: usize| got[i].receipt.as_token().unwrap().to_owned();
    // The first and the last of 40 pending entries: more lie between them than the script's
    // one range read takes for four receipts, so the last is looked up on its own.
    let first = got[0].receipt.clone();
    let last = got[39].receipt.clone();
    // Not current: a later delivery count than the entry's, and the entry's id spelt with a
    // leading zero (which Redis reads as the same id).
    let stale = nimbus_sources::Receipt::token(format!("{}:2", token(10)));
    let respelt = nimbus_sources::Receipt::token(format!("0{}", token(20)));
    let refused = queue.ack(&[first, stale, last, respelt]).await.unwrap_err();
    assert_eq!(
        refused,
        SourceError::Refused {
            positions: vec![1, 3]
        }
    );
    assert_eq!(
        stream_len(&config.key).await,
        38,
        "the first and the last deleted, nothing else"
    );
    // The rest still answer to their own receipts.
    let rest: Vec<_> = got[1..39].iter().map(|m| m.receipt.clone()).collect();
    queue.ack(&rest).await.unwrap();
    assert_eq!(stream_len(&config.key).await, 0);
}

#[tokio::test]
async fn a_malformed_receipt_is_refused_by_its_position_and_the_others_take_effect() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("malformed");
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    queue.send("kept?".into()).await.unwrap();
    let got = queue.receive(1, Duration::from_secs(3)).await.unwrap();
    let malformed = ["x", "", "5-x", "1-0-0"].map(nimbus_sources::Receipt::token);
    let mut receipts = vec![got[0].receipt.clone()];
    receipts.extend(malformed.iter().cloned());
    let refused = queue.ack(&receipts).await;
    assert_eq!(
        refused,
        Err(SourceError::Refused {
            positions: vec![1, 2, 3, 4]
        })
    );
    let released = queue.release(&malformed).await;
    assert_eq!(
        released,
        Err(SourceError::Refused {
            positions: vec![0, 1, 2, 3]
        })
    );
    assert_eq!(
        stream_len(&config.key).await,
        0,
        "the good receipt deleted its message"
    );
}
