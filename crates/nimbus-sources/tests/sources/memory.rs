//! The in-memory queue's SQS semantics.

use std::time::Duration;

use nimbus_sources::{Outgoing, QueueConfig, QueueSource, SourceError};
use tokio::time::Instant;

use crate::support::queue;

fn bodies(messages: &[nimbus_sources::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn received_messages_are_invisible_until_the_visibility_timeout() {
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    q.send("a").unwrap();
    let first = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&first), ["a"]);
    assert_eq!(first[0].receive_count, 1);
    assert!(
        q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "in flight"
    );
    let counts = q.counts();
    assert_eq!((counts.visible, counts.in_flight), (0, 1));

    // A receiver waiting longer than the timeout gets it back when the timeout ends.
    let started = Instant::now();
    let again = q.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].receive_count, 2);
    // The old receipt no longer deletes it.
    assert_eq!(
        q.ack(&[first[0].receipt.clone()]).await,
        Err(SourceError::Refused { positions: vec![0] })
    );
    q.ack(&[again[0].receipt.clone()]).await.unwrap();
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_is_woken_by_a_send_not_by_a_timer() {
    let q = queue(QueueConfig::default());
    let receiver = tokio::spawn({
        let q = q.clone();
        async move {
            let started = Instant::now();
            let got = q.receive(10, Duration::from_secs(20)).await.unwrap();
            (started.elapsed(), got.len())
        }
    });
    tokio::task::yield_now().await;
    assert!(!receiver.is_finished());
    q.send("wake up").unwrap();
    let (waited, got) = receiver.await.unwrap();
    assert_eq!(
        (waited, got),
        (Duration::ZERO, 1),
        "woken at once by the send"
    );

    // With nothing sent, the long poll ends empty at its wait.
    let started = Instant::now();
    assert!(q
        .receive(10, Duration::from_secs(20))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(started.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn delayed_messages_appear_after_their_delay() {
    let q = queue(QueueConfig::default().with_delay(Duration::from_secs(5)));
    q.send("default delay").unwrap();
    q.send_message(Outgoing::new("no delay").with_delay(Duration::ZERO))
        .unwrap();
    assert_eq!(
        bodies(&q.receive(10, Duration::ZERO).await.unwrap()),
        ["no delay"]
    );
    let started = Instant::now();
    let later = q.receive(10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(bodies(&later), ["default delay"]);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn retry_later_makes_a_message_visible_after_the_delay() {
    let q = queue(QueueConfig::default());
    q.send("again").unwrap();
    let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    q.retry_later(&m.receipt, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
    let started = Instant::now();
    let again = q.receive(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(
        q.retry_later(&m.receipt, Duration::ZERO).await,
        Err(SourceError::UnknownReceipt)
    );
}

#[tokio::test(start_paused = true)]
async fn messages_are_redriven_after_max_receive_count() {
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(1))
            .with_redrive(dlq.clone(), 3),
    );
    q.send_message(Outgoing::new("poison").with_attribute("k", "v"))
        .unwrap();
    for expected in 1..=3 {
        let got = q.receive(1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got[0].receive_count, expected);
        // Not acknowledged: it comes back after the visibility timeout.
    }
    // The fourth receive finds it over the limit and moves it instead.
    assert!(q
        .receive(1, Duration::from_secs(5))
        .await
        .unwrap()
        .is_empty());
    assert!(q.is_empty());
    assert_eq!(q.counts().dead_lettered, 1);
    let dead = dlq.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&dead), ["poison"]);
    assert_eq!(dead[0].attributes.get("k"), Some("v"));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_hands_the_message_back() {
    let q = queue(QueueConfig::default().with_capacity(2));
    q.send("1").unwrap();
    q.send("2").unwrap();
    let refused = q.send("3").unwrap_err();
    assert_eq!(&refused.message.body[..], b"3");
    assert_eq!(refused.error, SourceError::Full { capacity: 2 });
    // In-flight messages count too, until deleted.
    let got = q.receive(10, Duration::ZERO).await.unwrap();
    assert!(q.send("4").is_err());
    q.ack(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    q.send("5").unwrap();
}

#[tokio::test(start_paused = true)]
async fn fifo_keeps_order_per_group_and_one_batch_per_group() {
    let q = queue(
        QueueConfig::default()
            .fifo()
            .with_visibility_timeout(Duration::from_secs(10)),
    );
    assert!(q.send("no group").is_err(), "FIFO messages need a group");
    for i in 0..3 {
        q.send_message(Outgoing::new(format!("a{i}")).with_group("a"))
            .unwrap();
        q.send_message(Outgoing::new(format!("b{i}")).with_group("b"))
            .unwrap();
    }
    // A batch of 2 takes the first two of group a, in order.
    let first = q.receive(2, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&first), ["a0", "a1"]);
    // Group a is in flight: the next receiver gets group b only.
    let second = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&second), ["b0", "b1", "b2"]);
    assert!(
        q.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "both groups busy"
    );
    q.ack(&second.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
        .await
        .unwrap();
    // a0 acknowledged, a1 not: group a stays blocked until a1 returns, then a1 comes first.
    q.ack(&[first[0].receipt.clone()]).await.unwrap();
    assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
    let started = Instant::now();
    let retried = q.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(bodies(&retried), ["a1", "a2"]);
    assert_eq!(retried[0].receive_count, 2);
}

#[test]
fn invalid_queue_configs_name_the_field() {
    let cases = [
        (
            QueueConfig::default().with_visibility_timeout(Duration::from_secs(43_201)),
            "visibility_timeout",
        ),
        (
            QueueConfig::default().with_delay(Duration::from_secs(901)),
            "delay",
        ),
        (QueueConfig::default().with_capacity(0), "capacity"),
    ];
    for (config, field) in cases {
        let err = nimbus_sources::InMemoryQueue::new(config).unwrap_err();
        assert_eq!(err.field, field);
    }
    let dlq = queue(QueueConfig::default());
    let err = nimbus_sources::InMemoryQueue::new(QueueConfig::default().with_redrive(dlq, 0))
        .unwrap_err();
    assert_eq!(
        (err.field, err.allowed.as_str()),
        ("max_receive_count", "1..=1000")
    );
}

#[tokio::test(start_paused = true)]
async fn release_hands_messages_back_at_once_without_counting_the_receive() {
    let dlq = queue(QueueConfig::default());
    let q = queue(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_secs(30))
            .with_redrive(dlq.clone(), 1),
    );
    q.send("a").unwrap();
    q.send("b").unwrap();
    let first = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&first), ["a", "b"]);
    let mut receipts: Vec<_> = first.iter().map(|m| m.receipt.clone()).collect();
    // Released ten times over a redrive limit of one: never dead-lettered, never counted.
    for _ in 0..10 {
        q.release(&receipts).await.unwrap();
        let again = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(
            bodies(&again),
            ["a", "b"],
            "visible again at once, in order"
        );
        assert!(again.iter().all(|m| m.receive_count == 1));
        receipts = again.iter().map(|m| m.receipt.clone()).collect();
    }
    assert!(dlq.is_empty());
    // A stale receipt is reported after the others are released.
    let stale = first[0].receipt.clone();
    let result = q.release(&[stale, receipts[1].clone()]).await;
    assert_eq!(result, Err(SourceError::Refused { positions: vec![0] }));
    let back = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&back), ["b"]);
    assert_eq!(back[0].receive_count, 1);
}

