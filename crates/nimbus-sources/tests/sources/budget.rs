//! A batch's time budget: a queue mapping acknowledges a message only while its receipt is
//! current, however long bisection, throttle retries or a release take, and refuses at build
//! time a batching window and function timeout that cannot fit in the visibility timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, InMemoryQueue, Message, QueueBatch, QueueConfig, QueueFunction, QueueMapping,
    QueueMappingConfig, QueueSource, QueueStats, Receipt, SourceError,
};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::support::{queue, runtime, Seen};

/// An in-memory queue that notes when each receipt was handed out and counts the
/// acknowledgements that came once its visibility timeout had passed.
struct Timed {
    inner: Arc<InMemoryQueue>,
    received: Mutex<HashMap<Receipt, Instant>>,
    late: AtomicUsize,
    /// How long the next acknowledgement takes (once).
    ack_delay: Mutex<Option<Duration>>,
    /// How long the next release takes (once).
    release_delay: Mutex<Option<Duration>>,
}

impl Timed {
    fn new(inner: Arc<InMemoryQueue>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            received: Mutex::default(),
            late: AtomicUsize::new(0),
            ack_delay: Mutex::default(),
            release_delay: Mutex::default(),
        })
    }

    /// The next acknowledgement takes `delay` before it reaches the queue.
    fn delay_next_ack(&self, delay: Duration) {
        *self.ack_delay.lock() = Some(delay);
    }

    /// The next release takes `delay` before it reaches the queue.
    fn delay_next_release(&self, delay: Duration) {
        *self.release_delay.lock() = Some(delay);
    }

    fn late(&self) -> usize {
        self.late.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl QueueSource for Timed {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let messages = self.inner.receive(max, wait).await?;
        let now = Instant::now();
        let mut received = self.received.lock();
        for m in &messages {
            received.insert(m.receipt.clone(), now);
        }
        Ok(messages)
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let delay = self.ack_delay.lock().take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let visibility = self.inner.visibility_timeout().unwrap_or(Duration::MAX);
        {
            let received = self.received.lock();
            for r in receipts {
                if received.get(r).is_some_and(|at| at.elapsed() >= visibility) {
                    self.late.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.inner.ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        let delay = self.release_delay.lock().take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.inner.release(receipts).await
    }
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
    async fn stats(&self) -> Result<Option<QueueStats>, SourceError> {
        self.inner.stats().await
    }
}

/// A function (timeout 10 s, at most `reserved` at once) that records the bodies and receive
/// counts it sees: `hang` runs past its timeout, `slow` takes 9.9 s, anything else succeeds
/// at once.
async fn timed_function(rt: &Runtime, name: &str, reserved: Option<u32>) -> (QueueFunction, Seen) {
    let seen: Seen = Arc::default();
    let mut function = Function::new(
        name,
        handler_fn({
            let seen = seen.clone();
            move |batch: QueueBatch, _ctx: Context| {
                let seen = seen.clone();
                async move {
                    let bodies: Vec<String> = batch
                        .records
                        .iter()
                        .map(|r| format!("{}#{}", r.body_str().unwrap_or("?"), r.receive_count))
                        .collect();
                    seen.lock().push(bodies.clone());
                    if bodies.iter().any(|b| b.starts_with("hang#")) {
                        tokio::time::sleep(Duration::from_secs(3_600)).await;
                    }
                    if bodies.iter().any(|b| b.starts_with("slow#")) {
                        tokio::time::sleep(Duration::from_millis(9_900)).await;
                    }
                    Ok::<_, FunctionError>(BatchResponse::success())
                }
            }
        }),
    )
    .with_timeout(Duration::from_secs(10));
    if let Some(reserved) = reserved {
        function = function.with_max_concurrency(reserved);
    }
    (rt.register(function).await.expect("register"), seen)
}

/// The `slow` messages the function saw, each with its receive count (`slow#1`).
fn seen_slow(seen: &Seen) -> Vec<String> {
    seen.lock()
        .iter()
        .flatten()
        .filter(|b| b.starts_with("slow#"))
        .cloned()
        .collect()
}

/// Bodies (without receive counts) the function handled in a batch that succeeded.
fn handled_bodies(seen: &Seen) -> Vec<String> {
    seen.lock()
        .iter()
        .filter(|batch| !batch.iter().any(|b| b.starts_with("hang#")))
        .flatten()
        .map(|b| b.split('#').next().unwrap_or_default().to_owned())
        .collect()
}

/// A queue (visibility timeout 30 s, redrive after 3 receives) holding `bodies`, behind a
/// [`Timed`] probe, and its dead-letter queue.
fn hanging_queue(bodies: &[String]) -> (Arc<Timed>, Arc<InMemoryQueue>, Arc<InMemoryQueue>) {
    let dlq = queue(QueueConfig::default());
    let inner = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(30))
            .with_redrive(dlq.clone(), 3),
    );
    for body in bodies {
        inner.send(body.clone()).unwrap();
    }
    (Timed::new(inner.clone()), inner, dlq)
}

/// A mapping of `q` to `function`, attached to `rt`.
fn attached(
    rt: &Runtime,
    q: &Arc<Timed>,
    function: QueueFunction,
    config: QueueMappingConfig,
) -> QueueMapping {
    QueueMapping::builder(q.clone(), function, config)
        .attach(rt)
        .start()
        .unwrap()
}

/// Waits (up to ten minutes) until `mapping` has drained, then checks that no acknowledgement
/// reached `q` after its receipt expired.
async fn drained_in_time(mapping: &QueueMapping, q: &Timed) {
    tokio::time::timeout(Duration::from_secs(600), mapping.drained())
        .await
        .expect("drained within ten minutes")
        .unwrap();
    assert_eq!(
        q.late(),
        0,
        "an acknowledgement came after its receipt expired"
    );
}

fn bisecting(name: &str) -> QueueMappingConfig {
    QueueMappingConfig::new(name)
        .with_bisect_on_error(true)
        .with_initial_concurrency(1)
        .with_max_concurrency(2)
}

/// Visibility 30 s, function timeout 10 s, a batch of ten whose first message hangs until its
/// timeout: bisecting to the end would take some 40 s, past every receipt. The mapping stops
/// before an invocation could outlive the receipts, counts a receive only for the sub-batch
/// that failed last, hands the rest back, and so every good message is handled and deleted
/// and only the hanging one is dead-lettered.
#[tokio::test(start_paused = true)]
async fn a_hanging_poison_message_costs_the_good_ones_in_its_batch_nothing() {
    let rt = runtime();
    let (function, seen) = timed_function(&rt, "hang-first", None).await;
    let bodies: Vec<String> = std::iter::once("hang".to_owned())
        .chain((1..10).map(|i| format!("good-{i}")))
        .collect();
    let (q, inner, dlq) = hanging_queue(&bodies);
    let mapping = attached(&rt, &q, function, bisecting("hang-first"));
    drained_in_time(&mapping, &q).await;
    assert!(inner.is_empty());
    assert_eq!(dlq.bodies(), ["hang"], "only the poison is dead-lettered");
    let mut handled = handled_bodies(&seen);
    handled.sort();
    handled.dedup();
    assert_eq!(handled, bodies[1..], "every good message was handled");
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.source_errors), (9, 0), "{m:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A sub-batch that succeeds is acknowledged at once, not when the whole batch is done: with
/// the hanging message last, the first half is deleted as soon as it is handled.
#[tokio::test(start_paused = true)]
async fn a_sub_batch_is_acknowledged_as_soon_as_it_succeeds() {
    let rt = runtime();
    let (function, seen) = timed_function(&rt, "hang-last", None).await;
    let bodies: Vec<String> = (1..10)
        .map(|i| format!("good-{i}"))
        .chain(std::iter::once("hang".to_owned()))
        .collect();
    let (q, inner, dlq) = hanging_queue(&bodies);
    let started = Instant::now();
    let mapping = attached(&rt, &q, function, bisecting("hang-last"));
    // The whole batch fails at 10 s; its first half (five good messages) succeeds at once.
    tokio::time::sleep_until(started + Duration::from_secs(15)).await;
    assert_eq!(mapping.metrics().deleted, 5, "{:?}", seen.lock());
    drained_in_time(&mapping, &q).await;
    assert!(inner.is_empty());
    assert_eq!(dlq.bodies(), ["hang"]);
    assert_eq!(mapping.metrics().deleted, 9);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Throttle retries count from the receive, not from the invocation: a batch gathered for an
/// 8 s window, then throttled, is handed back once an invocation started after the next
/// backoff could no longer finish before its receipt expires, instead of being invoked late.
#[tokio::test(start_paused = true)]
async fn throttle_retries_stop_in_time_counting_from_the_receive() {
    let rt = runtime();
    let (function, seen) = timed_function(&rt, "throttled", Some(1)).await;
    let inner = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    inner.send("slow").unwrap();
    let q = Timed::new(inner.clone());
    // Another mapping holds the function's only slot for 20 s: two messages whose
    // invocations run to their 10 s timeout, one after the other.
    let hogs = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(3_600)));
    hogs.send("hang").unwrap();
    hogs.send("hang").unwrap();
    let _hog = QueueMapping::builder(
        hogs,
        function.clone(),
        QueueMappingConfig::new("hog")
            .with_batch_size(1)
            .with_initial_concurrency(1)
            .with_max_concurrency(2),
    )
    .attach(&rt)
    .start()
    .unwrap();
    crate::support::eventually(Duration::from_secs(1), || !seen.lock().is_empty()).await;
    let config = QueueMappingConfig::new("throttled").with_batching_window(Duration::from_secs(8));
    let mapping = attached(&rt, &q, function, config);
    drained_in_time(&mapping, &q).await;
    // Handed back unhandled, its receive uncounted, then handled once.
    assert_eq!(seen_slow(&seen), ["slow#1"]);
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.source_errors), (1, 0), "{m:?}");
    assert!(m.throttles >= 3, "{m:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Visibility 30 s, function timeout 10 s: a batch of one matching message and one the filter
/// drops, whose deletion takes 25 s. The matching one can no longer be handled and
/// acknowledged in time: it goes back uninvoked, its receive uncounted, and is handled on its
/// next receive (a batch of one record, handled by its own path, checks the budget too).
#[tokio::test(start_paused = true)]
async fn a_lone_record_past_its_budget_goes_back_uninvoked() {
    let rt = runtime();
    let (function, seen) = timed_function(&rt, "lone", None).await;
    let inner = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    inner.send(r#"{"keep":true}"#).unwrap();
    inner.send(r#"{"keep":false}"#).unwrap();
    let q = Timed::new(inner.clone());
    q.delay_next_ack(Duration::from_secs(25));
    let config = QueueMappingConfig::new("lone")
        .with_filter(r#"{"body": {"keep": [true]}}"#)
        .with_initial_concurrency(1)
        .with_max_concurrency(2);
    let mapping = attached(&rt, &q, function, config);
    drained_in_time(&mapping, &q).await;
    let m = mapping.metrics();
    assert_eq!(
        (m.filtered, m.released, m.invocations, m.deleted, m.failed),
        (1, 1, 1, 1, 0),
        "{m:?}"
    );
    assert_eq!(seen.lock().concat(), [r#"{"keep":true}#1"#]);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// The batching window and the function timeout must fit in the visibility timeout with room
/// for the acknowledgement (a tenth of it, at most a second): a function timeout equal to the
/// visibility timeout is refused, and so is a window that leaves the function too little.
#[tokio::test(start_paused = true)]
async fn a_window_and_timeout_that_do_not_fit_the_visibility_timeout_are_refused() {
    let rt = runtime();
    let (function, _seen) = timed_function(&rt, "fit", None).await; // timeout 10 s
    let visible = |seconds| {
        queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(seconds)))
    };
    let err = QueueMapping::start(
        visible(10),
        function.clone(),
        QueueMappingConfig::new("fit"),
    )
    .unwrap_err();
    assert_eq!(err.field, "function timeout", "{err}");
    assert!(err.allowed.contains("9s"), "{err}");
    let err = QueueMapping::start(
        visible(20),
        function.clone(),
        QueueMappingConfig::new("fit").with_batching_window(Duration::from_secs(10)),
    )
    .unwrap_err();
    assert_eq!(err.field, "batching_window", "{err}");
    assert!(err.allowed.contains("0ns..=9s"), "{err}");
    // Exactly fitting is fine: 9 s window + 10 s timeout + 1 s for the acknowledgement.
    let fits = QueueMapping::start(
        visible(20),
        function,
        QueueMappingConfig::new("fit").with_batching_window(Duration::from_secs(9)),
    )
    .unwrap();
    fits.stop(Duration::from_secs(1)).await;
}

/// Visibility 30 s, function timeout 10 s: a batch whose second message does not fit the
/// payload cap with the first, and whose release of it takes 25 s. The first, whose handler
/// takes 9.9 s, can no longer be handled and acknowledged in time: it goes back uninvoked, its
/// receive uncounted, and is handled on its next receive.
#[tokio::test(start_paused = true)]
async fn a_batch_cut_at_the_payload_cap_looks_at_its_budget_after_the_release() {
    let rt = runtime();
    let (function, seen) = timed_function(&rt, "cut", None).await;
    let inner = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    inner.send("slow").unwrap();
    // Fits the cap alone (a record's fixed part is about 1 KB), not with the first.
    inner.send("y".repeat(1_500)).unwrap();
    let q = Timed::new(inner.clone());
    q.delay_next_release(Duration::from_secs(25));
    let config = QueueMappingConfig::new("cut")
        .with_max_batch_bytes(3_000)
        .with_initial_concurrency(1)
        .with_max_concurrency(2);
    let mapping = attached(&rt, &q, function, config);
    drained_in_time(&mapping, &q).await;
    assert_eq!(
        seen_slow(&seen),
        ["slow#1"],
        "handled once, its first receive uncounted"
    );
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.failed, m.source_errors), (2, 0, 0), "{m:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}
