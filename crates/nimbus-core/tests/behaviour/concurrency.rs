//! Concurrency limits: reserved and runtime-wide arithmetic, and the scale rate.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{InvokeError, RegisterError, ThrottleReason};

use crate::support::{numbered, runtime, Hold};

/// Starts `n` held invocations of `handle` and waits until they are inside.
async fn hold_n(
    handle: &nimbus_core::FunctionHandle<bool, u64>,
    hold: &Hold,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<u64, InvokeError>>> {
    let before = hold.entered.load(std::sync::atomic::Ordering::SeqCst);
    let tasks = (0..n)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke(true).await })
        })
        .collect();
    hold.until_inside(before + n).await;
    tasks
}

#[tokio::test(start_paused = true)]
async fn reservations_carve_out_of_the_runtime_limit() {
    let rt = nimbus_core::Runtime::new(
        nimbus_core::RuntimeConfig::default()
            .with_concurrency_limit(10)
            .with_min_unreserved(2),
    )
    .unwrap();
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    let reserved = rt
        .register(numbered("reserved", hold.clone(), inits.clone()).with_max_concurrency(5))
        .await
        .unwrap();
    assert_eq!(rt.concurrency().unreserved_limit, 5);

    // 10 - 5 reserved - 2 kept unreserved leaves 3 to reserve.
    let too_much = rt
        .register(numbered("greedy", hold.clone(), inits.clone()).with_max_concurrency(4))
        .await;
    match too_much {
        Err(RegisterError::Config(e)) => {
            assert_eq!(e.field, "max_concurrency");
            assert!(e.allowed.starts_with("0..=3"), "{}", e.allowed);
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let second = rt
        .register(numbered("second", hold.clone(), inits.clone()).with_max_concurrency(3))
        .await
        .unwrap();
    let shared = rt
        .register(numbered("shared", hold.clone(), inits.clone()))
        .await
        .unwrap();
    assert_eq!(rt.concurrency().unreserved_limit, 2);

    // The reserved function is capped at its reservation...
    let r = hold_n(&reserved, &hold, 5).await;
    assert!(matches!(
        reserved.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::FunctionLimit))
    ));
    // ...and does not eat into the unreserved pool, which has exactly 2.
    let s = hold_n(&shared, &hold, 2).await;
    assert!(matches!(
        shared.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::RuntimeLimit))
    ));
    // The other reservation is untouched by both.
    let o = hold_n(&second, &hold, 3).await;
    assert!(matches!(
        second.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::FunctionLimit))
    ));
    assert_eq!(rt.concurrency().in_flight, 10);

    hold.let_go(10);
    for t in r.into_iter().chain(s).chain(o) {
        t.await.unwrap().unwrap();
    }
    assert_eq!(reserved.metrics().throttled_function_limit, 1);
    assert_eq!(shared.metrics().throttled_runtime_limit, 1);
    assert_eq!(reserved.metrics().peak_concurrency, 5);

    // Unregistering returns a reservation to the pool.
    let report = rt
        .unregister("reserved", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(report.reservation_returned);
    assert_eq!(rt.concurrency().unreserved_limit, 7);
    assert!(matches!(
        rt.invoke::<bool, u64>("reserved", false).await,
        Err(nimbus_core::CallError::Lookup(
            nimbus_core::LookupError::NotFound(_)
        ))
    ));
}

#[tokio::test(start_paused = true)]
async fn zero_reserved_concurrency_throttles_everything() {
    let rt = runtime(10);
    let off = rt
        .register(numbered("off", Hold::new(), Arc::new(AtomicU64::new(0))).with_max_concurrency(0))
        .await
        .unwrap();
    assert!(matches!(
        off.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::FunctionLimit))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_scale_rate_limits_new_instances_not_warm_reuse() {
    let rt = runtime(100);
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    // Two new instances per 10 s.
    let handle = rt
        .register(
            numbered("rated", hold.clone(), inits.clone())
                .with_scale_rate(2, Duration::from_secs(10))
                .with_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let held = hold_n(&handle, &hold, 2).await;
    // A third concurrent invocation needs a third instance: the bucket is empty.
    assert!(matches!(
        handle.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::ScaleRate))
    ));
    // The throttle returned its permit at once: nothing leaks.
    assert_eq!(handle.metrics().concurrency, 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // One token refilled after 5 s.
    let third = hold_n(&handle, &hold, 1).await;
    assert!(matches!(
        handle.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::ScaleRate))
    ));
    hold.let_go(3);
    for t in held.into_iter().chain(third) {
        t.await.unwrap().unwrap();
    }
    // Warm instances serve without tokens.
    for _ in 0..10 {
        handle.invoke(false).await.unwrap();
    }
    let m = handle.metrics();
    assert_eq!((m.cold_starts, m.throttled_scale_rate), (3, 2));
}

