//! A queue pipeline: fill an in-memory queue, drain it through a mapping with some failures,
//! and check the final counts.
//!
//! Orders are JSON; the handler reports malformed ones and ones it cannot ship as item
//! failures. Those come back after the visibility timeout and, after three receives, go to
//! the dead-letter queue. A filter drops test orders without invoking. Run with
//! `cargo run --release --example queue_pipeline`; it checks its own results.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus::sources::{
    BatchResponse, InMemoryQueue, Outgoing, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig,
};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Order {
    id: u64,
    kind: String,
    units: u32,
}

const ORDERS: u64 = 10_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = Runtime::default();
    let shipped_units = Arc::new(AtomicU64::new(0));
    let ship = runtime
        .register(
            Function::new(
                "ship",
                handler_fn({
                    let shipped_units = shipped_units.clone();
                    move |batch: QueueBatch, _ctx: Context| {
                        let shipped_units = shipped_units.clone();
                        async move {
                            let mut failures = Vec::new();
                            for record in &batch.records {
                                match record.json::<Order>() {
                                    // Every 1,000th order is out of stock, always.
                                    Ok(order) if order.id % 1_000 == 999 => {
                                        failures.push(record.message_id.clone());
                                    }
                                    Ok(order) => {
                                        assert_ne!(
                                            order.kind, "test",
                                            "the filter drops test orders"
                                        );
                                        shipped_units
                                            .fetch_add(u64::from(order.units), Ordering::Relaxed);
                                    }
                                    // Malformed records take the failure path with the reason.
                                    Err(e) => {
                                        eprintln!("  malformed record {}: {e}", record.message_id);
                                        failures.push(record.message_id.clone());
                                    }
                                }
                            }
                            Ok::<_, FunctionError>(BatchResponse::failures(failures))
                        }
                    }
                }),
            )
            // A mapping needs the function's timeout within the queue's visibility timeout.
            .with_timeout(Duration::from_millis(100)),
        )
        .await?;

    let dead_letters = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
    let orders = Arc::new(InMemoryQueue::new(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_millis(200))
            .with_redrive(dead_letters.clone(), 3),
    )?);
    let mut expected_units = 0;
    let mut test_orders = 0;
    let messages = (0..ORDERS).map(|id| {
        let kind = if id % 50 == 0 { "test" } else { "retail" };
        if kind == "test" {
            test_orders += 1;
        } else if id % 1_000 != 999 {
            expected_units += id % 7 + 1;
        }
        Outgoing::new(format!(
            r#"{{"id":{id},"kind":"{kind}","units":{}}}"#,
            id % 7 + 1
        ))
    });
    orders.send_batch(messages.collect::<Vec<_>>())?;
    // Passes the filter, but is not an order: the handler cannot decode it.
    orders.send(r#"{"id":"seven","kind":"retail"}"#)?;
    println!("queued {ORDERS} orders and 1 malformed message");

    // Attached, the runtime's shutdown stops the mapping before the function it feeds.
    let mapping = QueueMapping::builder(
        orders.clone(),
        ship,
        QueueMappingConfig::new("ship-orders")
            .with_batch_size(100)
            .with_batching_window(Duration::from_millis(5))
            .with_filter(r#"{"body": {"kind": [{"anything-but": ["test"]}]}}"#),
    )
    .attach(&runtime)
    .start()?;
    // Every order handled, filtered or dead-lettered, and nothing in flight: no polling.
    tokio::time::timeout(Duration::from_secs(30), mapping.drained())
        .await
        .map_err(|_| "the queue did not drain in 30 s")?
        .map_err(|status| format!("the mapping stopped: {status:?}"))?;
    assert!(orders.is_empty());
    mapping.stop(Duration::from_secs(5)).await;
    let m = mapping.metrics();
    println!(
        "mapping: {} received, {} deleted, {} filtered, {} failed attempts, {} invocations, peak {} concurrent batches",
        m.received, m.deleted, m.filtered, m.failed, m.invocations, m.peak_concurrent_batches
    );

    let out_of_stock = (0..ORDERS)
        .filter(|id| id % 1_000 == 999 && id % 50 != 0)
        .count() as u64;
    let dead = dead_letters.len() as u64;
    println!(
        "dead letters: {dead} ({out_of_stock} out of stock + 1 malformed); units shipped: {}",
        shipped_units.load(Ordering::Relaxed)
    );
    assert_eq!(
        dead,
        out_of_stock + 1,
        "poison messages end in the dead-letter queue"
    );
    assert_eq!(m.dead_lettered, Some(dead));
    assert_eq!(
        m.deleted,
        ORDERS - test_orders - out_of_stock,
        "every good order deleted"
    );
    assert_eq!(
        m.failed,
        3 * (out_of_stock + 1),
        "three receives each before redrive"
    );
    assert_eq!(shipped_units.load(Ordering::Relaxed), expected_units);
    runtime.shutdown(Duration::from_secs(1)).await;
    println!("queue_pipeline: all checks passed");
    Ok(())
}
