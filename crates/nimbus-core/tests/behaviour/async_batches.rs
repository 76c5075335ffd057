//! What an async worker takes from the queue in one go, and what it gives back when a handler
//! runs long: events beyond a batch's worth wait in the queue, where another worker can take
//! them, not behind the long handler.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nimbus_core::{handler_fn, Context, Function, FunctionError, FunctionHandle};

use crate::support::runtime;

/// A worker's batch after a long handler (the runtime's `WORKER_BATCH`).
const BATCH: usize = 32;

/// Real time, not the paused clock: a handler is long by the time it holds its thread, which
/// the paused clock does not see.
#[tokio::test]
async fn events_beyond_a_batch_are_handed_back_after_a_long_handler() {
    const EVENTS: u32 = 300;
    // The first take from a queue of 300 is its small first chunk (16 events); event 16 is the
    // first of the next take, a whole chunk of 256.
    const LONG: u32 = 16;
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
                        if event == LONG {
                            // Work that holds the thread well past the 50 µs that make a
                            // handler long.
                            let until = Instant::now() + Duration::from_micros(500);
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                        }
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

    let depths = depths.lock().clone();
    // Neither queued nor finished when an event's handler ran: held by the worker.
    let held = |event: u32| EVENTS as usize - (event as usize + 1) - depths[event as usize];
    assert!(
        held(LONG) > BATCH,
        "the test needs a take of more than a batch before event {LONG}: held {}",
        held(LONG)
    );
    assert!(
        held(LONG + 1) <= BATCH,
        "after the long handler the worker still held {} events",
        held(LONG + 1)
    );
    // Handed back in order: every event ran once, in the order queued.
    assert_eq!(*order.lock(), (0..EVENTS).collect::<Vec<_>>());
    rt.shutdown(Duration::from_secs(1)).await;
}
