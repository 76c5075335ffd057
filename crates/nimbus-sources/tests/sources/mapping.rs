//! Queue mappings: partial failures, redrive, visibility, batching window, filters, FIFO,
//! autoscaling, bisect, and build-time checks.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, Outgoing, QueueBatch, QueueConfig, QueueFunction, QueueMapping,
    QueueMappingConfig, QueueSource,
};
use tokio::time::Instant;

use crate::support::{eventually, queue, recording, runtime};

const LIMIT: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn partial_failures_delete_the_rest_and_redrive_the_failed_after_n_receives() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "partial").await;
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(10))
            .with_redrive(dlq.clone(), 2),
    );
    for body in ["ok-1", "fail-1", "ok-2"] {
        q.send(body).unwrap();
    }
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("partial"))
        .attach(&rt)
        .start()
        .unwrap();
    // Everything deleted or dead-lettered, and nothing in flight.
    mapping.drained().await.unwrap();
    assert!(q.is_empty());
    assert_eq!(dlq.len(), 1);

    let m = mapping.metrics();
    assert_eq!(m.deleted, 2, "the two good messages");
    assert_eq!(m.failed, 2, "fail-1 twice, then redriven");
    assert_eq!(m.dead_lettered, Some(1));
    let dead = dlq.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(&dead[0].body[..], b"fail-1");
    // The failed message came back after the visibility timeout, alone.
    let batches = seen.lock().clone();
    assert_eq!(batches[0].len(), 3);
    assert_eq!(batches[1], vec!["fail-1".to_owned()]);
    assert!(mapping.stop(Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_becomes_visible_again_after_the_visibility_timeout() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "whole").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    q.send("poison-1").unwrap();
    q.send("fine").unwrap();
    let started = Instant::now();
    let mapping =
        QueueMapping::start(q.clone(), function, QueueMappingConfig::new("whole")).unwrap();
    eventually(LIMIT, || seen.lock().len() >= 2).await;
    // Nothing was deleted, and the second attempt came 30 s after the first.
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert_eq!(mapping.metrics().deleted, 0);
    assert_eq!(mapping.metrics().function_errors, 2);
    assert_eq!(seen.lock()[1].len(), 2, "the whole batch again");
    mapping.stop(Duration::from_secs(1)).await;
}