#[tokio::test(start_paused = true)]
async fn released_fifo_messages_keep_their_group_order() {
    let q = queue(QueueConfig::default().fifo());
    for body in ["1", "2", "3"] {
        q.send_message(Outgoing::new(body).with_group("g")).unwrap();
    }
    let got = q.receive(2, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&got), ["1", "2"]);
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    q.release(&receipts).await.unwrap();
    let again = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(bodies(&again), ["1", "2", "3"]);
    assert_eq!(
        again.iter().map(|m| m.receive_count).collect::<Vec<_>>(),
        [1, 1, 1]
    );
}

#[tokio::test(start_paused = true)]
async fn bodies_lists_visible_in_flight_and_delayed_messages() {
    let q = queue(QueueConfig::default());
    q.send("visible").unwrap();
    q.send("taken").unwrap();
    q.send_message(Outgoing::new("later").with_delay(Duration::from_secs(5)))
        .unwrap();
    // Receive one: it is in flight, and still held.
    let taken = q.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 1);
    let mut held: Vec<String> = q
        .bodies()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    held.sort();
    assert_eq!(held, ["later", "taken", "visible"]);
    q.ack(&[taken[0].receipt.clone()]).await.unwrap();
    assert_eq!(q.bodies().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ack_names_the_receipts_it_refused_and_counts_a_receipt_given_twice_once() {
    let q = queue(QueueConfig::default());
    for body in ["a", "b", "c"] {
        q.send(body).unwrap();
    }
    let got = q.receive(3, Duration::ZERO).await.unwrap();
    let r: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    q.ack(std::slice::from_ref(&r[1])).await.unwrap();
    // b's receipt was used; a's is given twice: only b is refused, by its position.
    let result = q
        .ack(&[r[0].clone(), r[1].clone(), r[0].clone(), r[2].clone()])
        .await;
    assert_eq!(result, Err(SourceError::Refused { positions: vec![1] }));
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn whole_batches_acknowledged_at_once_are_deleted_and_expired_ones_refused() {
    let visibility = Duration::from_secs(30);
    let q = queue(QueueConfig::default().with_visibility_timeout(visibility));
    for body in ["a", "b", "c", "d", "e", "f"] {
        q.send(body).unwrap();
    }
    let receipts = |got: &[nimbus_sources::Message]| -> Vec<_> {
        got.iter().map(|m| m.receipt.clone()).collect()
    };
    let first = receipts(&q.receive(2, Duration::ZERO).await.unwrap());
    let second = receipts(&q.receive(2, Duration::ZERO).await.unwrap());
    // Two whole batches in one ack, the second given twice: its repeat is not a refusal.
    let both: Vec<_> = first
        .iter()
        .chain(&second)
        .chain(&second)
        .cloned()
        .collect();
    q.ack(&both).await.unwrap();
    assert_eq!(q.counts().in_flight, 0);
    assert_eq!(q.len(), 2);
    let third = receipts(&q.receive(2, Duration::ZERO).await.unwrap());
    tokio::time::advance(visibility).await;
    // Its lease expired: nothing is deleted, both are refused and delivered again.
    let result = q.ack(&third).await;
    assert_eq!(
        result,
        Err(SourceError::Refused {
            positions: vec![0, 1]
        })
    );
    let again = q.receive(10, Duration::ZERO).await.unwrap();
    let mut delivered = bodies(&again);
    delivered.sort();
    assert_eq!(delivered, ["e", "f"]);
    assert!(again.iter().all(|m| m.receive_count == 2));
    // Out of order, a batch is deleted receipt by receipt.
    q.ack(&[again[1].receipt.clone(), again[0].receipt.clone()])
        .await
        .unwrap();
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_acknowledged_alone_is_freed_while_its_batch_mates_stay_in_flight() {
    let q = queue(QueueConfig::default().with_visibility_timeout(Duration::from_secs(30)));
    // Large enough to be stored as sent, so the test can watch its body's references.
    let first = bytes::Bytes::from(vec![b'a'; 4_096]);
    let second = bytes::Bytes::from(vec![b'b'; 4_096]);
    q.send_batch([Outgoing::new(first.clone()), Outgoing::new(second.clone())])
        .unwrap();
    let received = q.receive(10, Duration::ZERO).await.unwrap();
    let receipts: Vec<_> = received.iter().map(|m| m.receipt.clone()).collect();
    drop(received);
    assert!(!first.is_unique(), "the queue holds the first body");

    q.ack(&receipts[..1]).await.unwrap();
    assert!(
        first.is_unique(),
        "acknowledged: its body is freed, not kept until its batch mate's lease ends"
    );
    assert!(!second.is_unique(), "still in flight");

    // The other one comes back when its visibility timeout ends, and only it.
    let again = q.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, second);
    assert_eq!(again[0].receive_count, 2);
    q.ack(&[again[0].receipt.clone()]).await.unwrap();
    assert!(q.is_empty());
}
