//! Running the commands fixtures need (initdb, pg_ctl, cargo) to
//! completion, with their output in the error when they fail.

use std::process::{Command, Stdio};

use anyhow::{anyhow, Context, Result};

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
