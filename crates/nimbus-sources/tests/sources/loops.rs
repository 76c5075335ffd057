//! Recursive loops through sources: a function that writes back to the queue or the object
//! store prefix that triggers it is stopped after 16 invocations, and the looping message or
//! event takes the failure path, counted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nimbus_core::handler::hops;
use nimbus_core::{
    handler_fn, Context, Function, FunctionError, FunctionHandle, InvocationRecord, Runtime,
};
use nimbus_sources::{
    BatchResponse, InMemoryObjectStore, NotificationConfig, NotificationRule, ObjectStore,
    Outgoing, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig, QueueSource, S3Event,
};
use tokio::sync::mpsc;

use crate::support::{queue, runtime};

#[tokio::test(start_paused = true)]
async fn a_function_writing_back_to_its_own_queue_is_stopped_and_the_message_dead_lettered() {
    let rt = runtime();
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(5))
            .with_redrive(dlq.clone(), 1),
    );
    let runs = Arc::new(AtomicU32::new(0));
    let (q_in, runs_in) = (q.clone(), Arc::clone(&runs));
    let function = rt
        .register(Function::new(
            "echo-loop",
            handler_fn(move |batch: QueueBatch, ctx: Context| {
                let (q, runs) = (q_in.clone(), Arc::clone(&runs_in));
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // The bug: each message is sent back to the queue that triggers us.
                    for record in &batch.records {
                        assert_eq!(
                            record.attributes.get(hops::ATTRIBUTE),
                            (ctx.hop_count() > 0)
                                .then(|| ctx.hop_count().to_string())
                                .as_deref()
                        );
                        q.send(record.body.clone())
                            .map_err(|e| FunctionError::new("Send", e.to_string()))?;
                    }
                    Ok::<_, FunctionError>(BatchResponse::success())
                }
            }),
        ))
        .await
        .unwrap();
    q.send("again").unwrap();
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("echo-loop"))
        .attach(&rt)
        .start()
        .unwrap();
    mapping.drained().await.unwrap();

    // Invoked with hop counts 0..=15; the 17th delivery was never handed to the function.
    assert_eq!(runs.load(Ordering::SeqCst), hops::LIMIT);
    let m = mapping.metrics();
    assert_eq!(m.recursive_loops, 1);
    assert_eq!(m.invocations, u64::from(hops::LIMIT));
    assert!(q.is_empty());
    // The looping message went to the dead-letter queue with its count.
    let dead = dlq.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].body[..], b"again");
    assert_eq!(
        dead[0].attributes.get(hops::ATTRIBUTE),
        Some(hops::LIMIT.to_string().as_str())
    );
    assert!(mapping.stop(Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn a_message_sent_by_the_host_carries_no_count() {
    let q = queue(QueueConfig::default());
    q.send("plain").unwrap();
    let got = q.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].attributes.get(hops::ATTRIBUTE), None);
}

/// Where the looping function finds its store, set once the store (whose rule targets the
/// function) is built.
pub(crate) type StoreSlot = Arc<OnceLock<Arc<dyn ObjectStore>>>;

/// The looping function and what the tests watch of it: its runs, and its on-failure records.
pub(crate) struct Thumbnailer {
    pub(crate) function: FunctionHandle<S3Event, ()>,
    pub(crate) store: StoreSlot,
    pub(crate) runs: Arc<AtomicU32>,
    pub(crate) failed: mpsc::UnboundedReceiver<InvocationRecord<S3Event, ()>>,
}

