//! The seams between the runtime and user code: shutdown stays bounded when a destination never
//! answers, panics in destinations, dead letters and retry policies keep the function serving,
//! and hostile durations from handlers saturate instead of panicking.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    destination_fn, handler_fn, init_fn, Condition, Context, DeadLetter, DeadLetterAttributes,
    DeliveryError, Function, FunctionError, InitContext, InvocationRecord, InvokeError,
    RetryPolicy,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::runtime;

/// Yields until `done` holds; panics with `what` if it does not within many turns (so that a
/// wedged function fails the test instead of hanging it).
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never reached: {what}");
}

/// A handler that counts the events it handled and returns them.
fn counting(name: &str, handled: Arc<AtomicUsize>) -> Function<u32, u32> {
    Function::new(
        name,
        handler_fn(move |event: u32, _ctx: Context| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, FunctionError>(event)
            }
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_when_a_destination_never_answers() {
    let rt = runtime(10);
    // A bounded channel nobody reads: the second record blocks its worker for good.
    let (tx, mut rx) = mpsc::channel::<InvocationRecord<u32, u32>>(1);
    let handled = Arc::new(AtomicUsize::new(0));
    let handle = rt
        .register(counting("stuck-destination", handled.clone()).with_on_success(tx))
        .await
        .unwrap();
    for event in 0..10 {
        handle.invoke_async(event).unwrap();
    }
    until("two records offered", || {
        handled.load(Ordering::SeqCst) >= 2
    })
    .await;

    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        rt.shutdown(Duration::from_millis(100)),
    )
    .await
    .expect("shutdown returns although the destination never answers");
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(100) + nimbus_core::SHUTDOWN_SLACK,
        "bounded by grace + SHUTDOWN_SLACK: {took:?}"
    );

    // Every event is accounted for: delivered, or handed back (with `Success` when only its
    // record was cut off by the hard stop).
    let mut seen = BTreeSet::new();
    while let Ok(record) = rx.try_recv() {
        assert!(seen.insert(record.request));
    }
    for back in report.handed_back {
        assert!(matches!(back.condition, None | Some(Condition::Success)));
        assert!(seen.insert(back.downcast::<u32>().expect("u32 events")));
    }
    assert_eq!(seen, (0..10).collect::<BTreeSet<_>>());
    assert_eq!(handle.async_metrics().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_success_record_refused_during_shutdown_is_handed_back_not_lost() {
    let rt = runtime(10);
    // The destination is another function's async queue, which refuses once shutdown begins.
    let target = rt
        .register(Function::new(
            "seams-target",
            handler_fn(|_: InvocationRecord<u32, u32>, _ctx: Context| async {
                Ok::<_, FunctionError>(())
            }),
        ))
        .await
        .unwrap();
    let forward = destination_fn(move |record: InvocationRecord<u32, u32>| {
        let refused = target
            .invoke_async(record)
            .map_err(|r| DeliveryError::new(r.event, format!("{:?}", r.reason)));
        async move { refused.map(|_| ()) }
    });
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let source = rt
        .register(
            Function::new(
                "seams-source",
                handler_fn(move |n: u32, _ctx: Context| {
                    let _ = started_tx.send(());
                    let gate = gate.clone();
                    async move {
                        gate.notified().await;
                        Ok::<_, FunctionError>(n * 2)
                    }
                }),
            )
            .with_on_success(forward),
        )
        .await
        .unwrap();
    source.invoke_async(21).unwrap();
    started.recv().await.unwrap();
    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown(Duration::from_secs(5)).await }
    });
    until("shutdown has begun", || rt.is_shutting_down()).await;
    let released = Instant::now();
    release.notify_one();
    let report = shutdown.await.unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "the kept event does not hold shutdown to its grace"
    );

    assert_eq!(source.async_metrics().delivery_failures, 0);
    let [back] = <[_; 1]>::try_from(report.handed_back).expect("one event handed back");
    assert_eq!(back.condition, Some(Condition::Success));
    assert_eq!(back.downcast::<u32>().expect("a u32 event"), 21);
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_never_answers_is_given_up_after_the_delivery_timeout() {
    let rt = runtime(10);
    let offered = Arc::new(AtomicUsize::new(0));
    let never = destination_fn({
        let offered = offered.clone();
        move |_record: InvocationRecord<u32, u32>| {
            offered.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<(), DeliveryError<InvocationRecord<u32, u32>>>>()
        }
    });
    let handled = Arc::new(AtomicUsize::new(0));
    let handle = rt
        .register(
            counting("silent-destination", handled.clone())
                .with_max_concurrency(1)
                .with_on_success(never)
                .with_delivery_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    for event in 0..3 {
        handle.invoke_async(event).unwrap();
    }
    let started = Instant::now();
    // With one worker, each silent delivery holds it for the delivery timeout and no longer.
    while handle.async_metrics().pending > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "wedged by the destination"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(offered.load(Ordering::SeqCst), 3);
    assert_eq!(handle.async_metrics().delivery_failures, 3);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "{took:?}"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_destination_does_not_wedge_the_function() {
    let rt = runtime(10);
    let handled = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let destination = {
        let delivered = delivered.clone();
        destination_fn(move |record: InvocationRecord<u32, u32>| {
            let delivered = delivered.clone();
            async move {
                assert!(record.request % 10 != 0, "destination bug");
                delivered.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let handle = rt
        .register(counting("panicky-destination", handled.clone()).with_on_success(destination))
        .await
        .unwrap();
    for event in 0..1_100 {
        handle.invoke_async(event).unwrap();
    }
    until("every event handled", || {
        handled.load(Ordering::SeqCst) == 1_100 && handle.async_metrics().pending == 0
    })
    .await;
    // Events sent after the panics still run.
    for event in 1_100..1_110 {
        handle.invoke_async(event).unwrap();
    }
    until("later events handled", || {
        handled.load(Ordering::SeqCst) == 1_110 && handle.async_metrics().pending == 0
    })
    .await;
    let metrics = handle.async_metrics();
    assert_eq!(metrics.succeeded, 1_110);
    assert_eq!(
        metrics.delivery_failures, 111,
        "a panic is a refused delivery"
    );
    assert_eq!(delivered.load(Ordering::SeqCst), 999);
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert!(report.handed_back.is_empty());
}

/// A retry policy with a bug.
#[derive(Debug)]
struct PanickingPolicy;

impl RetryPolicy for PanickingPolicy {
    fn retry(&self, _attempt: u32, _failure: &InvokeError) -> Option<Duration> {
        panic!("retry policy bug")
    }
}

/// A dead-letter target with a bug.
struct PanickingDeadLetter;

#[nimbus_core::async_trait]
impl DeadLetter<u32> for PanickingDeadLetter {
    async fn send(
        &self,
        _event: u32,
        _attributes: DeadLetterAttributes,
    ) -> Result<(), DeliveryError<u32>> {
        panic!("dead-letter bug")
    }
}

/// Fails odd events (not retryable when `never`), succeeds on even ones.
fn odd_fails(name: &str, never: bool) -> Function<u32, u32> {
    Function::new(
        name,
        handler_fn(move |event: u32, _ctx: Context| async move {
            if event % 2 == 1 {
                let error = FunctionError::msg("odd");
                return Err(if never { error.not_retryable() } else { error });
            }
            Ok::<_, FunctionError>(event)
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_panicking_retry_policy_fails_the_event_and_the_worker_serves_on() {
    let rt = runtime(10);
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel();
    let handle = rt
        .register(
            odd_fails("panicky-policy", false)
                .with_retry_policy(PanickingPolicy)
                .with_on_failure(fail_tx)
                .with_on_success(ok_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let failed: InvocationRecord<u32, u32> =
        tokio::time::timeout(Duration::from_secs(60), fail_rx.recv())
            .await
            .expect("the event takes the failure path")
            .unwrap();
    assert_eq!((failed.request, failed.approximate_invoke_count), (1, 1));
    let error = failed.error.expect("the attempt's error");
    assert!(error.message.contains("retry policy panicked"), "{error:?}");
    handle.invoke_async(2).unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(60), ok_rx.recv())
        .await
        .expect("the function still serves")
        .unwrap();
    assert_eq!(ok.response, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_dead_letter_keeps_the_event_for_the_host() {
    let rt = runtime(10);
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel();
    let handle = rt
        .register(
            odd_fails("panicky-dlq", true)
                .with_dead_letter(PanickingDeadLetter)
                .with_on_success(ok_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    handle.invoke_async(2).unwrap();
    let ok: InvocationRecord<u32, u32> =
        tokio::time::timeout(Duration::from_secs(60), ok_rx.recv())
            .await
            .expect("the function still serves")
            .unwrap();
    assert_eq!(ok.response, Some(2));
    until("the failed event settled", || {
        handle.async_metrics().delivery_failures == 1
    })
    .await;
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.handed_back.len(), 1);
    let back = report.handed_back.into_iter().next().unwrap();
    assert_eq!(back.condition, Some(Condition::NotRetryable));
    assert_eq!(back.downcast::<u32>().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_duration_max_saturates_to_the_failure_path() {
    let rt = runtime(10);
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel();
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel();
    let handle = rt
        .register(
            Function::new(
                "forever-later",
                handler_fn(|event: u32, _ctx: Context| async move {
                    if event == 1 {
                        return Err(FunctionError::msg("later").retry_after(Duration::MAX));
                    }
                    Ok::<_, FunctionError>(event)
                }),
            )
            .with_on_failure(fail_tx)
            .with_on_success(ok_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let failed: InvocationRecord<u32, u32> =
        tokio::time::timeout(Duration::from_secs(60), fail_rx.recv())
            .await
            .expect("the event takes the failure path")
            .unwrap();
    assert_eq!(failed.condition, Condition::EventAgeExceeded);
    handle.invoke_async(2).unwrap();
    let ok = tokio::time::timeout(Duration::from_secs(60), ok_rx.recv())
        .await
        .expect("the function still serves")
        .unwrap();
    assert_eq!(ok.response, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_detached_context_with_an_unbounded_timeout_does_not_panic() {
    let ctx = Context::detached("f", Duration::MAX);
    assert!(ctx.remaining_time() > Duration::from_secs(86_400 * 365));
}

#[tokio::test(start_paused = true)]
async fn an_init_cancelled_at_the_hard_stop_hands_its_event_back() {
    let rt = runtime(10);
    let handle = rt
        .register(Function::with_factory(
            "never-ready",
            init_fn(|_init: InitContext| async move {
                std::future::pending::<()>().await;
                Ok::<_, FunctionError>(handler_fn(|event: u32, _ctx: Context| async move {
                    Ok::<_, FunctionError>(event)
                }))
            }),
        ))
        .await
        .unwrap();
    handle.invoke_async(7).unwrap();
    let report = rt.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.handed_back.len(), 1);
    let back = report.handed_back.into_iter().next().unwrap();
    assert_eq!(
        (back.condition, back.attempts),
        (None, 0),
        "stopped, not failed"
    );
    assert_eq!(back.downcast::<u32>().unwrap(), 7);
}

/// A worker whose task is dropped (here: the Tokio runtime it ran on goes away mid-handler)
/// gives its events back to the queue and counts itself out, so that the function serves
/// them later instead of being wedged with a worker count that never falls.
#[test]
fn a_worker_that_dies_gives_its_events_back() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let hold = crate::support::Hold::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let (rt, handle) = first.block_on(async {
        let rt = runtime(10);
        let handle = rt
            .register(
                Function::new(
                    "orphaned",
                    handler_fn({
                        let hold = hold.clone();
                        let handled = handled.clone();
                        move |event: u32, _ctx: Context| {
                            let hold = hold.clone();
                            let handled = handled.clone();
                            async move {
                                if event == 0 {
                                    hold.inside().await;
                                }
                                handled.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, FunctionError>(event)
                            }
                        }
                    }),
                )
                .with_max_concurrency(1),
            )
            .await
            .unwrap();
        for event in 0..5 {
            handle.invoke_async(event).unwrap();
        }
        hold.until_inside(1).await;
        (rt, handle)
    });
    // The worker (inside event 0, the others behind it) dies with its runtime.
    drop(first);
    let metrics = handle.async_metrics();
    assert_eq!(
        (metrics.pending, metrics.queue_depth),
        (5, 5),
        "all back in the queue"
    );

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        hold.let_go(1);
        handle.invoke_async(5).unwrap();
        until("every event handled on a new worker", || {
            handle.async_metrics().pending == 0
        })
        .await;
        assert_eq!(handled.load(Ordering::SeqCst), 6);
        let report = rt.shutdown(Duration::from_secs(1)).await;
        assert!(report.handed_back.is_empty());
    });
}

/// A handler written without `async_trait` that panics before it returns its future.
struct PanicsOnCall;

impl nimbus_core::Handler<u32, u32> for PanicsOnCall {
    fn call<'a, 'b>(
        &'a mut self,
        _event: u32,
        _ctx: Context,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, FunctionError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        panic!("handler bug before the future")
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_panics_before_its_future_is_a_panic_outcome() {
    let rt = runtime(10);
    let handle = rt
        .register_native(Function::with_factory(
            "early-panic",
            init_fn(|_init: InitContext| async move { Ok::<_, FunctionError>(PanicsOnCall) }),
        ))
        .await
        .unwrap();
    assert!(matches!(
        handle.invoke(1).await,
        Err(InvokeError::Panic(message)) if message.contains("before the future")
    ));
    assert_eq!(rt.concurrency().in_flight, 0);
    assert_eq!(handle.metrics().panics, 1);
}

/// A factory written without `async_trait` that panics before it returns its future.
struct PanicsOnInit;

impl nimbus_core::InstanceFactory<u32, u32> for PanicsOnInit {
    fn init<'a, 'b>(
        &'a self,
        _ctx: InitContext,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<Box<dyn nimbus_core::Handler<u32, u32>>, FunctionError>,
                > + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        panic!("factory bug before the future")
    }
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_panics_before_its_future_is_an_init_failure() {
    let rt = runtime(10);
    let handle = rt
        .register_native(Function::with_factory("early-init-panic", PanicsOnInit))
        .await
        .unwrap();
    assert!(matches!(
        handle.invoke(1).await,
        Err(InvokeError::Init(nimbus_core::InitFailure::Panic(message)))
            if message.contains("before the future")
    ));
    assert_eq!(rt.concurrency().in_flight, 0);
    assert_eq!(handle.metrics().init_failures, 1);
}

/// A runtime built outside any Tokio runtime, whose function is registered on one, serves
/// async events queued from a plain thread: the spawn falls back to the registration's runtime.
#[test]
fn a_runtime_built_outside_tokio_serves_async_events_from_plain_threads() {
    let rt = nimbus_core::Runtime::default();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = tokio_rt
        .block_on(rt.register(nimbus_core::Function::new(
            "plain",
            nimbus_core::handler_fn(move |n: u32, _ctx: nimbus_core::Context| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(n);
                    Ok::<_, nimbus_core::FunctionError>(())
                }
            }),
        )))
        .unwrap();
    std::thread::spawn(move || {
        for i in 0..10 {
            handle.invoke_async(i).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut got: Vec<u32> = (0..10)
        .map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}
