//! Kernel-enforced limits for one instance: a child cgroup of nimbus's own, with a CPU quota of
//! `period × memory_mb / 1769` and a memory limit of `memory_mb`, on cgroup v1 (separate `cpu`
//! and `memory` hierarchies) or v2 (one unified hierarchy with both controllers). Its peak memory
//! gives `Max Memory Used`; its OOM-kill count tells an out-of-memory kill from a crash.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The CFS period the quota is a share of: 20 ms rather than the kernel's default 100 ms, so that
/// a short burst cannot run unthrottled for a whole default period (at 1,024 MB that would be
/// 58 ms at full speed) and a function's share shows within a fraction of a second. At 128 MB the
/// quota is 1.45 ms, above the kernel's 1 ms floor.
const PERIOD_US: u64 = 20_000;
/// The kernel refuses quotas below 1 ms.
const MIN_QUOTA_US: u64 = 1_000;
/// Lambda's rule: 1,769 MB buys one vCPU.
const MB_PER_VCPU: u64 = 1_769;

/// Where this host keeps the groups nimbus may create.
#[derive(Debug, Clone)]
enum Hierarchy {
    /// cgroup v1: our own `cpu` and `memory` groups (each under its own mount).
    V1 { cpu: PathBuf, memory: PathBuf },
    /// cgroup v2: our own group, with `cpu` and `memory` delegated.
    V2 { own: PathBuf },
}

/// The host's hierarchy, found once; `Err` says why cgroups cannot be used here.
fn hierarchy() -> &'static Result<Hierarchy, String> {
    static HIERARCHY: OnceLock<Result<Hierarchy, String>> = OnceLock::new();
    HIERARCHY.get_or_init(detect)
}

/// Whether cgroups can be used on this host, and if not why.
pub(crate) fn available() -> Result<(), String> {
    hierarchy().as_ref().map(|_| ()).map_err(Clone::clone)
}

fn detect() -> Result<Hierarchy, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mut cpu = None;
    let mut memory = None;
    let mut unified = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            unified = Some(path.to_owned());
        }
        for controller in controllers.split(',') {
            match controller {
                "cpu" => cpu = Some(path.to_owned()),
                "memory" => memory = Some(path.to_owned()),
                _ => {}
            }
        }
    }
    let root = Path::new("/sys/fs/cgroup");
    if let (Some(cpu), Some(memory)) = (cpu, memory) {
        let cpu_mount = [root.join("cpu"), root.join("cpu,cpuacct")]
            .into_iter()
            .find(|p| p.join("cpu.cfs_quota_us").exists())
            .ok_or("no cgroup v1 cpu controller mounted under /sys/fs/cgroup")?;
        let hierarchy = Hierarchy::V1 {
            cpu: cpu_mount.join(cpu),
            memory: root.join("memory").join(memory),
        };
        return check_writable(hierarchy);
    }
    if let Some(path) = unified {
        let own = root.join(path);
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            return check_writable(Hierarchy::V2 { own });
        }
        return Err("cgroup v2 without the cpu and memory controllers".to_owned());
    }
    Err("no cgroup cpu and memory controllers found".to_owned())
}

