//! Tumbling windows: bounds aligned to the window length, batches that never span windows,
//! state carried between invocations, and the final invocation that closes a window and
//! resets its state.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use nimbus_core::FunctionError;
use tokio_util::sync::CancellationToken;

use super::super::window::{window_of, Window};
use super::super::{Done, StreamResponse};
use super::support::{config, function, record_at, Parts};
use crate::stream::ShardId;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn windows_are_aligned_to_their_length() {
    let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    assert_eq!(window_of(at(65), MINUTE), (at(60), at(120)));
    // A window starts at its bound: a record at 120 s is in the next one.
    assert_eq!(window_of(at(120), MINUTE), (at(120), at(180)));
    assert_eq!(window_of(at(119), MINUTE), (at(60), at(120)));
}

/// A function that counts records into the window state; a batch holding `fail` fails.
async fn counter(
    runtime: &nimbus_core::Runtime,
) -> (super::super::StreamFunction, super::support::Calls) {
    function(runtime, |batch| {
        if batch.records.iter().any(|r| r.data.ends_with(b":99")) {
            return Err(FunctionError::msg("bad batch"));
        }
        let window = batch.window.as_ref().expect("a window");
        let count = window.state.as_u64().unwrap_or(0) + batch.records.len() as u64;
        Ok(StreamResponse::success().with_state(serde_json::json!(count)))
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_record_of_a_later_window_closes_the_open_one_with_its_state() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = counter(&runtime).await;
    let shared =
        Parts::new(config("w").with_tumbling_window(MINUTE).with_batch_size(2)).build(function);
    let shard: ShardId = Arc::from("s");
    let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    // Three records in the minute from 60 s, one in the next.
    let records = vec![
        record_at("k", 1, at(61)),
        record_at("k", 2, at(62)),
        record_at("k", 3, at(63)),
        record_at("k", 4, at(121)),
    ];
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    let done = shared
        .process_windowed(&shard, records, &mut window, &CancellationToken::new())
        .await;
    assert!(matches!(done, Done::Finished));
    let seen: Vec<(usize, serde_json::Value, bool)> = calls
        .lock()
        .iter()
        .map(|b| {
            let w = b.window.as_ref().unwrap();
            (b.records.len(), w.state.clone(), w.is_final)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            // Batches of at most two, within the first window, the state carried on.
            (2, serde_json::Value::Null, false),
            (1, serde_json::json!(2), false),
            // The final invocation: no records, the window's state.
            (0, serde_json::json!(3), true),
            // The next window starts from empty state.
            (1, serde_json::Value::Null, false),
        ]
    );
    assert_eq!(window.bounds, Some((at(120), at(180))));
    assert_eq!(window.state, serde_json::json!(1));
}

#[tokio::test(start_paused = true)]
async fn closing_a_window_resets_its_state_and_closing_none_invokes_nothing() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = counter(&runtime).await;
    let shared = Parts::new(config("w").with_tumbling_window(MINUTE)).build(function);
    let shard: ShardId = Arc::from("s");
    let cancel = CancellationToken::new();
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    assert!(matches!(
        shared.close_window(&shard, &mut window, &cancel).await,
        Done::Finished
    ));
    assert!(calls.lock().is_empty());
    let bounds = window_of(UNIX_EPOCH + MINUTE, MINUTE);
    let mut window = Window {
        bounds: Some(bounds),
        state: serde_json::json!(7),
    };
    assert!(matches!(
        shared.close_window(&shard, &mut window, &cancel).await,
        Done::Finished
    ));
    let last = calls.lock().last().cloned().unwrap();
    let closed = last.window.unwrap();
    assert_eq!(
        (closed.start, closed.end, closed.state, closed.is_final),
        (bounds.0, bounds.1, serde_json::json!(7), true)
    );
    assert_eq!(
        (window.bounds, window.state),
        (None, serde_json::Value::Null)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_leaves_the_window_state_as_it_was() {
    let runtime = nimbus_core::Runtime::default();
    let (function, calls) = counter(&runtime).await;
    let (tx, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(
        config("w")
            .with_tumbling_window(MINUTE)
            .with_batch_size(1)
            .with_max_retry_attempts(0),
    );
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("s");
    let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    let records = vec![
        record_at("k", 1, at(61)),
        record_at("k", 99, at(62)),
        record_at("k", 100, at(63)),
    ];
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    shared
        .process_windowed(&shard, records, &mut window, &CancellationToken::new())
        .await;
    // The failing batch went to the on-failure destination; the state counts the other two.
    assert_eq!(failures.try_recv().unwrap().records.len(), 1);
    assert_eq!(window.state, serde_json::json!(2));
    assert_eq!(calls.lock().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_answer_without_state_fails_the_batch_as_lambda_does() {
    let runtime = nimbus_core::Runtime::default();
    let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (function, calls) = function(&runtime, {
        let answered = answered.clone();
        move |batch| {
            // The first answer forgets the state; the retry gives it.
            if answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                return Ok(StreamResponse::success());
            }
            let count = batch.window.as_ref().unwrap().state.as_u64().unwrap_or(0);
            Ok(StreamResponse::success().with_state(serde_json::json!(count + 1)))
        }
    })
    .await;
    let shared = Parts::new(config("w").with_tumbling_window(MINUTE)).build(function);
    let shard: ShardId = Arc::from("s");
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    let at = UNIX_EPOCH + Duration::from_secs(61);
    shared
        .process_windowed(
            &shard,
            vec![record_at("k", 1, at)],
            &mut window,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(calls.lock().len(), 2, "retried");
    assert_eq!(shared.metrics.lock()[&shard].retries, 1);
    assert_eq!(window.state, serde_json::json!(1));

    // With retries exhausted, the records go to the on-failure destination, the error named.
    let runtime = nimbus_core::Runtime::default();
    let (function, _calls) =
        super::support::function(&runtime, |_| Ok(StreamResponse::success())).await;
    let (tx, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(
        config("w2")
            .with_tumbling_window(MINUTE)
            .with_max_retry_attempts(0),
    );
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    shared
        .process_windowed(
            &shard,
            vec![record_at("k", 1, at)],
            &mut window,
            &CancellationToken::new(),
        )
        .await;
    let failure = failures.try_recv().unwrap();
    assert_eq!(failure.error.unwrap().error_type, "MissingWindowState");
}

#[tokio::test(start_paused = true)]
async fn a_state_above_one_mib_ends_the_window_early_and_the_window_goes_on_from_null() {
    let runtime = nimbus_core::Runtime::default();
    let big = "x".repeat(super::super::MAX_WINDOW_STATE);
    let (function, calls) = function(&runtime, {
        let big = big.clone();
        move |batch| {
            let w = batch.window.as_ref().unwrap();
            if w.is_final {
                return Ok(StreamResponse::success().with_state(serde_json::Value::Null));
            }
            // The first batch outgrows the limit (the quotes make it 2 bytes over).
            let state = if w.state.is_null() && batch.records[0].data.ends_with(b":1") {
                serde_json::json!(big)
            } else {
                serde_json::json!(w.state.as_u64().unwrap_or(0) + 1)
            };
            Ok(StreamResponse::success().with_state(state))
        }
    })
    .await;
    let shared =
        Parts::new(config("w").with_tumbling_window(MINUTE).with_batch_size(1)).build(function);
    let shard: ShardId = Arc::from("s");
    let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    let mut window = Window {
        bounds: None,
        state: serde_json::Value::Null,
    };
    let done = shared
        .process_windowed(
            &shard,
            vec![record_at("k", 1, at(61)), record_at("k", 2, at(62))],
            &mut window,
            &CancellationToken::new(),
        )
        .await;
    assert!(matches!(done, Done::Finished));
    let seen: Vec<(usize, bool, bool, bool)> = calls
        .lock()
        .iter()
        .map(|b| {
            let w = b.window.as_ref().unwrap();
            (
                b.records.len(),
                w.state.is_null(),
                w.is_final,
                w.terminated_early,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, true, false, false),
            // Ended early, with the state the function gave, so nothing aggregated is lost.
            (0, false, true, true),
            // The same window goes on, from null.
            (1, true, false, false),
        ]
    );
    assert_eq!(
        calls.lock()[1].window.as_ref().unwrap().state,
        serde_json::json!(big)
    );
    assert_eq!(window.bounds, Some(window_of(at(61), MINUTE)));
    assert_eq!(window.state, serde_json::json!(1));
    // Every record was handled once.
    assert_eq!(shared.metrics.lock()[&shard].records, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_final_invocation_is_retried_past_the_retry_limit_until_it_succeeds() {
    let runtime = nimbus_core::Runtime::default();
    let finals = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (function, calls) = function(&runtime, {
        let finals = finals.clone();
        move |batch| {
            let w = batch.window.as_ref().unwrap();
            if w.is_final && finals.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                return Err(FunctionError::msg("report store down"));
            }
            Ok(StreamResponse::success().with_state(serde_json::json!(5)))
        }
    })
    .await;
    let (tx, mut failures) = tokio::sync::mpsc::unbounded_channel();
    let mut parts = Parts::new(
        config("w")
            .with_tumbling_window(MINUTE)
            .with_max_retry_attempts(0),
    );
    parts.on_failure = Some(Arc::new(tx));
    let shared = parts.build(function);
    let shard: ShardId = Arc::from("s");
    let mut window = Window {
        bounds: Some(window_of(UNIX_EPOCH + MINUTE, MINUTE)),
        state: serde_json::json!(5),
    };
    let done = shared
        .close_window(&shard, &mut window, &CancellationToken::new())
        .await;
    assert!(matches!(done, Done::Finished));
    // Four final invocations (three failed), each with the window's state; none given up.
    let states: Vec<serde_json::Value> = calls
        .lock()
        .iter()
        .map(|b| b.window.as_ref().unwrap().state.clone())
        .collect();
    assert_eq!(states, vec![serde_json::json!(5); 4]);
    assert!(failures.try_recv().is_err());
    assert_eq!(window.state, serde_json::Value::Null);
}
