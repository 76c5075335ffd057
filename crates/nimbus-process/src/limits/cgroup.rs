//! Kernel-enforced limits for one instance: a child cgroup of nimbus's own, with a CPU quota of
//! `period × memory_mb / 1769` and a memory limit of `memory_mb`, on cgroup v1 (separate `cpu`
//! and `memory` hierarchies) or v2 (one unified hierarchy with both controllers). Its peak memory
//! gives `Max Memory Used`; its OOM-kill count tells an out-of-memory kill from a crash.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
/// at the first instance, rather than at every spawn.
fn check_writable(hierarchy: Hierarchy) -> Result<Hierarchy, String> {
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

/// One instance's group (a directory in each hierarchy), removed on drop.
#[derive(Debug)]
pub(crate) struct InstanceGroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl InstanceGroup {
    /// Creates `nimbus-<pid>/<name>` under our own group(s) with the limits of `memory_mb`.
    pub(crate) fn create(name: &str, memory_mb: u32) -> io::Result<Self> {
        let hierarchy = hierarchy()
            .as_ref()
            .map_err(|why| io::Error::other(why.clone()))?;
        let parent = format!("nimbus-{}", std::process::id());
        let quota = (PERIOD_US * u64::from(memory_mb) / MB_PER_VCPU).max(MIN_QUOTA_US);
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        let group = match hierarchy {
            Hierarchy::V1 { cpu, memory } => {
                let group = Self {
                    dirs: vec![
                        cpu.join(&parent).join(name),
                        memory.join(&parent).join(name),
                    ],
                    v2: false,
                };
                group.make_dirs()?;
                write(&group.dirs[0], "cpu.cfs_period_us", PERIOD_US)?;
                write(&group.dirs[0], "cpu.cfs_quota_us", quota)?;
                write(&group.dirs[1], "memory.limit_in_bytes", bytes)?;
                // No swap either, where the kernel accounts it: the limit is the memory.
                if group.dirs[1].join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(&group.dirs[1], "memory.memsw.limit_in_bytes", bytes);
                }
                group
            }
            Hierarchy::V2 { own } => {
                // The parent must hand both controllers down to its children.
                let parent_dir = own.join(&parent);
                std::fs::create_dir_all(&parent_dir)?;
                let _ = std::fs::write(own.join("cgroup.subtree_control"), "+cpu +memory");
                std::fs::write(parent_dir.join("cgroup.subtree_control"), "+cpu +memory")?;
                let group = Self {
                    dirs: vec![parent_dir.join(name)],
                    v2: true,
                };
                group.make_dirs()?;
                std::fs::write(
                    group.dirs[0].join("cpu.max"),
                    format!("{quota} {PERIOD_US}"),
                )?;
                write(&group.dirs[0], "memory.max", bytes)?;
                let _ = write(&group.dirs[0], "memory.swap.max", 0);
                group
            }
        };
        Ok(group)
    }

    fn make_dirs(&self) -> io::Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
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

    /// Starts a new peak for the next invocation (v1 lets the peak be reset; v2's
    /// `memory.peak` is the group's lifetime peak, so there it only grows).
    pub(crate) fn reset_peak(&self) {
        if !self.v2 {
            let _ = std::fs::write(self.memory_dir().join("memory.max_usage_in_bytes"), "0");
        }
    }

    /// The peak memory since the last reset, in bytes.
    pub(crate) fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        read_number(&self.memory_dir().join(file))
    }

    /// How many processes of the group the kernel killed for memory.
    pub(crate) fn oom_kills(&self) -> u64 {
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
        // Empty by now (the instance's processes were killed and reaped); a group that still
        // holds a process cannot be removed, and is left for the kernel to report.
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
            if let Some(parent) = dir.parent() {
                // The per-host parent goes with its last instance (fails while others remain).
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn write(dir: &Path, file: &str, value: u64) -> io::Result<()> {
    std::fs::write(dir.join(file), value.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
