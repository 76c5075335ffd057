//! Memory that buys CPU, enforced by the kernel: a Python instance's CPU share follows
//! `memory_mb / 1769`, allocating past its memory is `Runtime.OutOfMemory` (and the next
//! invocation runs on a new instance), REPORT carries `Max Memory Used`, the groups go with the
//! instances, and the `RLIMIT_DATA` fallback (cgroups off by configuration) limits memory only.

use std::time::Duration;

use nimbus_core::{InvokeError, InvokeOptions, Runtime};
use nimbus_process::{Enforcement, Limits, ProcessBackend};
use serde_json::{json, Value};

use crate::support::{pid_of, register, unique, Client, Registered};

/// Whether this host lets nimbus create cgroups; CI requires it (these machines allow it as
/// root), elsewhere the cgroup tests skip loudly.
fn cgroups_here() -> bool {
    let Some(config) = Client::Python.config() else {
        return false;
    };
    let enforcement = ProcessBackend::<Value, Value>::new(config)
        .unwrap()
        .enforcement();
    if enforcement == Enforcement::Cgroup {
        return true;
    }
    let message = "cgroups are not writable here: the kernel-enforced limits are not tested";
    if std::env::var("NIMBUS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// The Python fixture registered as `name` at `memory_mb`, under cgroups (or failing).
async fn python_under_cgroups(runtime: &Runtime, name: &str, memory_mb: u32) -> Registered {
    let config = Client::Python
        .config()
        .unwrap()
        .with_limits(Limits::Cgroups);
    register(runtime, name, config, Duration::from_secs(30), |f| {
        f.with_memory_mb(memory_mb)
    })
    .await
}

async fn cpu_share(memory_mb: u32) -> f64 {
    let runtime = Runtime::default();
    let f = python_under_cgroups(&runtime, &unique(&format!("spin-{memory_mb}")), memory_mb).await;
    let answer = f
        .handle
        .invoke(json!({"op": "spin", "ms": 2_000}))
        .await
        .unwrap();
    runtime.shutdown(Duration::from_secs(5)).await;
    answer["cpu_s"].as_f64().unwrap() / answer["wall_s"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_gets_the_cpu_share_its_memory_buys() {
    if !cgroups_here() {
        return;
    }
    for memory_mb in [128, 512] {
        let share = cpu_share(memory_mb).await;
        let expected = f64::from(memory_mb) / 1769.0;
        assert!(
            (share - expected).abs() <= 0.15 * expected,
            "{memory_mb} MB: share {share:.4}, expected {expected:.4} ± 15 %"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_past_the_memory_is_out_of_memory_and_the_next_invocation_runs() {
    if !cgroups_here() {
        return;
    }
    let runtime = Runtime::default();
    let f = python_under_cgroups(&runtime, &unique("oom"), 128).await;
    let pid = pid_of(&f.handle.invoke(json!({"op": "echo"})).await.unwrap());
    match f.handle.invoke(json!({"op": "alloc", "mb": 400})).await {
        Err(error @ InvokeError::OutOfMemory(_)) => {
            assert_eq!(error.error_type(), "Runtime.OutOfMemory");
        }
        other => panic!("expected an out-of-memory outcome, got {other:?}"),
    }
    let next = f.handle.invoke(json!({"op": "echo"})).await.unwrap();
    assert_ne!(next["pid"].as_u64().unwrap(), pid, "a new instance");
    assert_eq!(f.handle.metrics().cold_starts, 2);
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_memory_used_is_the_invocation_s_peak_and_the_groups_go_with_the_instances() {
    if !cgroups_here() {
        return;
    }
    let runtime = Runtime::default();
    let name = unique("peak");
    let f = python_under_cgroups(&runtime, &name, 512).await;
    let small = f
        .handle
        .invoke_with(json!({"op": "echo"}), InvokeOptions::default())
        .await;
    let big = f
        .handle
        .invoke_with(json!({"op": "alloc", "mb": 150}), InvokeOptions::default())
        .await;
    big.result.unwrap();
    let (small, big) = (small.report.unwrap(), big.report.unwrap());
    let (small_mb, big_mb) = (
        small.max_memory_used_mb.unwrap(),
        big.max_memory_used_mb.unwrap(),
    );
    assert!(big_mb >= 150, "the allocation shows: {big_mb} MB");
    assert!(small_mb < 100, "the echo did not allocate: {small_mb} MB");
    let tail = f.logs.get(big.request_id).unwrap();
    assert!(
        tail.contains(&format!("Max Memory Used: {big_mb} MB")),
        "{tail}"
    );
    assert!(!tail.contains("not capped"), "{tail}");
    runtime.shutdown(Duration::from_secs(5)).await;
    // The instance's groups (under this process's own, named after the function) were removed
    // with it: removal may finish on the reaper thread while a killed process leaves the group.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory = own
        .lines()
        .find_map(|l| {
            l.split_once(":memory:")
                .map(|(_, p)| p.trim_end_matches('/').to_owned())
        })
        .expect("a v1 memory hierarchy");
    let parents = [
        format!(
            "/sys/fs/cgroup/memory{memory}/nimbus-{}",
            std::process::id()
        ),
        format!("/sys/fs/cgroup/cpu/nimbus-{}", std::process::id()),
    ];
    let left = || {
        parents
            .iter()
            .flat_map(|parent| std::fs::read_dir(parent).into_iter().flatten().flatten())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|group| group.starts_with(&format!("{name}-")))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !left().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "groups left: {:?}",
            left()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cgroups_memory_is_limited_by_rlimit_and_cpu_is_said_not_capped() {
    let Some(config) = Client::Python.config() else {
        return;
    };
    let config = config.with_limits(Limits::Rlimit);
    let backend = ProcessBackend::<Value, Value>::new(config.clone()).unwrap();
    assert_eq!(backend.enforcement(), Enforcement::Rlimit);
    assert!(!backend.enforcement().cpu_capped());
    let runtime = Runtime::default();
    let f = register(
        &runtime,
        &unique("rlimit"),
        config,
        Duration::from_secs(30),
        |f| f.with_memory_mb(256),
    )
    .await;
    let pid = pid_of(&f.handle.invoke(json!({"op": "echo"})).await.unwrap());
    // Python raises MemoryError at the limit and survives: a function error, same instance.
    match f.handle.invoke(json!({"op": "alloc", "mb": 400})).await {
        Err(InvokeError::Function(error)) => assert_eq!(error.error_type(), "MemoryError"),
        other => panic!("expected MemoryError, got {other:?}"),
    }
    let invocation = f
        .handle
        .invoke_with(json!({"op": "alloc", "mb": 50}), InvokeOptions::default())
        .await;
    let answer = invocation.result.unwrap();
    assert_eq!(
        answer["pid"].as_u64().unwrap(),
        pid,
        "the instance survived"
    );
    let report = invocation.report.unwrap();
    assert!(report.max_memory_used_mb.unwrap() >= 50, "{report:?}");
    let tail = f.logs.get(report.request_id).unwrap();
    assert!(tail.contains("CPU: not capped"), "{tail}");
    runtime.shutdown(Duration::from_secs(5)).await;
}
