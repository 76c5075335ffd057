//! Object notifications: rules, overlap rejection, sequencers, key encoding, and the
//! local-directory store noticing changes made by other processes.

use std::sync::Arc;
use std::time::Duration;

use nimbus_sources::{
    decode_key, encode_key, InMemoryObjectStore, InMemoryQueue, NotificationConfig,
    NotificationRule, ObjectEvent, ObjectStore, QueueConfig, QueueSource,
};
use proptest::prelude::*;
use tokio::sync::mpsc;

type Events = mpsc::UnboundedReceiver<ObjectEvent>;

fn channel() -> (Arc<mpsc::UnboundedSender<ObjectEvent>>, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(tx), rx)
}

#[tokio::test]
async fn rules_filter_by_event_type_prefix_and_suffix() {
    let (images_tx, mut images) = channel();
    let (removed_tx, mut removed) = channel();
    let config = NotificationConfig::new(vec![
        NotificationRule::new("images", &["s3:ObjectCreated:*"], images_tx)
            .unwrap()
            .with_prefix("images/")
            .with_suffix(".jpg"),
        NotificationRule::new("removals", &["s3:ObjectRemoved:Delete"], removed_tx).unwrap(),
    ])
    .unwrap();
    let store = InMemoryObjectStore::new(config);
    store.create_bucket("media").await.unwrap();
    for key in [
        "images/a.jpg",
        "images/b.png",
        "docs/c.jpg",
        "images/sub/d.jpg",
    ] {
        store.put("media", key, "x".into()).await.unwrap();
    }
    store.delete("media", "docs/c.jpg").await.unwrap();
    let mut created = Vec::new();
    while let Ok(event) = images.try_recv() {
        assert_eq!(event.event_name, "ObjectCreated:Put");
        assert_eq!(event.s3.configuration_id, "images");
        assert_eq!(event.bucket(), "media");
        assert_eq!(event.s3.bucket.arn, "arn:aws:s3:::media");
        created.push(event.key());
    }
    assert_eq!(created, ["images/a.jpg", "images/sub/d.jpg"]);
    let gone = removed.try_recv().unwrap();
    assert_eq!(
        (
            gone.event_name.as_str(),
            gone.key().as_str(),
            gone.s3.object.size
        ),
        ("ObjectRemoved:Delete", "docs/c.jpg", 0)
    );
    assert!(removed.try_recv().is_err());
}

#[test]
fn overlapping_rules_are_rejected() {
    let (tx, _rx) = channel();
    let rule = |id: &str, events: &[&str], prefix: &str, suffix: &str| {
        NotificationRule::new(id, events, tx.clone())
            .unwrap()
            .with_prefix(prefix)
            .with_suffix(suffix)
    };
    let cases = [
        // (a, b, overlapping)
        (
            rule("a", &["s3:ObjectCreated:*"], "img/", ""),
            rule("b", &["s3:ObjectCreated:Put"], "img/thumbs/", ""),
            true,
        ),
        (
            rule("a", &["s3:ObjectCreated:*"], "img/", ".jpg"),
            rule("b", &["s3:ObjectCreated:*"], "img/", ".png"),
            false,
        ),
        (
            rule("a", &["s3:ObjectCreated:*"], "img/", ""),
            rule("b", &["s3:ObjectCreated:*"], "doc/", ""),
            false,
        ),
        (
            rule("a", &["s3:ObjectCreated:*"], "", ".jpg"),
            rule("b", &["s3:ObjectCreated:*"], "", "thumb.jpg"),
            true,
        ),
        (
            rule("a", &["s3:ObjectCreated:*"], "img/", ""),
            rule("b", &["s3:ObjectRemoved:*"], "img/", ""),
            false,
        ),
        (
            rule("a", &["s3:ObjectRemoved:*"], "", ""),
            rule("b", &["s3:ObjectRemoved:Delete"], "x", "y"),
            true,
        ),
    ];
    for (a, b, overlapping) in cases {
        let ids = format!("{} / {}", a.prefix, b.prefix);
        let result = NotificationConfig::new(vec![a, b]);
        assert_eq!(result.is_err(), overlapping, "{ids}");
        if let Err(e) = result {
            assert_eq!(e.field, "rules");
        }
    }
    assert!(NotificationRule::new("bad", &["s3:ObjectCreated:Post"], tx.clone()).is_err());
}

