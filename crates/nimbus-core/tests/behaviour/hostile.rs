//! Values that validation lets through must not break at run time: a retry backoff that cannot
//! be slept, provisioned concurrency beyond any limit, a registration cut off by a timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, init_fn, Backoff, Context, Function, FunctionError, InitContext, RegisterError,
};

use crate::support::runtime;

fn failing(name: &str) -> Function<u32, u32> {
    Function::new(
        name,
        handler_fn(|_event: u32, _ctx: Context| async move {
            Err::<u32, _>(FunctionError::msg("always"))
        }),
    )
}

#[test]
fn an_unsleepable_fixed_backoff_is_rejected() {
    // Today's `Backoff::fixed(Duration::MAX)` as a retry backoff panicked the async worker and
    // wedged the function; it is now an error naming the field and its range.
    let error = Backoff::fixed(Duration::MAX).unwrap_err();
    assert_eq!((error.field, error.allowed.as_str()), ("delay", "1ms..=1h"));
    assert_eq!(Backoff::fixed(Duration::ZERO).unwrap_err().field, "delay");
}

#[tokio::test(start_paused = true)]
async fn a_long_fixed_retry_backoff_still_runs_and_expires_the_event() {
    let rt = runtime(10);
    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = rt
        .register(
            failing("hour-backoff")
                .with_retry_backoff(Backoff::fixed(Duration::from_secs(3_600)).unwrap())
                .with_max_event_age(Duration::from_secs(60))
                .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    handle.invoke_async(1).unwrap();
    let record: nimbus_core::InvocationRecord<u32, u32> = fail_rx.recv().await.unwrap();
    assert_eq!(record.condition, nimbus_core::Condition::EventAgeExceeded);
}

#[tokio::test(start_paused = true)]
async fn unbounded_provisioned_concurrency_is_rejected() {
    let rt = runtime(1_000);
    let registered = rt
        .register(failing("huge-min").with_min_instances(u32::MAX))
        .await;
    match registered {
        Err(RegisterError::Config(error)) => assert_eq!(error.field, "min_instances"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // Within the absolute bound, but beyond this runtime's limit.
    let registered = rt
        .register(failing("big-min").with_min_instances(5_000))
        .await;
    match registered {
        Err(RegisterError::Config(error)) => {
            assert_eq!(error.field, "min_instances");
            assert!(
                error.allowed.starts_with("0..=concurrency_limit (1000)"),
                "{}",
                error.allowed
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Provisioning many instances yields, so that a timeout around `register` can fire.
#[tokio::test]
async fn provisioning_yields_so_a_timeout_can_fire() {
    let rt = runtime(1_000_000);
    let inits = Arc::new(AtomicUsize::new(0));
    let function = {
        let inits = inits.clone();
        Function::with_factory(
            "many",
            init_fn(move |_init: InitContext| {
                inits.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok::<_, FunctionError>(handler_fn(|event: u32, _ctx: Context| async move {
                        Ok::<_, FunctionError>(event)
                    }))
                }
            }),
        )
        .with_min_instances(200_000)
    };
    let registered = tokio::time::timeout(Duration::from_millis(20), rt.register(function)).await;
    assert!(registered.is_err(), "the timeout fired");
    assert!(inits.load(Ordering::SeqCst) < 200_000);
    assert_eq!(rt.function_names(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_registration_cut_off_by_a_timeout_returns_its_reservation() {
    let rt = runtime(1_000);
    let function = Function::with_factory(
        "slow-provision",
        init_fn(|_init: InitContext| async move {
            std::future::pending::<()>().await;
            Ok::<_, FunctionError>(handler_fn(|event: u32, _ctx: Context| async move {
                Ok::<_, FunctionError>(event)
            }))
        }),
    )
    .with_max_concurrency(500)
    .with_min_instances(10);
    let registered = tokio::time::timeout(Duration::from_secs(1), rt.register(function)).await;
    assert!(registered.is_err(), "the timeout fired");
    assert_eq!(rt.concurrency().reserved, 0);
}
