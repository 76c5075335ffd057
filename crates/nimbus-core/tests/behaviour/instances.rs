//! Instance lifecycle: provisioning ahead of load and reaping idle instances.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{numbered, runtime, Hold};

#[tokio::test(start_paused = true)]
async fn min_instances_are_initialised_at_registration() {
    let rt = runtime(10);
    let inits = Arc::new(AtomicU64::new(0));
    let handle = rt
        .register(numbered("provisioned", Hold::new(), inits.clone()).with_min_instances(3))
        .await
        .unwrap();
    assert_eq!(inits.load(Ordering::SeqCst), 3);
    let m = handle.metrics();
    assert_eq!((m.instances, m.instances_idle, m.cold_starts), (3, 3, 0));
    handle.invoke(false).await.unwrap();
    assert_eq!(
        handle.metrics().cold_starts,
        0,
        "served warm by a provisioned instance"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_reaped_down_to_min_instances() {
    let rt = runtime(10);
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    let handle = rt
        .register(
            numbered("bursty", hold.clone(), inits.clone())
                .with_min_instances(1)
                .with_idle_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();

    // A burst of four concurrent invocations: one provisioned instance plus three cold starts.
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke(true).await })
        })
        .collect();
    hold.until_inside(4).await;
    assert_eq!(handle.metrics().instances, 4);
    hold.let_go(4);
    for t in burst {
        t.await.unwrap().unwrap();
    }
    assert_eq!(handle.metrics().instances_idle, 4);

    // Just before the idle timeout nothing is reaped...
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(handle.metrics().instances, 4);
    // ...and after it, the function scales in to its provisioned floor, never below.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handle.metrics().instances, 1);
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    assert_eq!(handle.metrics().instances, 1);
    assert_eq!(inits.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_used_instance_stays_warm_while_an_unused_one_is_reaped() {
    let rt = runtime(10);
    let hold = Hold::new();
    let inits = Arc::new(AtomicU64::new(0));
    let handle = rt
        .register(
            numbered("warm", hold.clone(), inits.clone())
                .with_idle_timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let pair: Vec<_> = (0..2)
        .map(|_| {
            let h = handle.clone();
            tokio::spawn(async move { h.invoke(true).await })
        })
        .collect();
    hold.until_inside(2).await;
    hold.let_go(2);
    for t in pair {
        t.await.unwrap().unwrap();
    }
    // Keep using one instance every 30 s: most-recently-used reuse leaves the other idle.
    let mut served = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        served.push(handle.invoke(false).await.unwrap());
    }
    assert!(served.windows(2).all(|w| w[0] == w[1]), "{served:?}");
    assert_eq!(
        handle.metrics().instances,
        1,
        "the unused instance was reaped"
    );
    // Then it goes idle too and the function scales to zero.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(handle.metrics().instances, 0);
}
