//! Unregistering retires a function: its handles refuse, in-flight work drains within a grace,
//! its async backlog is handed back, and its reservation returns with its last permit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{
    async_trait, Attachment, AttachmentStop, InvokeError, RejectReason, SHUTDOWN_SLACK,
};
use tokio::time::Instant;

use crate::support::{numbered, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn handles_refuse_and_the_reservation_returns_with_the_last_permit() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            numbered("retiring", hold.clone(), Arc::new(AtomicU64::new(0))).with_max_concurrency(5),
        )
        .await
        .unwrap();
    let running = tokio::spawn({
        let handle = handle.clone();
        async move { handle.invoke(true).await }
    });
    hold.until_inside(1).await;

    let unregistering = tokio::spawn({
        let rt = rt.clone();
        async move { rt.unregister("retiring", Duration::from_secs(30)).await }
    });
    while rt.function_names().contains(&"retiring".to_owned()) {
        tokio::task::yield_now().await;
    }
    // Let unregister close the function.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        handle.invoke(false).await,
        Err(InvokeError::Unregistered(name)) if name == "retiring"
    ));
    assert_eq!(
        handle.invoke_async(false).unwrap_err().reason,
        RejectReason::Unregistered
    );
    assert!(matches!(
        rt.invoke::<bool, u64>("retiring", false).await,
        Err(nimbus_core::CallError::Lookup(
            nimbus_core::LookupError::NotFound(_)
        ))
    ));
    assert_eq!(
        rt.concurrency().reserved,
        5,
        "the reservation is held while a permit is out"
    );
    assert!(
        !unregistering.is_finished(),
        "in-flight work gets the grace"
    );

    hold.let_go(1);
    running.await.unwrap().unwrap();
    let report = unregistering.await.unwrap().expect("it was registered");
    assert_eq!((report.in_flight, report.cancelled), (1, 0));
    assert!(report.reservation_returned);
    assert_eq!(report.instances_dropped, 1);
    assert_eq!(rt.concurrency().reserved, 0);
    assert_eq!(handle.metrics().instances, 0);
    assert!(rt.unregister("retiring", Duration::ZERO).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_grace_ends_in_cancellation_and_the_backlog_is_handed_back() {
    let rt = runtime(10);
    let hold = Hold::new();
    let handle = rt
        .register(
            numbered("backlog", hold.clone(), Arc::new(AtomicU64::new(0)))
                .with_max_concurrency(1)
                .with_timeout(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    // One event holds the only permit; three wait behind it.
    for _ in 0..4 {
        handle.invoke_async(true).unwrap();
    }
    hold.until_inside(1).await;

    let started = Instant::now();
    let report = rt
        .unregister("backlog", Duration::from_secs(2))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took <= Duration::from_secs(2) + SHUTDOWN_SLACK,
        "{took:?}"
    );
    assert_eq!(
        report.handed_back.len(),
        4,
        "the running one too, its attempt not counted"
    );
    for back in report.handed_back {
        assert_eq!((back.condition, back.attempts), (None, 0));
        assert!(back.downcast::<bool>().unwrap());
    }
    assert!(report.reservation_returned);
    assert_eq!(rt.concurrency().reserved, 0);
    assert_eq!(handle.async_metrics().pending, 0);
    // The runtime goes on; the name is free again.
    let again = rt
        .register(numbered(
            "backlog",
            Hold::new(),
            Arc::new(AtomicU64::new(0)),
        ))
        .await
        .unwrap();
    assert_eq!(again.invoke(false).await.unwrap(), 1);
}

#[derive(Debug)]
struct Recorder {
    name: &'static str,
    function: &'static str,
    stops: Arc<AtomicUsize>,
}

#[async_trait]
impl Attachment for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    fn function(&self) -> &str {
        self.function
    }

    async fn stop(&self, _deadline: Instant) -> AttachmentStop {
        self.stops.fetch_add(1, Ordering::SeqCst);
        AttachmentStop::clean(self.name).with_released(3)
    }
}

#[tokio::test(start_paused = true)]
async fn unregister_stops_the_attachments_of_that_function_only() {
    let rt = runtime(10);
    rt.register(numbered("fed", Hold::new(), Arc::new(AtomicU64::new(0))))
        .await
        .unwrap();
    let ours = Arc::new(AtomicUsize::new(0));
    let theirs = Arc::new(AtomicUsize::new(0));
    rt.attach(Recorder {
        name: "ours",
        function: "fed",
        stops: ours.clone(),
    })
    .unwrap();
    rt.attach(Recorder {
        name: "theirs",
        function: "other",
        stops: theirs.clone(),
    })
    .unwrap();
    let report = rt.unregister("fed", Duration::from_secs(1)).await.unwrap();
    assert_eq!(report.attachments.len(), 1);
    assert_eq!(
        (
            report.attachments[0].name.as_str(),
            report.attachments[0].released
        ),
        ("ours", 3)
    );
    assert_eq!(
        (ours.load(Ordering::SeqCst), theirs.load(Ordering::SeqCst)),
        (1, 0)
    );
    let shutdown = rt.shutdown(Duration::from_secs(1)).await;
    assert_eq!(shutdown.attachments.len(), 1);
    assert_eq!(theirs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unregister_is_bounded_when_a_destination_never_answers() {
    let rt = runtime(10);
    let (tx, _rx) = tokio::sync::mpsc::channel::<nimbus_core::InvocationRecord<bool, u64>>(1);
    let handle = rt
        .register(
            numbered("stuck", Hold::new(), Arc::new(AtomicU64::new(0)))
                .with_on_success(tx)
                .with_max_concurrency(2),
        )
        .await
        .unwrap();
    for _ in 0..5 {
        handle.invoke_async(false).unwrap();
    }
    let started = Instant::now();
    let report = rt
        .unregister("stuck", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(started.elapsed() <= Duration::from_millis(100) + SHUTDOWN_SLACK);
    // One record went into the channel; the other four are handed back.
    assert_eq!(report.handed_back.len(), 4);
    assert!(report.reservation_returned);
    assert_eq!(handle.async_metrics().pending, 0);
    assert_eq!(rt.concurrency().reserved, 0);
}
