//! A queue mapping's own permission: its function's role must allow reading the queue when
//! the mapping is attached, and a role changed later to deny it stops the mapping with the
//! reason, its messages left in the queue with their receive counts unchanged.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::permission::ExecutionRole;
use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
use nimbus_sources::{
    BatchResponse, MappingStatus, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig,
    QueueSource, QUEUE_ACTIONS,
};

use crate::support::{queue, runtime};

const ROLE: &str = "arn:aws:iam::000000000000:role/consumer";

/// Registers `name`, counting the records it is handed.
async fn counting(
    rt: &Runtime,
    name: &str,
    role: ExecutionRole,
) -> (nimbus_sources::QueueFunction, Arc<AtomicU32>) {
    let seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&seen);
    let function = rt
        .register(
            Function::new(
                name,
                handler_fn(move |batch: QueueBatch, _ctx: Context| {
                    counter.fetch_add(batch.records.len() as u32, Ordering::SeqCst);
                    async { Ok::<_, FunctionError>(BatchResponse::success()) }
                }),
            )
            .with_role(role),
        )
        .await
        .unwrap();
    (function, seen)
}

#[tokio::test(start_paused = true)]
async fn a_mapping_its_role_does_not_allow_is_refused_when_attached() {
    let rt = runtime();
    let q = queue(QueueConfig::default());
    q.send("kept").unwrap();
    // Receive and delete, but not GetQueueAttributes: not enough.
    let role = ExecutionRole::new(ROLE)
        .unwrap()
        .allow(["sqs:ReceiveMessage", "sqs:DeleteMessage"], ["*"]);
    let (function, seen) = counting(&rt, "refused-consumer", role).await;
    let error = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("refused"))
        .attach(&rt)
        .start()
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("role") && text.contains("sqs:GetQueueAttributes"),
        "{text}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    let messages = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].receive_count, 1,
        "never received by the refused mapping"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_mapping_denied_later_stops_and_leaves_its_messages_uncounted() {
    let rt = runtime();
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    let allowing = ExecutionRole::new(ROLE)
        .unwrap()
        .allow(QUEUE_ACTIONS, ["arn:aws:sqs:*:000000000000:*"]);
    let (function, seen) = counting(&rt, "later-consumer", allowing).await;
    let mapping = QueueMapping::builder(q.clone(), function, QueueMappingConfig::new("later"))
        .attach(&rt)
        .start()
        .unwrap();
    q.send("first").unwrap();
    mapping.drained().await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    // The role loses the queue; then three messages arrive.
    let denying = ExecutionRole::new(ROLE)
        .unwrap()
        .allow(QUEUE_ACTIONS, ["*"])
        .deny(["sqs:*"], ["arn:aws:sqs:*:000000000000:later"]);
    rt.set_role("later-consumer", Some(denying)).unwrap();
    for body in ["b", "c", "d"] {
        q.send(body).unwrap();
    }
    let status = mapping.drained().await.unwrap_err();
    let MappingStatus::Stopped { reason } = status else {
        panic!("stopped, not {status:?}");
    };
    assert!(
        reason.contains("access denied") && reason.contains("sqs:ReceiveMessage"),
        "{reason}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the function saw none of them"
    );
    let metrics = mapping.metrics();
    assert_eq!(metrics.failed, 0);
    // All three are in the queue, visible, and their next receive is their first.
    let messages = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(messages.len(), 3);
    assert!(
        messages.iter().all(|m| m.receive_count == 1),
        "{messages:?}"
    );
    q.ack(
        &messages
            .iter()
            .map(|m| m.receipt.clone())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert!(mapping.stop(Duration::from_secs(1)).await);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_mapping_its_role_does_not_allow_is_refused_when_attached() {
    use nimbus_sources::{
        InMemoryStream, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig,
        StreamResponse, STREAM_ACTIONS,
    };
    let rt = runtime();
    let stream = Arc::new(InMemoryStream::new(StreamConfig::default()).unwrap());
    let reader = |name: &str, role: ExecutionRole| {
        Function::new(
            name,
            handler_fn(|_batch: StreamBatch, _ctx: Context| async {
                Ok::<_, FunctionError>(StreamResponse::success())
            }),
        )
        .with_role(role)
    };
    let queue_only = ExecutionRole::new(ROLE)
        .unwrap()
        .allow(QUEUE_ACTIONS, ["*"]);
    let refused = rt
        .register(reader("stream-refused", queue_only))
        .await
        .unwrap();
    let error = StreamMapping::builder(
        stream.clone(),
        refused,
        StreamMappingConfig::new("s-refused"),
    )
    .in_memory_store()
    .start()
    .unwrap_err();
    assert_eq!(error.field, "role");
    assert!(error.to_string().contains("kinesis:GetRecords"), "{error}");
    let allowed = ExecutionRole::new(ROLE)
        .unwrap()
        .allow(STREAM_ACTIONS, ["arn:aws:kinesis:*:*:stream/*"]);
    let reader_fn = rt
        .register(reader("stream-allowed", allowed))
        .await
        .unwrap();
    let mapping = StreamMapping::builder(stream, reader_fn, StreamMappingConfig::new("s-allowed"))
        .in_memory_store()
        .start()
        .unwrap();
    assert!(mapping.stop(Duration::from_secs(1)).await);
    rt.shutdown(Duration::from_secs(1)).await;
}