#[tokio::test]
async fn sequencers_order_events_for_the_same_key() {
    let (tx, mut rx) = channel();
    let store = InMemoryObjectStore::new(
        NotificationConfig::new(vec![NotificationRule::new(
            "all",
            &["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            tx,
        )
        .unwrap()])
        .unwrap(),
    );
    store.create_bucket("bucket").await.unwrap();
    for body in ["v1", "v2", "v3"] {
        store
            .put("bucket", "same key.txt", body.into())
            .await
            .unwrap();
    }
    store.delete("bucket", "same key.txt").await.unwrap();
    let events: Vec<ObjectEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(events.len(), 4);
    assert!(events
        .windows(2)
        .all(|w| w[0].s3.object.sequencer < w[1].s3.object.sequencer));
    assert_eq!(
        events[0].s3.object.key, "same+key.txt",
        "keys are URL-encoded"
    );
    assert_ne!(
        events[0].s3.object.e_tag, events[1].s3.object.e_tag,
        "etags follow content"
    );
    assert_eq!(events[3].event_name, "ObjectRemoved:Delete");
}

#[test]
fn keys_are_encoded_as_s3_sends_them() {
    assert_eq!(
        encode_key("photos/my cat+1 (2).jpg"),
        "photos/my+cat%2B1+%282%29.jpg"
    );
    assert_eq!(encode_key("naïve.txt"), "na%C3%AFve.txt");
    assert_eq!(
        decode_key("photos/my+cat%2B1+%282%29.jpg"),
        "photos/my cat+1 (2).jpg"
    );
    assert_eq!(decode_key("bad%zzescape%4"), "bad%zzescape%4");
}

proptest! {
    #[test]
    fn encoding_round_trips(key in "\\PC{0,40}") {
        prop_assert_eq!(decode_key(&encode_key(&key)), key);
    }
}

#[tokio::test]
async fn queue_targets_receive_s3_shaped_json() {
    let queue = Arc::new(InMemoryQueue::new(QueueConfig::default()).unwrap());
    let store = InMemoryObjectStore::new(
        NotificationConfig::new(vec![NotificationRule::new(
            "q",
            &["s3:ObjectCreated:*"],
            queue.clone(),
        )
        .unwrap()])
        .unwrap(),
    );
    store.create_bucket("bucket").await.unwrap();
    store.put("bucket", "k", "data".into()).await.unwrap();
    let message = queue.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let json: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
    let record = &json["Records"][0];
    assert_eq!(record["eventName"], "ObjectCreated:Put");
    assert_eq!(record["eventSource"], "aws:s3");
    assert_eq!(record["s3"]["object"]["size"], 4);
    assert!(record["eventTime"].as_str().unwrap().ends_with('Z'));
    for field in ["eTag", "sequencer", "key"] {
        assert!(record["s3"]["object"].get(field).is_some(), "{field}");
    }
}

/// The local-directory store (feature `directory`).
#[cfg(feature = "directory")]
mod directory {
    use std::time::Duration;

    use nimbus_sources::{
        DirectoryConfig, DirectoryStore, NotificationConfig, NotificationRule, ObjectEvent,
        ObjectStore,
    };

    use super::{channel, Events};

    /// A temporary directory removed when dropped.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "nimbus-{name}-{}-{:x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            // The store's watcher thread may still be persisting its index as the store is
            // dropped (it stops asynchronously): a file can appear while the tree is removed.
            for _ in 0..100 {
                match std::fs::remove_dir_all(&self.0) {
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                        std::thread::yield_now();
                    }
                    _ => break,
                }
            }
        }
    }

    /// Waits (real time: the events come from the OS) for the next event.
    async fn next(rx: &mut Events) -> ObjectEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("channel open")
    }

    /// Asserts that nothing more arrives for a while.
    async fn quiet(rx: &mut Events) {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(800), rx.recv()).await {
            panic!("unexpected event {} {}", event.event_name, event.key());
        }
    }

    async fn open(dir: &TempDir) -> (DirectoryStore, Events) {
        let (tx, rx) = channel();
        let config = NotificationConfig::new(vec![NotificationRule::new(
            "all",
            &["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            tx,
        )
        .unwrap()])
        .unwrap();
        let store = DirectoryStore::open(
            DirectoryConfig::new(&dir.0, config).with_settle(Duration::from_millis(100)),
        )
        .await
        .unwrap();
        (store, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_function_writing_under_its_own_trigger_prefix_in_a_directory_is_stopped() {
        use crate::loops::{loop_is_stopped, thumbnailer, uploads_rule};
        let dir = TempDir::new("loop");
        let rt = crate::support::runtime();
        let t = thumbnailer(&rt).await;
        let store = DirectoryStore::open(DirectoryConfig::new(&dir.0, uploads_rule(&t.function)))
            .await
            .unwrap();
        assert!(t.store.set(std::sync::Arc::new(store)).is_ok());
        loop_is_stopped(t).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_copied_in_by_another_process_are_notified_once() {
        let dir = TempDir::new("cp");
        let (store, mut rx) = open(&dir).await;
        store.create_bucket("inbox").await.unwrap();
        let source = dir.0.join("source.txt");
        std::fs::write(&source, "hello from cp\n").unwrap();
        let status = std::process::Command::new("cp")
            .arg(&source)
            .arg(dir.0.join("inbox").join("copied file.txt"))
            .status()
            .unwrap();
        assert!(status.success());
        let event = next(&mut rx).await;
        assert_eq!(
            (event.bucket(), event.key().as_str()),
            ("inbox", "copied file.txt")
        );
        assert_eq!(event.s3.object.size, 14);
        // A file at the root is not in a bucket: source.txt gave no event.
        quiet(&mut rx).await;
        std::fs::remove_file(dir.0.join("inbox").join("copied file.txt")).unwrap();
        let removed = next(&mut rx).await;
        assert_eq!(removed.event_name, "ObjectRemoved:Delete");
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_writes_to_one_file_is_one_event() {
        let dir = TempDir::new("burst");
        let (store, mut rx) = open(&dir).await;
        store.create_bucket("logs").await.unwrap();
        let path = dir.0.join("logs").join("app.log");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&path).unwrap();
            for i in 0..200 {
                writeln!(file, "line {i}").unwrap();
                file.flush().unwrap();
            }
        }
        let event = next(&mut rx).await;
        assert_eq!(event.key(), "app.log");
        assert_eq!(
            event.s3.object.size,
            std::fs::metadata(&path).unwrap().len()
        );
        quiet(&mut rx).await;
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_notifies_what_changed_while_stopped_and_nothing_else() {
        let dir = TempDir::new("restart");
        let (store, mut rx) = open(&dir).await;
        store.create_bucket("data").await.unwrap();
        store.put("data", "kept.txt", "same".into()).await.unwrap();
        store
            .put("data", "changed.txt", "before".into())
            .await
            .unwrap();
        store
            .put("data", "removed.txt", "bye".into())
            .await
            .unwrap();
        for _ in 0..3 {
            next(&mut rx).await;
        }
        quiet(&mut rx).await;
        drop(store);

        // While the host is down.
        std::fs::write(dir.0.join("data").join("added.txt"), "new").unwrap();
        std::fs::write(dir.0.join("data").join("changed.txt"), "after").unwrap();
        std::fs::remove_file(dir.0.join("data").join("removed.txt")).unwrap();

        let (store, mut rx) = open(&dir).await;
        let mut events: Vec<(String, String)> = Vec::new();
        for _ in 0..3 {
            let e = next(&mut rx).await;
            events.push((e.event_name.clone(), e.key()));
        }
        events.sort();
        assert_eq!(
            events,
            [
                ("ObjectCreated:Put".to_owned(), "added.txt".to_owned()),
                ("ObjectCreated:Put".to_owned(), "changed.txt".to_owned()),
                ("ObjectRemoved:Delete".to_owned(), "removed.txt".to_owned()),
            ]
        );
        quiet(&mut rx).await;
        drop(store);
    }
}
