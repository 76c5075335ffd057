//! The PostgreSQL adapters against a real database: the conformance kit and redrive.
//!
//! The database is `NIMBUS_POSTGRES_URL` (default `host=127.0.0.1 user=postgres dbname=test`).
//! When it cannot be reached the tests skip with a loud message, unless
//! `NIMBUS_REQUIRE_SERVICES=1`, where they fail. Every test uses its own table names and drops
//! them at the end.

use std::time::Duration;

use nimbus_postgres::{PostgresQueue, PostgresStreamStore};
use nimbus_sources::{conformance, QueueSource};

mod support;

use support::{url, Names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_passes_the_conformance_kit() {
    let Some(names) = Names::new().await else {
        return;
    };
    let counter = std::sync::atomic::AtomicU64::new(0);
    conformance::queue(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = names
            .queue(&format!("q{n}"))
            .with_visibility_timeout(Duration::from_secs(1));
        async move { PostgresQueue::connect(config).await.unwrap() }
    })
    .await
    .unwrap();
    let queue = PostgresQueue::connect(
        names
            .queue("qredrive")
            .with_visibility_timeout(Duration::from_secs(1))
            .with_max_receive_count(2),
    )
    .await
    .unwrap();
    conformance::redrive(&queue, || async { Ok(queue.dead_letters().await?) })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_leases_pass_the_conformance_kit() {
    let Some(names) = Names::new().await else {
        return;
    };
    let store = PostgresStreamStore::connect(&url()).await.unwrap();
    conformance::checkpoints(&store, &format!("{}_kit", names.0))
        .await
        .unwrap();
    conformance::leases(&store, &format!("{}_kit/shard", names.0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_receive_limit_go_to_the_dead_letter_table() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names
        .queue("redrive")
        .with_visibility_timeout(Duration::from_millis(300))
        .with_max_receive_count(2);
    let queue = PostgresQueue::connect(config).await.unwrap();
    queue.send(b"poison").await.unwrap();
    for expected in 1..=2 {
        let got = queue.receive(1, Duration::from_secs(3)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, expected);
    }
    assert!(queue
        .receive(1, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
}

/// The adapter's connections terminated by the server (`pg_terminate_backend`) in the middle
/// of a mapping's run: the queue and its listener reconnect and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_mid_run_lose_nothing() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names
        .queue("reconnect")
        .with_visibility_timeout(Duration::from_secs(2));
    let table = format!("{}_queue", config.name);
    let queue = std::sync::Arc::new(PostgresQueue::connect(config).await.unwrap());
    let duplicates = conformance::mapping_survives(queue.clone(), 300, || async {
        let (admin, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        // This queue's connections: the one whose statements name its table, and the
        // listener, which LISTENs on a channel named after it.
        let terminated = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND strpos(query, $1) > 0",
                &[&names.0],
            )
            .await
            .unwrap();
        assert!(
            !terminated.is_empty(),
            "the adapter's connections were terminated"
        );
    })
    .await
    .unwrap();
    eprintln!("{duplicates} duplicate handlings after the termination");
    let (admin, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let left: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "every message deleted in the end");
}
