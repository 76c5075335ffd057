//! Memory that buys CPU: each process instance's CPU share and memory limit, as Lambda sets them
//! from `memory_mb` (1,769 MB is one vCPU), enforced by the kernel where cgroups are writable, and
//! the `RLIMIT_DATA` fallback where they are not (memory only: CPU is then not capped).
//!
//! The runtime is placed without `unsafe`: the child is a shell that writes its own pid into the
//! instance's groups (and sets the rlimit), then `exec`s the runtime, so the runtime never runs
//! outside its limits; if a write fails, the shell exits before the runtime starts (an init
//! failure).

mod cgroup;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use cgroup::InstanceGroup;

/// How a process function's instances are limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Limits {
    /// cgroups where the host lets nimbus create them (CPU quota and memory limit), else the
    /// `RLIMIT_DATA` fallback (memory only). The default.
    #[default]
    Auto,
    /// cgroups or nothing: an instance whose group cannot be made fails its init.
    Cgroups,
    /// The fallback only, even where cgroups are writable: memory by `RLIMIT_DATA`, CPU not
    /// capped.
    Rlimit,
}

/// What limits an instance actually got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Enforcement {
    /// A cgroup: CPU quota `memory_mb / 1769` of a vCPU, memory limit `memory_mb`.
    Cgroup,
    /// `RLIMIT_DATA` at `memory_mb`; CPU not capped.
    Rlimit,
}

impl Enforcement {
    /// Whether the instance's CPU share is capped.
    pub fn cpu_capped(self) -> bool {
        self == Self::Cgroup
    }
}

/// The `unshare` and `mount` programs, by absolute path, if instances can get a mount namespace
/// of their own with the layers at `/opt`: root, an `/opt` folder, and both found on the host's
/// `PATH` and tried once (a root without `CAP_SYS_ADMIN`, as in a default container, is refused).
/// Absolute, so that neither the function's `PATH` nor a layer's `bin` decides what runs as root.
pub(crate) fn mount_namespace_available() -> Option<&'static (PathBuf, PathBuf)> {
    static AVAILABLE: std::sync::OnceLock<Option<(PathBuf, PathBuf)>> = std::sync::OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            let find = |name: &str| {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            };
            let (unshare, mount) = (find("unshare")?, find("mount")?);
            let usable = nix::unistd::geteuid().is_root()
                && Path::new("/opt").is_dir()
                && std::process::Command::new(&unshare)
                    .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
                    .arg(r#""$0" --bind /opt /opt && "$0" -o remount,ro,bind /opt"#)
                    .arg(&mount)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success());
            usable.then_some((unshare, mount))
        })
        .as_ref()
}

/// Set once an instance fell back from cgroups it could not configure.
static FELL_BACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether instances have fallen back to `RLIMIT_DATA` on this host.
pub(crate) fn fell_back() -> bool {
    FELL_BACK.load(std::sync::atomic::Ordering::Relaxed)
}

fn warn_fallback_once(why: &str) {
    FELL_BACK.store(true, std::sync::atomic::Ordering::Relaxed);
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            why,
            "cgroups cannot be configured here: process instances fall back to RLIMIT_DATA \
             (memory only, CPU not capped)"
        );
    });
}

/// Whether this host lets nimbus create cgroups (found once), and if not why.
pub(crate) fn cgroups_available() -> Result<(), String> {
    cgroup::available()
}

/// The limits of one instance, alive as long as it is.
#[derive(Debug)]
pub(crate) struct InstanceLimits {
    group: Option<InstanceGroup>,
    memory_mb: u32,
}

/// The shell that places the runtime, then becomes it: `sh -c SCRIPT sh N procs... DATA MOUNT OPT
/// M read-only... program args...` (`-` for no data limit, no `/opt` mount; MOUNT is the
/// absolute path of `mount`). In the instance's own
/// mount namespace, the folders the view's links point into are made read-only too, so that
/// `/opt` cannot be written through its links.
const PLACE: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done
if [ "$1" != - ]; then ulimit -d "$1" || exit 125; fi
shift
m=$1; shift
if [ "$1" != - ]; then "$m" --bind "$1" /opt && "$m" -o remount,ro,bind /opt || exit 125; fi
shift
n=$1; shift
while [ "$n" -gt 0 ]; do
  "$m" --bind "$1" "$1" && "$m" -o remount,ro,bind "$1" || exit 125
  shift; n=$((n - 1))
done
exec "$@""#;

