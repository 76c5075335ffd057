//! Sync invoke: outputs, JSON entry point, lookups, usage reports, warm reuse.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, BillingGranularity, CallError, Context, Function, FunctionError, InvokeError,
    InvokeOptions, LookupError, Principal, RequestId,
};
use serde_json::json;

use crate::support::{numbered, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn typed_and_json_invocations_return_outputs() {
    let rt = runtime(10);
    let handle = rt
        .register(Function::new(
            "add",
            handler_fn(
                |(a, b): (i32, i32), _ctx: Context| async move { Ok::<_, FunctionError>(a + b) },
            ),
        ))
        .await
        .unwrap();
    assert_eq!(handle.invoke((2, 3)).await.unwrap(), 5);
    assert_eq!(
        rt.invoke::<(i32, i32), i32>("add", (4, 5)).await.unwrap(),
        9
    );
    assert_eq!(
        rt.invoke_json("add", json!([1, 1])).await.unwrap(),
        json!(2)
    );

    let bad = rt.invoke_json("add", json!({"not": "a pair"})).await;
    match bad {
        Err(CallError::Invoke(InvokeError::Payload(message))) => {
            assert!(message.contains("add"), "{message}")
        }
        other => panic!("expected a payload error, got {other:?}"),
    }
    assert!(matches!(
        rt.invoke_json("missing", json!(null)).await,
        Err(CallError::Lookup(LookupError::NotFound(name))) if name == "missing"
    ));
    assert!(matches!(
        rt.invoke::<String, i32>("add", "x".into()).await,
        Err(CallError::Lookup(LookupError::WrongType(_)))
    ));
    assert_eq!(handle.metrics().successes, 3);
}

#[tokio::test(start_paused = true)]
async fn native_functions_refuse_json() {
    struct NotSerde(std::sync::mpsc::Sender<u8>);
    let rt = runtime(10);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt
        .register_native(Function::new(
            "native",
            handler_fn(|event: NotSerde, _ctx: Context| async move {
                event
                    .0
                    .send(7)
                    .map_err(|e| FunctionError::msg(e.to_string()))
            }),
        ))
        .await
        .unwrap();
    handle.invoke(NotSerde(tx)).await.unwrap();
    assert_eq!(rx.recv().unwrap(), 7);
    assert!(matches!(
        rt.invoke_json("native", json!(1)).await,
        Err(CallError::Lookup(LookupError::NotJson(_)))
    ));
}

#[tokio::test(start_paused = true)]
async fn function_errors_are_outcomes_and_keep_the_instance() {
    let rt = runtime(10);
    let inits = Arc::new(AtomicU64::new(0));
    let handle = rt
        .register(Function::with_factory(
            "parse",
            nimbus_core::init_fn({
                let inits = inits.clone();
                move |_init| {
                    inits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        Ok::<_, FunctionError>(handler_fn(|s: String, _ctx: Context| async move {
                            Ok::<_, FunctionError>(s.parse::<u32>()?)
                        }))
                    }
                }
            }),
        ))
        .await
        .unwrap();
    match handle.invoke("nope".into()).await {
        Err(InvokeError::Function(error)) => {
            assert_eq!(error.error_type(), "ParseIntError");
            assert!(error.message().contains("invalid digit"));
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    assert_eq!(handle.invoke("42".into()).await.unwrap(), 42);
    assert_eq!(
        inits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "reused after an error"
    );
    let m = handle.metrics();
    assert_eq!((m.errors, m.successes, m.cold_starts), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn warm_instances_are_reused_most_recent_first() {
    let rt = runtime(10);
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    let handle = rt
        .register(numbered("mru", hold.clone(), inits.clone()))
        .await
        .unwrap();

    // Three concurrent invocations make three instances (1, 2, 3).
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke(true).await.unwrap() })
        })
        .collect();
    hold.until_inside(3).await;
    hold.let_go(3);
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(handle.metrics().instances_idle, 3);

    // Whichever was returned last is reused first, every time.
    let first = handle.invoke(false).await.unwrap();
    let second = handle.invoke(false).await.unwrap();
    assert_eq!(
        first, second,
        "the most recently used instance serves again"
    );
    assert_eq!(handle.metrics().cold_starts, 3);
}

