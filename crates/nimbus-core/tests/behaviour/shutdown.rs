//! Graceful shutdown: refuse new work, tell running handlers, drain within the grace period,
//! cancel what is left.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, InvokeError, RegisterError};

use crate::support::{numbered, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn in_flight_invocations_finish_within_the_grace_period() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(numbered("drain", hold.clone(), Arc::new(AtomicU64::new(0))))
        .await
        .unwrap();
    let running: Vec<_> = (0..3)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke(true).await })
        })
        .collect();
    hold.until_inside(3).await;

    let shutdown = tokio::spawn({
        let rt = rt.clone();
        async move { rt.shutdown(Duration::from_secs(30)).await }
    });
    // Wait until shutdown has closed the gate, then check that new work is refused.
    while !rt.is_shutting_down() {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        handle.invoke(false).await,
        Err(InvokeError::ShuttingDown)
    ));
    assert!(matches!(
        rt.register(numbered("late", Hold::new(), Arc::new(AtomicU64::new(0))))
            .await,
        Err(RegisterError::ShuttingDown)
    ));

    hold.let_go(3);
    let report = shutdown.await.unwrap();
    for t in running {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        (report.in_flight, report.finished, report.cancelled),
        (3, 3, 0)
    );
    assert_eq!(report.instances_dropped, 3);
    assert_eq!(handle.metrics().instances, 0);
}

#[tokio::test(start_paused = true)]
async fn handlers_are_told_at_shutdown_and_cancelled_after_the_grace_period() {
    let rt = runtime(10);
    let handle = rt
        .register(
            Function::new(
                "stubborn",
                handler_fn(|cooperative: bool, ctx: Context| async move {
                    if cooperative {
                        // Stops as soon as it is told.
                        ctx.cancellation().cancelled().await;
                        return Ok::<_, FunctionError>("stopped early");
                    }
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok("ignored shutdown")
                }),
            )
            .with_timeout(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    let cooperative = tokio::spawn({
        let h = handle.clone();
        async move { h.invoke(true).await }
    });
    let stubborn = tokio::spawn({
        let h = handle.clone();
        async move { h.invoke(false).await }
    });
    while rt.concurrency().in_flight < 2 {
        tokio::task::yield_now().await;
    }
    let started = tokio::time::Instant::now();
    let report = rt.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "bounded by the grace period"
    );
    assert_eq!(cooperative.await.unwrap().unwrap(), "stopped early");
    assert!(matches!(
        stubborn.await.unwrap(),
        Err(InvokeError::Cancelled)
    ));
    assert_eq!(
        (report.in_flight, report.finished, report.cancelled),
        (2, 1, 1)
    );
    assert_eq!(handle.metrics().cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_an_idle_runtime_is_immediate() {
    let rt = runtime(10);
    let started = tokio::time::Instant::now();
    let report = rt.shutdown(Duration::from_secs(30)).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(report.in_flight, 0);
}
