//! The receipt checks of the queue suite: release, released, partial and stale
//! acknowledgements, expired receipts, separate batches, and `retry_later` with a delay. Each
//! tells a stall of the machine from a broken rule (see [`super::stall`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::queue::{one, receive_all, visibility_of};
use super::stall::{may_have_expired, miss, settled, Miss};
use super::{fail, source, QueueProducer};
use crate::error::SourceError;
use crate::queue::{MessageId, Receipt};

/// Release: a released message is visible again at once and received with its receive count
/// unchanged; a release with a stale receipt among good ones still releases the good ones
/// (reporting the stale one as [`SourceError::Refused`], or succeeding), and releases the
/// message once only: the next receive still reports the same count.
pub(super) async fn release<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "release";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"back"))
        .await
        .map_err(source(check))?;
    let (mut m, mut began) = one(q, check).await?;
    for _ in 0..3 {
        let answer = q.release(std::slice::from_ref(&m.receipt)).await;
        settled(check, "release", answer, began, visibility)?;
        let started = Instant::now();
        let (again, again_began) = one(q, check).await?;
        if again.id != m.id {
            return Err(fail(check, format!("received {:?}, not {:?}", again.id, m.id)).into());
        }
        if again.receive_count != m.receive_count {
            return Err(fail(
                check,
                format!(
                    "received again with receive count {} after a release at {}",
                    again.receive_count, m.receive_count
                ),
            )
            .into());
        }
        // Back only after the visibility timeout: not visible at once, or a stall.
        if started.elapsed() >= visibility {
            return Err(miss(
                check,
                format!(
                    "visible again only after {:?}, not before the visibility timeout",
                    started.elapsed()
                ),
                true,
            ));
        }
        let stale = std::mem::replace(&mut m, again);
        // The stale receipt goes first: the good one behind it must still be released.
        let result = q.release(&[stale.receipt, m.receipt.clone()]).await;
        if !(result.is_ok() || refuses_first(&result)) {
            return Err(miss(
                check,
                format!(
                    "a release with a stale receipt first answered {result:?}, not Ok or \
                     Refused {{ positions: [0] }}"
                ),
                refuses_second(&result) && may_have_expired(again_began, visibility),
            ));
        }
        (m, began) = one(q, check).await?;
    }
    let answer = q.ack(std::slice::from_ref(&m.receipt)).await;
    settled(check, "ack", answer, began, visibility)
}

/// Released receipts: a release ends its receipt for good. A message released and received
/// again is acknowledged with the released receipt: that answers [`SourceError::Refused`] and
/// deletes nothing, and the new delivery's receipt then acknowledges it. (An adapter whose
/// redelivery after a release makes the same receipt again, so that the released one is
/// current once more, fails here.)
pub(super) async fn released_receipt<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "released receipt";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"handed back"))
        .await
        .map_err(source(check))?;
    let (old, began) = one(q, check).await?;
    let answer = q.release(std::slice::from_ref(&old.receipt)).await;
    settled(check, "release", answer, began, visibility)?;
    let (new, began) = one(q, check).await?;
    if new.id != old.id {
        return Err(fail(check, format!("received {:?}, not {:?}", new.id, old.id)).into());
    }
    let result = q.ack(std::slice::from_ref(&old.receipt)).await;
    if !refuses_first(&result) {
        return Err(fail(
            check,
            format!(
                "an ack with a released receipt, after the message was received again, \
                 answered {result:?}, not Refused {{ positions: [0] }}"
            ),
        )
        .into());
    }
    let answer = q.ack(std::slice::from_ref(&new.receipt)).await;
    settled(check, "ack with the new receipt", answer, began, visibility)
}

/// Partial acknowledgement: an ack whose receipts are partly stale deletes the others. It must
/// report the stale one (by its position) as [`SourceError::Refused`], or succeed (SQS treats
/// deleting an already deleted message as done); any other answer fails the check.
pub(super) async fn partial_ack<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "partial ack";
    let visibility = visibility_of(q);
    for body in ["first", "second"] {
        q.produce(Bytes::from(body)).await.map_err(source(check))?;
    }
    let got = receive_all(q, 2, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let [first, second] = got.messages.as_slice() else {
        return Err(fail(
            check,
            format!("received {} of 2 messages", got.messages.len()),
        )
        .into());
    };
    let answer = q.ack(std::slice::from_ref(&first.receipt)).await;
    settled(check, "ack", answer, got.began, visibility)?;
    let result = q
        .ack(&[first.receipt.clone(), second.receipt.clone()])
        .await;
    if !(result.is_ok() || refuses_first(&result)) {
        return Err(miss(
            check,
            format!(
                "an ack with a stale receipt first answered {result:?}, not Ok or \
                 Refused {{ positions: [0] }}"
            ),
            refuses_second(&result) && may_have_expired(got.began, visibility),
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
        )
        .into());
    }
    Ok(())
}

