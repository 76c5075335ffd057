//! Recursive loop detection: the hop count travels with the work (function to function, sync
//! and async, through handles used inside a handler), and an invocation that reaches the limit
//! is stopped with a typed error, counted, unless the function allows loops.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use nimbus_core::handler::hops;
use nimbus_core::{
    handler_fn, CallError, Context, Function, FunctionError, InvocationRecord, InvokeError,
    RecursiveLoop,
};
use tokio::sync::mpsc;

use crate::support::runtime;

/// A function that calls itself through its context until told to stop at `depth`, and
/// returns the deepest hop count it saw.
fn recursive(name: &'static str, runs: Arc<AtomicU32>) -> Function<u32, u32> {
    Function::new(
        name,
        handler_fn(move |depth: u32, ctx: Context| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if depth == 0 {
                    return Ok::<_, FunctionError>(ctx.hop_count());
                }
                ctx.invoke::<u32, u32>(name, &(depth - 1))
                    .await
                    .map_err(FunctionError::from_error)
            }
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_function_calling_itself_is_stopped_at_the_limit() {
    let rt = runtime(100);
    let runs = Arc::new(AtomicU32::new(0));
    let f = rt
        .register(recursive("self-caller", Arc::clone(&runs)))
        .await
        .unwrap();
    // Within the limit: 16 invocations, hop counts 0..=15.
    assert_eq!(f.invoke(hops::LIMIT - 1).await.unwrap(), hops::LIMIT - 1);
    assert_eq!(runs.swap(0, Ordering::SeqCst), hops::LIMIT);
    assert_eq!(f.metrics().recursive_loops, 0);

    // One more: the 17th invocation is stopped, and the error comes back up the chain.
    let error = f.invoke(hops::LIMIT).await.unwrap_err();
    let InvokeError::Function(failure) = &error else {
        panic!("the outermost call fails with its callee's error: {error:?}");
    };
    assert!(failure.message().contains("recursive loop"), "{failure:?}");
    assert_eq!(runs.load(Ordering::SeqCst), hops::LIMIT);
    assert_eq!(f.metrics().recursive_loops, 1);
}

#[tokio::test(start_paused = true)]
async fn the_stopped_invocation_is_a_typed_error() {
    let rt = runtime(100);
    let seen = Arc::new(tokio::sync::Mutex::new(None));
    let seen_in = Arc::clone(&seen);
    rt.register(recursive("inner", Arc::new(AtomicU32::new(0))))
        .await
        .unwrap();
    let outer = rt
        .register(Function::new(
            "outer",
            handler_fn(move |depth: u32, ctx: Context| {
                let seen = Arc::clone(&seen_in);
                async move {
                    let result = ctx.invoke::<u32, u32>("inner", &depth).await;
                    *seen.lock().await = Some(result);
                    Ok::<_, FunctionError>(0u32)
                }
            }),
        ))
        .await
        .unwrap();
    outer.invoke(hops::LIMIT).await.unwrap();
    // `outer` is hop 0, `inner` runs hops 1..=15 and its 16th call is stopped; the chain
    // unwinds as function errors, except at the call that was refused.
    let result = seen.lock().await.take().unwrap();
    assert!(
        matches!(result, Err(CallError::Invoke(InvokeError::Function(_)))),
        "{result:?}"
    );
    let inner = rt.function::<u32, u32>("inner").unwrap();
    assert_eq!(inner.metrics().recursive_loops, 1);
    assert_eq!(
        InvokeError::RecursiveLoop { hops: 16 }.error_type(),
        "RecursiveInvocationException"
    );
}

#[tokio::test(start_paused = true)]
async fn a_function_that_allows_loops_runs_on() {
    let rt = runtime(100);
    let runs = Arc::new(AtomicU32::new(0));
    let f = rt
        .register(recursive("allowed", Arc::clone(&runs)).with_recursive_loop(RecursiveLoop::Allow))
        .await
        .unwrap();
    assert_eq!(f.invoke(20).await.unwrap(), 20);
    assert_eq!(runs.load(Ordering::SeqCst), 21);
    assert_eq!(f.metrics().recursive_loops, 0);
}

#[tokio::test(start_paused = true)]
async fn a_handle_used_inside_a_handler_passes_the_count_on() {
    let rt = runtime(100);
    let runs = Arc::new(AtomicU32::new(0));
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel::<InvocationRecord<u32, u32>>();
    // An async function that queues itself again through a handle it was given: the handle
    // is the host's, but used inside the handler it carries the running invocation's count.
    let slot: Arc<std::sync::OnceLock<nimbus_core::FunctionHandle<u32, u32>>> = Arc::default();
    let slot_in = Arc::clone(&slot);
    let runs_in = Arc::clone(&runs);
    let f = rt
        .register(
            Function::new(
                "requeue",
                handler_fn(move |n: u32, ctx: Context| {
                    let slot = Arc::clone(&slot_in);
                    let runs = Arc::clone(&runs_in);
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let me = slot.get().expect("set before the first event");
                        me.invoke_async(n + 1)
                            .map_err(|r| FunctionError::new("Full", r.to_string()))?;
                        Ok::<_, FunctionError>(ctx.hop_count())
                    }
                }),
            )
            .with_on_failure(failed_tx),
        )
        .await
        .unwrap();
    slot.set(f.clone()).unwrap();
    f.invoke_async(0).unwrap();
    let record = failed_rx.recv().await.unwrap();
    // Runs with hop counts 0..=15; the 17th event is never run and goes to on-failure.
    assert_eq!(runs.load(Ordering::SeqCst), hops::LIMIT);
    assert_eq!(record.request, hops::LIMIT);
    assert_eq!(record.approximate_invoke_count, 0);
    let error = record.error.expect("the failure says why");
    assert_eq!(error.error_type, "RecursiveInvocationException");
    assert_eq!(f.metrics().recursive_loops, 1);
}

#[tokio::test(start_paused = true)]
async fn work_started_by_the_host_starts_at_zero() {
    let rt = runtime(10);
    let f = rt
        .register(Function::new(
            "hops",
            handler_fn(|_n: u32, ctx: Context| async move {
                Ok::<_, FunctionError>((ctx.hop_count(), hops::current(), hops::outgoing()))
            }),
        ))
        .await
        .unwrap();
    assert_eq!(f.invoke(0).await.unwrap(), (0, Some(0), Some(1)));
    assert_eq!(hops::current(), None);
}

type Slot = Arc<std::sync::OnceLock<nimbus_core::FunctionHandle<u32, u32>>>;

/// A destination that queues the next step on the function in `slot` (the bug), and reports
/// what the function refused.
fn requeue(
    slot: &Slot,
    refused: &mpsc::UnboundedSender<String>,
) -> impl nimbus_core::Destination<u32, u32> {
    let (slot, refused) = (Arc::clone(slot), refused.clone());
    nimbus_core::destination_fn(move |record: InvocationRecord<u32, u32>| {
        let (slot, refused) = (Arc::clone(&slot), refused.clone());
        async move {
            let me = slot.get().expect("set before the first event");
            if let Err(rejected) = me.invoke_async(record.request + 1) {
                let _ = refused.send(rejected.to_string());
            }
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_destination_feeding_the_function_back_is_a_loop_too() {
    let rt = runtime(100);
    let runs = Arc::new(AtomicU32::new(0));
    let slot = Slot::default();
    let (refused_tx, mut refused_rx) = mpsc::unbounded_channel::<String>();
    let runs_in = Arc::clone(&runs);
    let f = rt
        .register(
            Function::new(
                "requeue",
                handler_fn(move |_n: u32, ctx: Context| {
                    let runs = Arc::clone(&runs_in);
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, FunctionError>(ctx.hop_count())
                    }
                }),
            )
            .with_on_success(requeue(&slot, &refused_tx))
            .with_on_failure(requeue(&slot, &refused_tx)),
        )
        .await
        .unwrap();
    slot.set(f.clone()).unwrap();
    f.invoke_async(0).unwrap();
    // Hop counts 0..=15 run; the 17th event is stopped and goes to on-failure, which queues
    // it again: refused, since only a stopped event's failure path sends work that far.
    let refused = refused_rx.recv().await.unwrap();
    assert!(refused.contains("recursive loop"), "{refused}");
    f.async_idle().await;
    assert_eq!(runs.load(Ordering::SeqCst), hops::LIMIT);
    assert_eq!(f.metrics().recursive_loops, 1);
    assert!(f.take_failed().is_empty());
}
