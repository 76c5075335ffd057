//! Async invocation with retries and destinations.
//!
//! One event fails twice and succeeds on its third attempt; another always fails and ends in
//! the on-failure destination with the last error. Run with
//! `cargo run --release --example async_retries`; it checks its own results.

use std::time::Duration;

use nimbus::{
    handler_fn, Backoff, Condition, Context, Function, FunctionError, InvocationRecord, Runtime,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    id: u32,
    /// How many attempts fail before one succeeds (`u32::MAX`: never succeeds).
    failures: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let (on_success, mut succeeded) = tokio::sync::mpsc::unbounded_channel();
    let (on_failure, mut failed) = tokio::sync::mpsc::unbounded_channel();

    let charge = runtime
        .register(
            Function::new(
                "charge",
                handler_fn(|payment: Payment, ctx: Context| async move {
                    println!("  attempt {} of payment {}", ctx.attempt(), payment.id);
                    if ctx.attempt() <= payment.failures {
                        return Err(FunctionError::new(
                            "GatewayUnavailable",
                            format!("gateway down on attempt {}", ctx.attempt()),
                        ));
                    }
                    Ok(format!("receipt-{}", payment.id))
                }),
            )
            // Lambda waits about 1 and 2 minutes between attempts; keep the example short.
            .with_retry_backoff(Backoff::new(
                Duration::from_millis(100),
                2.0,
                Duration::from_secs(1),
                0.2,
            )?)
            .with_max_retries(2)
            .with_on_success(on_success)
            .with_on_failure(on_failure),
        )
        .await?;

    let recovers = charge.invoke_async(Payment { id: 1, failures: 2 })?;
    let never = charge.invoke_async(Payment {
        id: 2,
        failures: u32::MAX,
    })?;
    println!("queued {recovers} and {never}");

    let ok: InvocationRecord<Payment, String> = succeeded.recv().await.ok_or("no success")?;
    println!(
        "on-success: {} after {} attempts -> {:?}",
        ok.request_id, ok.approximate_invoke_count, ok.response
    );
    assert_eq!(ok.request_id, recovers);
    assert_eq!(ok.condition, Condition::Success);
    assert_eq!(
        ok.approximate_invoke_count, 3,
        "failed twice, then succeeded"
    );
    assert_eq!(ok.response.as_deref(), Some("receipt-1"));

    let ko: InvocationRecord<Payment, String> = failed.recv().await.ok_or("no failure")?;
    let error = ko
        .error
        .clone()
        .ok_or("a failure record carries the error")?;
    println!(
        "on-failure: {} {:?} after {} attempts: {}: {}",
        ko.request_id, ko.condition, ko.approximate_invoke_count, error.error_type, error.message
    );
    assert_eq!(ko.request_id, never);
    assert_eq!(ko.condition, Condition::RetriesExhausted);
    assert_eq!(ko.approximate_invoke_count, 3);
    assert_eq!(ko.request.id, 2);
    assert_eq!(error.error_type, "GatewayUnavailable");

    // Shutdown waits for the workers, so the counters are final afterwards.
    let report = runtime.shutdown(Duration::from_secs(1)).await;
    assert!(report.handed_back.is_empty());
    let m = charge.async_metrics();
    println!(
        "async metrics: {} accepted, {} retries, {} succeeded, {} failed, {} delivered",
        m.accepted, m.retries, m.succeeded, m.failed, m.delivered
    );
    assert_eq!((m.accepted, m.retries, m.succeeded, m.failed), (2, 4, 1, 1));
    assert_eq!((m.delivered, m.delivery_failures, m.pending), (2, 0, 0));
    println!("async_retries: all checks passed");
    Ok(())
}
