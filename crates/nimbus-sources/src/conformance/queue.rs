//! The queue suites: delivery, acknowledgement, visibility, retry later, release, stale and
//! partial acknowledgements, long polls, and redrive.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{fail, source, QueueProducer, Violation};
use crate::error::SourceError;
use crate::queue::QueueSource;

/// Receives until `want` messages came or `within` passed.
pub(super) async fn receive_all<Q: QueueSource>(
    queue: &Q,
    want: usize,
    within: Duration,
) -> Result<Vec<crate::Message>, SourceError> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        got.extend(queue.receive(want - got.len(), left).await?);
    }
    Ok(got)
}

/// The queue contract: at-least-once delivery, ack, visibility and redelivery with receive
/// counts, making a message visible again, long polls woken by a send, release (visible at
/// once, receive count unchanged), partial acknowledgement (a stale receipt does not stop the
/// others from being deleted) and stale receipts (an old receipt does not
/// disturb a newer delivery). Cancelling a receive is not checked: the trait allows a
/// dropped receive to strand what it claimed, and mappings never drop one.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn queue<Q, F, Fut>(make: F) -> Result<(), Violation>
where
    Q: QueueProducer,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    // Delivery: every message sent is received, once, with its body.
    let q = make().await;
    let sent: HashSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    for body in &sent {
        q.produce(Bytes::from(body.clone()))
            .await
            .map_err(source("delivery"))?;
    }
    let got = receive_all(&q, 20, Duration::from_secs(5))
        .await
        .map_err(source("delivery"))?;
    let bodies: HashSet<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    if bodies != sent {
        return Err(fail(
            "delivery",
            format!(
                "sent 20, received {} distinct of {}",
                bodies.len(),
                got.len()
            ),
        ));
    }
    if got.iter().any(|m| m.receive_count != 1) {
        return Err(fail("receive count", "a first receive must count 1"));
    }
    // Ack: deleted messages do not come back.
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    q.ack(&receipts).await.map_err(source("ack"))?;
    let visibility = q.visibility_timeout().unwrap_or(Duration::from_secs(1));
    let again = q
        .receive(20, visibility + Duration::from_millis(500))
        .await
        .map_err(source("ack"))?;
    if !again.is_empty() {
        return Err(fail(
            "ack",
            format!("{} acknowledged messages came back", again.len()),
        ));
    }

    // Visibility: an unacknowledged message is invisible, then redelivered with count 2.
    let q = make().await;
    q.produce(Bytes::from_static(b"lost"))
        .await
        .map_err(source("visibility"))?;
    let first = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("visibility"))?;
    let Some(first) = first.into_iter().next() else {
        return Err(fail("visibility", "the message never arrived"));
    };
    let hidden = q
        .receive(1, Duration::ZERO)
        .await
        .map_err(source("visibility"))?;
    if !hidden.is_empty() {
        return Err(fail("visibility", "a received message was visible at once"));
    }
    let redelivered = receive_all(&q, 1, visibility + Duration::from_secs(5))
        .await
        .map_err(source("visibility"))?;
    match redelivered.first() {
        Some(m) if m.id == first.id && m.receive_count == 2 => {
            q.ack(std::slice::from_ref(&m.receipt))
                .await
                .map_err(source("visibility"))?;
        }
        Some(m) => {
            return Err(fail(
                "visibility",
                format!("redelivered {:?} with count {}", m.id, m.receive_count),
            ))
        }
        None => {
            return Err(fail(
                "visibility",
                "not redelivered after the visibility timeout",
            ))
        }
    }

    // Retry later: a message made visible again at once is received again promptly.
    let q = make().await;
    q.produce(Bytes::from_static(b"again"))
        .await
        .map_err(source("retry later"))?;
    let m = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("retry later"))?;
    let Some(m) = m.into_iter().next() else {
        return Err(fail("retry later", "the message never arrived"));
    };
    q.retry_later(&m.receipt, Duration::ZERO)
        .await
        .map_err(source("retry later"))?;
    let started = Instant::now();
    let back = receive_all(&q, 1, Duration::from_secs(5))
        .await
        .map_err(source("retry later"))?;
    if back.first().map(|b| &b.id) != Some(&m.id) || started.elapsed() >= visibility {
        return Err(fail(
            "retry later",
            "not visible again before the visibility timeout",
        ));
    }

    // Long poll: a waiting receive returns soon after a send, not at the end of its wait.
    let q = make().await;
    let started = Instant::now();
    let (got, ()) = tokio::join!(q.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = q.produce(Bytes::from_static(b"wake")).await;
    });
    let got = got.map_err(source("long poll"))?;
    if got.is_empty() || started.elapsed() > Duration::from_secs(3) {
        return Err(fail(
            "long poll",
            format!(
                "woke after {:?} with {} messages",
                started.elapsed(),
                got.len()
            ),
        ));
    }

    release_check(&make().await, visibility).await?;
    partial_ack(&make().await, visibility).await?;
    stale_receipt(&make().await, visibility).await?;
    Ok(())
}

