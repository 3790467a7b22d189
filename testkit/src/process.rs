//! Child processes: running the commands fixtures need (initdb, pg_ctl,
//! cargo) to completion, with their output in the error when they fail;
//! and the processes under test (workers, the proxy), signalled by pid and
//! always reaped: a [`Process`] that is dropped while its child still runs
//! (at the end, on an error or in a panic) is SIGKILLed and waited for, so
//! no test leaves a worker behind.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::dir::open_log;

/// How often a bounded wait looks whether the process has exited.
const POLL: Duration = Duration::from_millis(20);

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
    pub fn spawn(name: &str, command: Command, log: &Path) -> Result<Process> {
        let out = append(log)?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicate the handle of {}", log.display()))?;
        Process::start(name, command, out.into(), err.into())
    }

    /// Start `command` with stdout discarded and only stderr appended to
    /// `log`: for a program whose stdout is not a log (the proxy's
    /// `--check-config` verdict), so that the log holds its diagnostics
    /// alone, as the tests that read it expect.
    pub fn spawn_stderr_only(name: &str, command: Command, log: &Path) -> Result<Process> {
        Process::start(name, command, Stdio::null(), append(log)?.into())
    }

    /// Start `command` with stdin closed and these stdout and stderr.
    fn start(name: &str, mut command: Command, stdout: Stdio, stderr: Stdio) -> Result<Process> {
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
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

    /// The OS process id (as [`Child::id`]), for a test that signals or
    /// inspects the process itself rather than through [`Process::signal`].
    pub fn id(&self) -> u32 {
        self.child.id()
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
            if let Some(status) = self.exited_by(deadline, timeout)? {
                return Ok(status);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Process::wait_exit`] for a caller outside any async runtime (a
    /// plain `#[test]`): the same bound, polling with thread sleeps.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited_by(deadline, timeout)? {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
    }

    /// One poll of a bounded wait: the exit status, `None` to poll again,
    /// or an error once `deadline` (`timeout` after the wait began) passed.
    fn exited_by(&mut self, deadline: Instant, timeout: Duration) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.exited()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            bail!("{} did not exit within {timeout:?}", self.name);
        }
        Ok(None)
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

/// `path` opened for appending, as [`open_log`] opens every child's log.
fn append(path: &Path) -> Result<File> {
    open_log(path).map_err(anyhow::Error::msg)
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::TempDir;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn stderr_only_keeps_stdout_out_of_the_log() {
        let dir = TempDir::new("process");
        let log = dir.path().join("stderr");
        let script = "echo to-stdout; echo to-stderr >&2; exit 3";
        let mut process = Process::spawn_stderr_only("sh", sh(script), &log).expect("start sh");
        let status = process
            .wait_exit_blocking(Duration::from_secs(10))
            .expect("sh exits");
        assert_eq!(status.code(), Some(3));
        assert_eq!(log_tail(&log, 10), "to-stderr");
    }

    #[test]
    fn a_bounded_wait_gives_up_and_drop_reaps() {
        let dir = TempDir::new("process");
        let log = dir.path().join("log");
        let mut process = Process::spawn("sleeper", sh("sleep 30"), &log).expect("start sh");
        assert!(process.id() > 0);
        let error = process
            .wait_exit_blocking(Duration::from_millis(50))
            .expect_err("a sleeper does not exit in 50 ms");
        assert!(
            error.to_string().contains("sleeper did not exit"),
            "{error}"
        );
        let pid = process.pid().expect("the pid fits");
        drop(process);
        assert!(kill(pid, None).is_err(), "reaped on drop: no such process");
    }
}
