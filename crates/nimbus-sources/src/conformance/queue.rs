//! The queue suite: [`queue`] runs every check of the queue contract; the first ones here
//! (delivery, acknowledgement, visibility, retry later, long polls), the others in
//! [`super::receipts`] and [`super::redrive`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nimbus_core::handler::hops;

use super::harness::{done, fresh, QueueHarness, QueueSpec};
use super::stall::{may_have_expired, miss, settled, verdict, Miss};
use super::{fail, receipts, redrive, source, QueueProducer, Violation};
use crate::error::SourceError;
use crate::queue::{Message, QueueSource};

/// The visibility timeout the kit asks its queues for.
pub(super) const KIT_VISIBILITY: Duration = Duration::from_secs(1);

/// Runs a check on a fresh queue made to `$spec`, then tears the queue down; again on another
/// fresh queue while a stall makes it inconclusive (see [`super::stall`]).
macro_rules! on_fresh {
    ($harness:expr, $spec:expr, $check:expr) => {{
        let mut attempt = 1;
        loop {
            let q = fresh($harness, $spec).await?;
            let outcome = $check(&q).await;
            match verdict(outcome, attempt) {
                Some(outcome) => {
                    done($harness, &q, outcome).await?;
                    break;
                }
                None => done($harness, &q, Ok(())).await?,
            }
            attempt += 1;
        }
    }};
}

/// The queue contract, every check, each on a fresh queue that is torn down after it:
///
/// - **delivery**: every message sent is received once, with its body, receive count 1;
/// - **ack**: acknowledged messages do not come back;
/// - **visibility**: a received message is invisible, then delivered again with count 2;
/// - **retry later**: a message made visible again at once is received again promptly;
/// - **retry later delay**: one made visible again after a delay is not received before
///   the delay ends, and is after;
/// - **long poll**: a waiting receive returns soon after a send;
/// - **release**: visible again at once, its receive count unchanged, once only;
/// - **partial ack**: an ack with a stale receipt among current ones deletes the others and
///   names the stale one;
/// - **expired receipt**: an ack whose receipt's visibility timeout passed answers
///   [`SourceError::Refused`], and the message is delivered again;
/// - **stale receipt**: an old receipt does not disturb a newer delivery;
/// - **released receipt**: a released receipt does not come back to life when the message is
///   received again;
/// - **separate batches**: acknowledging one batch leaves another batch's messages in flight;
/// - **hop count**: a message sent during an invocation carries that invocation's hop count
///   plus one in the [`hops::ATTRIBUTE`] attribute, and one sent outside carries none
///   (recursive loop detection);
/// - **redrive** ([`redrive`](super::redrive())) and **handler failures**
///   ([`handler_failures`](super::handler_failures)): dead letters after exactly
///   `max_receive_count` receives, alone and under a mapping whose handler fails.
///
/// Cancelling a receive is not checked: the trait allows a dropped receive to strand what it
/// claimed, and mappings drop one only when the source says it may. Runs in real time, in
/// about half a minute; a check that a stall of the machine could have upset is run again,
/// up to three times, rather than failed or passed.
///
/// # Errors
///
/// The first [`Violation`]; `setup` or `teardown` when the harness failed.
///
/// # Example
///
/// ```
/// use nimbus_sources::conformance::{self, InMemoryHarness};
///
/// # #[tokio::main]
/// # async fn main() {
/// let report = conformance::queue(&InMemoryHarness).await;
/// assert!(report.is_ok(), "{report:?}");
/// # }
/// ```
pub async fn queue<H: QueueHarness>(harness: &H) -> Result<(), Violation> {
    let spec = QueueSpec::new(KIT_VISIBILITY);
    on_fresh!(harness, spec, delivery_and_ack);
    on_fresh!(harness, spec, visibility);
    on_fresh!(harness, spec, retry_later_now);
    on_fresh!(harness, spec, receipts::retry_later_delay);
    on_fresh!(harness, spec, long_poll);
    on_fresh!(harness, spec, receipts::release);
    on_fresh!(harness, spec, receipts::partial_ack);
    on_fresh!(harness, spec, receipts::expired_receipt);
    on_fresh!(harness, spec, receipts::stale_receipt);
    on_fresh!(harness, spec, receipts::released_receipt);
    on_fresh!(harness, spec, receipts::separate_batches);
    on_fresh!(harness, spec, hop_count);
    redrive::redrive(harness).await?;
    redrive::handler_failures(harness).await
}

/// Messages received, and when the first receive call that brought any began (their receipts'
/// visibility timeout started after that).
pub(super) struct Received {
    pub(super) messages: Vec<Message>,
    pub(super) began: Instant,
}

/// Receives until `want` messages came or `within` passed (with one last look after, so that
/// a stall past the deadline does not hide what came meanwhile).
pub(super) async fn receive_all<Q: QueueSource + ?Sized>(
    queue: &Q,
    want: usize,
    within: Duration,
) -> Result<Received, SourceError> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut began = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let call = Instant::now();
        let more = queue
            .receive(want - got.len(), left.min(Duration::from_millis(500)))
            .await?;
        if !more.is_empty() {
            began.get_or_insert(call);
        }
        got.extend(more);
        if got.len() >= want || left.is_zero() {
            break;
        }
    }
    Ok(Received {
        messages: got,
        began: began.unwrap_or_else(Instant::now),
    })
}