/// With batches of one record (handled by their own path) and of several.
#[tokio::test(start_paused = true)]
async fn an_unknown_item_failure_fails_the_whole_batch() {
    let rt = runtime();
    let function = rt
        .register(Function::new(
            "liar",
            handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
                Ok::<_, FunctionError>(BatchResponse::failures([nimbus_sources::MessageId::text(
                    "no-such-id",
                )]))
            }),
        ))
        .await
        .unwrap();
    for batch_size in [1, 10] {
        let q = queue(QueueConfig::default());
        q.send("a").unwrap();
        q.send("b").unwrap();
        let config = QueueMappingConfig::new("liar").with_batch_size(batch_size);
        let mapping = QueueMapping::start(q.clone(), function.clone(), config).unwrap();
        eventually(LIMIT, || mapping.metrics().failed == 2).await;
        assert_eq!(mapping.metrics().deleted, 0, "batch size {batch_size}");
        assert_eq!(q.len(), 2, "batch size {batch_size}");
        mapping.stop(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn partial_responses_are_ignored_when_reporting_is_off() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "ignore").await;
    let q = queue(QueueConfig::default());
    q.send("fail-but-ignored").unwrap();
    let config = QueueMappingConfig::new("ignore").with_report_batch_item_failures(false);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || q.is_empty()).await;
    assert_eq!(mapping.metrics().deleted, 1);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_batching_window_gathers_until_full_or_expired() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "window").await;
    let q = queue(QueueConfig::default());
    let config = QueueMappingConfig::new("window")
        .with_batch_size(50)
        .with_batching_window(Duration::from_secs(2))
        .with_initial_concurrency(1)
        .with_max_concurrency(2);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    // Three messages, a second apart: one batch when the window (opened by the first) ends.
    let started = Instant::now();
    q.send("m1").unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    q.send("m2").unwrap();
    q.send("m3").unwrap();
    eventually(LIMIT, || !seen.lock().is_empty()).await;
    assert_eq!(seen.lock()[0], ["m1", "m2", "m3"]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2_100),
        "{waited:?}"
    );

    // A full batch goes at once.
    let bodies: Vec<Outgoing> = (0..50).map(|i| Outgoing::new(format!("n{i}"))).collect();
    let sent = Instant::now();
    q.send_batch(bodies).unwrap();
    eventually(LIMIT, || seen.lock().len() == 2).await;
    assert_eq!(seen.lock()[1].len(), 50);
    assert!(sent.elapsed() < Duration::from_millis(10));
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn non_matching_messages_are_deleted_without_invoking() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "filtered").await;
    let q = queue(QueueConfig::default());
    for body in [
        r#"{"type":"order","n":1}"#,
        r#"{"type":"ping"}"#,
        "not json",
        r#"{"type":"order","n":2}"#,
    ] {
        q.send(body).unwrap();
    }
    let config =
        QueueMappingConfig::new("filtered").with_filter(r#"{"body": {"type": ["order"]}}"#);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || q.is_empty()).await;
    let m = mapping.metrics();
    assert_eq!((m.filtered, m.deleted, m.invocations), (2, 2, 1));
    let seen = seen.lock().concat();
    assert!(seen.iter().all(|b| b.contains("order")), "{seen:?}");
    mapping.stop(Duration::from_secs(1)).await;

    let bad =
        QueueMappingConfig::new("bad").with_filter(r#"{"body": {"n": [{"numeric": ["~", 1]}]}}"#);
    let (function, _) = recording(&rt, "unused").await;
    assert_eq!(
        QueueMapping::start(queue(QueueConfig::default()), function, bad)
            .unwrap_err()
            .field,
        "filter"
    );
}

#[tokio::test(start_paused = true)]
async fn plain_text_bodies_are_matched_as_strings_and_only_non_matching_ones_deleted() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "text").await;
    let q = queue(QueueConfig::default());
    for body in [
        "ERROR disk full",
        "INFO all good",
        "error lower case",
        r#"{"level":"ERROR"}"#,
    ] {
        q.send(body).unwrap();
    }
    let config = QueueMappingConfig::new("text").with_filter(r#"{"body": [{"prefix": "ERROR"}]}"#);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || q.is_empty()).await;
    let m = mapping.metrics();
    assert_eq!(
        (m.filtered, m.deleted),
        (3, 1),
        "only the text starting with ERROR is handled"
    );
    assert_eq!(seen.lock().concat(), vec!["ERROR disk full".to_owned()]);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn fifo_groups_are_handled_in_order_even_across_failures() {
    let rt = runtime();
    let log = Arc::new(parking_lot::Mutex::new(Vec::<(String, u32)>::new()));
    let function = rt
        .register(Function::new(
            "fifo",
            handler_fn({
                let log = log.clone();
                move |batch: QueueBatch, _ctx: Context| {
                    let log = log.clone();
                    async move {
                        let mut failures = Vec::new();
                        for r in &batch.records {
                            let body = r.body_str().unwrap().to_owned();
                            log.lock().push((body.clone(), r.receive_count));
                            if body == "a2" && r.receive_count == 1 {
                                failures.push(r.message_id.clone());
                            }
                        }
                        Ok::<_, FunctionError>(BatchResponse::failures(failures))
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let q = queue(
        QueueConfig::default()
            .fifo()
            .with_visibility_timeout(Duration::from_secs(5)),
    );
    for i in 0..5 {
        q.send_message(Outgoing::new(format!("a{i}")).with_group("a"))
            .unwrap();
        q.send_message(Outgoing::new(format!("b{i}")).with_group("b"))
            .unwrap();
    }
    let mapping =
        QueueMapping::start(q.clone(), function, QueueMappingConfig::new("fifo")).unwrap();
    eventually(LIMIT, || q.is_empty()).await;
    let log = log.lock().clone();
    let group = |g: char| -> Vec<(String, u32)> {
        log.iter()
            .filter(|(b, _)| b.starts_with(g))
            .cloned()
            .collect()
    };
    let a: Vec<_> = group('a')
        .into_iter()
        .map(|(b, n)| format!("{b}#{n}"))
        .collect();
    // a3 and a4 were handled after a2 failed, so they count as failed too and come back after it.
    assert_eq!(
        a,
        ["a0#1", "a1#1", "a2#1", "a3#1", "a4#1", "a2#2", "a3#2", "a4#2"]
    );
    let b: Vec<_> = group('b').into_iter().map(|(b, _)| b).collect();
    assert_eq!(b, ["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(mapping.metrics().deleted, 10);
    mapping.stop(Duration::from_secs(1)).await;
}

/// Growth waits for the scale-up budget, then resumes once it refills; held at the maximum, it
/// resumes after the target comes down, on errors or when idle. (Each full batch skips the
/// scaling lock while growing cannot succeed: this checks that the skip ends when it should.)
#[tokio::test(start_paused = true)]
async fn growth_waits_for_the_budget_and_the_maximum_and_resumes() {
    let rt = runtime();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let function = rt
        .register(Function::new(
            "slow",
            handler_fn({
                let failing = Arc::clone(&failing);
                move |_batch: QueueBatch, _ctx: Context| {
                    let fail = failing.load(std::sync::atomic::Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if fail {
                            return Err(FunctionError::new("Down", "failing for now"));
                        }
                        Ok::<_, FunctionError>(BatchResponse::success())
                    }
                }
            }),
        ))
        .await
        .unwrap();
    let q = queue(QueueConfig::default());
    q.send_batch((0..20_000).map(|i| Outgoing::new(i.to_string())))
        .unwrap();
    // One token a minute, the first after a minute: no burst.
    let config = QueueMappingConfig::new("growth")
        .with_batch_size(1)
        .with_initial_concurrency(2)
        .with_max_concurrency(4)
        .with_scale_up_per_minute(1);
    let start = Instant::now();
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    // Each token comes a minute after the last (the first a minute after the start): no growth
    // for most of each minute, though every batch is full.
    for (minute, target) in [(1u64, 3usize), (2, 4)] {
        tokio::time::sleep_until(start + Duration::from_secs(60 * minute - 5)).await;
        assert_eq!(mapping.metrics().target_concurrency, target - 1);
        eventually(Duration::from_secs(10), || {
            mapping.metrics().target_concurrency == target
        })
        .await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(60 * minute - 1), "{waited:?}");
    }
    // At the maximum; errors halve the target, and growth resumes when the budget allows.
    failing.store(true, std::sync::atomic::Ordering::Relaxed);
    eventually(LIMIT, || mapping.metrics().target_concurrency < 4).await;
    failing.store(false, std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(300), || {
        mapping.metrics().target_concurrency == 4
    })
    .await;
    // At the maximum again; the queue empties and the pollers retire to one. A new backlog
    // grows them again.
    eventually(Duration::from_secs(3_600), || q.is_empty()).await;
    eventually(LIMIT, || mapping.metrics().pollers == 1).await;
    q.send_batch((0..1_000).map(|i| Outgoing::new(i.to_string())))
        .unwrap();
    eventually(Duration::from_secs(10), || {
        mapping.metrics().target_concurrency >= 2
    })
    .await;
    mapping.stop(Duration::from_secs(1)).await;
}

/// A function whose every batch takes 100 ms, so that a backlog keeps its pollers busy and
/// full batches keep asking for more.
async fn slow_function(rt: &Runtime) -> QueueFunction {
    rt.register(Function::new(
        "slow",
        handler_fn(|_batch: QueueBatch, _ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, FunctionError>(BatchResponse::success())
        }),
    ))
    .await
    .unwrap()
}

/// Pollers grow one at a time at the scale-up rate, at the start and after idle time alike:
/// never a minute's budget at once (Lambda adds at most 300 a minute).
#[tokio::test(start_paused = true)]
async fn pollers_grow_at_the_scale_up_rate_and_never_in_a_burst() {
    let rt = runtime();
    let function = slow_function(&rt).await;
    let q = queue(QueueConfig::default());
    // Ten a second.
    let config = QueueMappingConfig::new("paced")
        .with_initial_concurrency(2)
        .with_max_concurrency(100)
        .with_scale_up_per_minute(600)
        .with_poll_wait(Duration::from_secs(1));
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    for round in ["at the start", "after idle time"] {
        let before = mapping.metrics().target_concurrency;
        q.send_batch((0..5_000).map(|i| Outgoing::new(i.to_string())))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let grown = mapping.metrics().target_concurrency - before;
        assert!(
            (15..=21).contains(&grown),
            "{round}: grew by {grown} in 2 s"
        );
        eventually(LIMIT, || q.is_empty()).await;
        eventually(LIMIT, || mapping.metrics().pollers == 1).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_scales_up_with_backlog_and_down_when_idle() {
    let rt = runtime();
    let function = slow_function(&rt).await;
    let q = queue(QueueConfig::default());
    q.send_batch((0..5_000).map(|i| Outgoing::new(i.to_string())))
        .unwrap();
    let config = QueueMappingConfig::new("scaling")
        .with_initial_concurrency(2)
        .with_max_concurrency(50)
        .with_scale_up_per_minute(600)
        .with_poll_wait(Duration::from_secs(1));
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    assert_eq!(mapping.metrics().pollers, 2);
    eventually(LIMIT, || mapping.metrics().concurrent_batches >= 20).await;
    eventually(LIMIT, || q.is_empty()).await;
    let m = mapping.metrics();
    assert!(
        m.peak_concurrent_batches >= 20 && m.peak_concurrent_batches <= 50,
        "{m:?}"
    );
    assert_eq!(m.deleted, 5_000);
    // Idle: pollers retire down to one that keeps long-polling.
    eventually(LIMIT, || mapping.metrics().pollers == 1).await;
    assert_eq!(mapping.metrics().target_concurrency, 1);
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn function_errors_halve_the_concurrency() {
    let rt = runtime();
    let (function, _seen) = recording(&rt, "errors").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(3_600)));
    q.send_batch((0..40).map(|i| Outgoing::new(format!("poison-{i}"))))
        .unwrap();
    let config = QueueMappingConfig::new("errors")
        .with_initial_concurrency(8)
        .with_max_concurrency(8);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || mapping.metrics().function_errors >= 4).await;
    eventually(LIMIT, || mapping.metrics().target_concurrency == 1).await;
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn bisect_isolates_a_poison_message() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "bisect").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(3_600)));
    for i in 0..8 {
        q.send(if i == 5 {
            "poison".to_owned()
        } else {
            format!("good-{i}")
        })
        .unwrap();
    }
    let config = QueueMappingConfig::new("bisect").with_bisect_on_error(true);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || {
        let m = mapping.metrics();
        m.deleted + m.failed == 8
    })
    .await;
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.failed), (7, 1));
    // 8 -> 4+4 -> (4 ok) 2+2 -> (2 ok) 1+1: three splits.
    assert_eq!(m.bisections, 3);
    assert!(
        seen.lock().contains(&vec!["poison".to_owned()]),
        "isolated alone"
    );
    let counts = q.counts();
    assert_eq!(
        (counts.in_flight, counts.visible),
        (1, 0),
        "only the poison is left, in flight"
    );
    mapping.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn build_time_checks() {
    let rt = runtime();
    let (function, _) = recording(&rt, "checks").await; // timeout 5 s
    let short = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(2)));
    let err =
        QueueMapping::start(short, function.clone(), QueueMappingConfig::new("m")).unwrap_err();
    assert_eq!(err.field, "function timeout");
    assert!(err.to_string().contains("visibility timeout"), "{err}");

    let cases = [
        (
            QueueMappingConfig::new("m").with_batch_size(0),
            "batch_size",
        ),
        (
            QueueMappingConfig::new("m").with_batch_size(10_001),
            "batch_size",
        ),
        (
            QueueMappingConfig::new("m").with_batch_size(11),
            "batching_window",
        ),
        (
            QueueMappingConfig::new("m").with_batching_window(Duration::from_secs(301)),
            "batching_window",
        ),
        (
            QueueMappingConfig::new("m").with_max_concurrency(1),
            "max_concurrency",
        ),
        (
            QueueMappingConfig::new("m").with_max_concurrency(1_001),
            "max_concurrency",
        ),
        (QueueMappingConfig::new(""), "name"),
    ];
    for (config, field) in cases {
        let err = QueueMapping::start(queue(QueueConfig::default()), function.clone(), config)
            .unwrap_err();
        assert_eq!(err.field, field);
    }
    assert!(queue(QueueConfig::default()).visibility_timeout().is_some());
}

