//! An ordinary Lambda function built with the `lambda_runtime` crate, unmodified, as it would be
//! deployed to AWS: the Rust client of nimbus's process-instance tests and benchmarks.
//!
//! The event's `op` picks what it does: `echo` (the default), `fail` (an `OrderError`),
//! `sleep` (`ms` milliseconds), `crash` (exit 3 without answering), `print` (a line on stdout
//! and one on stderr), `context` (the context as the client read it). Every answer carries the
//! process id and this process's invocation count. With `FIXTURE_FAIL_INIT=1` it exits before
//! asking for an event: Rust's init failure. With `FIXTURE_CONNECT_ONLY=host:port` it only
//! connects there and exits (the cold-start benchmark's baseline); with `FIXTURE_ECHO=host:port`
//! it echoes bytes on one connection (the warm benchmark's floor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

static COUNT: AtomicU64 = AtomicU64::new(0);

/// The function's own error type, named as Lambda's callers see it.
#[derive(Debug)]
struct OrderError;

impl From<OrderError> for Diagnostic {
    fn from(_: OrderError) -> Self {
        Diagnostic {
            error_type: "OrderError".into(),
            error_message: "bad order".into(),
        }
    }
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, OrderError> {
    let (event, ctx) = event.into_parts();
    let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let mut answer = json!({
        "pid": std::process::id(),
        "count": count,
        "lang": "rust",
        "event": event,
    });
    match event["op"].as_str().unwrap_or("echo") {
        "fail" => return Err(OrderError),
        "sleep" => {
            let ms = event["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        "crash" => std::process::exit(3),
        "print" => {
            // The process id and count tie the log line to the process that answered.
            println!("hello stdout rust pid={} count={count}", std::process::id());
            eprintln!("hello stderr rust");
        }
        "context" => {
            let remaining = ctx
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            answer["context"] = json!({
                "request_id": ctx.request_id,
                "function_arn": ctx.invoked_function_arn,
                "function_name": ctx.env_config.function_name,
                "memory_limit_in_mb": ctx.env_config.memory,
                "function_version": ctx.env_config.version,
                "log_group_name": ctx.env_config.log_group,
                "log_stream_name": ctx.env_config.log_stream,
                "remaining_ms": remaining.as_millis() as u64,
                "trace_id": ctx.xray_trace_id,
                "client_context": ctx.client_context.as_ref().map(|c| json!({
                    "installation_id": c.client.installation_id,
                    "app_title": c.client.app_title,
                    "custom": c.custom,
                    "env": c.environment,
                })),
                "identity": ctx.identity.as_ref().map(|i| json!({
                    "cognito_identity_id": i.identity_id,
                    "cognito_identity_pool_id": i.identity_pool_id,
                })),
            });
        }
        _ => {}
    }
    Ok(answer)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    // The benchmark's baseline: the same binary starting its runtime and opening one TCP
    // connection, without the Lambda client.
    if let Ok(addr) = std::env::var("FIXTURE_CONNECT_ONLY") {
        tokio::net::TcpStream::connect(addr).await?;
        return Ok(());
    }
    // The benchmark's floor: the same binary echoing bytes on one TCP connection, the hops of
    // an invocation with nothing else.
    if let Ok(addr) = std::env::var("FIXTURE_ECHO") {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read(&mut byte).await? == 1 {
            stream.write_all(&byte).await?;
        }
        return Ok(());
    }
    if std::env::var("FIXTURE_FAIL_INIT").as_deref() == Ok("1") {
        eprintln!("init failed: FIXTURE_FAIL_INIT is set");
        std::process::exit(1);
    }
    lambda_runtime::run(service_fn(handler)).await
}