/// Stale receipts: once a message is received again after its visibility timeout, the old
/// receipt is not current. Acknowledging or releasing with it answers
/// [`SourceError::Refused`], retrying with it [`SourceError::UnknownReceipt`], and none of
/// them disturbs the new delivery: the message is not visible while the new receiver holds
/// it, the new receipt still acknowledges it, and then it is gone.
pub(super) async fn stale_receipt<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "stale receipt";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"slow"))
        .await
        .map_err(source(check))?;
    let (old, _) = one(q, check).await?;
    let current = receive_all(q, 1, visibility + Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let began = current.began;
    let Some(current) = current.messages.into_iter().next() else {
        return Err(fail(check, "not redelivered after the visibility timeout").into());
    };
    let results = [
        ("ack", q.ack(std::slice::from_ref(&old.receipt)).await),
        (
            "retry_later",
            q.retry_later(&old.receipt, Duration::ZERO).await,
        ),
        (
            "release",
            q.release(std::slice::from_ref(&old.receipt)).await,
        ),
    ];
    let shown = q.receive(1, Duration::ZERO).await.map_err(source(check))?;
    if let Some(again) = shown.first() {
        return Err(miss(
            check,
            format!(
                "a stale receipt made a message visible while it was received again: \
                 received as {:?} with count {} {:?} after the receive that brought {:?} with \
                 count {}",
                again.id,
                again.receive_count,
                began.elapsed(),
                current.id,
                current.receive_count
            ),
            may_have_expired(began, visibility),
        ));
    }
    for (call, result) in results {
        let refused = if call == "retry_later" {
            result == Err(SourceError::UnknownReceipt)
        } else {
            refuses_first(&result)
        };
        if !refused {
            return Err(fail(
                check,
                format!("{call} with a stale receipt answered {result:?}, not a refusal"),
            )
            .into());
        }
    }
    let answer = q.ack(std::slice::from_ref(&current.receipt)).await;
    settled(
        check,
        "ack with the current receipt",
        answer,
        began,
        visibility,
    )?;
    let back = q
        .receive(1, visibility + Duration::from_millis(500))
        .await
        .map_err(source(check))?;
    if !back.is_empty() {
        return Err(fail(check, "the message came back after it was acknowledged").into());
    }
    Ok(())
}

/// Expired receipts: once a receipt's visibility timeout has passed, an ack with it answers
/// [`SourceError::Refused`] and deletes nothing, even though nobody received the message
/// since: it is delivered again, its receive counted. (A broker that honours expired receipts
/// itself needs the adapter to refuse them.)
pub(super) async fn expired_receipt<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "expired receipt";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"late"))
        .await
        .map_err(source(check))?;
    let (m, _) = one(q, check).await?;
    // The handler outlives the visibility timeout.
    tokio::time::sleep(visibility + visibility / 4).await;
    let result = q.ack(std::slice::from_ref(&m.receipt)).await;
    if !refuses_first(&result) {
        return Err(fail(
            check,
            format!(
                "an ack with an expired receipt answered {result:?}, not \
                 Refused {{ positions: [0] }}"
            ),
        )
        .into());
    }
    let again = receive_all(q, 1, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    match again.messages.first() {
        Some(a) if a.id == m.id && a.receive_count == m.receive_count + 1 => {
            let answer = q.ack(std::slice::from_ref(&a.receipt)).await;
            settled(check, "ack", answer, again.began, visibility)
        }
        Some(a) => Err(fail(
            check,
            format!(
                "after an ack with an expired receipt, received {:?} with count {}",
                a.id, a.receive_count
            ),
        )
        .into()),
        None => Err(fail(
            check,
            "an ack with an expired receipt deleted the message: it was not delivered again",
        )
        .into()),
    }
}

