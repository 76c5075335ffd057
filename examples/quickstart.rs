//! Quickstart: register a function, invoke it, print its output and usage report.
//!
//! Run with `cargo run --release --example quickstart`. It checks its own results and exits
//! non-zero if anything is off.

use std::time::Duration;

use nimbus::{handler_fn, Context, Function, FunctionError, InvokeError, InvokeOptions, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
struct Order {
    id: u64,
    items: Vec<u32>,
}

#[derive(Debug, PartialEq, Serialize)]
struct Receipt {
    id: u64,
    total: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::default();

    let checkout = runtime
        .register(
            Function::new(
                "checkout",
                handler_fn(|order: Order, ctx: Context| async move {
                    if order.items.is_empty() {
                        // A function error is an outcome for the caller, not a crash.
                        return Err(FunctionError::new("EmptyOrder", "an order needs items"));
                    }
                    println!(
                        "  handling order {} as request {} (attempt {}, {:?} left)",
                        order.id,
                        ctx.request_id(),
                        ctx.attempt(),
                        ctx.remaining_time()
                    );
                    Ok(Receipt {
                        id: order.id,
                        total: order.items.iter().sum(),
                    })
                }),
            )
            .with_memory_mb(256)
            .with_timeout(Duration::from_secs(1)),
        )
        .await?;

    // Typed invocation, with the usage report (Lambda's REPORT line).
    let invocation = checkout
        .invoke_with(
            Order {
                id: 1,
                items: vec![3, 4, 5],
            },
            InvokeOptions::default(),
        )
        .await;
    let receipt = invocation.result?;
    let report = invocation
        .report
        .ok_or("a handler ran, so there is a report")?;
    println!("output: {receipt:?}");
    println!("{report}");
    assert_eq!(receipt, Receipt { id: 1, total: 12 });
    assert!(
        report.init_duration.is_some(),
        "the first invocation is a cold start"
    );
    assert_eq!(report.memory_mb, 256);

    // Untyped invocation by name, as a host that only knows JSON would do it; warm this time.
    let out = runtime
        .invoke_json("checkout", serde_json::json!({"id": 2, "items": [10]}))
        .await?;
    println!("output: {out}");
    assert_eq!(out, serde_json::json!({"id": 2, "total": 10}));

    // A function error comes back as a typed outcome.
    let error = checkout
        .invoke(Order {
            id: 3,
            items: vec![],
        })
        .await
        .expect_err("an empty order is refused");
    println!("error:  {error}");
    assert!(matches!(&error, InvokeError::Function(e) if e.error_type() == "EmptyOrder"));

    let metrics = checkout.metrics();
    let usage = checkout.usage();
    println!(
        "metrics: {} invocations, {} ok, {} errors, {} cold start(s); usage: {:.6} GB-s, ${:.9}",
        metrics.invocations,
        metrics.successes,
        metrics.errors,
        metrics.cold_starts,
        usage.gb_seconds,
        usage.cost
    );
    assert_eq!(
        (
            metrics.invocations,
            metrics.successes,
            metrics.errors,
            metrics.cold_starts
        ),
        (3, 2, 1, 1)
    );

    let shutdown = runtime.shutdown(Duration::from_secs(1)).await;
    assert_eq!(shutdown.cancelled, 0);
    println!("quickstart: all checks passed");
    Ok(())
}
