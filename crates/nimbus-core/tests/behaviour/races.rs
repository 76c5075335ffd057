//! Races between producers, workers and shutdown, on a multi-thread runtime: each test
//! reproduced a lost or stranded event before its fix.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, Context, Function, FunctionError, FunctionHandle, Runtime, RuntimeConfig,
};

fn runtime(limit: u32) -> Runtime {
    Runtime::new(
        RuntimeConfig::default()
            .with_concurrency_limit(limit)
            .with_min_unreserved(0),
    )
    .expect("valid runtime config")
}

/// An event pushed by `invoke_async` while the only worker is leaving was stranded
/// in the ready queue with no worker (until another invoke_async or the shutdown hand-back).
///
/// Worker -> drop guard
/// `requeue_front` reads depth 0 -> producer pushes, reads `workers == 1`
/// and does not kick -> guard `fetch_sub`, remaining 0,
/// `depth (0) > remaining (0)` is false -> nobody kicks.
///
/// A worker now parks before it leaves: most pushes here land while it parks (or is being
/// woken), and every 500th waits around the end of its park, so that it lands as it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pushed_while_the_last_worker_leaves_still_runs() {
    let rt = runtime(10);
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let handle = rt
        .register(Function::new(
            "fast",
            handler_fn(move |_event: u32, _ctx: Context| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, FunctionError>(())
                }
            }),
        ))
        .await
        .unwrap();
    // From the other core, so that it pushes while the worker leaves.
    let producer = on_plain_thread(&handle, &handled, |handle, handled| {
        for i in 0..200_000u32 {
            // Once handled, the worker parks: the queue is empty.
            push_and_wait_run(handle, handled, i)?;
            // Vary when the next push lands relative to the parking worker; now and then
            // wait around the end of its park, so that the push lands as it leaves.
            for _ in 0..(i % 64) {
                std::hint::spin_loop();
            }
            if i % 500 == 499 {
                spin_for(Duration::from_micros(900 + u64::from(i / 500 % 14) * 100));
            }
        }
        Ok(())
    });
    let result = tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    let metrics = rt.async_metrics("fast").unwrap();
    let report = rt.shutdown(Duration::from_millis(10)).await;
    if let Err(i) = result {
        panic!(
            "event {i} accepted but never run for 2 s: queue_depth = {}, pending = {}; \
             handed back at shutdown instead: {}",
            metrics.queue_depth,
            metrics.pending,
            report.handed_back.len()
        );
    }
}

/// Runs `pushes` on a plain OS thread, inside the Tokio runtime's context (which
/// `invoke_async` needs to spawn workers), so that it pushes from the other core.
fn on_plain_thread(
    handle: &FunctionHandle<u32, ()>,
    handled: &Arc<AtomicUsize>,
    pushes: impl FnOnce(&FunctionHandle<u32, ()>, &AtomicUsize) -> Result<(), u32> + Send + 'static,
) -> std::thread::JoinHandle<Result<(), u32>> {
    let (handle, handled) = (handle.clone(), Arc::clone(handled));
    let tokio_handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let _entered = tokio_handle.enter();
        pushes(&handle, &handled)
    })
}

