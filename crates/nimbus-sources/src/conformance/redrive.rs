//! The redrive checks of the queue suite: a message over `max_receive_count` goes to the
//! dead-letter queue, alone ([`redrive`]) and under a mapping whose handler fails
//! ([`handler_failures`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};

use super::harness::{done, fresh, QueueHarness, QueueSpec};
use super::queue::{receive_all, visibility_of, KIT_VISIBILITY};
use super::stall::{settled, verdict, Miss};
use super::{fail, source, QueueProducer, Violation};
use crate::mapping::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig};
use crate::queue::QueueSource;

/// The redrive contract, on a queue whose `max_receive_count` is 2: a message received twice
/// without being acknowledged is not delivered a third time but moved to the dead-letter
/// queue, once, while a message acknowledged beside it is not.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn redrive<H: QueueHarness>(harness: &H) -> Result<(), Violation> {
    let mut attempt = 1;
    loop {
        let queue = fresh(harness, QueueSpec::new(KIT_VISIBILITY).with_redrive(2)).await?;
        let outcome = redrive_on(harness, &queue).await;
        match verdict(outcome, attempt) {
            Some(outcome) => return done(harness, &queue, outcome).await,
            None => done(harness, &queue, Ok(())).await?,
        }
        attempt += 1;
    }
}

async fn redrive_on<H: QueueHarness>(harness: &H, queue: &H::Queue) -> Result<(), Miss> {
    let check = "redrive";
    for body in ["poison", "fine"] {
        queue
            .produce(Bytes::from(body))
            .await
            .map_err(source(check))?;
    }
    let visibility = visibility_of(queue);
    let mut fine_acked = false;
    for attempt in 1..=2u32 {
        let want = if fine_acked { 1 } else { 2 };
        let got = receive_all(queue, want, visibility + Duration::from_secs(5))
            .await
            .map_err(source(check))?;
        let Some(poison) = got.messages.iter().find(|m| &m.body[..] == b"poison") else {
            return Err(fail(
                check,
                format!("receive {attempt} did not deliver the message"),
            )
            .into());
        };
        if poison.receive_count != attempt {
            return Err(fail(
                check,
                format!("receive {attempt} counted {}", poison.receive_count),
            )
            .into());
        }
        for m in got.messages.iter().filter(|m| &m.body[..] == b"fine") {
            let answer = queue.ack(std::slice::from_ref(&m.receipt)).await;
            settled(check, "ack", answer, got.began, visibility)?;
            fine_acked = true;
        }
        let answer = queue.retry_later(&poison.receipt, Duration::ZERO).await;
        settled(check, "retry_later", answer, got.began, visibility)?;
    }
    let third = receive_all(queue, 1, visibility + Duration::from_secs(2))
        .await
        .map_err(source(check))?;
    if let Some(m) = third.messages.first() {
        return Err(fail(
            check,
            format!(
                "delivered again with receive count {} past max_receive_count 2",
                m.receive_count
            ),
        )
        .into());
    }
    let dead = dead_letters_reach(harness, queue, 1).await?;
    if dead != 1 {
        return Err(fail(
            check,
            format!("{dead} dead letters, expected the one message"),
        )
        .into());
    }
    Ok(())
}

/// Counts `queue`'s dead letters until there are `want`, for a few seconds (a broker may
/// count them a moment late); returns the last count.
async fn dead_letters_reach<H: QueueHarness>(
    harness: &H,
    queue: &H::Queue,
    want: u64,
) -> Result<u64, Violation> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let dead = harness
            .dead_letters(queue)
            .await
            .map_err(source("dead letters"))?;
        if dead >= want || tokio::time::Instant::now() >= deadline {
            return Ok(dead);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many receives the handler-failure suite allows before redrive.
const MAX_RECEIVES: u32 = 3;

/// A mapping whose handler fails, on a queue whose `max_receive_count` is 3: ten good
/// messages, five flaky ones (failed on receives 1 and 2, handled on receive 3, the last one
/// allowed) and three poison ones (always failed). Failed records are reported by id in the
/// handler's [`BatchResponse`], and return after the visibility timeout. Checks that the
/// mapping drains the queue ([`QueueMapping::drained`] resolves within half a minute), that
/// the good and flaky messages were handled, that each poison message reached the handler on
/// exactly receives 1, 2 and 3 and never a 4th, and that the dead-letter queue then holds
/// exactly the poison messages. A run in which an invocation timed out or an acknowledgement
/// came too late (a stalled machine) is run again, up to three times.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn handler_failures<H: QueueHarness>(harness: &H) -> Result<(), Violation> {
    let spec = QueueSpec::new(KIT_VISIBILITY).with_redrive(MAX_RECEIVES);
    let mut attempt = 1;
    loop {
        let queue = Arc::new(fresh(harness, spec).await?);
        let outcome = handler_failures_on(harness, &queue).await;
        match verdict(outcome, attempt) {
            Some(outcome) => return done(harness, &queue, outcome).await,
            None => done(harness, &queue, Ok(())).await?,
        }
        attempt += 1;
    }
}

