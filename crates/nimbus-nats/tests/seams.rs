//! The NATS queue at its seams: release, endless waits and delays, error classes, and messages
//! from plain producers (a core NATS publish, as `nats pub` does).
//!
//! Skips loudly when the server is down, unless `NIMBUS_REQUIRE_SERVICES=1` (see `support`).

use std::time::Duration;

use nimbus_nats::{NatsConfig, NatsQueue};
use nimbus_sources::{QueueSource, SourceError};

mod support;

use support::{url, Names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_message_comes_back_at_once_with_its_receive_count_unchanged() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = NatsQueue::connect(
        names
            .config("release")
            .with_ack_wait(Duration::from_secs(30))
            .with_max_receive_count(2),
    )
    .await
    .unwrap();
    let client = async_nats::connect(url()).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("kind", "order");
    client
        .publish_with_headers(queue.config().subject.clone(), headers, "keep me".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut first = None;
    for round in 0..4 {
        let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: received again at once");
        let message = &got[0];
        assert_eq!(message.receive_count, 1, "round {round}");
        assert_eq!(&message.body[..], b"keep me");
        assert_eq!(
            message.attributes.get("kind"),
            Some("order"),
            "round {round}"
        );
        assert_eq!(
            message.attributes.iter().count(),
            1,
            "{:?}",
            message.attributes
        );
        // The same message: same id and send time, whatever the adapter did to release it.
        let seen = first.get_or_insert_with(|| (message.id.clone(), message.sent_at));
        assert_eq!(
            (&seen.0, seen.1),
            (&message.id, message.sent_at),
            "round {round}"
        );
        queue
            .release(std::slice::from_ref(&message.receipt))
            .await
            .unwrap();
    }
    assert_eq!(queue.dead_letter_count().await.unwrap(), 0);
    // Counted receives still count: two failed attempts, then redrive.
    for expected in 1..=2 {
        let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got[0].receive_count, expected);
        queue
            .retry_later(&got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(queue
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(queue.dead_letter_count().await.unwrap(), 1);
    assert_eq!(queue.queue_stats().await.unwrap().backlog(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_waits_and_delays_do_not_panic() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = NatsQueue::connect(names.config("endless")).await.unwrap();
    queue.send("x".into()).await.unwrap();
    let got = queue.receive(1, Duration::MAX).await.unwrap();
    assert_eq!(got.len(), 1);
    queue
        .retry_later(&got[0].receipt, Duration::MAX)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_whether_to_retry() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = NatsQueue::connect(
        names
            .config("gone")
            .with_request_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    names
        .jetstream()
        .await
        .delete_stream(&queue.config().stream)
        .await
        .unwrap();
    let error = queue
        .receive(1, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
    let down = NatsQueue::connect(NatsConfig::new("nats://127.0.0.1:1", "X"))
        .await
        .unwrap_err();
    let error = SourceError::from(down);
    assert!(!error.is_permanent(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_max_message_size_are_refused_before_publishing() {
    let Some(names) = Names::new().await else {
        return;
    };
    let queue = NatsQueue::connect(names.config("big").with_max_message_size(2_048))
        .await
        .unwrap();
    let err = queue.send(vec![b'x'; 2_049].into()).await.unwrap_err();
    assert_eq!(err.retry(), nimbus_sources::Retry::Permanent);
    assert_eq!(
        nimbus_sources::SourceError::from(err),
        nimbus_sources::SourceError::TooLarge {
            size: 2_049,
            limit: 2_048
        }
    );
    queue.send(vec![b'x'; 2_048].into()).await.unwrap();
    let got = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "only the message within the limit was published"
    );
    queue.ack(&[got[0].receipt.clone()]).await.unwrap();
    let refused = NatsQueue::connect(names.config("bad").with_max_message_size(0))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("max_message_size"), "{refused}");
}