/// Creates and removes a probe group, so that a host where they are read-only is found out once,
/// at the first instance, rather than at every spawn. Groups that an earlier nimbus process left
/// (it exited before a removal finished) are swept at the same time.
fn check_writable(hierarchy: Hierarchy) -> Result<Hierarchy, String> {
    for base in bases(&hierarchy) {
        sweep(&base);
    }
    let probe = format!("nimbus-probe-{}", std::process::id());
    for base in bases(&hierarchy) {
        let dir = base.join(&probe);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create a cgroup under {}: {e}", base.display()))?;
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(hierarchy)
}

fn bases(hierarchy: &Hierarchy) -> Vec<PathBuf> {
    match hierarchy {
        Hierarchy::V1 { cpu, memory } => vec![cpu.clone(), memory.clone()],
        Hierarchy::V2 { own } => vec![own.clone()],
    }
}

/// Creating and removing groups is serialised: the per-host parent is created by one instance
/// and may be removed by another's drop, which must not fall between a create's steps.
static GROUPS: Mutex<()> = Mutex::new(());

/// Numbers the groups of this process, so that a name is never reused (a group left by an
/// earlier instance, or a second runtime's function of the same name, is never shared).
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// One instance's group (a directory in each hierarchy), removed on drop.
#[derive(Debug)]
pub(crate) struct InstanceGroup {
    dirs: Vec<PathBuf>,
    v2: bool,
    /// The peak-memory file, kept open: a read is then one `pread`, not an open and a close.
    peak: Option<File>,
    /// OOM kills in the group when the instance was ready: a runtime's own subprocess killed
    /// during init is not the instance's death.
    oom_baseline: u64,
}

impl InstanceGroup {
    /// Creates `nimbus-<pid>/<name>` under our own group(s) with the limits of `memory_mb`.
    pub(crate) fn create(name: &str, memory_mb: u32) -> io::Result<Self> {
        let hierarchy = hierarchy()
            .as_ref()
            .map_err(|why| io::Error::other(why.clone()))?;
        let parent = format!("nimbus-{}", std::process::id());
        let name = format!("{name}-{}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
        let quota = (PERIOD_US * u64::from(memory_mb) / MB_PER_VCPU).max(MIN_QUOTA_US);
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let (dirs, v2) = match hierarchy {
            Hierarchy::V1 { cpu, memory } => (
                vec![
                    cpu.join(&parent).join(&name),
                    memory.join(&parent).join(&name),
                ],
                false,
            ),
            Hierarchy::V2 { own } => (vec![own.join(&parent).join(&name)], true),
        };
        // The groups are made and configured as plain paths under the lock: on an error they
        // are removed here, under the same lock (an `InstanceGroup` dropped here would take it
        // again and deadlock).
        let serial = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
        let made = configure(hierarchy, &dirs, quota, bytes);
        if let Err(error) = made {
            remove_locked(&dirs);
            return Err(error);
        }
        drop(serial);
        let file = if v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let memory_dir = dirs.last().cloned().unwrap_or_default();
        Ok(Self {
            peak: File::open(memory_dir.join(file)).ok(),
            dirs,
            v2,
            oom_baseline: 0,
        })
    }

    /// Waits (up to a second) until no process is left in the group, killing what remains (a
    /// runtime's subprocesses still exiting), so that dropping it removes it at once.
    pub(crate) async fn empty(&self) {
        for _ in 0..200 {
            if kill_and_check_empty(&self.dirs) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Takes the OOM-kill count now as the instance's baseline (once it is ready).
    pub(crate) fn mark_ready(&mut self) {
        self.oom_baseline = self.count_oom_kills();
    }

    /// The files a process writes its pid to, to enter the group (every hierarchy).
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn memory_dir(&self) -> &Path {
        self.dirs
            .last()
            .map_or(Path::new("/nonexistent"), PathBuf::as_path)
    }

    /// The group's peak memory, in bytes.
    pub(crate) fn peak(&mut self) -> Option<u64> {
        let file = self.peak.as_mut()?;
        let mut text = String::new();
        file.rewind().ok()?;
        file.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// How many processes of the group the kernel killed for memory since the instance was
    /// ready.
    pub(crate) fn oom_kills(&self) -> u64 {
        self.count_oom_kills().saturating_sub(self.oom_baseline)
    }

    fn count_oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.memory_dir().join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

impl Drop for InstanceGroup {
    fn drop(&mut self) {
        // A group cannot be removed while a process is still leaving it (a SIGKILLed runtime
        // that is not reaped yet, a subprocess of it): what remains is killed, and the removal
        // retried on a thread of its own for a few seconds, so that no group is left behind.
        self.peak = None;
        let dirs = std::mem::take(&mut self.dirs);
        if remove(&dirs) {
            return;
        }
        let retry = move || {
            for _ in 0..250 {
                for dir in &dirs {
                    kill_members(dir);
                }
                std::thread::sleep(Duration::from_millis(20));
                if remove(&dirs) {
                    return;
                }
            }
            tracing::warn!(groups = ?dirs, "a process instance's cgroup could not be removed");
        };
        if std::thread::Builder::new()
            .name("nimbus-cgroup-reaper".into())
            .spawn(retry)
            .is_err()
        {
            tracing::warn!("no thread to remove a process instance's cgroup");
        }
    }
}

/// Makes and configures an instance's groups (called under [`GROUPS`]).
fn configure(hierarchy: &Hierarchy, dirs: &[PathBuf], quota: u64, bytes: u64) -> io::Result<()> {
    for dir in dirs {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
            if let Hierarchy::V2 { own } = hierarchy {
                // The parents must hand both controllers down to their children.
                let _ = std::fs::write(own.join("cgroup.subtree_control"), "+cpu +memory");
                std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory")?;
            }
        }
        // A fresh group, never one left behind.
        std::fs::create_dir(dir)?;
    }
    match hierarchy {
        Hierarchy::V1 { .. } => {
            write(&dirs[0], "cpu.cfs_period_us", PERIOD_US)?;
            write(&dirs[0], "cpu.cfs_quota_us", quota)?;
            write(&dirs[1], "memory.limit_in_bytes", bytes)?;
            // No swap either, where the kernel accounts it: the limit is the memory.
            if dirs[1].join("memory.memsw.limit_in_bytes").exists() {
                let _ = write(&dirs[1], "memory.memsw.limit_in_bytes", bytes);
            }
        }
        Hierarchy::V2 { .. } => {
            std::fs::write(dirs[0].join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
            write(&dirs[0], "memory.max", bytes)?;
            let _ = write(&dirs[0], "memory.swap.max", 0);
        }
    }
    Ok(())
}

/// Removes the instance's groups (and the per-host parent, once empty); whether all are gone.
fn remove(dirs: &[PathBuf]) -> bool {
    let _serial = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    remove_locked(dirs)
}

/// As [`remove`], with [`GROUPS`] already held.
fn remove_locked(dirs: &[PathBuf]) -> bool {
    let mut all = true;
    for dir in dirs {
        if dir.exists() && std::fs::remove_dir(dir).is_err() {
            all = false;
            continue;
        }
        if let Some(parent) = dir.parent() {
            // Fails while other instances' groups remain, as it should.
            let _ = std::fs::remove_dir(parent);
        }
    }
    all
}

/// Removes the empty groups of `nimbus-<pid>` parents whose process is gone (or is this one).
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("nimbus-")) else {
            continue;
        };
        // This process's own are swept too: the sweep runs before it makes any group, so they
        // were left by an earlier process that had the same pid.
        let own = pid == std::process::id().to_string();
        if pid.parse::<u32>().is_err() || (!own && Path::new("/proc").join(pid).exists()) {
            continue;
        }
        let parent = entry.path();
        for group in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if group.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(group.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

/// Whether every group is empty, after SIGKILLing what is still in them.
fn kill_and_check_empty(dirs: &[PathBuf]) -> bool {
    let mut empty = true;
    for dir in dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            continue;
        }
        empty = false;
        kill_members(dir);
    }
    empty
}

/// SIGKILLs every process still in a group.
fn kill_members(dir: &Path) {
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn write(dir: &Path, file: &str, value: u64) -> io::Result<()> {
    std::fs::write(dir.join(file), value.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group that cannot be made (here: a name the kernel refuses) is an error, and the next
    /// group is made as usual: the failed one is cleaned up without deadlocking on the lock.
    #[test]
    fn a_group_that_cannot_be_made_is_an_error_and_blocks_nothing() {
        if available().is_err() {
            eprintln!("SKIPPED: cgroups are not writable here");
            return;
        }
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let refused = InstanceGroup::create("bad\0name", 128).is_err();
            let made = InstanceGroup::create("good", 128).is_ok();
            let _ = done.send((refused, made));
        });
        let outcome = finished.recv_timeout(Duration::from_secs(10));
        assert_eq!(outcome, Ok((true, true)), "a failed create must not hang");
    }
}