/// Receives exactly one message within a few seconds.
async fn one<Q: QueueSource>(q: &Q, check: &'static str) -> Result<crate::Message, Violation> {
    let got = receive_all(q, 1, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    got.into_iter()
        .next()
        .ok_or_else(|| fail(check, "the message never arrived"))
}

/// Release: a released message is visible again at once and received with its receive count
/// unchanged; a release with a stale receipt among good ones still releases the good ones
/// (reporting [`SourceError::UnknownReceipt`] or not), and releases the message once only: the
/// next receive still reports the same count.
async fn release_check<Q: QueueProducer>(q: &Q, visibility: Duration) -> Result<(), Violation> {
    let check = "release";
    q.produce(Bytes::from_static(b"back"))
        .await
        .map_err(source(check))?;
    let mut m = one(q, check).await?;
    for _ in 0..3 {
        q.release(std::slice::from_ref(&m.receipt))
            .await
            .map_err(source(check))?;
        let started = Instant::now();
        let again = one(q, check).await?;
        if again.id != m.id || started.elapsed() >= visibility {
            return Err(fail(
                check,
                "not visible again before the visibility timeout",
            ));
        }
        if again.receive_count != m.receive_count {
            return Err(fail(
                check,
                format!(
                    "received again with receive count {} after a release at {}",
                    again.receive_count, m.receive_count
                ),
            ));
        }
        let stale = std::mem::replace(&mut m, again);
        // The stale receipt goes first: the good one behind it must still be released.
        let result = q.release(&[stale.receipt, m.receipt.clone()]).await;
        if !matches!(result, Ok(()) | Err(SourceError::UnknownReceipt)) {
            return Err(fail(
                check,
                format!(
                    "a release with a stale receipt answered {result:?}, not Ok or UnknownReceipt"
                ),
            ));
        }
        m = one(q, check).await?;
    }
    q.ack(std::slice::from_ref(&m.receipt))
        .await
        .map_err(source(check))
}

/// Partial acknowledgement: an ack whose receipts are partly stale deletes the others. It may
/// report the stale one as [`SourceError::UnknownReceipt`] or succeed (SQS treats deleting an
/// already deleted message as done); any other error fails the check.
async fn partial_ack<Q: QueueProducer>(q: &Q, visibility: Duration) -> Result<(), Violation> {
    let check = "partial ack";
    for body in ["first", "second"] {
        q.produce(Bytes::from(body)).await.map_err(source(check))?;
    }
    let got = receive_all(q, 2, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let [first, second] = got.as_slice() else {
        return Err(fail(check, format!("received {} of 2 messages", got.len())));
    };
    q.ack(std::slice::from_ref(&first.receipt))
        .await
        .map_err(source(check))?;
    let result = q
        .ack(&[first.receipt.clone(), second.receipt.clone()])
        .await;
    if !matches!(result, Ok(()) | Err(SourceError::UnknownReceipt)) {
        return Err(fail(
            check,
            format!("an ack with a stale receipt answered {result:?}, not Ok or UnknownReceipt"),
        ));
    }
    let back = q
        .receive(2, visibility + Duration::from_millis(500))
        .await
        .map_err(source(check))?;
    if !back.is_empty() {
        return Err(fail(
            check,
            "a message acknowledged beside a stale receipt came back",
        ));
    }
    Ok(())
}

/// Stale receipts: once a message is received again after its visibility timeout, the old
/// receipt must not disturb the new delivery. Acknowledging with it may delete the message
/// (it was handled, as SQS may do) or be refused as [`SourceError::UnknownReceipt`]; it must
/// not make the message visible while the new receiver holds it, and once the new receipt is
/// acknowledged the message is gone.
async fn stale_receipt<Q: QueueProducer>(q: &Q, visibility: Duration) -> Result<(), Violation> {
    let check = "stale receipt";
    q.produce(Bytes::from_static(b"slow"))
        .await
        .map_err(source(check))?;
    let old = one(q, check).await?;
    let current = receive_all(q, 1, visibility + Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let Some(current) = current.into_iter().next() else {
        return Err(fail(check, "not redelivered after the visibility timeout"));
    };
    for result in [
        q.ack(std::slice::from_ref(&old.receipt)).await,
        q.retry_later(&old.receipt, Duration::ZERO).await,
        q.release(std::slice::from_ref(&old.receipt)).await,
    ] {
        if let Err(e) = result {
            if e != SourceError::UnknownReceipt {
                return Err(fail(check, format!("a stale receipt answered {e}")));
            }
        }
    }
    let shown = q.receive(1, Duration::ZERO).await.map_err(source(check))?;
    if !shown.is_empty() {
        return Err(fail(
            check,
            "a stale receipt made a message visible while it was received again",
        ));
    }
    if let Err(e) = q.ack(std::slice::from_ref(&current.receipt)).await {
        if e != SourceError::UnknownReceipt {
            return Err(fail(check, format!("the current receipt answered {e}")));
        }
    }
    let back = q
        .receive(1, visibility + Duration::from_millis(500))
        .await
        .map_err(source(check))?;
    if !back.is_empty() {
        return Err(fail(
            check,
            "the message came back after it was acknowledged",
        ));
    }
    Ok(())
}

/// The redrive contract, for a queue whose `max_receive_count` is 2: a message received twice
/// without being acknowledged is not delivered a third time but moved to the dead-letter
/// queue, once; `dead_letters` counts what the dead-letter queue holds.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn redrive<Q, D, Fut>(queue: &Q, dead_letters: D) -> Result<(), Violation>
where
    Q: QueueProducer,
    D: Fn() -> Fut,
    Fut: Future<Output = Result<u64, SourceError>>,
{
    let check = "redrive";
    queue
        .produce(Bytes::from_static(b"poison"))
        .await
        .map_err(source(check))?;
    queue
        .produce(Bytes::from_static(b"fine"))
        .await
        .map_err(source(check))?;
    let visibility = queue.visibility_timeout().unwrap_or(Duration::from_secs(1));
    let mut fine_acked = false;
    for attempt in 1..=2u32 {
        let got = receive_all(
            queue,
            if fine_acked { 1 } else { 2 },
            visibility + Duration::from_secs(5),
        )
        .await
        .map_err(source(check))?;
        let Some(poison) = got.iter().find(|m| &m.body[..] == b"poison") else {
            return Err(fail(
                check,
                format!("receive {attempt} did not deliver the message"),
            ));
        };
        if poison.receive_count != attempt {
            return Err(fail(
                check,
                format!("receive {attempt} counted {}", poison.receive_count),
            ));
        }
        for m in &got {
            if &m.body[..] == b"fine" {
                queue
                    .ack(std::slice::from_ref(&m.receipt))
                    .await
                    .map_err(source(check))?;
                fine_acked = true;
            }
        }
        queue
            .retry_later(&poison.receipt, Duration::ZERO)
            .await
            .map_err(source(check))?;
    }
    let third = receive_all(queue, 1, visibility + Duration::from_secs(2))
        .await
        .map_err(source(check))?;
    if let Some(m) = third.first() {
        return Err(fail(
            check,
            format!(
                "delivered again with receive count {} past max_receive_count 2",
                m.receive_count
            ),
        ));
    }
    let dead = dead_letters().await.map_err(source(check))?;
    if dead != 1 {
        return Err(fail(
            check,
            format!("{dead} dead letters, expected the one message"),
        ));
    }
    Ok(())
}