impl InstanceLimits {
    /// The limits of instance `name` of a function of `memory_mb`, as `limits` asks.
    pub(crate) fn new(limits: Limits, name: &str, memory_mb: u32) -> Result<Self, String> {
        let group = match limits {
            Limits::Rlimit => None,
            // A host whose groups can be made but not configured (cgroup v2 without delegation,
            // say) falls back too, rather than failing every init.
            Limits::Auto => match cgroup::available() {
                Ok(()) => match InstanceGroup::create(name, memory_mb) {
                    Ok(group) => Some(group),
                    Err(error) => {
                        warn_fallback_once(&error.to_string());
                        None
                    }
                },
                Err(_) => None,
            },
            Limits::Cgroups => {
                cgroup::available()?;
                Some(InstanceGroup::create(name, memory_mb).map_err(|e| e.to_string())?)
            }
        };
        Ok(Self { group, memory_mb })
    }

    /// What the instance got.
    pub(crate) fn enforcement(&self) -> Enforcement {
        if self.group.is_some() {
            Enforcement::Cgroup
        } else {
            Enforcement::Rlimit
        }
    }

    /// The launcher to put before the runtime's command; with `opt`, in a mount namespace of its
    /// own where that folder is mounted read-only at `/opt`, and the `read_only` folders (what
    /// its links point into) are remounted read-only.
    pub(crate) fn launcher(
        &self,
        opt: Option<&std::path::Path>,
        read_only: &[std::path::PathBuf],
    ) -> Vec<OsString> {
        let procs = self
            .group
            .as_ref()
            .map(InstanceGroup::procs_files)
            .unwrap_or_default();
        let mut launcher: Vec<OsString> = Vec::new();
        let namespace = opt.and(mount_namespace_available());
        let opt = namespace.and(opt);
        if let Some((unshare, _)) = namespace {
            // Without --fork the shell keeps unshare's pid: the child nimbus spawned.
            launcher.push(unshare.as_os_str().to_owned());
            launcher.extend(["--mount", "--propagation", "private"].map(OsString::from));
        }
        launcher.extend(["/bin/sh", "-c", PLACE].map(OsString::from));
        launcher.push("nimbus-place".into());
        launcher.push(procs.len().to_string().into());
        launcher.extend(procs.into_iter().map(OsString::from));
        if self.group.is_some() {
            launcher.push("-".into());
        } else {
            // ulimit -d takes KiB.
            launcher.push((u64::from(self.memory_mb) * 1024).to_string().into());
        }
        launcher
            .push(namespace.map_or_else(|| "-".into(), |(_, mount)| mount.as_os_str().to_owned()));
        launcher.push(opt.map_or_else(|| "-".into(), |p| p.as_os_str().to_owned()));
        let read_only = if opt.is_some() { read_only } else { &[] };
        launcher.push(read_only.len().to_string().into());
        launcher.extend(read_only.iter().map(|p| p.as_os_str().to_owned()));
        launcher
    }

    /// Waits until the instance's groups hold no process (killing stragglers), so that they can
    /// be removed when the instance is dropped.
    pub(crate) async fn empty(&self) {
        if let Some(group) = &self.group {
            group.empty().await;
        }
    }

    /// The instance is ready (its runtime asked for its first event): OOM kills counted from
    /// now on are its own.
    pub(crate) fn mark_ready(&mut self) {
        if let Some(group) = &mut self.group {
            group.mark_ready();
        }
    }

    /// The instance's peak memory so far, in MB (rounded up): like Lambda's `Max Memory Used`,
    /// the environment's high-water mark, which later invocations can only raise. Read, never
    /// reset: a reset (v1 `max_usage_in_bytes`, `/proc/<pid>/clear_refs`) cost ~40 µs per
    /// invocation.
    pub(crate) fn peak_mb(&mut self, pid: Option<u32>) -> Option<u32> {
        let bytes = match &mut self.group {
            Some(group) => group.peak()?,
            // Only while the process lives: a reaped pid may be another process's.
            None => high_water_mark(pid?)?,
        };
        u32::try_from(bytes.div_ceil(1024 * 1024)).ok()
    }

    /// How many times the kernel killed one of the instance's processes for memory.
    pub(crate) fn oom_kills(&self) -> u64 {
        self.group.as_ref().map_or(0, InstanceGroup::oom_kills)
    }
}

/// A process's peak resident set (`VmHWM`), in bytes.
fn high_water_mark(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
