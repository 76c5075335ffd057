//! Runtime services: a handler acts through its `Context` (invokes other functions sync and
//! async, reaches the host's resources), and every invocation carries the principal the
//! runtime set for the path it came by.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    handler_fn, AsyncCallError, CallError, Context, Function, FunctionError, InvocationRecord,
    InvokeError, LookupError, Principal,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::runtime;

/// A function that answers the principal it saw, as text.
fn whoami(name: &str) -> Function<u64, String> {
    Function::new(
        name,
        handler_fn(|_n: u64, ctx: Context| async move {
            Ok::<_, FunctionError>(ctx.principal().to_string())
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn a_handler_invokes_another_function_and_the_callee_sees_it_as_principal() {
    let rt = runtime(10);
    rt.register(whoami("callee")).await.unwrap();
    let caller = rt
        .register(Function::new(
            "caller",
            handler_fn(|n: u64, ctx: Context| async move {
                let seen: String = ctx
                    .invoke("callee", &n)
                    .await
                    .map_err(FunctionError::from_error)?;
                Ok::<_, FunctionError>(seen)
            }),
        ))
        .await
        .unwrap();
    assert_eq!(caller.invoke(1).await.unwrap(), "function:caller");
    // Called directly, the callee sees the host.
    let callee = rt.function::<u64, String>("callee").unwrap();
    assert_eq!(callee.invoke(1).await.unwrap(), "host");
    assert_eq!(callee.principal(), &Principal::Host);
    assert_eq!(
        rt.invoke_json("callee", json!(1)).await.unwrap(),
        json!("host")
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_invokes_another_function_asynchronously_as_itself() {
    let rt = runtime(10);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<InvocationRecord<u64, String>>();
    rt.register(whoami("worker").with_on_success(seen_tx))
        .await
        .unwrap();
    let producer = rt
        .register(Function::new(
            "producer",
            handler_fn(|n: u64, ctx: Context| async move {
                let id = ctx
                    .invoke_async("worker", &n)
                    .map_err(FunctionError::from_error)?;
                Ok::<_, FunctionError>(id.to_string())
            }),
        ))
        .await
        .unwrap();
    let id = producer.invoke(7).await.unwrap();
    let record = seen_rx.recv().await.unwrap();
    assert_eq!(record.request_id.to_string(), id);
    assert_eq!(record.response.as_deref(), Some("function:producer"));
}

#[tokio::test(start_paused = true)]
async fn the_principal_of_an_async_event_holds_through_its_retries() {
    let rt = runtime(10);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u32, String)>();
    let flaky = rt
        .register(
            Function::new(
                "flaky",
                handler_fn(move |_n: u64, ctx: Context| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        let _ = seen_tx.send((ctx.attempt(), ctx.principal().to_string()));
                        if ctx.attempt() < 2 {
                            return Err(FunctionError::msg("again"));
                        }
                        Ok(())
                    }
                }),
            )
            .with_retry_backoff(nimbus_core::Backoff::fixed(Duration::from_secs(1)).unwrap()),
        )
        .await
        .unwrap();
    flaky.for_event_source("orders").invoke_async(1).unwrap();
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        (1, "event-source:orders".to_owned())
    );
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        (2, "event-source:orders".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn calls_by_name_tell_a_missing_function_from_a_failed_invocation() {
    let rt = runtime(10);
    rt.register(Function::new(
        "fails",
        handler_fn(
            |_n: u64, _ctx: Context| async move { Err::<u64, _>(FunctionError::msg("nope")) },
        ),
    ))
    .await
    .unwrap();
    let probe = rt
        .register(Function::new(
            "probe",
            handler_fn(|target: String, ctx: Context| async move {
                let outcome = ctx.invoke::<u64, u64>(&target, &1).await;
                Ok::<_, FunctionError>(match outcome {
                    Ok(_) => "ok".to_owned(),
                    Err(CallError::Lookup(LookupError::NotFound(_))) => "not found".to_owned(),
                    Err(CallError::Invoke(InvokeError::Function(e))) => {
                        format!("failed: {}", e.message())
                    }
                    Err(other) => format!("other: {other}"),
                })
            }),
        ))
        .await
        .unwrap();
    assert_eq!(probe.invoke("missing".into()).await.unwrap(), "not found");
    assert_eq!(probe.invoke("fails".into()).await.unwrap(), "failed: nope");
}

#[tokio::test(start_paused = true)]
async fn handlers_reach_the_resources_the_host_provided() {
    struct Greeting(String);
    let rt = runtime(10);
    rt.provide("greeting", Arc::new(Greeting("hello".into())));
    let greet = rt
        .register(Function::new(
            "greet",
            handler_fn(|name: String, ctx: Context| async move {
                let greeting = ctx.resource::<Greeting>("greeting").ok_or("no greeting")?;
                // The wrong type or an unknown name is simply absent.
                assert!(ctx.resource::<String>("greeting").is_none());
                assert!(ctx.resource::<Greeting>("nothing").is_none());
                Ok::<_, FunctionError>(format!("{} {name}", greeting.0))
            }),
        ))
        .await
        .unwrap();
    assert_eq!(greet.invoke("ada".into()).await.unwrap(), "hello ada");
}

#[tokio::test(start_paused = true)]
async fn a_detached_context_has_no_runtime_to_call_through() {
    let ctx = Context::detached("alone", Duration::from_secs(1));
    assert!(matches!(
        ctx.invoke::<u64, u64>("anything", &1).await,
        Err(CallError::Lookup(LookupError::NoRuntime(_)))
    ));
    assert!(matches!(
        ctx.invoke_async("anything", &1),
        Err(AsyncCallError::Lookup(LookupError::NoRuntime(_)))
    ));
    assert!(ctx.resource::<u64>("x").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_context_outliving_its_runtime_answers_no_runtime() {
    let rt = runtime(10);
    let (ctx_tx, mut ctx_rx) = mpsc::unbounded_channel::<Context>();
    let keep = rt
        .register_native(Function::new(
            "keep",
            handler_fn(move |(), ctx: Context| {
                let ctx_tx = ctx_tx.clone();
                async move {
                    let _ = ctx_tx.send(ctx);
                    Ok::<_, FunctionError>(())
                }
            }),
        ))
        .await
        .unwrap();
    keep.invoke(()).await.unwrap();
    let kept = ctx_rx.recv().await.unwrap();
    rt.shutdown(Duration::from_secs(1)).await;
    drop((rt, keep));
    assert!(matches!(
        kept.invoke_json("keep", json!(null)).await,
        Err(CallError::Lookup(LookupError::NoRuntime(_)))
    ));
}
