//! Batch size 1 with a poller that receives several messages at once (its invocations are
//! short): each message is still an invocation of its own, a FIFO group keeps its order, and
//! what the poller hands back is not counted as a receive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, InMemoryQueue, Message, Outgoing, QueueBatch, QueueConfig, QueueFunction,
    QueueMapping, QueueMappingConfig, QueueSource, Receipt, SourceError,
};
use parking_lot::Mutex;

use crate::support::{eventually, queue, runtime};

/// An in-memory queue that records how many messages each receive asked for and got, and the
/// demand hints it is told.
struct Asking {
    inner: Arc<InMemoryQueue>,
    /// (asked, got) of each receive that got something.
    receives: Mutex<Vec<(usize, usize)>>,
    demands: Mutex<Vec<usize>>,
}

#[async_trait]
impl QueueSource for Asking {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>, SourceError> {
        let messages = self.inner.receive(max, wait).await?;
        if !messages.is_empty() {
            self.receives.lock().push((max, messages.len()));
        }
        Ok(messages)
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.ack(receipts).await
    }
    async fn retry_later(&self, receipt: &Receipt, delay: Duration) -> Result<(), SourceError> {
        self.inner.retry_later(receipt, delay).await
    }
    async fn release(&self, receipts: &[Receipt]) -> Result<(), SourceError> {
        self.inner.release(receipts).await
    }
    fn is_fifo(&self) -> bool {
        self.inner.is_fifo()
    }
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }
    fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout()
    }
    fn demand(&self, wanted: usize) {
        self.demands.lock().push(wanted);
    }
}

fn asking(inner: &Arc<InMemoryQueue>) -> Arc<Asking> {
    Arc::new(Asking {
        inner: Arc::clone(inner),
        receives: Mutex::default(),
        demands: Mutex::default(),
    })
}

/// What the function saw of each record: (body, its receive count), and the size of each
/// invocation's batch.
#[derive(Default)]
struct Watched {
    records: Mutex<Vec<(String, u32)>>,
    batch_sizes: Mutex<Vec<usize>>,
}

