//! The Redis queue at its seams: release, settings out of range, endless waits, error classes,
//! and messages written by plain producers (`redis-cli XADD`) with other field names.
//!
//! Skips loudly when the server is down, unless `NIMBUS_REQUIRE_SERVICES=1` (see `support`).

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_redis::{RedisConfig, RedisQueue, RedisStreamStore};
use nimbus_sources::{
    BatchResponse, LeaseStore, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource,
};

mod support;

use support::{url, Prefix};

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Runs `redis-cli -u <url> <args>` and returns its output; panics when it fails.
fn redis_cli(args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .arg("-u")
        .arg(url())
        .args(args)
        .output()
        .expect("redis-cli runs (install redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_message_comes_back_at_once_with_its_receive_count_unchanged() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let queue = RedisQueue::connect(
        prefix
            .config("release")
            .with_visibility_timeout(Duration::from_secs(30))
            .with_max_receive_count(2),
    )
    .await
    .unwrap();
    queue.send("keep me".into()).await.unwrap();
    // More releases than the receive limit: none of them counts, nothing is dead-lettered.
    for round in 0..4 {
        let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: received again at once");
        assert_eq!(got[0].receive_count, 1, "round {round}");
        assert_eq!(&got[0].body[..], b"keep me");
        queue.release(&[got[0].receipt.clone()]).await.unwrap();
    }
    assert_eq!(queue.dead_letters().await.unwrap(), 0);
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].receive_count, 1);
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    // A receipt the queue does not hold any more is reported, after the others are released.
    assert!(queue.release(&[got[0].receipt.clone()]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_receipt_releases_nothing() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let queue = RedisQueue::connect(
        prefix
            .config("stale")
            .with_visibility_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    queue.send("x".into()).await.unwrap();
    let first = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first[0].receive_count, 1);
    // Not acknowledged in time: delivered again (to the same consumer).
    let second = queue.receive(1, Duration::from_secs(3)).await.unwrap();
    assert_eq!(second[0].receive_count, 2);
    assert_eq!(
        queue.release(&[first[0].receipt.clone()]).await,
        Err(nimbus_sources::SourceError::Refused { positions: vec![0] }),
        "the first delivery's receipt is stale"
    );
    queue.release(&[second[0].receipt.clone()]).await.unwrap();
    let third = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        third[0].receive_count, 2,
        "the release did not count, the stale one did nothing"
    );
    queue.ack(&[third[0].receipt.clone()]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_out_of_range_are_refused_naming_the_field() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let refused = |config: RedisConfig| async move {
        RedisQueue::connect(config)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted".to_owned())
    };
    for (config, field) in [
        (
            prefix.config("v").with_visibility_timeout(Duration::MAX),
            "visibility_timeout",
        ),
        (
            prefix
                .config("v")
                .with_visibility_timeout(Duration::from_secs(12 * 3600 + 1)),
            "visibility_timeout",
        ),
        (
            prefix.config("m").with_max_receive_count(0),
            "max_receive_count",
        ),
        (
            prefix.config("m").with_max_receive_count(u32::MAX),
            "max_receive_count",
        ),
        (
            prefix.config("m").with_max_receive_count(1001),
            "max_receive_count",
        ),
    ] {
        let error = refused(config).await;
        assert!(error.contains(field), "{error}");
        assert!(error.contains("..="), "the range is named: {error}");
    }
    assert!(RedisQueue::connect(
        prefix
            .config("ok")
            .with_visibility_timeout(Duration::from_secs(12 * 3600))
            .with_max_receive_count(1000)
    )
    .await
    .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_waits_and_lease_times_do_not_panic() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let queue = RedisQueue::connect(prefix.config("endless")).await.unwrap();
    queue.send("x".into()).await.unwrap();
    let got = queue.receive(1, Duration::MAX).await.unwrap();
    assert_eq!(got.len(), 1);
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    let leases = RedisStreamStore::connect(&prefix.config("leases"))
        .await
        .unwrap();
    // Refused or clamped, but no panic.
    let _ = leases.acquire("k", "me", Duration::MAX).await;
    let _ = leases.list("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_whether_to_retry() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("gone");
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    // The stream and its group deleted behind the adapter's back: retrying cannot help.
    let _: i64 = redis::cmd("DEL")
        .arg(&config.key)
        .query_async(&mut admin().await)
        .await
        .unwrap();
    let error = queue
        .receive(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
    // Nothing listening: a transient error, with the client's error kept.
    // (The client's own error: the adapter's connect retries for a while before giving up.)
    let down = redis::Client::open("redis://127.0.0.1:1")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_err();
    let error = nimbus_sources::SourceError::from(nimbus_redis::RedisError::from(down));
    assert!(!error.is_permanent(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
    // Bad credentials: permanent.
    let wrong = redis::Client::open(url().replace("redis://", "redis://nobody:wrong@"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_err();
    let error = nimbus_sources::SourceError::from(nimbus_redis::RedisError::from(wrong));
    assert!(error.is_permanent(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_producers_field_names_are_read_and_bodiless_entries_are_dead_lettered() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("plain");
    let queue = RedisQueue::connect(config.clone()).await.unwrap();
    let key = config.key.as_str();
    redis_cli(&["XADD", key, "*", "body", "from body", "kind", "order"]);
    redis_cli(&["XADD", key, "*", "payload", "from payload"]);
    redis_cli(&["XADD", key, "*", "anything", "single field"]);
    redis_cli(&["XADD", key, "*", "user", "7", "action", "click"]);
    redis_cli(&["XADD", key, "*", "b", ""]);
    let mut got = Vec::new();
    while got.len() < 4 {
        let batch = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "only {got:?}");
        got.extend(batch);
    }
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(
        bodies,
        [&b"from body"[..], b"from payload", b"single field", b""]
    );
    assert_eq!(got[0].attributes.get("kind"), Some("order"));
    // The entry with no body field is not delivered (as an empty body) but dead-lettered with
    // the reason and its fields.
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
    let dead = redis_cli(&["XRANGE", &format!("{key}:dlq"), "-", "+"]);
    assert!(dead.contains("reason"), "{dead}");
    assert!(dead.contains("click"), "{dead}");
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    queue.ack(&receipts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_xadd_reaches_a_function_within_a_second() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("cli");
    let queue = Arc::new(RedisQueue::connect(config.clone()).await.unwrap());
    let runtime = Runtime::default();
    let (seen, mut bodies) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let function = runtime
        .register(Function::new(
            "cli",
            handler_fn(move |batch: QueueBatch, _ctx: Context| {
                let seen = seen.clone();
                async move {
                    for record in &batch.records {
                        let _ = seen.send(record.body.to_vec());
                    }
                    Ok::<_, FunctionError>(BatchResponse::success())
                }
            }),
        ))
        .await
        .unwrap();
    let mapping = QueueMapping::start(
        queue.clone(),
        function,
        QueueMappingConfig::new("redis-cli").with_poll_wait(Duration::from_secs(5)),
    )
    .unwrap();
    let key = config.key.as_str();
    redis_cli(&["XADD", key, "*", "body", "héllo wörld"]);
    let body = tokio::time::timeout(Duration::from_secs(1), bodies.recv())
        .await
        .expect("within a second")
        .unwrap();
    assert_eq!(body, "héllo wörld".as_bytes());
    // A malformed entry takes the failure path with its reason, and never reaches the function.
    redis_cli(&["XADD", key, "*", "user", "7", "action", "click"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while queue.dead_letters().await.unwrap() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead-lettered in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reason = redis_cli(&["XRANGE", &format!("{key}:dlq"), "-", "+"]);
    assert!(reason.contains("no body field"), "{reason}");
    assert!(mapping.stop(Duration::from_secs(5)).await);
    assert!(
        bodies.try_recv().is_err(),
        "the malformed entry was not handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_records_from_redis_cli_are_read_whatever_their_fields() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix.config("clicks");
    let stream = nimbus_redis::RedisStream::connect(config.clone())
        .await
        .unwrap();
    let shard = format!("{}:shard:0", config.key);
    redis_cli(&["XADD", &shard, "*", "k", "user-7", "d", r#"{"page":"/"}"#]);
    redis_cli(&["XADD", &shard, "*", "user", "7", "page", "/"]);
    let read = nimbus_sources::StreamSource::read(
        &stream,
        &std::sync::Arc::from(shard.as_str()),
        nimbus_sources::Position::TrimHorizon,
        10,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let records: Vec<(&str, &[u8])> = read
        .records
        .iter()
        .map(|r| (r.partition_key.as_ref(), &r.data[..]))
        .collect();
    assert_eq!(
        records,
        [
            ("user-7", &br#"{"page":"/"}"#[..]),
            ("", br#"{"page":"/","user":"7"}"#)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_max_message_size_are_refused_before_sending() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let queue = RedisQueue::connect(prefix.config("big")).await.unwrap();
    assert_eq!(queue.config().max_message_size, 1_048_576);
    queue.send(vec![b'x'; 1_048_576].into()).await.unwrap();
    let err = queue.send(vec![b'x'; 1_048_577].into()).await.unwrap_err();
    assert_eq!(err.retry(), nimbus_sources::Retry::Permanent);
    assert_eq!(
        nimbus_sources::SourceError::from(err),
        nimbus_sources::SourceError::TooLarge {
            size: 1_048_577,
            limit: 1_048_576
        }
    );
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1, "only the message within the limit was sent");
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    let error = RedisQueue::connect(prefix.config("small").with_max_message_size(10))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("max_message_size") && error.contains("1024..=1048576"),
        "{error}"
    );
}
