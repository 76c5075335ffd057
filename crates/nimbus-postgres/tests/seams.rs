//! The PostgreSQL queue at its seams: release, settings out of range, endless waits and hostile
//! server values, the server's error messages and their classes, and rows inserted by plain
//! producers (`psql -c "INSERT ..."`).
//!
//! Skips loudly when the database is down, unless `NIMBUS_REQUIRE_SERVICES=1` (see `support`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_postgres::{PostgresConfig, PostgresQueue, PostgresStreamStore};
use nimbus_sources::{
    BatchResponse, LeaseStore, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource,
};

mod support;

use support::{psql, url, Names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_message_comes_back_at_once_with_its_receive_count_unchanged() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = PostgresQueue::connect(
        names
            .queue("release")
            .with_visibility_timeout(Duration::from_secs(30))
            .with_max_receive_count(2),
    )
    .await
    .unwrap();
    queue.send(b"keep me").await.unwrap();
    for round in 0..4 {
        let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: received again at once");
        assert_eq!(got[0].receive_count, 1, "round {round}");
        queue.release(&[got[0].receipt.clone()]).await.unwrap();
    }
    assert_eq!(queue.dead_letters().await.unwrap(), 0);
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].receive_count, 1);
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    assert!(queue.release(&[got[0].receipt.clone()]).await.is_err());
}