/// Separate batches: acknowledging one batch deletes its messages and nothing else. Two
/// batches are received; the later one is acknowledged; the earlier one stays in flight (not
/// visible at once) and comes back after its visibility timeout, while the acknowledged one
/// does not. (An adapter that acknowledges "everything up to this delivery", as AMQP's
/// `multiple` flag does, fails here.)
pub(super) async fn separate_batches<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "separate batches";
    let visibility = visibility_of(q);
    for i in 0..6 {
        q.produce(Bytes::from(format!("b{i}")))
            .await
            .map_err(source(check))?;
    }
    let first = receive_all(q, 3, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let second = receive_all(q, 3, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let ids = |messages: &[crate::Message]| -> HashSet<MessageId> {
        messages.iter().map(|m| m.id.clone()).collect()
    };
    // The first batch back in the second: its receipts expired before it was received.
    let overlap = ids(&first.messages)
        .intersection(&ids(&second.messages))
        .count();
    if first.messages.len() != 3 || second.messages.len() != 3 || overlap > 0 {
        return Err(miss(
            check,
            format!(
                "received {} and {} of 3 and 3 ({overlap} in both)",
                first.messages.len(),
                second.messages.len()
            ),
            may_have_expired(first.began, visibility),
        ));
    }
    let receipts: Vec<Receipt> = second.messages.iter().map(|m| m.receipt.clone()).collect();
    settled(
        check,
        "ack",
        q.ack(&receipts).await,
        second.began,
        visibility,
    )?;
    let shown = q.receive(6, Duration::ZERO).await.map_err(source(check))?;
    if !shown.is_empty() {
        return Err(miss(
            check,
            "acknowledging one batch made another batch's messages visible",
            may_have_expired(first.began, visibility),
        ));
    }
    let back = receive_all(q, 3, visibility + Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    if ids(&back.messages) != ids(&first.messages) {
        let lost = first.messages.len()
            - ids(&back.messages)
                .intersection(&ids(&first.messages))
                .count();
        return Err(fail(
            check,
            format!(
                "acknowledging one batch deleted {lost} of another batch's 3 messages, or \
                 they did not come back after the visibility timeout"
            ),
        )
        .into());
    }
    let receipts: Vec<Receipt> = back.messages.iter().map(|m| m.receipt.clone()).collect();
    settled(check, "ack", q.ack(&receipts).await, back.began, visibility)?;
    let again = q
        .receive(6, visibility + Duration::from_millis(500))
        .await
        .map_err(source(check))?;
    if !again.is_empty() {
        return Err(fail(check, "acknowledged messages came back").into());
    }
    Ok(())
}

/// Retry later with a delay: the message is not received before the delay ends (a receive
/// waiting half the delay finds nothing, unless a stall made that wait last the whole delay),
/// then it is, its receive counted.
pub(super) async fn retry_later_delay<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "retry later delay";
    let visibility = visibility_of(q);
    // Shorter than the visibility timeout, which some brokers cut a delay to.
    let delay = visibility * 3 / 4;
    q.produce(Bytes::from_static(b"later"))
        .await
        .map_err(source(check))?;
    let (m, began) = one(q, check).await?;
    let started = Instant::now();
    let answer = q.retry_later(&m.receipt, delay).await;
    settled(check, "retry_later", answer, began, visibility)?;
    let early = q.receive(1, delay / 2).await.map_err(source(check))?;
    let later = if early.is_empty() {
        receive_all(q, 1, delay + Duration::from_secs(5))
            .await
            .map_err(source(check))?
    } else {
        super::queue::Received {
            messages: early,
            began: started,
        }
    };
    let elapsed = started.elapsed();
    match later.messages.first() {
        // A tenth of the delay's slack for timer granularity. Measured from before the call,
        // so never shorter than the delay the adapter kept.
        Some(l) if elapsed < delay * 9 / 10 => Err(fail(
            check,
            format!(
                "{:?} received again after {elapsed:?}, before its delay of {delay:?}",
                l.id
            ),
        )
        .into()),
        Some(l) if l.id == m.id && l.receive_count == m.receive_count + 1 => {
            let answer = q.ack(std::slice::from_ref(&l.receipt)).await;
            settled(check, "ack", answer, later.began, visibility)
        }
        Some(l) => Err(fail(
            check,
            format!(
                "received {:?} with count {} after the delay",
                l.id, l.receive_count
            ),
        )
        .into()),
        None => Err(fail(check, "not received again after its delay").into()),
    }
}

/// Whether an ack or a release refused its first receipt, and only that one.
fn refuses_first(result: &Result<(), SourceError>) -> bool {
    matches!(result, Err(SourceError::Refused { positions }) if positions[..] == [0])
}

/// Whether an ack or a release of two receipts refused the second (a stall, if it may have
/// expired).
fn refuses_second(result: &Result<(), SourceError>) -> bool {
    matches!(result, Err(SourceError::Refused { positions }) if positions.contains(&1))
}
