//! Events reach the instance the executor chose: with two instances of one function, each event
//! is answered by the process whose log captured it (per-process counters show no event was
//! taken by the other), and a timed-out instance's process is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use nimbus_core::{InvokeError, InvokeOptions, Runtime};
use serde_json::json;

use crate::support::{gone_within, register, unique, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_handled_by_the_instance_the_executor_chose() {
    let config = Client::Rust.config().unwrap();
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("two-instances"),
        config,
        Duration::from_secs(2),
        |f| f.with_max_concurrency(2),
    )
    .await;
    let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for round in 0..10 {
        // Two at once: both instances busy, each with the event the executor gave it.
        let a = f.handle.invoke_with(
            json!({"op": "print", "round": round}),
            InvokeOptions::default(),
        );
        let b = f.handle.invoke_with(
            json!({"op": "print", "round": round}),
            InvokeOptions::default(),
        );
        let (a, b) = tokio::join!(a, b);
        for invocation in [a, b] {
            let answer = invocation.result.unwrap();
            let id = invocation.report.unwrap().request_id;
            let pid = answer["pid"].as_u64().unwrap();
            let count = answer["count"].as_u64().unwrap();
            // The line is in the log of the instance the executor ran the invocation on: the
            // process that answered is that instance's.
            let tail = f.logs.get(id).unwrap();
            assert!(tail.contains(&format!("pid={pid} count={count}")), "{tail}");
            seen.entry(pid).or_default().push(count);
        }
    }
    assert_eq!(seen.len(), 2, "two instances: {seen:?}");
    for (pid, counts) in &mut seen {
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(
            counts, &expected,
            "process {pid} handled exactly its own events"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), 20);

    // A timed-out invocation takes its process with it; the other instance lives on.
    let pids: Vec<u64> = seen.keys().copied().collect();
    let outcome = f.handle.invoke(json!({"op": "sleep", "ms": 60_000})).await;
    assert!(
        matches!(outcome, Err(InvokeError::Timeout(_))),
        "{outcome:?}"
    );
    // The other instance serves warm; the timed-out one's process is gone.
    let survivor = f.handle.invoke(json!({"op": "echo"})).await.unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert!(pids.contains(&survivor));
    let timed_out = pids.iter().copied().find(|&pid| pid != survivor).unwrap();
    assert!(
        gone_within(timed_out, Duration::from_secs(5)).await,
        "process {timed_out} outlived its timeout"
    );
    assert!(crate::support::alive(survivor));
    assert_eq!(
        f.handle.metrics().cold_starts,
        2,
        "no new instance was needed"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_instance_s_process_is_stopped() {
    let config = Client::Rust.config().unwrap();
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("reaped"),
        config,
        Duration::from_secs(2),
        |f| f.with_idle_timeout(Duration::from_millis(100)),
    )
    .await;
    let answer = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    let pid = answer["pid"].as_u64().unwrap();
    // The reaper disposes of the idle instance: SIGTERM, then SIGKILL after the grace.
    assert!(
        gone_within(pid, Duration::from_secs(5)).await,
        "process {pid} outlived its reaping"
    );
    let next = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    assert_ne!(next["pid"].as_u64().unwrap(), pid);
    runtime.shutdown(Duration::from_secs(5)).await;
}
