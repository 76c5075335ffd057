//! Asynchronous invocation: retries and their delays, throttles, event age, destinations,
//! zero concurrency, a full queue and shutdown hand-back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, Backoff, Condition, Context, DeliveryError, Function, FunctionError,
    InvocationRecord, OutcomeKind, RejectReason,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::{busy, occupy, runtime, Hold};

type Records = mpsc::UnboundedReceiver<InvocationRecord<u32, u32>>;
type RecordSender = mpsc::UnboundedSender<InvocationRecord<u32, u32>>;

/// Destinations as channels the test reads: (on-success, its records, on-failure, its records).
fn channels() -> (RecordSender, Records, RecordSender, Records) {
    let (ok_tx, ok_rx) = mpsc::unbounded_channel();
    let (fail_tx, fail_rx) = mpsc::unbounded_channel();
    (ok_tx, ok_rx, fail_tx, fail_rx)
}

/// A handler that fails its first `failures` attempts, recording when each attempt started.
fn flaky(
    failures: u32,
    starts: Arc<parking_lot::Mutex<Vec<(Instant, u32)>>>,
) -> Function<u32, u32> {
    Function::new(
        "flaky",
        handler_fn(move |event: u32, ctx: Context| {
            let starts = starts.clone();
            async move {
                starts.lock().push((Instant::now(), ctx.attempt()));
                if ctx.attempt() <= failures {
                    return Err(FunctionError::new(
                        "Flaky",
                        format!("attempt {}", ctx.attempt()),
                    ));
                }
                Ok::<_, FunctionError>(event * 10)
            }
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_growing_jittered_delays() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx, fail_tx, _fail_rx) = channels();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            flaky(2, starts.clone())
                .with_on_success(ok_tx)
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    let request_id = handle.invoke_async(7).unwrap();
    let record = ok_rx.recv().await.expect("the third attempt succeeds");
    assert_eq!(record.request_id, request_id);
    assert_eq!(record.condition, Condition::Success);
    assert_eq!(record.approximate_invoke_count, 3);
    assert_eq!((record.request, record.response), (7, Some(70)));
    assert!(record.error.is_none());
    assert_eq!(&*record.function, "flaky");

    // Lambda's defaults: about 1 min, then about 2 min (jitter shortens by up to 20 %).
    let starts = starts.lock().clone();
    assert_eq!(
        starts.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let first = starts[1].0 - starts[0].0;
    let second = starts[2].0 - starts[1].0;
    assert!(
        first >= Duration::from_secs(48) && first <= Duration::from_secs(60),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_secs(96) && second <= Duration::from_secs(120),
        "{second:?}"
    );
    let m = handle.async_metrics();
    assert_eq!(
        (m.accepted, m.retries, m.succeeded, m.failed, m.pending),
        (1, 2, 1, 0, 0)
    );
    assert_eq!(m.delivered, 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_go_to_on_failure_with_the_last_error() {
    let rt = runtime(10);
    let (ok_tx, _ok_rx, fail_tx, mut fail_rx) = channels();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            flaky(u32::MAX, starts.clone())
                .with_max_retries(1)
                .with_retry_backoff(Backoff::fixed(Duration::from_secs(5)).unwrap())
                .with_on_success(ok_tx)
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    let request_id = handle.invoke_async(3).unwrap();
    let record = fail_rx.recv().await.unwrap();
    assert_eq!(record.request_id, request_id);
    assert_eq!(record.condition, Condition::RetriesExhausted);
    assert_eq!(record.approximate_invoke_count, 2);
    assert_eq!(record.request, 3);
    assert_eq!(record.response, None);
    let error = record.error.unwrap();
    assert_eq!(
        (error.error_type.as_str(), error.message.as_str()),
        ("Flaky", "attempt 2")
    );
    assert_eq!(error.kind, OutcomeKind::Error);
    let starts = starts.lock().clone();
    assert_eq!(starts[1].0 - starts[0].0, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_panics_are_retried_too() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx, fail_tx, _fail_rx) = channels();
    let handle = rt
        .register(
            Function::new(
                "unstable",
                handler_fn(|event: u32, ctx: Context| async move {
                    match ctx.attempt() {
                        1 => panic!("first attempt panics"),
                        2 => tokio::time::sleep(Duration::from_secs(60)).await,
                        _ => {}
                    }
                    Ok::<_, FunctionError>(event)
                }),
            )
            .with_timeout(Duration::from_secs(1))
            .with_retry_backoff(Backoff::fixed(Duration::from_secs(1)).unwrap())
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let record = ok_rx.recv().await.unwrap();
    assert_eq!(record.approximate_invoke_count, 3);
    let m = handle.metrics();
    assert_eq!((m.panics, m.timeouts, m.successes), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_fail_at_once() {
    let rt = runtime(10);
    let (ok_tx, _ok_rx, fail_tx, mut fail_rx) = channels();
    let calls = Arc::new(AtomicU32::new(0));
    let handle = rt
        .register(
            Function::new(
                "strict",
                handler_fn({
                    let calls = calls.clone();
                    move |_event: u32, _ctx: Context| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move {
                            Err::<u32, _>(FunctionError::new("BadInput", "no").not_retryable())
                        }
                    }
                }),
            )
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let record = fail_rx.recv().await.unwrap();
    assert_eq!(record.condition, Condition::NotRetryable);
    assert_eq!(record.approximate_invoke_count, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.async_metrics().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn throttles_are_requeued_and_never_count_as_attempts() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx, fail_tx, _fail_rx) = channels();
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "narrow",
                handler_fn({
                    let hold = hold.clone();
                    move |event: u32, ctx: Context| {
                        let hold = hold.clone();
                        async move {
                            if event == 0 {
                                hold.inside().await;
                            }
                            Ok::<_, FunctionError>(ctx.attempt())
                        }
                    }
                }),
            )
            .with_max_concurrency(1)
            .with_timeout(Duration::from_secs(600))
            .with_throttle_backoff(
                Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(8), 0.0).unwrap(),
            )
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    // A sync invocation holds the only permit.
    let blocker = occupy(&handle, &hold).await;
    handle.invoke_async(5).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let throttles = handle.async_metrics().throttles;
    assert!(throttles >= 3, "backed off repeatedly: {throttles}");
    assert!(
        throttles <= 6,
        "backoff grows (1, 2, 4, 8, 8 s): {throttles}"
    );
    assert_eq!(handle.metrics().invocations, 0, "nothing ran meanwhile");

    hold.let_go(1);
    assert_eq!(blocker.await.unwrap().unwrap(), 1);
    // The returned permit wakes the queue; the event's first attempt is attempt 1.
    let record = ok_rx.recv().await.unwrap();
    assert_eq!(record.response, Some(1), "the handler saw attempt 1");
    assert_eq!(record.approximate_invoke_count, 1);
}

#[tokio::test(start_paused = true)]
async fn events_older_than_max_event_age_take_the_failure_path() {
    let rt = runtime(10);
    let (ok_tx, _ok_rx, fail_tx, mut fail_rx) = channels();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    // Retries 50 s apart with a 60 s maximum age: the second retry would be too old.
    let handle = rt
        .register(
            flaky(u32::MAX, starts.clone())
                .with_max_event_age(Duration::from_secs(60))
                .with_retry_backoff(Backoff::fixed(Duration::from_secs(50)).unwrap())
                .with_on_success(ok_tx)
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let record = fail_rx.recv().await.unwrap();
    assert_eq!(record.condition, Condition::EventAgeExceeded);
    assert_eq!(record.approximate_invoke_count, 2);
    assert_eq!(starts.lock().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_event_that_waits_too_long_in_the_queue_expires_unrun_while_the_function_is_busy() {
    let rt = runtime(10);
    let (ok_tx, _ok_rx, fail_tx, mut fail_rx) = channels();
    let hold = Hold::new();
    let handle = rt
        .register(busy(&hold).with_on_success(ok_tx).with_on_failure(fail_tx))
        .await
        .unwrap();
    let blocker = occupy(&handle, &hold).await;
    let accepted = Instant::now();
    handle.invoke_async(9).unwrap();
    // The record comes when the event passes its maximum age, while the function is still
    // busy: it does not wait for capacity.
    let record = fail_rx.recv().await.unwrap();
    let waited = accepted.elapsed();
    assert!(
        waited > Duration::from_secs(60) && waited < Duration::from_secs(61),
        "left at its maximum age: {waited:?}"
    );
    assert!(
        !blocker.is_finished(),
        "the busy invocation still holds the function"
    );
    assert_eq!(record.condition, Condition::EventAgeExceeded);
    assert_eq!(record.approximate_invoke_count, 0);
    assert_eq!(record.request, 9);
    let metrics = handle.async_metrics();
    assert_eq!((metrics.failed, metrics.pending), (1, 0));
    hold.let_go(1);
    blocker.await.unwrap().unwrap();
    assert_eq!(
        handle.metrics().invocations,
        1,
        "the expired event never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn zero_reserved_concurrency_sends_events_straight_to_on_failure() {
    let rt = runtime(10);
    let (ok_tx, _ok_rx, fail_tx, mut fail_rx) = channels();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            flaky(0, starts.clone())
                .with_max_concurrency(0)
                .with_on_success(ok_tx)
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    let id = handle.invoke_async(4).unwrap();
    let record = fail_rx.recv().await.unwrap();
    assert_eq!(record.request_id, id);
    assert_eq!(record.condition, Condition::ZeroReservedConcurrency);
    assert_eq!(record.approximate_invoke_count, 0);
    assert!(starts.lock().is_empty(), "never invoked");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_hands_the_event_back() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "small",
                handler_fn({
                    let hold = hold.clone();
                    move |event: String, _ctx: Context| {
                        let hold = hold.clone();
                        async move {
                            hold.inside().await;
                            Ok::<_, FunctionError>(event.len())
                        }
                    }
                }),
            )
            .with_async_queue_capacity(2)
            .with_max_concurrency(1),
        )
        .await
        .unwrap();
    handle.invoke_async("a".into()).unwrap();
    handle.invoke_async("b".into()).unwrap();
    let rejected = handle.invoke_async("keep me".into()).unwrap_err();
    assert_eq!(rejected.event, "keep me");
    assert_eq!(rejected.reason, RejectReason::QueueFull { capacity: 2 });
    assert!(rejected.to_string().contains("full"));
    hold.until_inside(1).await;
    hold.let_go(1);
    hold.until_inside(2).await;
    hold.let_go(1);
    // Once they finish there is room again.
    while handle.async_metrics().pending > 0 {
        tokio::task::yield_now().await;
    }
    handle.invoke_async("again".into()).unwrap();
    hold.let_go(1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_record_falls_back_to_the_dead_letter_target() {
    let rt = runtime(10);
    let (dlq_tx, mut dlq_rx) = mpsc::unbounded_channel::<u32>();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            flaky(u32::MAX, starts)
                .with_max_retries(0)
                .with_on_failure(nimbus_core::destination_fn(
                    |record: InvocationRecord<u32, u32>| async move {
                        Err(DeliveryError::new(record, "destination unavailable"))
                    },
                ))
                .with_dead_letter(dlq_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(11).unwrap();
    assert_eq!(dlq_rx.recv().await, Some(11), "only the original event");
    let m = handle.async_metrics();
    assert_eq!(
        (m.failed, m.delivered, m.delivery_failures, m.pending),
        (1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_back_every_unfinished_event() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "slowpoke",
                handler_fn({
                    let hold = hold.clone();
                    move |event: u32, ctx: Context| {
                        let hold = hold.clone();
                        async move {
                            match event {
                                // Fails once, then waits a minute for its retry.
                                1 if ctx.attempt() == 1 => Err(FunctionError::msg("later")),
                                // Runs until shutdown cancels it.
                                2 => {
                                    hold.inside().await;
                                    Ok(event)
                                }
                                _ => Ok::<_, FunctionError>(event),
                            }
                        }
                    }
                }),
            )
            .with_max_concurrency(1)
            .with_timeout(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    handle.invoke_async(2).unwrap();
    handle.invoke_async(3).unwrap(); // queued behind event 2
    hold.until_inside(1).await;
    handle.invoke_async(4).unwrap();

    let report = rt.shutdown(Duration::from_secs(5)).await;
    let mut back: Vec<(u32, u32)> = report
        .handed_back
        .into_iter()
        .map(|h| {
            assert_eq!(h.function, "slowpoke");
            assert!(h.condition.is_none());
            let attempts = h.attempts;
            (h.downcast::<u32>().expect("u32 events"), attempts)
        })
        .collect();
    back.sort_unstable();
    // 1 waits for its retry (1 attempt made), 2 was cancelled mid-run (attempt not counted),
    // 3 and 4 never ran.
    assert_eq!(back, vec![(1, 1), (2, 0), (3, 0), (4, 0)]);
    assert_eq!(report.cancelled, 0, "counts sync invocations only");
    assert!(matches!(
        handle.invoke_async(5).unwrap_err().reason,
        RejectReason::ShuttingDown
    ));
    assert_eq!(handle.async_metrics().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn json_events_can_be_queued_by_name() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx, fail_tx, _fail_rx) = channels();
    let starts = Arc::new(parking_lot::Mutex::new(Vec::new()));
    rt.register(
        flaky(0, starts)
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
    )
    .await
    .unwrap();
    let id = rt.invoke_async_json("flaky", serde_json::json!(5)).unwrap();
    let record = ok_rx.recv().await.unwrap();
    assert_eq!((record.request_id, record.response), (id, Some(50)));
    assert!(matches!(
        rt.invoke_async_json("flaky", serde_json::json!("five")),
        Err(nimbus_core::AsyncCallError::Payload(_))
    ));
    assert!(matches!(
        rt.invoke_async_json("nope", serde_json::json!(5)),
        Err(nimbus_core::AsyncCallError::Lookup(
            nimbus_core::LookupError::NotFound(_)
        ))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_new_event_does_not_wait_behind_a_slow_handler() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx, fail_tx, _fail_rx) = channels();
    let handle = rt
        .register(
            Function::new(
                "slow",
                handler_fn(|event: u32, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(event))).await;
                    Ok::<_, FunctionError>(event)
                }),
            )
            .with_timeout(Duration::from_secs(60))
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    let started = Instant::now();
    handle.invoke_async(30).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A second, quick event arrives while the only worker is inside the slow one.
    handle.invoke_async(2).unwrap();
    let first_done = ok_rx.recv().await.unwrap();
    assert_eq!(first_done.response, Some(2));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3_010),
        "ran at once on a second instance: {took:?}"
    );
    assert_eq!(ok_rx.recv().await.unwrap().response, Some(30));
    assert_eq!(handle.metrics().peak_concurrency, 2);
}

#[tokio::test(start_paused = true)]
async fn events_waiting_behind_slow_handlers_get_workers_as_they_arrive() {
    let rt = runtime(100);
    let started = Arc::new(AtomicU32::new(0));
    let handle = rt
        .register(
            Function::new(
                "step",
                handler_fn({
                    let started = Arc::clone(&started);
                    move |_event: u32, _ctx: Context| {
                        started.fetch_add(1, Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            Ok::<_, FunctionError>(0)
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // A step in load to a slow handler: an event every 100 µs, each arriving while every
    // worker is inside a handler. The time stays within the first millisecond, before any
    // timer of the runtime could fire: each event must get its worker from the arrival.
    for event in 0..8 {
        handle.invoke_async(event).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_micros(100)).await;
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // Each arrival found the one before it waiting and started it; the last waits for the
    // delayed look, since nothing arrived after it.
    assert_eq!(
        started.load(Ordering::SeqCst),
        7,
        "all but the last started"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(started.load(Ordering::SeqCst), 8, "the last started");
    assert_eq!(handle.metrics().concurrency, 8);
}

/// A function that reports each event it runs with the id of the task it ran on (the handler
/// runs in its worker's task, so the id tells workers apart).
async fn reporting_workers(
    rt: &nimbus_core::Runtime,
    name: &str,
) -> (
    nimbus_core::FunctionHandle<u32, u32>,
    mpsc::UnboundedReceiver<(u32, tokio::task::Id)>,
) {
    let (tx, ran_in) = mpsc::unbounded_channel();
    let handle = rt
        .register(Function::new(
            name,
            handler_fn(move |event: u32, _ctx: Context| {
                let _ = tx.send((event, tokio::task::id()));
                async { Ok::<_, FunctionError>(0) }
            }),
        ))
        .await
        .unwrap();
    (handle, ran_in)
}

/// Yields until the worker of a single-threaded test has parked.
async fn let_it_park() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A worker whose queue empties waits a moment for the next event, so that a steady stream
/// wakes it rather than starting a task per event; then it exits, and an idle function keeps
/// no worker. The handler runs in the worker's task, so the task's id tells workers apart.
#[tokio::test(start_paused = true)]
async fn a_worker_waits_a_moment_for_the_next_event_then_exits() {
    let rt = runtime(10);
    let (handle, mut ran_in) = reporting_workers(&rt, "steady").await;
    handle.invoke_async(1).unwrap();
    let (_, first) = ran_in.recv().await.unwrap();
    // The queue is empty and the worker parked: the next arrival, a moment later (within the
    // timer's millisecond, so that no timer fires), wakes it.
    let_it_park().await;
    tokio::time::advance(Duration::from_micros(100)).await;
    handle.invoke_async(2).unwrap();
    let (event, second) = ran_in.recv().await.unwrap();
    assert_eq!(
        (event, second),
        (2, first),
        "the parked worker took the next event"
    );
    // A gap longer than the wait: the worker has exited, and the next event starts another.
    tokio::time::sleep(Duration::from_millis(5)).await;
    handle.invoke_async(3).unwrap();
    let (event, third) = ran_in.recv().await.unwrap();
    assert_eq!(event, 3);
    assert_ne!(third, first, "the worker exited after its wait");
    assert_eq!(handle.metrics().invocations, 3);
}

/// Arrivals while a parked worker's wake-up is on its way send no other wake-up: the woken
/// worker runs them all, and none waits for a timer. Parked again, the worker is woken by the
/// next arrival: the first wake-up was taken, and the next is sent.
#[tokio::test(start_paused = true)]
async fn arrivals_behind_a_wake_up_run_without_waiting_for_a_timer() {
    let rt = runtime(10);
    let (handle, mut ran_in) = reporting_workers(&rt, "woken").await;
    handle.invoke_async(0).unwrap();
    let (_, worker) = ran_in.recv().await.unwrap();
    let_it_park().await;
    // On the paused clock, an event left for the worker's timer would move the clock on by
    // the park's millisecond before it ran.
    let start = Instant::now();
    for event in 1..=5 {
        handle.invoke_async(event).unwrap();
    }
    for event in 1..=5 {
        assert_eq!(ran_in.recv().await.unwrap(), (event, worker));
    }
    assert_eq!(Instant::now(), start, "no event waited for a timer");
    let_it_park().await;
    handle.invoke_async(6).unwrap();
    assert_eq!(ran_in.recv().await.unwrap(), (6, worker));
    assert_eq!(Instant::now(), start, "the next arrival woke the worker");
    handle.async_idle().await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A wake-up sent for a burst reaches more than one parked worker: the woken worker takes
/// its share and wakes another for what it left, so that the second event of a burst to two
/// parked workers starts at once, not when the other's park runs out.
#[tokio::test(start_paused = true)]
async fn a_burst_wakes_as_many_parked_workers_as_it_needs() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(Function::new(
            "burst",
            handler_fn({
                let hold = hold.clone();
                move |_event: u32, _ctx: Context| {
                    let hold = hold.clone();
                    async move {
                        hold.inside().await;
                        Ok::<_, FunctionError>(0)
                    }
                }
            }),
        ))
        .await
        .unwrap();
    // Two workers, each in a waiting handler, then both parked.
    handle.invoke_async(0).unwrap();
    hold.until_inside(1).await;
    handle.invoke_async(1).unwrap();
    hold.until_inside(2).await;
    hold.let_go(2);
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.async_metrics().succeeded, 2);
    let start = Instant::now();
    handle.invoke_async(2).unwrap();
    handle.invoke_async(3).unwrap();
    hold.until_inside(4).await;
    assert_eq!(Instant::now(), start, "neither event waited for a timer");
    hold.let_go(2);
    handle.async_idle().await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A worker counts its successes in batches; one whose handler waits must count those it
/// finished before, or `succeeded` would lag behind a handler that never ends.
#[tokio::test]
async fn successes_are_counted_before_a_worker_waits_on_a_slow_handler() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "first-fast-then-slow",
                handler_fn({
                    let hold = hold.clone();
                    move |n: u32, _ctx: Context| {
                        let hold = hold.clone();
                        async move {
                            if n > 0 {
                                hold.inside().await;
                            }
                            Ok::<_, FunctionError>(n)
                        }
                    }
                }),
            )
            // One worker, which takes both events in one batch.
            .with_max_concurrency(1),
        )
        .await
        .expect("register");
    handle.invoke_async(0).expect("queued");
    handle.invoke_async(1).expect("queued");
    hold.until_inside(1).await;
    // On this single-threaded runtime the test runs again only once the worker has yielded,
    // that is, after it saw the slow handler pending.
    assert_eq!(handle.async_metrics().succeeded, 1);
    assert_eq!(
        handle.metrics().successes,
        1,
        "in the function's metrics too"
    );
    hold.release.add_permits(1);
    handle.async_idle().await;
    assert_eq!(handle.async_metrics().succeeded, 2);
    assert_eq!(handle.metrics().successes, 2);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A worker counts its successes in the function's metrics in batches too: once the queue is
/// idle, every run is counted, with its duration in the histogram and its billed time in the
/// usage; a failure among them is counted as one.
#[tokio::test]
async fn every_run_is_in_the_metrics_once_the_queue_is_idle() {
    let rt = runtime(10);
    let handle = rt
        .register(
            Function::new(
                "counted",
                handler_fn(|n: u32, _ctx: Context| async move {
                    if n % 7 == 0 {
                        // Durations in more than one bucket of the histogram.
                        let until = std::time::Instant::now() + Duration::from_micros(30);
                        while std::time::Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    if n == 150 {
                        return Err(FunctionError::new("Failed", "on purpose"));
                    }
                    Ok::<_, FunctionError>(n)
                }),
            )
            .with_max_retries(0),
        )
        .await
        .expect("register");
    for n in 0..300 {
        handle.invoke_async(n).expect("queued");
    }
    handle.async_idle().await;
    let m = handle.metrics();
    assert_eq!((m.invocations, m.successes, m.errors), (300, 299, 1));
    let durations = rt.duration_histogram("counted").expect("registered");
    assert_eq!(durations.count(), 300);
    let usage = handle.usage();
    assert_eq!(usage.requests, 300);
    assert_eq!(usage.billed_duration, Duration::from_millis(300));
    assert_eq!(handle.async_metrics().succeeded, 299);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A destination that waits inside each delivery until the test releases it.
fn held_destination(hold: &Hold) -> impl nimbus_core::Destination<u32, u32> {
    let hold = hold.clone();
    nimbus_core::destination_fn(move |_record: InvocationRecord<u32, u32>| {
        let hold = hold.clone();
        async move {
            hold.inside().await;
            Ok(())
        }
    })
}

/// A success is counted before its record goes to the on-success destination, however long
/// the destination takes.
#[tokio::test]
async fn a_success_is_counted_while_its_record_is_delivered() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "slow-destination",
                handler_fn(|n: u32, _ctx: Context| async move { Ok::<_, FunctionError>(n) }),
            )
            .with_on_success(held_destination(&hold)),
        )
        .await
        .expect("register");
    handle.invoke_async(7).expect("queued");
    hold.until_inside(1).await;
    // Single-threaded: the worker has yielded inside the delivery.
    assert_eq!(handle.async_metrics().succeeded, 1);
    hold.release.add_permits(1);
    handle.async_idle().await;
    assert_eq!(handle.async_metrics().succeeded, 1);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Successes are counted before a later event's failure goes to the on-failure destination,
/// however long that takes.
#[tokio::test]
async fn successes_are_counted_while_a_failure_is_delivered() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            Function::new(
                "then-fails",
                handler_fn(|n: u32, _ctx: Context| async move {
                    if n == 0 {
                        Ok(n)
                    } else {
                        Err(FunctionError::new("Failed", "on purpose"))
                    }
                }),
            )
            .with_max_retries(0)
            // One worker, which takes both events in one batch.
            .with_max_concurrency(1)
            .with_on_failure(held_destination(&hold)),
        )
        .await
        .expect("register");
    handle.invoke_async(0).expect("queued");
    handle.invoke_async(1).expect("queued");
    hold.until_inside(1).await;
    assert_eq!(handle.async_metrics().succeeded, 1);
    hold.release.add_permits(1);
    handle.async_idle().await;
    let metrics = handle.async_metrics();
    assert_eq!((metrics.succeeded, metrics.failed), (1, 1));
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Runs two events through one worker, with a destination that takes 2 s per delivery: the
/// first event succeeds (or, with `first_fails`, fails) after 10 ms, and its record goes to
/// the slow destination before the worker runs the second. Returns the billed duration of the
/// two runs and the second event's outcome.
async fn after_a_slow_delivery(first_fails: bool) -> (Duration, Result<u32, OutcomeKind>) {
    let rt = runtime(10);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let slow = move |record: InvocationRecord<u32, u32>| {
        let done_tx = done_tx.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let outcome = match record.response {
                Some(output) => Ok(output),
                None => Err(record.error.map_or(OutcomeKind::Error, |e| e.kind)),
            };
            let _ = done_tx.send((record.request, outcome));
            Ok(())
        }
    };
    let handle = rt
        .register(
            Function::new(
                "slow-delivery",
                handler_fn(move |n: u32, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if n == 0 && first_fails {
                        return Err(FunctionError::new("Failed", "on purpose"));
                    }
                    Ok::<_, FunctionError>(n)
                }),
            )
            .with_timeout(Duration::from_secs(1))
            .with_max_retries(0)
            // One worker runs both events, one after the other.
            .with_max_concurrency(1)
            .with_on_success(nimbus_core::destination_fn(slow.clone()))
            .with_on_failure(nimbus_core::destination_fn(slow)),
        )
        .await
        .expect("register");
    handle.invoke_async(0).expect("queued");
    handle.invoke_async(1).expect("queued");
    handle.async_idle().await;
    let mut second = None;
    while let Ok((event, outcome)) = done_rx.try_recv() {
        if event == 1 {
            second = Some(outcome);
        }
    }
    let billed = handle.usage().billed_duration;
    rt.shutdown(Duration::from_secs(1)).await;
    (
        billed,
        second.expect("the second event's record was delivered"),
    )
}

/// A slow on-success delivery is not part of the next event's run: the next handler has its
/// whole timeout, and each run is billed for its own 10 ms.
#[tokio::test(start_paused = true)]
async fn a_slow_success_delivery_is_not_billed_to_the_next_event() {
    let (billed, second) = after_a_slow_delivery(false).await;
    assert_eq!(second, Ok(1), "the second event ran within its timeout");
    assert_eq!(billed, Duration::from_millis(20));
}

/// The same after a failure's slow delivery to the on-failure destination.
#[tokio::test(start_paused = true)]
async fn a_slow_failure_delivery_is_not_billed_to_the_next_event() {
    let (billed, second) = after_a_slow_delivery(true).await;
    assert_eq!(second, Ok(1), "the second event ran within its timeout");
    assert_eq!(billed, Duration::from_millis(20));
}
