//! Payload limits: SQS's 1 MiB message (body plus attribute names and values) refused on
//! send, batch sends that report each refused message and keep the others, and the queue
//! mapping's 6 MB invocation payload cap, applied with or without a batching window.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{handler_fn, Context, Function, FunctionError};
use nimbus_sources::{
    BatchResponse, Outgoing, QueueBatch, QueueConfig, QueueMapping, QueueMappingConfig,
    QueueSource, SourceError,
};
use parking_lot::Mutex;

use crate::support::{eventually, queue, runtime};

const MIB: usize = 1_048_576;

#[tokio::test(start_paused = true)]
async fn messages_above_one_mib_are_refused_with_their_size_and_the_limit() {
    let q = queue(QueueConfig::default());
    assert_eq!(q.config().max_message_size, MIB);
    q.send(vec![b'x'; MIB]).unwrap();
    let refused = q.send(vec![b'x'; MIB + 1]).unwrap_err();
    assert_eq!(
        refused.error,
        SourceError::TooLarge {
            size: MIB + 1,
            limit: MIB
        }
    );
    assert_eq!(refused.message.body.len(), MIB + 1, "handed back unchanged");
    // Attribute names and values count.
    let refused = q
        .send_message(Outgoing::new(vec![b'x'; MIB - 4]).with_attribute("ab", "cde"))
        .unwrap_err();
    assert_eq!(
        refused.error,
        SourceError::TooLarge {
            size: MIB + 1,
            limit: MIB
        }
    );
    q.send_message(Outgoing::new(vec![b'x'; MIB - 4]).with_attribute("ab", "cd"))
        .unwrap();

    let small = queue(QueueConfig::default().with_max_message_size(2_048));
    assert!(matches!(
        small.send(vec![0u8; 2_049]).unwrap_err().error,
        SourceError::TooLarge {
            size: 2_049,
            limit: 2_048
        }
    ));
    for bad in [1_023, MIB + 1] {
        let err =
            nimbus_sources::InMemoryQueue::new(QueueConfig::default().with_max_message_size(bad))
                .unwrap_err();
        assert_eq!((err.scope, err.field), ("queue", "max_message_size"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_send_reports_the_refused_messages_and_sends_the_others() {
    let q = queue(QueueConfig::default());
    let batch = vec![
        Outgoing::new("a"),
        Outgoing::new(vec![b'x'; MIB + 1]),
        Outgoing::new("c"),
        Outgoing::new(vec![b'y'; MIB + 5]),
        Outgoing::new("e"),
    ];
    let err = q.send_batch(batch).unwrap_err();
    assert_eq!(
        err.sent.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        [0, 2, 4]
    );
    assert_eq!(
        err.refused
            .iter()
            .map(|(at, e)| (*at, e.error.clone()))
            .collect::<Vec<_>>(),
        [
            (
                1,
                SourceError::TooLarge {
                    size: MIB + 1,
                    limit: MIB
                }
            ),
            (
                3,
                SourceError::TooLarge {
                    size: MIB + 5,
                    limit: MIB
                }
            ),
        ]
    );
    let mut bodies: Vec<_> = q.bodies().iter().map(|b| b.to_vec()).collect();
    bodies.sort();
    assert_eq!(bodies, [b"a".to_vec(), b"c".to_vec(), b"e".to_vec()]);
}

/// (records, serialised size, receive counts) of each invocation.
type Batches = Arc<Mutex<Vec<(usize, usize, Vec<u32>)>>>;

async fn run_capped(window: Duration) -> Batches {
    let rt = runtime();
    let batches: Batches = Arc::default();
    let function = rt
        .register(
            Function::new(
                "big",
                handler_fn({
                    let batches = batches.clone();
                    move |batch: QueueBatch, _ctx: Context| {
                        let batches = batches.clone();
                        async move {
                            let size = serde_json::to_vec(&batch).unwrap().len();
                            let counts = batch.records.iter().map(|r| r.receive_count).collect();
                            batches.lock().push((batch.records.len(), size, counts));
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(60)));
    for i in 0..10u8 {
        q.send(vec![b'a' + i; 1_000_000]).unwrap();
    }
    let config = QueueMappingConfig::new("big")
        .with_batch_size(10)
        .with_batching_window(window);
    let mapping = QueueMapping::start(q.clone(), function, config).unwrap();
    eventually(Duration::from_secs(600), || q.is_empty()).await;
    let m = mapping.metrics();
    assert_eq!((m.deleted, m.failed), (10, 0));
    mapping.stop(Duration::from_secs(1)).await;
    batches
}

#[tokio::test(start_paused = true)]
async fn a_batch_never_carries_more_than_six_mb_and_the_rest_waits_uncounted() {
    for window in [Duration::ZERO, Duration::from_secs(1)] {
        let batches = run_capped(window).await;
        let batches = batches.lock();
        assert_eq!(
            batches.iter().map(|b| b.0).sum::<usize>(),
            10,
            "every message handled once ({window:?})"
        );
        for (records, size, counts) in batches.iter() {
            assert!(
                *size <= 6_291_456,
                "{records} records in {size} bytes ({window:?})"
            );
            assert!(
                counts.iter().all(|&c| c == 1),
                "receives not counted: {counts:?}"
            );
        }
        assert!(
            batches.iter().any(|b| b.0 == 6),
            "a batch filled to the cap: {batches:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_hop_count_an_invocation_adds_counts_towards_the_limit() {
    use nimbus_core::handler::hops;
    let q = queue(QueueConfig::default());
    // Within the limit alone, over it with `nimbus-hops` = "5" (11 + 1 bytes) added.
    let body = vec![b'x'; MIB - 5];
    q.send(body.clone()).unwrap();
    let refused = hops::sync_scope(4, || q.send(body.clone())).unwrap_err();
    assert_eq!(
        refused.error,
        SourceError::TooLarge {
            size: MIB + 7,
            limit: MIB
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_queue_takes_a_redriven_message_whatever_its_own_limit() {
    let dlq = queue(QueueConfig::default().with_max_message_size(1_024));
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(1))
            .with_redrive(dlq.clone(), 1),
    );
    q.send(vec![b'x'; 4_096]).unwrap();
    assert_eq!(q.receive(1, Duration::ZERO).await.unwrap().len(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    // The second receive is over the limit: redriven, not made visible again for ever.
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
    assert!(q.is_empty());
    assert_eq!(
        dlq.receive(1, Duration::ZERO).await.unwrap()[0].body.len(),
        4_096
    );
}

#[tokio::test(start_paused = true)]
async fn on_a_fifo_queue_a_refused_message_refuses_the_rest_of_its_group_in_the_batch() {
    let q = queue(QueueConfig::default().fifo());
    let err = q
        .send_batch([
            Outgoing::new("g1").with_group("g"),
            Outgoing::new(vec![b'x'; MIB + 1]).with_group("g"),
            Outgoing::new("g3").with_group("g"),
            Outgoing::new("h1").with_group("h"),
        ])
        .unwrap_err();
    let sent: Vec<usize> = err.sent.iter().map(|(at, _)| *at).collect();
    let refused: Vec<usize> = err.refused.iter().map(|(at, _)| *at).collect();
    assert_eq!((sent, refused), (vec![0, 3], vec![1, 2]));
    assert!(err.refused[1]
        .1
        .to_string()
        .contains("earlier message of group g"));
    // Formatting never panics, even for a value built by hand with nothing refused.
    let empty = nimbus_sources::SendBatchError {
        sent: Vec::new(),
        refused: Vec::new(),
    };
    assert_eq!(empty.to_string(), "0 of the batch's messages refused");
}
