//! `InvokeError::error_type` gives Lambda's names where Lambda has one.

use std::time::Duration;

use nimbus_core::{
    handler_fn, init_fn, Context, Function, FunctionConfig, FunctionError, Handler, InitContext,
    InstanceFactory, InvokeError, OutcomeKind,
};

use crate::support::runtime;

/// A function whose event says how to fail: 0 returns an error, 1 hangs past the timeout,
/// 2 panics.
fn failing(name: &str) -> Function<u8, u8> {
    Function::new(
        name,
        handler_fn(|how: u8, _ctx: Context| async move {
            match how {
                0 => Err(FunctionError::new("OrderRejected", "no stock")),
                1 => std::future::pending().await,
                _ => panic!("boom"),
            }
        }),
    )
    .with_timeout(Duration::from_secs(1))
}

/// A factory whose init fails with a `ConnectError`.
struct FailingInit;

#[nimbus_core::async_trait]
impl InstanceFactory<u8, u8> for FailingInit {
    async fn init(&self, _ctx: InitContext) -> Result<Box<dyn Handler<u8, u8>>, FunctionError> {
        Err(FunctionError::new("ConnectError", "db down"))
    }
}

#[tokio::test(start_paused = true)]
async fn error_types_are_lambdas() {
    let rt = runtime(10);
    let f = rt
        .register(failing("f").with_max_concurrency(1))
        .await
        .unwrap();
    let types = [
        (0, "OrderRejected", OutcomeKind::Error),
        (1, "Sandbox.Timedout", OutcomeKind::Timeout),
        (2, "Runtime.ExitError", OutcomeKind::Panic),
    ];
    for (how, error_type, kind) in types {
        let error = f.invoke(how).await.unwrap_err();
        assert_eq!(
            (error.error_type(), error.kind()),
            (error_type, kind),
            "{error:?}"
        );
    }

    let closed = rt
        .register(failing("closed").with_max_concurrency(0))
        .await
        .unwrap();
    let throttled = closed.invoke(0).await.unwrap_err();
    assert_eq!(throttled.error_type(), "TooManyRequestsException");

    let init_error = rt
        .register(Function::with_factory("init-error", FailingInit))
        .await
        .unwrap();
    assert_eq!(
        init_error.invoke(0).await.unwrap_err().error_type(),
        "ConnectError"
    );

    let init_timeout = rt
        .register(
            Function::<u8, u8>::with_factory(
                "init-timeout",
                init_fn(|_: InitContext| async move {
                    std::future::pending::<()>().await;
                    Ok::<_, FunctionError>(handler_fn(|n: u8, _ctx: Context| async move {
                        Ok::<_, FunctionError>(n)
                    }))
                }),
            )
            .with_config(FunctionConfig::default().with_init_timeout(Duration::from_secs(1))),
        )
        .await
        .unwrap();
    let error = init_timeout.invoke(0).await.unwrap_err();
    assert_eq!(
        (error.error_type(), error.kind()),
        ("Runtime.InitError", OutcomeKind::InitFailure)
    );

    rt.unregister("f", Duration::from_secs(1))
        .await
        .expect("registered");
    let gone = f.invoke(0).await.unwrap_err();
    assert!(matches!(gone, InvokeError::Unregistered(_)));
    assert_eq!(gone.error_type(), "ResourceNotFoundException");
}