/// From a plain thread: pushes event `i` and spins until the handler has counted it in
/// `handled`; `Err(i)` if that takes more than 2 s.
fn push_and_wait_run(
    handle: &FunctionHandle<u32, ()>,
    handled: &AtomicUsize,
    i: u32,
) -> Result<(), u32> {
    let before = handled.load(Ordering::SeqCst);
    handle.invoke_async(i).unwrap();
    let started = std::time::Instant::now();
    while handled.load(Ordering::SeqCst) == before {
        if started.elapsed() > Duration::from_secs(2) {
            return Err(i);
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// Spins the thread for `gap` (a sleep would be far coarser than the gaps these tests need).
fn spin_for(gap: Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < gap {
        std::hint::spin_loop();
    }
}

/// A worker parked while another is inside a slow handler: a push that lands as the parked
/// worker's wait runs out must still run at once, not wait behind the slow handler (the
/// parked worker's wake-up is lost when its timeout wins; the slow worker does not count as
/// one that will take the event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_pushed_as_a_parked_worker_leaves_does_not_wait_behind_a_slow_handler() {
    let rt = runtime(10);
    let handled = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let h = handled.clone();
    let r = release.clone();
    let handle = rt
        .register(
            Function::new(
                "mixed",
                handler_fn(move |event: u32, _ctx: Context| {
                    let (h, r) = (h.clone(), r.clone());
                    async move {
                        if event == 0 {
                            r.notified().await;
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, FunctionError>(())
                    }
                }),
            )
            .with_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    // Event 0 holds one worker in a slow handler until the end.
    handle.invoke_async(0).unwrap();
    let producer = on_plain_thread(&handle, &handled, |handle, handled| {
        for i in 1..=1_000u32 {
            push_and_wait_run(handle, handled, i)?;
            // Around the end of the other worker's park (1–2 ms).
            spin_for(Duration::from_micros(900 + u64::from(i % 12) * 100));
        }
        Ok(())
    });
    let result = tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    if let Err(i) = result {
        panic!("event {i} waited 2 s behind the slow handler");
    }
    release.notify_one();
    let report = rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.handed_back.len(), 0);
}

/// The event type's `Clone` is user code, called by the worker while the event is
/// held by neither the batch nor `current` (popped, then cloned, then stored).
/// A panicking clone loses the accepted event: not handled, not handed back.
#[derive(Debug)]
struct Fragile(u32);

static CLONES: AtomicUsize = AtomicUsize::new(0);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        if CLONES.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("clone of event {} refused", self.0);
        }
        Fragile(self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_clone_panics_is_handed_back() {
    let rt = runtime(10);
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let handle = rt
        .register_native(Function::new(
            "fragile",
            handler_fn(move |_event: Fragile, _ctx: Context| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, FunctionError>(())
                }
            }),
        ))
        .await
        .unwrap();
    handle.invoke_async(Fragile(7)).unwrap();
    // Wait for the worker to have tried the clone (the signal), and for the queue to settle.
    while CLONES.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let report = rt.shutdown(Duration::from_millis(50)).await;
    let handed_back = report.handed_back.len();
    assert_eq!(
        handled.load(Ordering::SeqCst) + handed_back,
        1,
        "an accepted event was neither handled nor handed back"
    );
}

/// An attachment that takes until its deadline to stop, and records whether it was stopped.
#[derive(Debug)]
struct Slow {
    name: &'static str,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

#[nimbus_core::async_trait]
impl nimbus_core::Attachment for Slow {
    fn name(&self) -> &str {
        self.name
    }
    fn function(&self) -> &str {
        "f"
    }
    async fn stop(&self, deadline: tokio::time::Instant) -> nimbus_core::AttachmentStop {
        self.stopped.store(true, Ordering::SeqCst);
        tokio::time::sleep_until(deadline).await;
        nimbus_core::AttachmentStop::clean(self.name)
    }
}

/// `Runtime::shutdown` drains the attachment list and only closes the gate
/// after every attachment stopped; `attach_arc` checks
/// only the gate. An attachment attached during that window is accepted, never stopped, and
/// missing from the report: it outlives the runtime.
#[tokio::test(start_paused = true)]
async fn an_attachment_made_during_shutdown_is_refused() {
    let rt = Arc::new(runtime(10));
    let first = Arc::new(std::sync::atomic::AtomicBool::new(false));
    rt.attach(Slow {
        name: "first",
        stopped: first.clone(),
    })
    .unwrap();
    let shutting = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.shutdown(Duration::from_secs(1)).await })
    };
    // Shutdown is now stopping `first` (it takes the whole grace).
    while !first.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attached = rt.attach(Slow {
        name: "late",
        stopped: late.clone(),
    });
    let report = shutting.await.unwrap();
    if attached.is_ok() {
        assert!(
            late.load(Ordering::SeqCst),
            "attach() accepted an attachment during shutdown, which never stopped it; \
             report lists {:?}",
            report
                .attachments
                .iter()
                .map(|a| &a.name)
                .collect::<Vec<_>>()
        );
    }
}

