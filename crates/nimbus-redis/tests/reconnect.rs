//! A Redis connection killed (`CLIENT KILL`) in the middle of a mapping's run: the adapter
//! reconnects and nothing is lost. A binary of its own, so that the kill hits no other test.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_redis::RedisQueue;
use nimbus_sources::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource};
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
    // The handler publishes how many distinct messages it has seen: the test waits on that.
    let (progress, mut watched) = tokio::sync::watch::channel(0usize);
    let function = runtime
        .register(
            Function::new(
                "consume",
                handler_fn({
                    let (seen, progress) = (seen.clone(), Arc::new(progress));
                    move |batch: QueueBatch, _ctx: Context| {
                        let (seen, progress) = (seen.clone(), progress.clone());
                        async move {
                            // A little work, so the kill lands while batches are in flight.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let count = {
                                let mut seen = seen.lock();
                                for r in &batch.records {
                                    seen.insert(r.body_str().unwrap_or_default().to_owned());
                                }
                                seen.len()
                            };
                            progress.send_replace(count);
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
    tokio::time::timeout(Duration::from_secs(20), watched.wait_for(|n| *n >= 50))
        .await
        .expect("progress before the kill")
        .unwrap();
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
    tokio::time::timeout(Duration::from_secs(60), watched.wait_for(|n| *n >= total))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {total} handled after the kill",
                seen.lock().len()
            )
        })
        .unwrap();
    // Every message was handled at least once. Stop the mapping (batches in flight finish and
    // are acknowledged), then drain what an acknowledgement lost to the kill left pending: a
    // long poll past the visibility timeout returns it, and after that nothing remains.
    mapping.stop(Duration::from_secs(5)).await;
    loop {
        let left = queue.receive(100, Duration::from_secs(3)).await.unwrap();
        if left.is_empty() {
            break;
        }
        for m in &left {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            assert!(
                seen.lock().contains(&body),
                "{body} came back but was never handled"
            );
        }
        let receipts: Vec<_> = left.iter().map(|m| m.receipt.clone()).collect();
        queue.ack(&receipts).await.unwrap();
    }
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("{}:reconnect", prefix.0))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(len, 0, "every message deleted in the end");
}
