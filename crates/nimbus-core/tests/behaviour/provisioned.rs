//! Provisioned concurrency (`min_instances`): a floor carved out of the runtime's limit, with
//! on-demand overflow from the shared pool, metered and priced as Lambda does.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, Context, Function, FunctionError, InvokeError, InvokeOptions, Prices,
    RegisterError, Runtime, RuntimeConfig, ThrottleReason,
};

use crate::support::{numbered, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn provisioned_instances_keep_their_permits_when_others_take_the_shared_pool() {
    let rt = runtime(10);
    let hold = Hold::new();
    let provisioned = rt
        .register(
            numbered("provisioned", hold.clone(), Arc::new(AtomicU64::new(0)))
                .with_min_instances(3),
        )
        .await
        .unwrap();
    assert_eq!(rt.concurrency().reserved, 3);
    assert_eq!(rt.concurrency().unreserved_limit, 7);
    let greedy = rt
        .register(numbered(
            "greedy",
            hold.clone(),
            Arc::new(AtomicU64::new(0)),
        ))
        .await
        .unwrap();
    // Another function takes every permit of the shared pool...
    let hogs: Vec<_> = (0..7)
        .map(|_| {
            let h = greedy.clone();
            tokio::spawn(async move { h.invoke(true).await })
        })
        .collect();
    hold.until_inside(7).await;
    assert!(matches!(
        greedy.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::RuntimeLimit))
    ));
    // ...and the provisioned function still runs three at once on its provisioned instances.
    let mine: Vec<_> = (0..3)
        .map(|_| {
            let h = provisioned.clone();
            tokio::spawn(async move { h.invoke_with(true, InvokeOptions::default()).await })
        })
        .collect();
    hold.until_inside(10).await;
    // A fourth would overflow into the shared pool, which is full.
    assert!(matches!(
        provisioned.invoke(false).await,
        Err(InvokeError::Throttled(ThrottleReason::RuntimeLimit))
    ));
    hold.let_go(10);
    for task in mine {
        let ran = task.await.unwrap();
        ran.result.unwrap();
        assert!(ran.report.unwrap().provisioned);
    }
    for task in hogs {
        task.await.unwrap().unwrap();
    }
    assert_eq!(provisioned.metrics().cold_starts, 0);
}

