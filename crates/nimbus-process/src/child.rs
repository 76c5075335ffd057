//! The child process of an instance: spawned in a process group of its own (so that whatever it
//! starts is stopped with it), stopped with SIGTERM then SIGKILL, and never left behind: dropping
//! a [`ChildProcess`] kills its whole group.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// What to start.
pub(crate) struct Spawn<'a> {
    /// A command that places the process (its limits) and then `exec`s the rest.
    pub(crate) launcher: Vec<OsString>,
    pub(crate) program: &'a OsString,
    pub(crate) args: &'a [OsString],
    pub(crate) extra_arg: Option<&'a str>,
    pub(crate) working_dir: &'a Path,
    pub(crate) env: Vec<(String, String)>,
    /// Where stdout and stderr go (the write end of the log pipe).
    pub(crate) output: OwnedFd,
}

/// A running child process and its process group.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    child: Child,
    /// The group's id (the child's pid).
    group: Pid,
    /// How the child ended, once it did.
    status: Option<ExitStatus>,
    /// [`ChildProcess::stop`] finished: the group was killed and the child reaped.
    stopped: bool,
}

impl ChildProcess {
    pub(crate) fn spawn(spawn: Spawn<'_>) -> std::io::Result<Self> {
        let errors = spawn.output.try_clone()?;
        let mut words = spawn.launcher.into_iter();
        let mut command = match words.next() {
            Some(launcher) => {
                let mut command = Command::new(launcher);
                command.args(words).arg(spawn.program);
                command
            }
            None => Command::new(spawn.program),
        };
        command
            .args(spawn.args)
            .args(spawn.extra_arg)
            .env_clear()
            .envs(spawn.env)
            .current_dir(spawn.working_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(spawn.output))
            .stderr(Stdio::from(errors))
            // A group of its own: a signal to the group reaches what the runtime started too
            // (a shell bootstrap's `curl`, say).
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| std::io::Error::other("the child has no process id"))?;
        Ok(Self {
            child,
            group: Pid::from_raw(pid),
            status: None,
            stopped: false,
        })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.group.as_raw().unsigned_abs()
    }

    /// Resolves when the child exits (at once if it already has).
    pub(crate) async fn exited(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            // Waiting fails only if the child was already reaped, which only `wait` does.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
        };
        self.status = Some(status);
        status
    }

    /// How the child ended, if it has, without waiting.
    pub(crate) fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Sends `signal` to the whole group; a group already gone is not an error.
    pub(crate) fn signal(&self, signal: Signal) {
        let _ = killpg(self.group, signal);
    }

    /// Stops the child: SIGTERM and up to `grace` to exit, then SIGKILL; waits for it.
    pub(crate) async fn stop(&mut self, grace: Duration) {
        if self.try_exited().is_none() && !grace.is_zero() {
            self.signal(Signal::SIGTERM);
            if tokio::time::timeout(grace, self.exited()).await.is_ok() {
                // Whatever the runtime started may outlive it. (The leader is reaped, so if
                // nothing of the group is left, the id is free again: the window for it to be
                // reused by another group in the microseconds until this signal is accepted.)
                self.signal(Signal::SIGKILL);
                self.stopped = true;
                return;
            }
        }
        self.signal(Signal::SIGKILL);
        self.exited().await;
        self.stopped = true;
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Init timed out, the runtime shut down, a disposal was given up: nothing survives.
        // The kernel keeps a group id from being reused while any member lives, so this reaches
        // only our processes (or no one). After a finished stop there is nothing left to kill.
        if !self.stopped {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Lambda's wording for how a runtime ended: `exit status 3`, `signal: 9 (SIGKILL)`.
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("signal: {signal} ({})", name.as_str()),
            Err(_) => format!("signal: {signal}"),
        },
        (None, None) => status.to_string(),
    }
}
