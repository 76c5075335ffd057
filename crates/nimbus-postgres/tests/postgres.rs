//! The PostgreSQL adapters against a real database: the conformance kit and redrive.
//!
//! The database is `NIMBUS_POSTGRES_URL` (default `host=127.0.0.1 user=postgres dbname=test`).
//! When it cannot be reached the tests skip with a loud message, unless
//! `NIMBUS_REQUIRE_SERVICES=1`, where they fail. Every test uses its own table names and drops
//! them at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nimbus_postgres::{PostgresQueue, PostgresStreamStore};
use nimbus_sources::conformance::{QueueHarness, QueueSpec};
use nimbus_sources::{async_trait, conformance, QueueSource, Receipt, SourceError};

mod support;

use support::{psql, url, Names};

/// PostgreSQL queues under the test's names, for the conformance kit: each one its own
/// tables, dropped at teardown.
struct Harness<'a> {
    names: &'a Names,
    made: AtomicU64,
}

#[async_trait]
impl QueueHarness for Harness<'_> {
    type Queue = PostgresQueue;

    async fn make(&self, spec: QueueSpec) -> Result<PostgresQueue, SourceError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let mut config = self
            .names
            .queue(&format!("q{n}"))
            .with_visibility_timeout(spec.visibility_timeout);
        if let Some(max) = spec.max_receive_count {
            config = config.with_max_receive_count(max);
        }
        Ok(PostgresQueue::connect(config).await?)
    }

    async fn dead_letters(&self, queue: &PostgresQueue) -> Result<u64, SourceError> {
        Ok(queue.dead_letters().await?)
    }

    async fn teardown(&self, queue: &PostgresQueue) -> Result<(), SourceError> {
        let name = &queue.config().name;
        let broken = |e: tokio_postgres::Error| SourceError::transient(e.to_string());
        let (admin, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .map_err(broken)?;
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {name}_queue, {name}_dead;
                 DROP FUNCTION IF EXISTS {name}_queue_notify();"
            ))
            .await
            .map_err(broken)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_passes_the_conformance_kit() {
    let Some(names) = Names::new().await else {
        return;
    };
    let harness = Harness {
        names: &names,
        made: AtomicU64::new(0),
    };
    conformance::queue(&harness).await.unwrap();
    // Every queue the kit made was torn down.
    let left = psql(&format!(
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE '{}_q%'",
        names.0
    ))
    .unwrap();
    assert_eq!(left, "0");
    assert!(harness.made.load(Ordering::Relaxed) > 10);
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

/// One bad receipt never stops an ack or a release: among good receipts, a malformed one is
/// refused (by its position) and one given twice counts once; the good ones take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_repeated_receipt_does_not_stop_an_ack_or_a_release() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names
        .queue("bad_receipts")
        .with_visibility_timeout(Duration::from_secs(30));
    let queue = PostgresQueue::connect(config).await.unwrap();
    for body in ["a", "b", "c"] {
        queue.send(body.as_bytes()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(queue.receive(3, Duration::from_secs(3)).await.unwrap());
    }
    let malformed = Receipt::token("not a receipt");
    let released = queue
        .release(&[
            got[2].receipt.clone(),
            malformed.clone(),
            got[2].receipt.clone(),
        ])
        .await;
    assert_eq!(released, Err(SourceError::Refused { positions: vec![1] }));
    let acked = queue
        .ack(&[
            malformed,
            got[0].receipt.clone(),
            got[0].receipt.clone(),
            got[1].receipt.clone(),
        ])
        .await;
    assert_eq!(acked, Err(SourceError::Refused { positions: vec![0] }));
    let stats = queue.queue_stats().await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (1, 0), "only c, released");
}

/// Receipts of one receive and of several: in each, a receipt that is no longer current (its
/// message received again since) deletes nothing, and the current ones delete their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_receipts_are_refused_among_receipts_of_one_receive_or_several() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names
        .queue("stale")
        .with_visibility_timeout(Duration::from_secs(30));
    let table = format!("{}_queue", config.name);
    let queue = PostgresQueue::connect(config).await.unwrap();
    for body in ["a", "b", "c", "d"] {
        queue.send(body.as_bytes()).await.unwrap();
    }
    let mut first = Vec::new();
    while first.len() < 4 {
        first.extend(queue.receive(4, Duration::from_secs(3)).await.unwrap());
    }
    // a and c visible again at once and received again: their first receipts are stale.
    queue
        .release(&[first[0].receipt.clone(), first[2].receipt.clone()])
        .await
        .unwrap();
    let mut again = Vec::new();
    while again.len() < 2 {
        again.extend(queue.receive(2, Duration::from_secs(3)).await.unwrap());
    }
    // One receive's nonce: b's current receipt with a's stale one (the same nonce).
    let acked = queue
        .ack(&[first[0].receipt.clone(), first[1].receipt.clone()])
        .await;
    assert_eq!(acked, Err(SourceError::Refused { positions: vec![0] }));
    // Two receives' nonces: c's stale receipt, d's current one (first receive) and the
    // second receive's current receipts of a and c.
    let mut receipts = vec![first[2].receipt.clone(), first[3].receipt.clone()];
    receipts.extend(again.iter().map(|m| m.receipt.clone()));
    let acked = queue.ack(&receipts).await;
    assert_eq!(acked, Err(SourceError::Refused { positions: vec![0] }));
    let left = psql(&format!("SELECT count(*) FROM {table}")).unwrap();
    assert_eq!(left, "0");
}

/// A receipt with nonce 0 names no receive (rows not received yet carry 0): it is refused,
/// and the row it names, sent with a delay and never received, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_naming_no_receive_deletes_nothing() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("unreceived");
    let table = format!("{}_queue", config.name);
    let queue = PostgresQueue::connect(config).await.unwrap();
    let id = psql(&format!(
        "INSERT INTO {table} (body, visible_at) VALUES ('later', now() + interval '5 minutes') RETURNING id"
    ))
    .unwrap();
    let forged = Receipt::token(format!("{id}:0"));
    let acked = queue.ack(std::slice::from_ref(&forged)).await;
    assert_eq!(acked, Err(SourceError::Refused { positions: vec![0] }));
    let left = psql(&format!("SELECT count(*) FROM {table}")).unwrap();
    assert_eq!(left, "1", "the delayed row stays");
}

/// A column's type changed by hand while the queue is connected: the claim and the ack, kept
/// prepared on the connection, are prepared again rather than failing from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_changed_under_a_connected_queue_does_not_stop_it() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("altered");
    let table = format!("{}_queue", config.name);
    let queue = PostgresQueue::connect(config).await.unwrap();
    for round in 0..2 {
        queue.send(format!("m{round}").as_bytes()).await.unwrap();
        let got = queue.receive(1, Duration::from_secs(3)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}");
        queue.ack(&[got[0].receipt.clone()]).await.unwrap();
        // The claim returns `hops`: its type is not what the statements were prepared for.
        psql(&format!(
            "ALTER TABLE {table} ALTER COLUMN hops TYPE bigint"
        ))
        .unwrap();
    }
    let left = psql(&format!("SELECT count(*) FROM {table}")).unwrap();
    assert_eq!(left, "0");
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