/// Registers a function that writes its output under the prefix `uploads/` that triggers it.
pub(crate) async fn thumbnailer(rt: &Runtime) -> Thumbnailer {
    let runs = Arc::new(AtomicU32::new(0));
    let (failed_tx, failed) = mpsc::unbounded_channel();
    let store = StoreSlot::default();
    let (slot_in, runs_in) = (Arc::clone(&store), Arc::clone(&runs));
    let function = rt
        .register(
            Function::new(
                "thumbnailer",
                handler_fn(move |message: S3Event, _ctx: Context| {
                    let (slot, runs) = (Arc::clone(&slot_in), Arc::clone(&runs_in));
                    async move {
                        let n = runs.fetch_add(1, Ordering::SeqCst);
                        let store = slot.get().expect("set before the first put");
                        // The bug: the output lands under the prefix that triggers us.
                        let key = format!("uploads/thumb-{n}.png");
                        for event in &message.records {
                            store.put(event.bucket(), &key, "png".into()).await?;
                        }
                        Ok::<_, FunctionError>(())
                    }
                }),
            )
            .with_on_failure(failed_tx),
        )
        .await
        .unwrap();
    Thumbnailer {
        function,
        store,
        runs,
        failed,
    }
}

/// The rules of a store that notifies `function` of every object created under `uploads/`.
pub(crate) fn uploads_rule(function: &FunctionHandle<S3Event, ()>) -> NotificationConfig {
    NotificationConfig::new(vec![NotificationRule::new(
        "uploads",
        &["s3:ObjectCreated:*"],
        Arc::new(function.clone()),
    )
    .unwrap()
    .with_prefix("uploads/")])
    .unwrap()
}

/// Puts the first upload and checks that the loop stops after 16 invocations, the 17th event
/// on the on-failure path.
pub(crate) async fn loop_is_stopped(mut t: Thumbnailer) {
    let store = t.store.get().expect("the store is set");
    store.create_bucket("photos").await.unwrap();
    store
        .put("photos", "uploads/cat.png", "png".into())
        .await
        .unwrap();
    // Bounded: a loop that is never stopped fails here instead of running for ever.
    let record = tokio::time::timeout(Duration::from_secs(60), t.failed.recv())
        .await
        .expect("the loop is stopped")
        .unwrap();
    assert_eq!(t.runs.load(Ordering::SeqCst), hops::LIMIT);
    assert_eq!(record.approximate_invoke_count, 0);
    assert_eq!(
        record.error.map(|e| e.error_type),
        Some("RecursiveInvocationException".to_owned())
    );
    assert_eq!(
        record.request.records[0].key(),
        format!("uploads/thumb-{}.png", hops::LIMIT - 1)
    );
    assert_eq!(t.function.metrics().recursive_loops, 1);
}

#[tokio::test(start_paused = true)]
async fn a_function_writing_under_its_own_trigger_prefix_is_stopped() {
    let rt = runtime();
    let t = thumbnailer(&rt).await;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemoryObjectStore::new(uploads_rule(&t.function)));
    assert!(t.store.set(store).is_ok());
    loop_is_stopped(t).await;
}

#[tokio::test(start_paused = true)]
async fn on_a_fifo_queue_a_looping_record_holds_only_what_follows_it_in_its_group() {
    let rt = runtime();
    let (function, seen) = crate::support::recording(&rt, "fifo-loop").await;
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .fifo()
            .with_visibility_timeout(Duration::from_secs(30))
            .with_redrive(dlq.clone(), 1),
    );
    let looping = hops::LIMIT.to_string();
    q.send_batch([
        Outgoing::new("before").with_group("g"),
        Outgoing::new("looping")
            .with_group("g")
            .with_attribute(hops::ATTRIBUTE, looping.as_str()),
        Outgoing::new("after").with_group("g"),
        Outgoing::new("other").with_group("h"),
    ])
    .unwrap();
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("fifo-loop"))
        .attach(&rt)
        .start()
        .unwrap();
    mapping.drained().await.unwrap();
    // `before` and the other group run; `after` may not overtake the looping record, so it
    // fails with it and, received as often, is dead-lettered with it (as under SQS FIFO).
    let mut handled = seen.lock().concat();
    handled.sort();
    assert_eq!(handled, vec!["before".to_owned(), "other".to_owned()]);
    let dead = dlq.receive(10, Duration::ZERO).await.unwrap();
    let dead: Vec<&[u8]> = dead.iter().map(|m| &m.body[..]).collect();
    assert_eq!(dead, vec![&b"looping"[..], &b"after"[..]]);
    assert_eq!(mapping.metrics().recursive_loops, 1);
    assert!(mapping.stop(Duration::from_secs(1)).await);
}
