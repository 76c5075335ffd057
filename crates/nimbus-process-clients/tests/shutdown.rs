//! A runtime shutdown leaves no process behind: busy and idle instances of a Rust function and
//! of a shell `bootstrap` (whose `sleep` and `curl` are grandchildren) are all gone once
//! `shutdown` returns. Alone in its test binary, so that no other test's processes are counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use nimbus_core::{Function, Runtime};
use nimbus_process::{ProcessBackend, ProcessConfig};
use serde_json::{json, Value};

/// Every process descended from this one (zombies included: they were not reaped).
fn descendants() -> Vec<u32> {
    let mut parent_of = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields follow the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        parent_of.insert(pid, ppid);
    }
    let me = std::process::id();
    let mut found = Vec::new();
    for &pid in parent_of.keys() {
        let mut at = pid;
        while let Some(&parent) = parent_of.get(&at) {
            if parent == me {
                found.push(pid);
                break;
            }
            if parent <= 1 {
                break;
            }
            at = parent;
        }
    }
    found
}

fn function(name: &str, config: ProcessConfig) -> Function<Value, Value> {
    ProcessBackend::<Value, Value>::new(config)
        .unwrap()
        .into_function(name)
        .with_timeout(Duration::from_secs(60))
        .with_max_concurrency(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_child_behind() {
    assert_eq!(descendants(), Vec::<u32>::new(), "no children before");
    let runtime = Runtime::default();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let shell = ProcessConfig::new(fixtures.join("shell/bootstrap"))
        .with_working_dir(fixtures.join("shell"));
    let rust = ProcessConfig::new(env!("CARGO_BIN_EXE_lambda-fixture"));
    let suffix = std::process::id();
    let mut busy = Vec::new();
    for (name, config) in [
        (format!("rust-{suffix}"), rust),
        (format!("shell-{suffix}"), shell),
    ] {
        let handle = runtime.register(function(&name, config)).await.unwrap();
        // Four instances, all idle afterwards...
        let warm = (0..4).map(|_| handle.invoke(json!({"op": "sleep", "ms": 200})));
        for outcome in futures_util::future::join_all(warm).await {
            outcome.unwrap();
        }
        // ...then two of them busy for a minute.
        for _ in 0..2 {
            let handle = handle.clone();
            busy.push(tokio::spawn(async move {
                handle.invoke(json!({"op": "sleep", "ms": 60_000})).await
            }));
        }
    }
    // Wait until the busy invocations have reached their processes: two running per function.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.concurrency().in_flight < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the busy invocations did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        descendants().len() >= 8,
        "eight instances run: {:?}",
        descendants()
    );

    let report = runtime.shutdown(Duration::from_millis(200)).await;
    assert_eq!(report.cancelled, 4, "the busy invocations were cancelled");
    for task in busy {
        assert!(task.await.unwrap().is_err());
    }
    assert_eq!(
        descendants(),
        Vec::<u32>::new(),
        "no child left after shutdown"
    );
    // Nor a cgroup: the per-host parents go with the last instance's group (the removal may
    // finish on the reaper thread, while a killed process is still leaving its group).
    let parents: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = match controllers {
                "cpu" | "cpu,cpuacct" => "cpu",
                "memory" => "memory",
                _ => return None,
            };
            Some(format!(
                "/sys/fs/cgroup/{mount}{}/nimbus-{}",
                path.trim_end_matches('/'),
                std::process::id()
            ))
        })
        .collect();
    if parents.len() != 2 {
        // Not a cgroup v1 host with cpu and memory: the instances' groups are checked elsewhere.
        eprintln!("SKIPPED: the cgroup check needs cgroup v1 cpu and memory ({parents:?})");
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while parents.iter().any(|p| std::path::Path::new(p).exists()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cgroups left: {parents:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