/// A dead-letter move that fails (here: the dead-letter table is gone) does not fail the
/// receive: the good messages claimed with the dead one are returned (failing the receive
/// stranded them until their visibility timeout, their receive counted), and the dead one is
/// moved at a later receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dead_letter_move_does_not_hold_back_the_good_messages() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names
        .queue("deadmove")
        .with_visibility_timeout(Duration::from_secs(1))
        .with_max_receive_count(1);
    let name = config.name.clone();
    let queue = PostgresQueue::connect(config.clone()).await.unwrap();
    queue.send(b"poison").await.unwrap();
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    // Not acknowledged: after its visibility timeout its next receive is its second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    queue.send(b"good").await.unwrap();
    psql(&format!("DROP TABLE {name}_dead")).unwrap();
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, vec![&b"good"[..]]);
    assert_eq!(got[0].receive_count, 1);
    assert_eq!(queue.failed_dead_letter_moves(), 1);
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    // With the table back, the next receive after the visibility timeout moves it.
    drop(queue);
    let queue = PostgresQueue::connect(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(queue.dead_letters().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_out_of_range_are_refused_naming_the_field() {
    let Some(names) = Names::new().await else {
        return;
    };
    let refused = |config: PostgresConfig| async move {
        PostgresQueue::connect(config)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted".to_owned())
    };
    for (config, field) in [
        (
            names.queue("v").with_visibility_timeout(Duration::MAX),
            "visibility_timeout",
        ),
        (
            names
                .queue("v")
                .with_visibility_timeout(Duration::from_secs(12 * 3600 + 1)),
            "visibility_timeout",
        ),
        (
            names.queue("m").with_max_receive_count(0),
            "max_receive_count",
        ),
        (
            names.queue("m").with_max_receive_count(u32::MAX),
            "max_receive_count",
        ),
        (
            names.queue("m").with_max_receive_count(1001),
            "max_receive_count",
        ),
    ] {
        let error = refused(config).await;
        assert!(error.contains(field), "{error}");
        assert!(error.contains("..="), "the range is named: {error}");
    }
    assert!(PostgresQueue::connect(
        names
            .queue("ok")
            .with_visibility_timeout(Duration::from_secs(12 * 3600))
            .with_max_receive_count(1000)
    )
    .await
    .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_waits_and_hostile_server_values_do_not_panic() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("endless");
    let table = format!("{}_queue", config.name);
    let queue = PostgresQueue::connect(config).await.unwrap();
    // Times no adapter wrote: sent at infinity, and a row that is never visible.
    psql(&format!(
        "INSERT INTO {table} (body, sent_at) VALUES ('x', 'infinity');
         INSERT INTO {table} (body, visible_at) VALUES ('later', 'infinity')"
    ))
    .unwrap();
    let got = queue.receive(1, Duration::MAX).await.unwrap();
    assert_eq!(&got[0].body[..], b"x");
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    assert!(queue
        .receive(1, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    let leases = PostgresStreamStore::connect(&url()).await.unwrap();
    let _ = leases
        .acquire(&format!("{}_lease", names.0), "me", Duration::MAX)
        .await;
    let _ = leases.list(&names.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_servers_message_and_say_whether_to_retry() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("gone");
    let table = format!("{}_queue", config.name);
    let queue = PostgresQueue::connect(config).await.unwrap();
    psql(&format!("DROP TABLE {table}")).unwrap();
    let error = queue
        .receive(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert!(error.to_string().contains("42P01"), "{error}");
    assert!(error.is_permanent(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
    let down = PostgresQueue::connect(PostgresConfig::new(
        "host=127.0.0.1 port=1 user=postgres dbname=test connect_timeout=2",
        "x",
    ))
    .await
    .unwrap_err();
    let error = nimbus_sources::SourceError::from(down);
    assert!(!error.is_permanent(), "{error:?}");
    let missing = PostgresQueue::connect(PostgresConfig::new(
        url().replace("dbname=test", "dbname=nimbus_no_such_db"),
        "x",
    ))
    .await
    .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert!(nimbus_sources::SourceError::from(missing).is_permanent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insert_trigger_is_created_once_and_again_when_missing() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("trigger");
    let table = format!("{}_queue", config.name);
    let count = || {
        psql(&format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal"
        ))
        .unwrap()
    };
    let first = PostgresQueue::connect(config.clone()).await.unwrap();
    let _second = PostgresQueue::connect(config.clone()).await.unwrap();
    assert_eq!(count(), "1");
    // A table from before the trigger existed: the next connect adds it.
    psql(&format!("DROP TRIGGER {table}_notify ON {table}")).unwrap();
    drop(first);
    let _third = PostgresQueue::connect(config).await.unwrap();
    assert_eq!(count(), "1");
}

/// Waits until the queue's connection has run its "when is the next message due" query after
/// an empty claim, i.e. its receive is waiting for a notification.
async fn until_the_poller_waits(table: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle'
             AND strpos(query, 'min(visible_at)') > 0 AND strpos(query, '{table}') > 0"
        ))
        .unwrap();
        if waiting != "0" {
            return;
        }
        assert!(Instant::now() < deadline, "the poller never waited");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_insert_wakes_a_waiting_poller_at_once() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("wake");
    let table = format!("{}_queue", config.name);
    let queue = Arc::new(PostgresQueue::connect(config).await.unwrap());
    let poller = tokio::spawn({
        let queue = queue.clone();
        async move { queue.receive(1, Duration::from_secs(20)).await }
    });
    until_the_poller_waits(&table).await;
    let inserted = Instant::now();
    psql(&format!("INSERT INTO {table} (body) VALUES ('plain')")).unwrap();
    let got = poller.await.unwrap().unwrap();
    assert!(
        inserted.elapsed() < Duration::from_secs(1),
        "{:?}",
        inserted.elapsed()
    );
    assert_eq!(&got[0].body[..], b"plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_insert_reaches_a_function_within_a_second() {
    let Some(names) = Names::new().await else {
        return;
    };
    let config = names.queue("cli");
    let table = format!("{}_queue", config.name);
    let queue = Arc::new(PostgresQueue::connect(config).await.unwrap());
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
        // Shorter than the stop's grace: the adapter's receive is not cancel-safe, so the stop
        // waits for the long poll in flight (and would report a dropped one as unclean).
        QueueMappingConfig::new("psql").with_poll_wait(Duration::from_secs(3)),
    )
    .unwrap();
    until_the_poller_waits(&table).await;
    psql(&format!(
        "INSERT INTO {table} (body) VALUES (convert_to('héllo wörld', 'UTF8'))"
    ))
    .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(1), bodies.recv())
        .await
        .expect("within a second")
        .unwrap();
    assert_eq!(body, "héllo wörld".as_bytes());
    // A malformed message cannot be written: the body is a NOT NULL bytea (any bytes are a
    // body), and the server refuses a row without one, naming the column.
    let refused = psql(&format!("INSERT INTO {table} (body) VALUES (NULL)")).unwrap_err();
    assert!(refused.contains("\"body\""), "{refused}");
    let refused = psql(&format!("INSERT INTO {table} DEFAULT VALUES")).unwrap_err();
    assert!(refused.contains("\"body\""), "{refused}");
    assert!(mapping.stop(Duration::from_secs(5)).await);
    assert_eq!(mapping.metrics().deleted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_messages_above_max_message_size_are_refused_whole_naming_them() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = PostgresQueue::connect(names.queue("big").with_max_message_size(1_024))
        .await
        .unwrap();
    let (small, big) = (vec![b's'; 1_024], vec![b'b'; 1_025]);
    let err = queue
        .send_batch(&[&small, &big, &small, &big])
        .await
        .unwrap_err();
    match &err {
        nimbus_postgres::PostgresError::TooLarge { too_large, limit } => {
            assert_eq!(
                (too_large.as_slice(), *limit),
                (&[(1, 1_025), (3, 1_025)][..], 1_024)
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(err.retry(), nimbus_sources::Retry::Permanent);
    // Nothing was sent; the caller sends the others again.
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(queue.send_batch(&[&small, &small]).await.unwrap().len(), 2);
    assert_eq!(
        nimbus_sources::SourceError::from(queue.send(&big).await.unwrap_err()),
        nimbus_sources::SourceError::TooLarge {
            size: 1_025,
            limit: 1_024
        }
    );
    let refused = PostgresQueue::connect(names.queue("bad").with_max_message_size(1_048_577))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("max_message_size"), "{refused}");
}