/// Receives exactly one message within a few seconds, and when its receive call began.
pub(super) async fn one<Q: QueueSource>(
    q: &Q,
    check: &'static str,
) -> Result<(Message, Instant), Violation> {
    let got = receive_all(q, 1, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let began = got.began;
    got.messages
        .into_iter()
        .next()
        .map(|m| (m, began))
        .ok_or_else(|| fail(check, "the message never arrived"))
}

/// The queue's visibility timeout, or the kit's.
pub(super) fn visibility_of<Q: QueueSource>(q: &Q) -> Duration {
    q.visibility_timeout().unwrap_or(KIT_VISIBILITY)
}

/// Delivery: every message sent is received, once, with its body. Ack: deleted messages do
/// not come back.
async fn delivery_and_ack<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let visibility = visibility_of(q);
    let sent: HashSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    for body in &sent {
        q.produce(Bytes::from(body.clone()))
            .await
            .map_err(source("delivery"))?;
    }
    let got = receive_all(q, 20, Duration::from_secs(5))
        .await
        .map_err(source("delivery"))?;
    // Receiving twenty may outlast the first receipts on a stalled machine: what came back
    // then is no fault of the adapter.
    let stalled = may_have_expired(got.began, visibility);
    let bodies: HashSet<String> = got
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    if bodies != sent {
        return Err(miss(
            "delivery",
            format!(
                "sent 20, received {} distinct of {}",
                bodies.len(),
                got.messages.len()
            ),
            stalled,
        ));
    }
    if got.messages.iter().any(|m| m.receive_count != 1) {
        return Err(miss(
            "receive count",
            "a first receive must count 1",
            stalled,
        ));
    }
    let receipts: Vec<_> = got.messages.iter().map(|m| m.receipt.clone()).collect();
    settled("ack", "ack", q.ack(&receipts).await, got.began, visibility)?;
    let again = q
        .receive(20, visibility + Duration::from_millis(500))
        .await
        .map_err(source("ack"))?;
    if !again.is_empty() {
        return Err(fail(
            "ack",
            format!("{} acknowledged messages came back", again.len()),
        )
        .into());
    }
    Ok(())
}

/// Hop count: what an invocation sends carries its count plus one; what the host sends, none.
async fn hop_count<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "hop count";
    q.produce(Bytes::from_static(b"outside"))
        .await
        .map_err(source(check))?;
    hops::scope(4, q.produce(Bytes::from_static(b"inside")))
        .await
        .map_err(source(check))?;
    let got = receive_all(q, 2, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    let mut seen = Vec::new();
    for m in &got.messages {
        seen.push((
            String::from_utf8_lossy(&m.body).into_owned(),
            m.attributes.get(hops::ATTRIBUTE).map(str::to_owned),
        ));
    }
    seen.sort();
    let want = vec![
        ("inside".to_owned(), Some("5".to_owned())),
        ("outside".to_owned(), None),
    ];
    if seen != want {
        return Err(fail(check, format!("expected {want:?}, received {seen:?}")).into());
    }
    let receipts: Vec<_> = got.messages.iter().map(|m| m.receipt.clone()).collect();
    settled(
        check,
        "ack",
        q.ack(&receipts).await,
        got.began,
        visibility_of(q),
    )?;
    Ok(())
}

/// Visibility: an unacknowledged message is invisible, then redelivered with count 2.
async fn visibility<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "visibility";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"lost"))
        .await
        .map_err(source(check))?;
    let (first, began) = one(q, check).await?;
    let hidden = q.receive(1, Duration::ZERO).await.map_err(source(check))?;
    if !hidden.is_empty() {
        return Err(miss(
            check,
            "a received message was visible at once",
            may_have_expired(began, visibility),
        ));
    }
    let redelivered = receive_all(q, 1, visibility + Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    match redelivered.messages.first() {
        Some(m) if m.id == first.id && m.receive_count == 2 => settled(
            check,
            "ack",
            q.ack(std::slice::from_ref(&m.receipt)).await,
            redelivered.began,
            visibility,
        ),
        Some(m) => Err(fail(
            check,
            format!("redelivered {:?} with count {}", m.id, m.receive_count),
        )
        .into()),
        None => Err(fail(check, "not redelivered after the visibility timeout").into()),
    }
}

/// Retry later: a message made visible again at once is received again promptly.
async fn retry_later_now<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "retry later";
    let visibility = visibility_of(q);
    q.produce(Bytes::from_static(b"again"))
        .await
        .map_err(source(check))?;
    let (m, began) = one(q, check).await?;
    let answer = q.retry_later(&m.receipt, Duration::ZERO).await;
    settled(check, "retry_later", answer, began, visibility)?;
    let started = Instant::now();
    let back = receive_all(q, 1, Duration::from_secs(5))
        .await
        .map_err(source(check))?;
    if back.messages.first().map(|b| &b.id) != Some(&m.id) {
        return Err(fail(check, "not visible again after retry_later with no delay").into());
    }
    // Back only after the visibility timeout: not made visible at once, or a stall.
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
    Ok(())
}

/// Long poll: a waiting receive returns soon after a send, not at the end of its wait.
async fn long_poll<Q: QueueProducer>(q: &Q) -> Result<(), Miss> {
    let check = "long poll";
    let started = Instant::now();
    let (got, sent) = tokio::join!(q.receive(1, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = q.produce(Bytes::from_static(b"wake")).await;
        Instant::now()
    });
    let got = got.map_err(source(check))?;
    let detail = format!(
        "woke {:?} after the send (after {:?} in all) with {} messages",
        sent.elapsed(),
        started.elapsed(),
        got.len()
    );
    if got.is_empty() {
        return Err(fail(check, detail).into());
    }
    // Woken late: no wake-up on a send, or a stall.
    if sent.elapsed() > Duration::from_secs(3) {
        return Err(miss(check, detail, true));
    }
    Ok(())
}