/// A backlog of fast async events on a one-thread runtime gets one worker: the worker already
/// spawned fills the thread, and another could only take a share of its events. (Real time:
/// the events must have waited the moment after which an arrival may add a worker.)
#[tokio::test(flavor = "current_thread")]
async fn a_backlog_of_fast_events_gets_no_more_workers_than_threads() {
    let rt = runtime(100);
    let handle = rt
        .register(nimbus_core::Function::new(
            "fast",
            nimbus_core::handler_fn(|n: u64, _ctx: nimbus_core::Context| async move {
                Ok::<_, nimbus_core::FunctionError>(n)
            }),
        ))
        .await
        .unwrap();
    let tasks = tokio::runtime::Handle::current().metrics();
    let before = tasks.num_alive_tasks();
    handle.invoke_async(0).unwrap();
    // Without yielding, so that no task runs or ends meanwhile: every later arrival finds the
    // oldest event waiting longer than the moment after which it may add a worker (50 µs).
    std::thread::sleep(Duration::from_millis(1));
    for n in 1..200 {
        handle.invoke_async(n).unwrap();
    }
    assert_eq!(
        tasks.num_alive_tasks() - before,
        2,
        "one worker, and the age timer"
    );
    handle.async_idle().await;
    let metrics = handle.metrics();
    assert_eq!(metrics.successes, 200);
    assert_eq!(metrics.cold_starts, 1);
}

/// The worker waiting for a slow cold start is not on the CPU: events that arrive meanwhile
/// get a worker of their own, and run on a second instance while the first still starts.
#[tokio::test(flavor = "current_thread")]
async fn events_arriving_during_a_slow_cold_start_get_another_worker() {
    let rt = runtime(100);
    let hold = Hold::new();
    let handle = rt
        .register(nimbus_core::Function::<u64, u64>::with_factory(
            "slow-start",
            nimbus_core::init_fn({
                let hold = hold.clone();
                move |init: nimbus_core::InitContext| {
                    let hold = hold.clone();
                    async move {
                        if init.instance_number() == 1 {
                            hold.inside().await;
                        }
                        Ok::<_, nimbus_core::FunctionError>(nimbus_core::handler_fn(
                            |n: u64, _ctx: nimbus_core::Context| async move {
                                Ok::<_, nimbus_core::FunctionError>(n)
                            },
                        ))
                    }
                }
            }),
        ))
        .await
        .unwrap();
    handle.invoke_async(0).unwrap();
    hold.until_inside(1).await;
    // The oldest event has now waited longer than the moment after which an arrival may add
    // a worker (50 µs); without yielding, so that nothing else changes meanwhile.
    std::thread::sleep(Duration::from_millis(1));
    handle.invoke_async(1).unwrap();
    tokio::time::timeout(Duration::from_secs(30), handle.async_idle())
        .await
        .expect("both events ran while the first instance was still starting");
    assert_eq!(handle.metrics().successes, 2);
    assert_eq!(hold.entered.load(std::sync::atomic::Ordering::SeqCst), 1);
    hold.let_go(1);
}

/// A handler that blocks its thread (here in `block_in_place`, which hands the runtime's other
/// tasks to another thread) finishes on its first poll but is no work for the CPU: events
/// arriving meanwhile still get workers, beyond the runtime's two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_block_their_thread_still_scale_out() {
    let rt = runtime(100);
    let handle = rt
        .register(nimbus_core::Function::new(
            "blocking",
            nimbus_core::handler_fn(|n: u64, _ctx: nimbus_core::Context| async move {
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(50)));
                Ok::<_, nimbus_core::FunctionError>(n)
            }),
        ))
        .await
        .unwrap();
    // 20 events 5 ms apart to a handler of 50 ms: about ten at once keep up with them.
    for n in 0..20 {
        handle.invoke_async(n).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.async_idle().await;
    let metrics = handle.metrics();
    assert_eq!(metrics.successes, 20);
    assert!(
        metrics.peak_concurrency > 2,
        "more workers than threads: {}",
        metrics.peak_concurrency
    );
}
