//! What an async worker takes from the queue in one go, and what it gives back: events it holds
//! beyond a batch's worth go back to the queue, where another worker can take them, after a
//! long handler or after a while, so that no more of them wait behind the worker than a batch.
//!
//! Real time, not the paused clock: a handler is long by the time it holds its thread, which
//! the paused clock does not see.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nimbus_core::{handler_fn, Context, Function, FunctionError, FunctionHandle};

use crate::support::runtime;

/// A worker's batch (the runtime's `WORKER_BATCH`).
const BATCH: usize = 32;
const EVENTS: u32 = 300;
/// The first take from a queue of 300 is a batch's worth; event 32 is the first of the next
/// take, the rest of a full chunk (240 events).
const SECOND_TAKE: u32 = 32;

/// Holds the thread for `micros`, as work on the CPU does.
fn spin(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Queues `EVENTS` events to a function of one instance whose handler spins `spin_for(event)`
/// µs, before its worker first runs; returns the events each handler saw held by the worker
/// (neither queued nor finished), after checking that every event ran once, in order.
async fn held_per_event(spin_for: fn(u32) -> u64) -> Vec<usize> {
    let rt = runtime(10);
    let function: Arc<OnceLock<FunctionHandle<u32, u32>>> = Arc::default();
    let depths = Arc::new(parking_lot::Mutex::new(vec![0usize; EVENTS as usize]));
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            Function::new(
                "batches",
                handler_fn({
                    let (function, depths) = (Arc::clone(&function), Arc::clone(&depths));
                    let order = Arc::clone(&order);
                    move |event: u32, _ctx: Context| {
                        spin(spin_for(event));
                        order.lock().push(event);
                        if let Some(handle) = function.get() {
                            depths.lock()[event as usize] = handle.async_metrics().queue_depth;
                        }
                        async move { Ok::<_, FunctionError>(event) }
                    }
                }),
            )
            .with_max_concurrency(1),
        )
        .await
        .unwrap();
    let _ = function.set(handle.clone());
    // Queued before the worker first runs (this test's runtime has one thread).
    for event in 0..EVENTS {
        handle.invoke_async(event).unwrap();
    }
    handle.async_idle().await;
    assert_eq!(handle.async_metrics().succeeded, u64::from(EVENTS));
    // Handed back in order: every event ran once, in the order queued.
    assert_eq!(*order.lock(), (0..EVENTS).collect::<Vec<_>>());
    rt.shutdown(Duration::from_secs(1)).await;
    let depths = depths.lock().clone();
    (0..EVENTS as usize)
        .map(|event| EVENTS as usize - (event + 1) - depths[event])
        .collect()
}

#[tokio::test]
async fn events_beyond_a_batch_are_handed_back_after_a_long_handler() {
    // Long: well past the 50 µs after which a handler is.
    let held = held_per_event(|event| if event == SECOND_TAKE { 500 } else { 0 }).await;
    let long = SECOND_TAKE as usize;
    assert!(
        held[long] > BATCH,
        "the test needs a take of more than a batch at event {long}: held {}",
        held[long]
    );
    assert!(
        held[long + 1] <= BATCH,
        "after the long handler the worker still held {} events",
        held[long + 1]
    );
}

#[tokio::test]
async fn events_beyond_a_batch_are_handed_back_after_a_while() {
    // Short handlers, 20 µs each: the whole chunk would take 4.8 ms, three times as long as the
    // worker keeps what it holds beyond a batch (1.6 ms).
    let held = held_per_event(|_| 20).await;
    let take = SECOND_TAKE as usize;
    assert!(
        held[take] > BATCH,
        "the test needs a take of more than a batch at event {take}: held {}",
        held[take]
    );
    // Without a hand-back the worker would hold more than a batch until event 239.
    let handed_back = (take..200).find(|&event| held[event] <= BATCH);
    assert!(
        handed_back.is_some(),
        "the worker held more than a batch through events {take}..200: {:?}",
        &held[take..200]
    );
}