#[tokio::test(start_paused = true)]
async fn stopping_lets_batches_in_flight_finish() {
    let rt = runtime();
    let (function, seen) = recording(&rt, "stopping").await;
    let q = queue(QueueConfig::default());
    let mapping =
        QueueMapping::start(q.clone(), function, QueueMappingConfig::new("stopping")).unwrap();
    q.send("one").unwrap();
    eventually(LIMIT, || q.is_empty()).await;
    assert!(
        mapping.stop(Duration::from_secs(1)).await,
        "idle pollers stop at once"
    );
    q.send("after stop").unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(q.len(), 1, "a stopped mapping receives nothing");
    assert_eq!(seen.lock().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn fifo_mappings_refuse_a_batch_size_above_ten_and_a_batching_window() {
    let rt = runtime();
    let fifo = queue(QueueConfig::default().fifo());
    let standard = queue(QueueConfig::default());
    for (config, field) in [
        (
            QueueMappingConfig::new("f")
                .with_batch_size(11)
                .with_batching_window(Duration::from_secs(1)),
            "batch_size",
        ),
        (
            QueueMappingConfig::new("f")
                .with_batch_size(5)
                .with_batching_window(Duration::from_secs(1)),
            "batching_window",
        ),
    ] {
        let (function, _) = recording(&rt, &format!("fifo-checked-{field}")).await;
        let err = QueueMapping::start(fifo.clone(), function, config.clone()).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.allowed.contains("FIFO"), "{err}");
        // The same configuration is fine on a standard queue.
        let (function, _) = recording(&rt, &format!("standard-ok-{field}")).await;
        QueueMapping::start(standard.clone(), function, config)
            .unwrap()
            .stop(Duration::from_secs(1))
            .await;
    }
    let (function, _) = recording(&rt, "fifo-ok").await;
    QueueMapping::start(
        fifo,
        function,
        QueueMappingConfig::new("f").with_batch_size(10),
    )
    .unwrap()
    .stop(Duration::from_secs(1))
    .await;
}