/// A function that records what it sees. A record whose body starts with `slow` takes 5 ms;
/// one starting with `fail-once` fails its batch the first time it is seen.
async fn watching(rt: &Runtime, name: &str) -> (QueueFunction, Arc<Watched>) {
    let seen = Arc::new(Watched::default());
    let failed_once = Arc::new(AtomicBool::new(false));
    let handle = rt
        .register(
            Function::new(
                name,
                handler_fn({
                    let seen = Arc::clone(&seen);
                    move |batch: QueueBatch, _ctx: Context| {
                        let seen = Arc::clone(&seen);
                        let failed_once = Arc::clone(&failed_once);
                        async move {
                            seen.batch_sizes.lock().push(batch.records.len());
                            let mut slow = false;
                            let mut fail = false;
                            for record in &batch.records {
                                let body = record.body_str().unwrap_or("<bytes>").to_owned();
                                slow |= body.starts_with("slow");
                                fail |= body.starts_with("fail-once")
                                    && !failed_once.swap(true, Ordering::SeqCst);
                                seen.records.lock().push((body, record.receive_count));
                            }
                            if slow {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if fail {
                                return Err(FunctionError::msg("failed once"));
                            }
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(1)),
        )
        .await
        .expect("register");
    (handle, seen)
}

/// One poller, and no second one for a minute of test-clock time.
fn one_poller(name: &str) -> QueueMappingConfig {
    QueueMappingConfig::new(name)
        .with_batch_size(1)
        .with_initial_concurrency(1)
        .with_max_concurrency(2)
        .with_scale_up_per_minute(1)
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(start_paused = true)]
async fn a_fast_poller_receives_several_and_invokes_each_alone() {
    let rt = runtime();
    let (function, seen) = watching(&rt, "fast").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    let sent = bodies("m", 40);
    q.send_batch(sent.iter().map(|b| Outgoing::new(b.clone())))
        .unwrap();
    let source = asking(&q);
    let mapping = QueueMapping::start(Arc::clone(&source), function, one_poller("fast")).unwrap();
    eventually(Duration::from_secs(10), || q.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);

    assert!(seen.batch_sizes.lock().iter().all(|&n| n == 1));
    let records = seen.records.lock().clone();
    assert_eq!(
        records,
        sent.into_iter().map(|b| (b, 1)).collect::<Vec<_>>()
    );
    let receives = source.receives.lock().clone();
    assert_eq!(
        receives[0],
        (1, 1),
        "one message until an invocation was timed"
    );
    assert!(
        receives
            .iter()
            .any(|&(asked, got)| asked == 10 && got == 10),
        "{receives:?}"
    );
    assert!(
        receives.len() < 10,
        "{} receives for 40 messages",
        receives.len()
    );
    // What one poller may hold at batch size 1, then nothing once stopped.
    assert_eq!(*source.demands.lock(), [10, 0]);
    let metrics = mapping.metrics();
    assert_eq!((metrics.invocations, metrics.deleted), (40, 40));
    assert_eq!((metrics.released, metrics.failed), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_is_given_one_message_at_a_time() {
    let rt = runtime();
    let (function, seen) = watching(&rt, "slow").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    q.send_batch(bodies("slow", 12).iter().map(|b| Outgoing::new(b.clone())))
        .unwrap();
    let source = asking(&q);
    let mapping = QueueMapping::start(Arc::clone(&source), function, one_poller("slow")).unwrap();
    eventually(Duration::from_secs(10), || q.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);

    assert_eq!(seen.records.lock().len(), 12);
    let receives = source.receives.lock().clone();
    assert_eq!(receives, vec![(1, 1); 12]);
}

#[tokio::test(start_paused = true)]
async fn a_poller_whose_handler_slows_down_hands_back_what_it_holds_uncounted() {
    let rt = runtime();
    let (function, seen) = watching(&rt, "slowing").await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    // The first alone; the next receive takes m1, slow2 and m3..m10, and the poller learns at
    // slow2 that it holds too many: it invokes m3, the one it may still hold, and hands back
    // the rest.
    let mut sent = bodies("m", 12);
    sent[2] = "slow2".to_owned();
    q.send_batch(sent.iter().map(|b| Outgoing::new(b.clone())))
        .unwrap();
    let source = asking(&q);
    let mapping =
        QueueMapping::start(Arc::clone(&source), function, one_poller("slowing")).unwrap();
    eventually(Duration::from_secs(10), || q.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);

    let receives = source.receives.lock().clone();
    assert_eq!(receives[..2], [(1, 1), (10, 10)], "{receives:?}");
    let mut records = seen.records.lock().clone();
    // Each once, and never counted as received before: what was handed back was not.
    records.sort();
    let mut expected: Vec<(String, u32)> = sent.into_iter().map(|b| (b, 1)).collect();
    expected.sort();
    assert_eq!(records, expected);
    let metrics = mapping.metrics();
    assert_eq!(metrics.released, 7, "m4..m10 went back");
    assert_eq!((metrics.deleted, metrics.failed), (12, 0));
}

#[tokio::test(start_paused = true)]
async fn a_fifo_failure_sends_the_rest_of_its_group_back_uncounted() {
    let rt = runtime();
    let (function, seen) = watching(&rt, "fifo").await;
    let q = queue(
        QueueConfig::default()
            .fifo()
            .with_visibility_timeout(Duration::from_secs(2)),
    );
    let sent = ["a0", "a1", "fail-once-a2", "a3", "a4"];
    q.send_batch(sent.iter().map(|b| Outgoing::new(*b).with_group("a")))
        .unwrap();
    let source = asking(&q);
    let mapping = QueueMapping::start(Arc::clone(&source), function, one_poller("fifo")).unwrap();
    eventually(Duration::from_secs(10), || q.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);

    let receives = source.receives.lock().clone();
    assert_eq!(receives[..2], [(1, 1), (10, 4)], "{receives:?}");
    // a3 and a4 wait for a2's retry and were not counted as received with it.
    let expected = [
        ("a0", 1),
        ("a1", 1),
        ("fail-once-a2", 1),
        ("fail-once-a2", 2),
        ("a3", 1),
        ("a4", 1),
    ];
    let records = seen.records.lock().clone();
    assert_eq!(
        records,
        expected
            .iter()
            .map(|&(b, n)| (b.to_owned(), n))
            .collect::<Vec<_>>()
    );
    let metrics = mapping.metrics();
    assert_eq!(
        (metrics.failed, metrics.released, metrics.deleted),
        (1, 2, 5)
    );
}

#[tokio::test(start_paused = true)]
async fn a_fifo_failure_holds_back_its_own_group_only() {
    let rt = runtime();
    let (function, seen) = watching(&rt, "groups").await;
    let q = queue(
        QueueConfig::default()
            .fifo()
            .with_visibility_timeout(Duration::from_secs(2)),
    );
    // The first alone; then one receive takes group a's rest and group b.
    q.send_message(Outgoing::new("a0").with_group("a")).unwrap();
    let source = asking(&q);
    let mapping = QueueMapping::start(Arc::clone(&source), function, one_poller("groups")).unwrap();
    eventually(Duration::from_secs(1), || seen.records.lock().len() == 1).await;
    q.send_batch([
        Outgoing::new("fail-once-a1").with_group("a"),
        Outgoing::new("a2").with_group("a"),
        Outgoing::new("b0").with_group("b"),
        Outgoing::new("b1").with_group("b"),
    ])
    .unwrap();
    eventually(Duration::from_secs(10), || q.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);

    let receives = source.receives.lock().clone();
    assert_eq!(receives[..2], [(1, 1), (10, 4)], "{receives:?}");
    let handled: Vec<String> = seen.records.lock().iter().map(|(b, _)| b.clone()).collect();
    // Group b is handled at once; a2 waits for a1's retry.
    assert_eq!(
        handled,
        ["a0", "fail-once-a1", "b0", "b1", "fail-once-a1", "a2"]
    );
    let metrics = mapping.metrics();
    assert_eq!(
        (metrics.failed, metrics.released, metrics.deleted),
        (1, 1, 5)
    );
}

/// A throttle holds the poller as a slow invocation would: what else it holds goes back, but
/// for the one it may still hold (m2).
#[tokio::test(start_paused = true)]
async fn a_throttled_poller_hands_back_what_it_holds() {
    let rt = runtime();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let function = rt
        .register(
            Function::new(
                "throttled",
                handler_fn({
                    let seen = Arc::clone(&seen);
                    move |batch: QueueBatch, _ctx: Context| {
                        let seen = Arc::clone(&seen);
                        async move {
                            for record in &batch.records {
                                let body = record.body_str().unwrap_or("?").to_owned();
                                if body == "hang" {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                }
                                seen.lock().push(format!("{body}#{}", record.receive_count));
                            }
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(5))
            .with_max_concurrency(1),
        )
        .await
        .expect("register");
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    q.send("m0").unwrap();
    let source = asking(&q);
    let mapping = QueueMapping::start(
        Arc::clone(&source),
        function.clone(),
        one_poller("throttled"),
    )
    .unwrap();
    eventually(Duration::from_secs(1), || seen.lock().len() == 1).await;
    // Another mapping takes the function's only slot for 2 s; then ten messages arrive.
    let hogs = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    hogs.send("hang").unwrap();
    let hog = QueueMapping::start(Arc::clone(&hogs), function, one_poller("hog")).unwrap();
    eventually(Duration::from_secs(1), || {
        q.counts().in_flight == 0 && hogs.counts().in_flight == 1
    })
    .await;
    q.send_batch(bodies("m", 11).into_iter().skip(1).map(Outgoing::new))
        .unwrap();
    eventually(Duration::from_secs(20), || q.is_empty() && hogs.is_empty()).await;
    assert!(mapping.stop(Duration::from_secs(1)).await);
    assert!(hog.stop(Duration::from_secs(1)).await);

    let receives = source.receives.lock().clone();
    assert_eq!(receives[..2], [(1, 1), (10, 10)], "{receives:?}");
    let metrics = mapping.metrics();
    assert!(metrics.throttles >= 1, "{metrics:?}");
    assert_eq!(metrics.released, 8, "m3..m10 went back: {metrics:?}");
    let mut handled = seen.lock().clone();
    handled.sort();
    let mut expected: Vec<String> = bodies("m", 11).iter().map(|b| format!("{b}#1")).collect();
    expected.push("hang#1".to_owned());
    expected.sort();
    assert_eq!(handled, expected);
}
