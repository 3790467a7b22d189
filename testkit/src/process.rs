//! Child processes: running the commands fixtures need (initdb, pg_ctl,
//! cargo) to completion, with their output in the error when they fail;
//! and the processes under test (workers, the proxy), signalled by pid and
//! always reaped: a [`Process`] that is dropped while its child still runs
//! (at the end, on an error or in a panic) is SIGKILLed and waited for, so
//! no test leaves a worker behind.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Run `command` to completion; an error with its output if it fails.
pub fn run_checked(mut command: Command, what: &str) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}: {command:?}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(anyhow!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// A running child process with a name for messages.
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Start `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process> {
        let out = append(log)?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicate the handle of {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {name}: {command:?}"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn pid(&self) -> Result<Pid> {
        let pid = i32::try_from(self.child.id())
            .with_context(|| format!("pid of {} out of range", self.name))?;
        Ok(Pid::from_raw(pid))
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(self.pid()?, signal).with_context(|| format!("send {signal} to {}", self.name))
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("check whether {} exited", self.name))
    }

    /// Wait (polling, so the async runtime keeps running) until the
    /// process exits; an error after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap (also of a stopped process: SIGKILL needs no SIGCONT).
    pub fn kill_now(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Err(e) = self.child.kill() {
                eprintln!("cannot kill {}: {e}", self.name);
            }
        }
        if let Err(e) = self.child.wait() {
            eprintln!("cannot reap {}: {e}", self.name);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