/// With `max_concurrency(0)`, `invoke_async` sends the event straight to the failure path on a
/// spawned task without the `sealed` check the normal path makes
///: an event accepted while shutdown completes is kept after
/// `hand_back` sealed the queue, and is in no report. A stress race: accepted == handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_concurrency_events_accepted_during_shutdown_are_handed_back() {
    // CPU contention, so that the producer thread gets preempted inside invoke_async.
    let burn = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let burners: Vec<_> = (0..3)
        .map(|_| {
            let burn = burn.clone();
            std::thread::spawn(move || {
                while burn.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let _stop_burning = scopeguard(move || {
        burn.store(false, Ordering::Relaxed);
        for b in burners {
            let _ = b.join();
        }
    });
    for round in 0..3000u32 {
        let rt = runtime(10);
        let handle = rt
            .register(
                Function::new(
                    "zero",
                    handler_fn(|_e: u32, _ctx: Context| async move { Ok::<_, FunctionError>(()) }),
                )
                .with_max_concurrency(0),
            )
            .await
            .unwrap();
        let tokio_handle = tokio::runtime::Handle::current();
        let go = Arc::new(std::sync::Barrier::new(2));
        let producer = {
            let go = go.clone();
            std::thread::spawn(move || {
                let _entered = tokio_handle.enter();
                go.wait();
                let mut accepted = 0usize;
                loop {
                    match handle.invoke_async(round) {
                        Ok(_) => accepted += 1,
                        Err(_) => return accepted,
                    }
                    if accepted > 100_000 {
                        return accepted;
                    }
                }
            })
        };
        go.wait();
        tokio::task::yield_now().await;
        let report = rt.shutdown(Duration::ZERO).await;
        let accepted = tokio::task::spawn_blocking(move || producer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            report.handed_back.len(),
            accepted,
            "round {round}: {accepted} accepted, {} handed back",
            report.handed_back.len()
        );
    }
}

/// `FunctionHandle::invoke_async` is a sync fn, documented to return `Ok` or `Rejected`; called
/// from a thread outside the Tokio runtime it panics in `kick` -> `spawn`
/// *after* the event was pushed and counted in `pending`: the caller sees
/// a panic, not a request id, yet the event was accepted (and is run or handed back later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_async_works_from_a_plain_thread() {
    let rt = runtime(10);
    let handle = rt
        .register(Function::new(
            "plain",
            handler_fn(|_e: u32, _ctx: Context| async move { Ok::<_, FunctionError>(()) }),
        ))
        .await
        .unwrap();
    let outcome = std::thread::spawn(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle.invoke_async(1).is_ok()
        }))
    })
    .join()
    .unwrap();
    let pending = rt.async_metrics("plain").unwrap().pending;
    let report = rt.shutdown(Duration::from_millis(10)).await;
    assert!(
        outcome.is_ok(),
        "invoke_async panicked outside a runtime; the event was accepted anyway \
         (pending = {pending}, handed back at shutdown: {})",
        report.handed_back.len()
    );
}

struct Guard<F: FnOnce()>(Option<F>);
impl<F: FnOnce()> Drop for Guard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
fn scopeguard<F: FnOnce()>(f: F) -> Guard<F> {
    Guard(Some(f))
}

/// Control for the test above: the same race on the normal path (with the `sealed` check):
/// accepted == handled + handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_accepted_during_shutdown_have_an_outcome() {
    let burn = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let burners: Vec<_> = (0..3)
        .map(|_| {
            let burn = burn.clone();
            std::thread::spawn(move || {
                while burn.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let _stop_burning = scopeguard(move || {
        burn.store(false, Ordering::Relaxed);
        for b in burners {
            let _ = b.join();
        }
    });
    for round in 0..3000u32 {
        let rt = runtime(10);
        let handled = Arc::new(AtomicUsize::new(0));
        let h = handled.clone();
        let handle = rt
            .register(Function::new(
                "normal",
                handler_fn(move |_e: u32, _ctx: Context| {
                    let h = h.clone();
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, FunctionError>(())
                    }
                }),
            ))
            .await
            .unwrap();
        let tokio_handle = tokio::runtime::Handle::current();
        let go = Arc::new(std::sync::Barrier::new(2));
        let producer = {
            let go = go.clone();
            std::thread::spawn(move || {
                let _entered = tokio_handle.enter();
                go.wait();
                let mut accepted = 0usize;
                loop {
                    match handle.invoke_async(round) {
                        Ok(_) => accepted += 1,
                        Err(_) => return accepted,
                    }
                    if accepted > 100_000 {
                        return accepted;
                    }
                }
            })
        };
        go.wait();
        tokio::task::yield_now().await;
        let report = rt.shutdown(Duration::ZERO).await;
        let accepted = tokio::task::spawn_blocking(move || producer.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            report.handed_back.len() + handled.load(Ordering::SeqCst),
            accepted,
            "round {round}: {accepted} accepted, {} handed back, {} handled",
            report.handed_back.len(),
            handled.load(Ordering::SeqCst)
        );
    }
}
