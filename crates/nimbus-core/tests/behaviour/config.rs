//! Invalid configurations are rejected when built, naming the field and the allowed range.

use std::time::Duration;

use nimbus_core::{
    handler_fn, Context, Function, FunctionConfig, FunctionError, RegisterError, Runtime,
    RuntimeConfig,
};

fn function(name: &str) -> Function<u8, u8> {
    Function::new(
        name,
        handler_fn(|x: u8, _ctx: Context| async move { Ok::<_, FunctionError>(x) }),
    )
}

#[test]
fn function_config_table() {
    let d = FunctionConfig::default();
    let cases: Vec<(FunctionConfig, &str, &str)> = vec![
        (
            d.clone().with_timeout(Duration::ZERO),
            "timeout",
            "1ms..=900s",
        ),
        (
            d.clone().with_timeout(Duration::from_secs(901)),
            "timeout",
            "1ms..=900s",
        ),
        (d.clone().with_memory_mb(127), "memory_mb", "128..=10240"),
        (d.clone().with_memory_mb(10_241), "memory_mb", "128..=10240"),
        (
            d.clone().with_min_instances(1_000_001),
            "min_instances",
            "0..=1000000 (and at most the runtime's concurrency_limit)",
        ),
        (
            d.clone().with_max_concurrency(2).with_min_instances(3),
            "min_instances",
            "0..=max_concurrency (2)",
        ),
        (
            d.clone().with_idle_timeout(Duration::ZERO),
            "idle_timeout",
            "1ms..=24h",
        ),
        (
            d.clone().with_scale_rate(0, Duration::from_secs(1)),
            "scale_rate.instances",
            "1..=100000",
        ),
        (
            d.clone().with_scale_rate(10, Duration::ZERO),
            "scale_rate.per",
            "1ms..=1h",
        ),
        (
            d.clone().with_init_timeout(Duration::from_secs(11)),
            "init_timeout",
            "1ms..=10s",
        ),
        (
            d.clone().with_max_kept_failures(0),
            "max_kept_failures",
            "1..=10000000",
        ),
        (
            d.clone().with_max_kept_failures(10_000_001),
            "max_kept_failures",
            "1..=10000000",
        ),
    ];
    for (config, field, allowed) in cases {
        let err = config.validate().expect_err(field);
        assert_eq!(err.field, field);
        assert_eq!(err.allowed, allowed);
        let message = err.to_string();
        assert!(
            message.contains(field) && message.contains(allowed),
            "{message}"
        );
    }
    assert!(d.validate().is_ok());
    let edges = [
        d.clone().with_timeout(Duration::from_millis(1)),
        d.clone().with_timeout(Duration::from_secs(900)),
        d.clone().with_memory_mb(128),
        d.clone().with_memory_mb(10_240),
        d.clone().with_max_concurrency(0),
        d.clone().with_max_kept_failures(1),
        d.clone().with_max_kept_failures(10_000_000),
    ];
    for config in edges {
        assert!(config.validate().is_ok(), "{config:?}");
    }
}

#[test]
fn runtime_config_table() {
    let err = Runtime::new(RuntimeConfig::default().with_concurrency_limit(0)).unwrap_err();
    assert_eq!(err.field, "concurrency_limit");
    let err = Runtime::new(
        RuntimeConfig::default()
            .with_concurrency_limit(10)
            .with_min_unreserved(11),
    )
    .unwrap_err();
    assert_eq!(
        (err.field, err.allowed.as_str()),
        ("min_unreserved", "0..=concurrency_limit (10)")
    );
    let err =
        Runtime::new(RuntimeConfig::default().with_prices(nimbus_core::Prices::new(f64::NAN, 0.2)))
            .unwrap_err();
    assert_eq!(err.field, "prices.per_gb_second");
}

#[tokio::test]
async fn registration_rejects_bad_names_duplicates_and_configs() {
    let rt = Runtime::default();
    for name in ["", "has space", "slash/name", &"x".repeat(65)] {
        match rt.register(function(name)).await {
            Err(RegisterError::Config(e)) => assert_eq!(e.field, "name"),
            other => panic!("{name:?}: expected a name error, got {other:?}"),
        }
    }
    rt.register(function("ok_name-1")).await.unwrap();
    assert!(matches!(
        rt.register(function("ok_name-1")).await,
        Err(RegisterError::Duplicate(n)) if n == "ok_name-1"
    ));
    match rt.register(function("big").with_memory_mb(20_000)).await {
        Err(RegisterError::Config(e)) => {
            assert_eq!(
                e.to_string(),
                "invalid function config: memory_mb = 20000 is outside 128..=10240"
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // The default runtime keeps 100 of 1,000 unreserved.
    match rt.register(function("hog").with_max_concurrency(901)).await {
        Err(RegisterError::Config(e)) => assert_eq!(e.field, "max_concurrency"),
        other => panic!("expected a reservation error, got {other:?}"),
    }
    rt.register(function("fits").with_max_concurrency(900))
        .await
        .unwrap();
}

/// Lambda's timeouts are whole seconds from 1 s; nimbus deliberately takes sub-second ones
/// (in-process handlers and tests need them) and enforces them to the millisecond.
#[tokio::test(start_paused = true)]
async fn sub_second_timeouts_are_accepted_and_enforced() {
    let rt = Runtime::default();
    let handle = rt
        .register(
            Function::new(
                "quick",
                handler_fn(|ms: u64, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok::<_, FunctionError>(ms)
                }),
            )
            .with_timeout(Duration::from_millis(250)),
        )
        .await
        .unwrap();
    assert_eq!(handle.invoke(249).await.unwrap(), 249);
    let ran = handle
        .invoke_with(251, nimbus_core::InvokeOptions::default())
        .await;
    assert!(matches!(
        ran.result,
        Err(nimbus_core::InvokeError::Timeout(t)) if t == Duration::from_millis(250)
    ));
    assert_eq!(ran.report.unwrap().duration, Duration::from_millis(250));
}
