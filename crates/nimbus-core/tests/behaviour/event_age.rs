//! Async events age while they wait: one that passes `max_event_age` after a retry, while the
//! function is busy, leaves for the on-failure destination at that moment, as do events accepted
//! while the age timer already waits for an earlier one.

use std::time::Duration;

use nimbus_core::{
    handler_fn, Backoff, Condition, Context, Function, FunctionError, InvocationRecord,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::{busy, occupy, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn a_retried_event_expires_while_the_function_is_busy() {
    let rt = runtime(10);
    let hold = Hold::new();
    let (ok_tx, mut ok_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    let handle = rt
        .register(
            Function::new(
                "busy",
                handler_fn({
                    let hold = hold.clone();
                    move |event: u32, _ctx: Context| {
                        let hold = hold.clone();
                        async move {
                            match event {
                                0 => hold.inside().await,
                                1 => return Err(FunctionError::msg("not yet")),
                                _ => {}
                            }
                            Ok::<_, FunctionError>(event)
                        }
                    }
                }),
            )
            .with_max_concurrency(1)
            .with_timeout(Duration::from_secs(600))
            .with_max_event_age(Duration::from_secs(60))
            .with_retry_backoff(Backoff::fixed(Duration::from_secs(45)).unwrap())
            .with_on_success(ok_tx)
            .with_on_failure(fail_tx),
        )
        .await
        .unwrap();
    // An event that succeeds at once leaves the age timer waiting for its deadline; the timer
    // finds nothing then and stops, and the retry below starts it again.
    handle.invoke_async(2).unwrap();
    assert_eq!(ok_rx.recv().await.unwrap().request, 2);
    tokio::time::sleep(Duration::from_secs(10)).await;

    let accepted = Instant::now();
    handle.invoke_async(1).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        handle.async_metrics().waiting_retry,
        1,
        "its retry is due in 45 s"
    );
    let blocker = occupy(&handle, &hold).await;

    // The retry comes due at 45 s with no capacity; the event leaves at 60 s.
    let record = fail_rx.recv().await.unwrap();
    let waited = accepted.elapsed();
    assert!(
        waited > Duration::from_secs(60) && waited < Duration::from_secs(61),
        "left at its maximum age: {waited:?}"
    );
    assert!(!blocker.is_finished(), "the function is still busy");
    assert_eq!(record.condition, Condition::EventAgeExceeded);
    assert_eq!(record.approximate_invoke_count, 1);
    assert_eq!(
        record.error.map(|e| e.message),
        Some("not yet".to_owned()),
        "the last attempt's error"
    );
    hold.let_go(1);
    assert_eq!(blocker.await.unwrap().unwrap(), 0);
    assert_eq!(handle.metrics().invocations, 3, "the retry never ran");
}

/// An event accepted while the age timer already waits for an earlier one does not move the
/// timer (only a load on that path): the timer's scan at the first deadline must find the
/// later event's own deadline and wake again for it.
#[tokio::test(start_paused = true)]
async fn events_accepted_apart_while_busy_each_leave_at_their_own_age() {
    let rt = runtime(10);
    let hold = Hold::new();
    let (fail_tx, mut fail_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    let handle = rt
        .register(busy(&hold).with_on_failure(fail_tx))
        .await
        .unwrap();
    let blocker = occupy(&handle, &hold).await;

    let mut accepted = Vec::new();
    for (event, gap) in [(1, 10), (2, 25), (3, 0)] {
        accepted.push((event, Instant::now()));
        handle.invoke_async(event).unwrap();
        tokio::time::sleep(Duration::from_secs(gap)).await;
    }
    for (event, at) in accepted {
        let record = fail_rx.recv().await.unwrap();
        let waited = at.elapsed();
        assert_eq!(record.request, event, "they leave in the order they came");
        assert!(
            waited > Duration::from_secs(60) && waited < Duration::from_secs(61),
            "event {event} left at its maximum age: {waited:?}"
        );
        assert_eq!(record.condition, Condition::EventAgeExceeded);
    }
    assert!(!blocker.is_finished(), "the function is still busy");
    hold.let_go(1);
    blocker.await.unwrap().unwrap();
    assert_eq!(handle.async_metrics().pending, 0);
}