#[tokio::test(start_paused = true)]
async fn beyond_its_provisioned_instances_a_function_runs_on_demand() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            numbered("burst", hold.clone(), Arc::new(AtomicU64::new(0))).with_min_instances(1),
        )
        .await
        .unwrap();
    let burst: Vec<_> = (0..3)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke_with(true, InvokeOptions::default()).await })
        })
        .collect();
    hold.until_inside(3).await;
    hold.let_go(3);
    let mut provisioned = 0;
    for task in burst {
        let ran = task.await.unwrap();
        ran.result.unwrap();
        provisioned += u64::from(ran.report.unwrap().provisioned);
    }
    assert_eq!(
        provisioned, 1,
        "one on the provisioned instance, two on demand"
    );
    assert_eq!(handle.metrics().cold_starts, 2);
    let usage = handle.usage();
    assert_eq!((usage.requests, usage.provisioned_requests), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn provisioned_concurrency_is_validated_against_the_unreserved_minimum() {
    let rt = Runtime::new(
        RuntimeConfig::default()
            .with_concurrency_limit(10)
            .with_min_unreserved(2),
    )
    .unwrap();
    let registered = rt
        .register(
            numbered("too-many", Hold::new(), Arc::new(AtomicU64::new(0))).with_min_instances(9),
        )
        .await;
    match registered {
        Err(RegisterError::Config(error)) => {
            assert_eq!(error.field, "min_instances");
            assert!(error.allowed.starts_with("0..=8 "), "{}", error.allowed);
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert_eq!(rt.concurrency().reserved, 0);
    rt.register(numbered("fits", Hold::new(), Arc::new(AtomicU64::new(0))).with_min_instances(8))
        .await
        .unwrap();
    assert_eq!(rt.concurrency().reserved, 8);
    // Unregistering gives the floor back.
    rt.unregister("fits", Duration::from_secs(1))
        .await
        .expect("registered");
    assert_eq!(rt.concurrency().reserved, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lost_provisioned_instance_is_replaced_by_the_next_cold_start() {
    let rt = runtime(10);
    let handle = rt
        .register(
            Function::new(
                "flaky",
                handler_fn(|hang: bool, _ctx: Context| async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, FunctionError>(())
                }),
            )
            .with_timeout(Duration::from_secs(1))
            .with_min_instances(1),
        )
        .await
        .unwrap();
    let timed_out = handle.invoke_with(true, InvokeOptions::default()).await;
    assert!(matches!(timed_out.result, Err(InvokeError::Timeout(_))));
    assert!(timed_out.report.unwrap().provisioned);
    let next = handle.invoke_with(false, InvokeOptions::default()).await;
    next.result.unwrap();
    assert!(
        next.report.unwrap().provisioned,
        "the replacement is provisioned"
    );
    assert_eq!(handle.metrics().instances, 1);
}

#[tokio::test(start_paused = true)]
async fn provisioned_capacity_and_duration_are_priced_as_lambda_prices_them() {
    let prices = Prices::default();
    assert_eq!(prices.per_gb_second, 0.000_016_666_7);
    assert_eq!(
        prices.provisioned_concurrency_per_gb_second,
        0.000_004_166_7
    );
    assert_eq!(prices.provisioned_duration_per_gb_second, 0.000_009_722_2);
    let rt = runtime(10);
    let handle = rt
        .register(
            Function::new(
                "priced",
                handler_fn(|secs: u64, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    Ok::<_, FunctionError>(())
                }),
            )
            .with_memory_mb(1024)
            .with_timeout(Duration::from_secs(10))
            .with_min_instances(2),
        )
        .await
        .unwrap();
    // One second on a provisioned instance, then nine seconds idle: 2 instances × 1 GB × 10 s
    // of capacity.
    handle.invoke(1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let usage = handle.usage();
    assert_eq!(usage.provisioned_requests, 1);
    assert!(
        (usage.provisioned_gb_seconds - 1.0).abs() < 1e-9,
        "{usage:?}"
    );
    assert!(
        (usage.provisioned_capacity_gb_seconds - 20.0).abs() < 1e-9,
        "{usage:?}"
    );
    let expected = 20.0 * 0.000_004_166_7 + 1.0 * 0.000_009_722_2 + 0.20 / 1e6;
    assert!(
        (usage.cost - expected).abs() < 1e-12,
        "{} != {expected}",
        usage.cost
    );

    // Capacity stops being charged once the function is gone.
    rt.shutdown(Duration::from_secs(1)).await;
    let at_shutdown = handle.usage().provisioned_capacity_gb_seconds;
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(handle.usage().provisioned_capacity_gb_seconds, at_shutdown);
}

#[tokio::test(start_paused = true)]
async fn only_on_demand_inits_are_billed() {
    let rt = runtime(10);
    let hold = Hold::new();
    let inside = hold.clone();
    let handle = rt
        .register(
            Function::with_factory(
                "slow-init",
                nimbus_core::init_fn(move |_: nimbus_core::InitContext| {
                    let inside = inside.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok::<_, FunctionError>(handler_fn(move |wait: bool, _ctx: Context| {
                            let inside = inside.clone();
                            async move {
                                if wait {
                                    inside.inside().await;
                                }
                                Ok::<_, FunctionError>(())
                            }
                        }))
                    }
                }),
            )
            .with_min_instances(1),
        )
        .await
        .unwrap();
    // Registration initialised the provisioned instance: not billed.
    assert_eq!(handle.usage().init_duration, Duration::ZERO);
    // While it is busy, a second invocation needs an on-demand cold start: billed.
    let h = handle.clone();
    let busy = tokio::spawn(async move { h.invoke_with(true, InvokeOptions::default()).await });
    hold.until_inside(1).await;
    let cold = handle.invoke_with(false, InvokeOptions::default()).await;
    hold.let_go(1);
    let warm = busy.await.unwrap().report.unwrap();
    let cold = cold.report.unwrap();
    assert!(warm.provisioned && !cold.provisioned, "{warm:?} {cold:?}");
    assert_eq!(cold.init_duration, Some(Duration::from_millis(300)));
    assert_eq!(handle.usage().init_duration, Duration::from_millis(300));
}