#[tokio::test(start_paused = true)]
async fn usage_report_bills_rounded_duration_and_init_on_cold_start() {
    let rt = runtime(10);
    let handle = rt
        .register(
            Function::with_factory(
                "metered",
                nimbus_core::init_fn(|_init| async move {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    Ok::<_, FunctionError>(handler_fn(|ms: u64, _ctx: Context| async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok::<_, FunctionError>(())
                    }))
                }),
            )
            .with_memory_mb(2048)
            .with_billing(BillingGranularity::HundredMilliseconds),
        )
        .await
        .unwrap();
    let cold = handle.invoke_with(120, InvokeOptions::default()).await;
    cold.result.unwrap();
    let report = cold.report.expect("a handler ran");
    assert_eq!(report.duration, Duration::from_millis(120));
    assert_eq!(report.billed_duration, Duration::from_millis(200));
    assert_eq!(report.init_duration, Some(Duration::from_millis(250)));
    assert_eq!(report.memory_mb, 2048);
    // (0.2 s + 0.25 s init) × 2 GB
    assert!(
        (report.gb_seconds() - 0.9).abs() < 1e-9,
        "{}",
        report.gb_seconds()
    );

    let warm = handle.invoke_with(1, InvokeOptions::default()).await;
    let warm_report = warm.report.unwrap();
    assert_eq!(warm_report.init_duration, None);
    assert_eq!(warm_report.billed_duration, Duration::from_millis(100));
    assert_ne!(warm_report.request_id, report.request_id);

    let usage = handle.usage();
    assert_eq!(usage.requests, 2);
    assert_eq!(usage.billed_duration, Duration::from_millis(300));
    assert_eq!(usage.init_duration, Duration::from_millis(250));
    assert!((usage.gb_seconds - 2.0 * 0.55).abs() < 1e-9);
    assert!(usage.cost > 0.0);
}

#[tokio::test(start_paused = true)]
async fn context_carries_invocation_facts() {
    let rt = runtime(10);
    let handle = rt
        .register_native(
            Function::new(
                "ctx",
                handler_fn(|(), ctx: Context| async move {
                    Ok::<_, FunctionError>((
                        ctx.request_id(),
                        ctx.function_name().to_owned(),
                        ctx.memory_mb(),
                        ctx.remaining_time(),
                        ctx.attempt(),
                        ctx.principal().clone(),
                        ctx.cancellation().is_cancelled(),
                    ))
                }),
            )
            .with_memory_mb(512)
            .with_timeout(Duration::from_secs(7)),
        )
        .await
        .unwrap();
    let out = handle
        .invoke_with((), InvokeOptions::default().with_attempt(3))
        .await;
    let (id, name, memory, remaining, attempt, invoker, cancelled) = out.result.unwrap();
    assert_eq!(Some(id), out.report.map(|r| r.request_id));
    assert_ne!(id, RequestId::from_u128(0));
    assert_eq!(name, "ctx");
    assert_eq!(memory, 512);
    assert_eq!(remaining, Duration::from_secs(7));
    assert_eq!(attempt, 3);
    assert_eq!(invoker, Principal::Host);
    assert!(!cancelled);
}

/// `try_invoke_with` hands an event refused before any handler saw it back, with the error
/// `invoke_with` would answer (throttled, then unregistered); one that runs answers as
/// `invoke_with` does, with its report.
#[tokio::test(start_paused = true)]
async fn try_invoke_hands_a_refused_event_back() {
    let rt = runtime(10);
    let length = |name: &str| {
        Function::new(
            name,
            handler_fn(|s: String, _ctx: Context| async move { Ok::<_, FunctionError>(s.len()) }),
        )
    };
    let closed = rt
        .register(length("closed").with_max_concurrency(0))
        .await
        .unwrap();
    let refused = closed
        .try_invoke_with("kept whole".to_owned(), InvokeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.event, "kept whole");
    assert!(
        matches!(
            refused.error,
            InvokeError::Throttled(nimbus_core::ThrottleReason::FunctionLimit)
        ),
        "{}",
        refused.error
    );

    let open = rt.register(length("open")).await.unwrap();
    let ran = open
        .try_invoke_with("four".to_owned(), InvokeOptions::default())
        .await
        .expect("a handler ran");
    assert_eq!(ran.result.unwrap(), 4);
    assert!(ran.report.is_some());

    rt.unregister("open", Duration::from_secs(1)).await.unwrap();
    let refused = open
        .try_invoke_with("after".to_owned(), InvokeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.event, "after");
    assert!(
        matches!(refused.error, InvokeError::Unregistered(_)),
        "{}",
        refused.error
    );
}