async fn handler_failures_on<H: QueueHarness>(
    harness: &H,
    queue: &Arc<H::Queue>,
) -> Result<(), Miss> {
    let check = "handler failures";
    let bodies: Vec<String> = (0..10)
        .map(|i| format!("good-{i}"))
        .chain((0..5).map(|i| format!("flaky-{i}")))
        .chain((0..3).map(|i| format!("poison-{i}")))
        .collect();
    for body in &bodies {
        queue
            .produce(Bytes::from(body.clone()))
            .await
            .map_err(source(check))?;
    }
    // The receive counts each body reached the handler with; `overdue` says one came past
    // max_receive_count, so that a queue that never redrives fails at once.
    let seen: Arc<parking_lot::Mutex<HashMap<String, BTreeSet<u32>>>> = Arc::default();
    let overdue = Arc::new(tokio::sync::Notify::new());
    let runtime = Runtime::default();
    let visibility = visibility_of(&**queue);
    let function = runtime
        .register(
            Function::new(
                "kit-failures",
                handler_fn({
                    let (seen, overdue) = (Arc::clone(&seen), Arc::clone(&overdue));
                    move |batch: QueueBatch, _ctx: Context| {
                        let mut failed = Vec::new();
                        let mut seen = seen.lock();
                        for r in &batch.records {
                            if r.receive_count > MAX_RECEIVES {
                                overdue.notify_one();
                            }
                            let body = r.body_str().unwrap_or_default();
                            seen.entry(body.to_owned())
                                .or_default()
                                .insert(r.receive_count);
                            let fails = body.starts_with("poison")
                                || (body.starts_with("flaky") && r.receive_count < MAX_RECEIVES);
                            if fails {
                                failed.push(r.message_id.clone());
                            }
                        }
                        async move { Ok::<_, FunctionError>(BatchResponse::failures(failed)) }
                    }
                }),
            )
            .with_timeout((visibility / 2).max(Duration::from_millis(100))),
        )
        .await
        .map_err(|e| fail(check, format!("registering the function: {e}")))?;
    let config = QueueMappingConfig::new("kit-failures")
        .with_poll_wait(Duration::from_millis(300))
        .with_max_concurrency(2)
        .with_initial_concurrency(2);
    let mapping = QueueMapping::builder(Arc::clone(queue), function, config)
        .attach(&runtime)
        .start()
        .map_err(|e| fail(check, format!("starting the mapping: {e}")))?;
    let drained = tokio::select! {
        drained = tokio::time::timeout(Duration::from_secs(30), mapping.drained()) => Some(drained),
        () = overdue.notified() => None,
    };
    let metrics = mapping.metrics();
    runtime.shutdown(Duration::from_secs(5)).await;
    // The handler never fails an invocation and answers at once: an invocation that failed
    // (timed out) or an acknowledgement refused (its receipt expired) means the machine
    // stalled, and receive counts tell nothing then.
    if metrics.function_errors > 0 || metrics.refused_receipts > 0 {
        return Err(Miss::Stalled(fail(
            check,
            format!(
                "{} invocations failed and {} receipts expired before their acknowledgement",
                metrics.function_errors, metrics.refused_receipts
            ),
        )));
    }
    match drained {
        // Said below: which message, with which counts.
        None | Some(Ok(Ok(()))) => {}
        Some(Ok(Err(status))) => {
            return Err(fail(check, format!("the mapping stopped: {status:?}")).into())
        }
        Some(Err(_)) => {
            return Err(fail(check, format!("not drained after 30 s: {metrics:?}")).into())
        }
    }
    let seen = std::mem::take(&mut *seen.lock());
    for body in &bodies {
        let counts = seen.get(body).cloned().unwrap_or_default();
        let last = counts.last().copied().unwrap_or(0);
        let wrong = if body.starts_with("good") {
            counts.is_empty().then(|| "never handled".to_owned())
        } else if body.starts_with("flaky") {
            (last != MAX_RECEIVES).then(|| format!("received with counts {counts:?}"))
        } else {
            let expected: BTreeSet<u32> = (1..=MAX_RECEIVES).collect();
            (counts != expected).then(|| {
                format!(
                    "received with counts {counts:?}; a message failing every time must be \
                     received exactly max_receive_count ({MAX_RECEIVES}) times"
                )
            })
        };
        if let Some(wrong) = wrong {
            return Err(fail(check, format!("{body}: {wrong}")).into());
        }
    }
    let dead = dead_letters_reach(harness, queue, 3).await?;
    if dead != 3 {
        return Err(fail(
            check,
            format!("{dead} dead letters, expected the 3 poison messages"),
        )
        .into());
    }
    Ok(())
}
