//! A Redis connection killed (`CLIENT KILL`) in the middle of a mapping's run: the adapter
//! reconnects and nothing is lost. A binary of its own, so that the kill hits no other test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use nimbus_redis::RedisQueue;
use nimbus_sources::conformance;
use support::{stream_len, url, Prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_mid_run_loses_nothing() {
    let Some(prefix) = Prefix::new().await else {
        return;
    };
    let config = prefix
        .config("reconnect")
        .with_visibility_timeout(Duration::from_secs(2));
    let queue = Arc::new(RedisQueue::connect(config).await.unwrap());
    // Once some work is done, kill every other client's connection.
    let duplicates = conformance::mapping_survives(queue.clone(), 300, || async {
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
    })
    .await
    .unwrap();
    eprintln!("{duplicates} duplicate handlings after the kill");
    assert_eq!(
        stream_len(&format!("{}:reconnect", prefix.0)).await,
        0,
        "every message deleted in the end"
    );
}
