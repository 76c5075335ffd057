//! A throttled queue batch: the invocation is refused before a handler sees it, so the mapping
//! retries the same batch, whose records own their bodies (moved out of the received messages,
//! not copied), and the handler sees every body once.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, MessageId, Outgoing, QueueBatch, QueueConfig, QueueFunction, QueueMapping,
    QueueMappingConfig, QueueRecord,
};
use tokio::sync::Notify;

use crate::support::{eventually, queue, runtime, Seen};

const LIMIT: Duration = Duration::from_secs(60);

/// A function with one instance at most that records `body#receive count@tag attribute` of
/// each batch; a `hold` record waits for `release`.
async fn one_slot(rt: &Runtime, name: &str, release: Arc<Notify>) -> (QueueFunction, Seen) {
    let seen: Seen = Arc::default();
    let function = Function::new(
        name,
        handler_fn({
            let seen = seen.clone();
            move |batch: QueueBatch, _ctx: Context| {
                let seen = seen.clone();
                let release = release.clone();
                async move {
                    let bodies: Vec<String> = batch
                        .records
                        .iter()
                        .map(|r| {
                            let tag = r.attributes.get("tag").unwrap_or("-");
                            let body = r.body_str().unwrap_or("?");
                            format!("{body}#{}@{tag}", r.receive_count)
                        })
                        .collect();
                    let hold = bodies.iter().any(|b| b.starts_with("hold#"));
                    seen.lock().push(bodies);
                    if hold {
                        release.notified().await;
                    }
                    Ok::<_, FunctionError>(BatchResponse::success())
                }
            }
        }),
    )
    .with_timeout(Duration::from_secs(30))
    .with_max_concurrency(1);
    (rt.register(function).await.expect("register"), seen)
}

/// Takes the function's one slot with a direct invocation of a `hold` record, returned once the
/// handler holds it (it ends when `release` is notified).
async fn take_the_slot(
    function: &QueueFunction,
    seen: &Seen,
) -> tokio::task::JoinHandle<Result<BatchResponse, nimbus_core::InvokeError>> {
    let hog = tokio::spawn({
        let function = function.clone();
        async move {
            let record = QueueRecord::new(MessageId::number(0), "hold", "elsewhere");
            function
                .invoke(QueueBatch::new("direct", vec![record]))
                .await
        }
    });
    eventually(LIMIT, || !seen.lock().is_empty()).await;
    hog
}

/// The function's one slot is taken while a batch of three arrives: its invocations are
/// throttled until the slot comes back, then the same three records, bodies and receive counts
/// intact, are handled in one invocation and deleted.
#[tokio::test(start_paused = true)]
async fn a_throttled_batch_is_retried_whole_with_its_bodies() {
    let rt = runtime();
    let release = Arc::new(Notify::new());
    let (function, seen) = one_slot(&rt, "throttled-whole", release.clone()).await;
    let hog = take_the_slot(&function, &seen).await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(300)));
    for body in ["a", "b", "c"] {
        q.send(body).unwrap();
    }
    let config = QueueMappingConfig::new("throttled-whole")
        .with_batch_size(10)
        .with_batching_window(Duration::from_millis(10))
        .with_initial_concurrency(1)
        .with_max_concurrency(2);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || mapping.metrics().throttles >= 2).await;
    assert_eq!(seen.lock().len(), 1, "nothing ran while the slot was taken");
    release.notify_one();
    hog.await.unwrap().unwrap();
    eventually(LIMIT, || mapping.metrics().deleted == 3).await;
    assert_eq!(
        *seen.lock(),
        [vec!["hold#1@-"], vec!["a#1@-", "b#1@-", "c#1@-"]],
        "one invocation of the whole batch after the throttles"
    );
    let m = mapping.metrics();
    assert_eq!(
        (m.failed, m.released, m.function_errors),
        (0, 0, 0),
        "{m:?}"
    );
    assert!(q.is_empty());
    mapping.stop(Duration::from_secs(1)).await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// The same at batch size 1, where each record is invoked on its own: the throttled record
/// comes back to the handler with its body and its attributes.
#[tokio::test(start_paused = true)]
async fn a_throttled_single_record_keeps_its_body_and_attributes() {
    let rt = runtime();
    let release = Arc::new(Notify::new());
    let (function, seen) = one_slot(&rt, "throttled-single", release.clone()).await;
    let hog = take_the_slot(&function, &seen).await;
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(300)));
    q.send_message(Outgoing::new("one").with_attribute("tag", "t1"))
        .unwrap();
    let config = QueueMappingConfig::new("throttled-single")
        .with_batch_size(1)
        .with_initial_concurrency(1)
        .with_max_concurrency(2);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(LIMIT, || mapping.metrics().throttles >= 2).await;
    release.notify_one();
    hog.await.unwrap().unwrap();
    eventually(LIMIT, || mapping.metrics().deleted == 1).await;
    assert_eq!(*seen.lock(), [vec!["hold#1@-"], vec!["one#1@t1"]]);
    assert!(q.is_empty());
    mapping.stop(Duration::from_secs(1)).await;
    rt.shutdown(Duration::from_secs(1)).await;
}
