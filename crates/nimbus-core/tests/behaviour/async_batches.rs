//! What an async worker takes from the queue in one go, and what it gives back: events it holds
//! beyond a batch's worth (after taking a whole chunk of a backlog) go back to the queue, where
//! another worker can take them, after a long handler or after a while, so that no more of
//! them wait behind the worker than a batch.
//!
//! Real time, not the paused clock: a handler is long by the time it holds its thread, which
//! the paused clock does not see. A worker takes a whole chunk only after a batch of handlers
//! in a row that were not long, which a busy machine can deny a run: such a run is repeated.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nimbus_core::{handler_fn, Context, Function, FunctionError, FunctionHandle};

use crate::support::runtime;

/// A worker's batch (the runtime's `WORKER_BATCH`).
const BATCH: usize = 32;
const EVENTS: u32 = 300;
/// Runs of the scenario before a test gives up on the machine letting one take a whole chunk.
const TRIES: usize = 20;
/// How long a worker keeps what it holds beyond a batch (the runtime's `HOLD_FOR`).
const HOLD: Duration = Duration::from_micros(1_600);

/// Holds the thread for `micros`, as work on the CPU does.
fn spin(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// What each handler saw: when it started, and the events its worker held (neither queued,
/// nor finished, nor this one).
#[derive(Clone, Copy)]
struct Seen {
    started: Instant,
    held: usize,
}

/// Queues `EVENTS` events to a function of one instance before its worker first runs; each
/// handler looks at what its worker holds, then spins `spin_for(event, held)` µs. Checks that
/// every event ran once, in order, and returns what each handler saw.
async fn run(spin_for: impl Fn(u32, usize) -> u64 + Send + Sync + 'static) -> Vec<Seen> {
    let rt = runtime(10);
    let function: Arc<OnceLock<FunctionHandle<u32, u32>>> = Arc::default();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(EVENTS as usize)));
    let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let handle = rt
        .register(
            Function::new(
                "batches",
                handler_fn({
                    let (function, seen) = (Arc::clone(&function), Arc::clone(&seen));
                    let order = Arc::clone(&order);
                    move |event: u32, _ctx: Context| {
                        let started = Instant::now();
                        let depth = function.get().map_or(0, |h| h.async_metrics().queue_depth);
                        let held = (EVENTS - event - 1) as usize - depth;
                        seen.lock().push(Seen { started, held });
                        order.lock().push(event);
                        spin(spin_for(event, held));
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
    let seen = seen.lock().clone();
    seen
}

#[tokio::test]
async fn events_beyond_a_batch_are_handed_back_after_a_long_handler() {
    for _ in 0..TRIES {
        // The first handler that sees more than a batch held is long: well past the 50 µs
        // after which a handler is.
        let long = Arc::new(OnceLock::new());
        let seen = run({
            let long = Arc::clone(&long);
            move |event, held| {
                if held > BATCH && long.set(event).is_ok() {
                    500
                } else {
                    0
                }
            }
        })
        .await;
        let Some(&long) = long.get() else {
            continue; // no whole chunk was taken this time
        };
        let after = seen[long as usize + 1].held;
        assert!(
            after <= BATCH,
            "after the long handler (event {long}) the worker still held {after} events"
        );
        return;
    }
    panic!("no run out of {TRIES} took a whole chunk");
}

#[tokio::test]
async fn events_beyond_a_batch_are_handed_back_after_a_while() {
    'tries: for _ in 0..TRIES {
        // Short handlers, 10 µs each and more with the worker's own work: a whole chunk (240
        // or 256 events) takes longer than the worker keeps what it holds beyond a batch
        // (1.6 ms).
        let seen = run(|_, _| 10).await;
        let Some(took) = seen.iter().position(|s| s.held > BATCH) else {
            continue; // no whole chunk was taken this time
        };
        // Held goes down by one an event until the hand-back drops it to a batch.
        let Some(back) = (took + 1..seen.len()).find(|&e| seen[e].held <= BATCH) else {
            panic!("the worker never held a batch or less after event {took}");
        };
        // A handler that ran long (started 50 µs or more after the one before) would have
        // handed the events back by itself: that run does not show the time limit.
        for event in took + 1..=back {
            if seen[event].started - seen[event - 1].started >= Duration::from_micros(50) {
                continue 'tries;
            }
        }
        let held_then = seen[back - 1].held;
        if held_then <= BATCH + 1 && seen[back].started - seen[took].started < HOLD {
            continue; // the chunk (taken late, so shorter) ran down before the time was up
        }
        assert!(
            held_then > BATCH + 1,
            "the worker ran its chunk down to a batch (event {back}) without handing any back"
        );
        return;
    }
    panic!("no run out of {TRIES} took a whole chunk and kept its handlers short");
}
