//! Failures are outcomes: timeouts, panics and init failures, each isolated.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, init_fn, Context, Function, FunctionError, Handler, InitContext, InitFailure,
    InstanceFactory, InvokeError, RegisterError,
};

use crate::support::{numbered, runtime, Hold};

/// A factory whose init always fails with this error type and message.
struct FailingInit(&'static str, &'static str);

#[nimbus_core::async_trait]
impl InstanceFactory<u8, u8> for FailingInit {
    async fn init(&self, _ctx: InitContext) -> Result<Box<dyn Handler<u8, u8>>, FunctionError> {
        Err(FunctionError::new(self.0, self.1))
    }
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_the_token_and_discards_the_instance() {
    let rt = runtime(10);
    let token_seen = Arc::new(tokio::sync::Notify::new());
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let handle = rt
        .register(
            Function::new(
                "slow",
                handler_fn({
                    let token_seen = token_seen.clone();
                    let saw_cancel = saw_cancel.clone();
                    move |secs: u64, ctx: Context| {
                        let token_seen = token_seen.clone();
                        let saw_cancel = saw_cancel.clone();
                        async move {
                            // Background work the handler started watches the token.
                            let token = ctx.cancellation().clone();
                            tokio::spawn(async move {
                                token.cancelled().await;
                                saw_cancel.store(true, Ordering::SeqCst);
                                token_seen.notify_one();
                            });
                            tokio::time::sleep(Duration::from_secs(secs)).await;
                            Ok::<_, FunctionError>(secs)
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    match handle.invoke(10).await {
        Err(InvokeError::Timeout(after)) => assert_eq!(after, Duration::from_secs(2)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "cut at the deadline"
    );
    token_seen.notified().await;
    assert!(saw_cancel.load(Ordering::SeqCst));

    let m = handle.metrics();
    assert_eq!(
        (m.timeouts, m.instances),
        (1, 0),
        "timed-out instance discarded"
    );
    assert_eq!(handle.invoke(1).await.unwrap(), 1);
    assert_eq!(
        handle.metrics().cold_starts,
        2,
        "a fresh instance replaced it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_caught_and_isolated() {
    let rt = runtime(10);
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    let steady = rt
        .register(numbered("steady", hold.clone(), inits.clone()))
        .await
        .unwrap();
    let fragile = rt
        .register(Function::new(
            "fragile",
            handler_fn(|boom: bool, _ctx: Context| async move {
                tokio::task::yield_now().await;
                if boom {
                    panic!("boom at {}", 42);
                }
                Ok::<_, FunctionError>("fine")
            }),
        ))
        .await
        .unwrap();

    // An invocation of another function is in flight while the panic happens.
    let in_flight = tokio::spawn({
        let steady = steady.clone();
        async move { steady.invoke(true).await }
    });
    hold.until_inside(1).await;
    let parallel_ok = tokio::spawn({
        let fragile = fragile.clone();
        async move { fragile.invoke(false).await }
    });

    match fragile.invoke(true).await {
        Err(InvokeError::Panic(message)) => assert_eq!(message, "boom at 42"),
        other => panic!("expected a panic outcome, got {other:?}"),
    }
    assert_eq!(parallel_ok.await.unwrap().unwrap(), "fine");
    hold.let_go(1);
    assert_eq!(in_flight.await.unwrap().unwrap(), 1);

    let m = fragile.metrics();
    assert_eq!((m.panics, m.successes), (1, 1));
    assert_eq!(
        m.instances, 1,
        "the panicked instance was discarded, the other kept"
    );
    assert_eq!(fragile.invoke(false).await.unwrap(), "fine");
    assert_eq!(steady.metrics().successes, 1);
}

#[tokio::test(start_paused = true)]
async fn init_failures_are_their_own_outcome() {
    let rt = runtime(10);
    let failing = rt
        .register(Function::with_factory(
            "no-db",
            FailingInit("ConnectError", "database unreachable"),
        ))
        .await
        .unwrap();
    match failing.invoke(1).await {
        Err(InvokeError::Init(InitFailure::Error {
            error_type,
            message,
        })) => {
            assert_eq!(error_type, "ConnectError");
            assert_eq!(message, "database unreachable");
        }
        other => panic!("expected an init error, got {other:?}"),
    }

    let panicking = rt
        .register(Function::with_factory(
            "init-panic",
            init_fn(|_init| async move {
                if true {
                    panic!("bad config");
                }
                Ok::<_, FunctionError>(handler_fn(|x: u8, _ctx: Context| async move {
                    Ok::<_, FunctionError>(x)
                }))
            }),
        ))
        .await
        .unwrap();
    assert!(matches!(
        panicking.invoke(1).await,
        Err(InvokeError::Init(InitFailure::Panic(m))) if m == "bad config"
    ));

    let slow = rt
        .register(
            Function::with_factory(
                "init-slow",
                init_fn(|_init| async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, FunctionError>(handler_fn(|x: u8, _ctx: Context| async move {
                        Ok::<_, FunctionError>(x)
                    }))
                }),
            )
            .with_config(
                nimbus_core::FunctionConfig::default().with_init_timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(matches!(
        slow.invoke(1).await,
        Err(InvokeError::Init(InitFailure::Timeout(d))) if d == Duration::from_secs(5)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    for f in [&failing, &slow] {
        let m = f.metrics();
        assert_eq!((m.init_failures, m.instances, m.concurrency), (1, 0, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn provisioning_failure_rejects_the_registration_and_frees_the_reservation() {
    let rt = runtime(10);
    let result = rt
        .register(
            Function::with_factory("provisioned", FailingInit("Error", "no"))
                .with_max_concurrency(5)
                .with_min_instances(2),
        )
        .await;
    assert!(
        matches!(result, Err(RegisterError::Provisioning { ref name, .. }) if name == "provisioned")
    );
    assert_eq!(rt.concurrency().reserved, 0);
    assert!(rt.function_names().is_empty());
}
