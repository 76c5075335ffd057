//! A Redis connection killed (`CLIENT KILL`) in the middle of a mapping's run: the adapter
//! reconnects and nothing is lost. A binary of its own, so that the kill hits no other test.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_redis::RedisQueue;
use nimbus_sources::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig};
use support::{url, Prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_mid_run_loses_nothing() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix
        .config("reconnect")
        .with_visibility_timeout(Duration::from_secs(2));
    let queue = Arc::new(RedisQueue::connect(config).await.unwrap());
    let total = 300;
    for i in 0..total {
        queue.send(format!("m{i}").into()).await.unwrap();
    }
    let runtime = Runtime::default();
    let seen: Arc<parking_lot::Mutex<HashSet<String>>> = Arc::default();
    let function = runtime
        .register(
            Function::new(
                "consume",
                handler_fn({
                    let seen = seen.clone();
                    move |batch: QueueBatch, _ctx: Context| {
                        let seen = seen.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            for r in &batch.records {
                                seen.lock()
                                    .insert(r.body_str().unwrap_or_default().to_owned());
                            }
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let mapping = QueueMapping::start(
        queue.clone(),
        function,
        QueueMappingConfig::new("reconnect")
            .with_poll_wait(Duration::from_millis(500))
            .with_max_concurrency(4)
            .with_initial_concurrency(2),
    )
    .unwrap();
    // Once some work is done, kill every other client's connection.
    let started = std::time::Instant::now();
    while seen.lock().len() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no progress before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = redis::Client::open(url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "the adapter's connections were killed");
    while seen.lock().len() < total {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {total} handled after the kill",
            seen.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything handled, and the queue drains: acks after the reconnect went through.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let len: i64 = redis::cmd("XLEN")
            .arg(format!("{}:reconnect", prefix.0))
            .query_async(&mut admin)
            .await
            .unwrap();
        if len == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{len} messages never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mapping.stop(Duration::from_secs(2)).await;
}
