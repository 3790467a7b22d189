//! What the suite's binaries (`roost-faults`, `roost-tickets`) share: the
//! common options, stopping cleanly on SIGINT/SIGTERM, printing the
//! summary table and the broken MUSTs, and turning the verdict into the
//! exit status. `roost-fixed-reply` stops on the same signals.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::report::RunReport;
use crate::suite::{RunKind, RunOptions, SuiteResult};
use roost_testkit::bins::Binaries;

/// Drive `suite` on a new runtime to its end, or until SIGINT/SIGTERM;
/// print what it found. Exit 0 when every MUST held, 1 when one broke, 2
/// when the suite could not run (or was interrupted).
pub fn main<R: RunReport>(
    program: &str,
    suite: impl Future<Output = Result<SuiteResult<R>>>,
) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(finish(program, suite)),
        Err(e) => {
            eprintln!("{program}: cannot start a tokio runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn finish<R: RunReport>(
    program: &str,
    suite: impl Future<Output = Result<SuiteResult<R>>>,
) -> ExitCode {
    // On SIGINT/SIGTERM the suite is dropped, and with it every process and
    // cluster it started (their Drop stops them).
    let outcome = tokio::select! {
        outcome = suite => outcome,
        signal = interrupted() => Err(signal),
    };
    match outcome {
        Ok(result) => {
            println!("{}", result.table);
            for broken in result.broken_musts() {
                println!("MUST broken: {broken}");
            }
            println!(
                "wall time {:.1} s; details in {}",
                result.wall_s,
                result.out_dir.join("summary.md").display()
            );
            if result.musts_hold() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM, as the error to exit with.
pub async fn interrupted() -> anyhow::Error {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => anyhow::anyhow!("interrupted (SIGINT); everything started was stopped"),
        _ = term.recv() => anyhow::anyhow!("terminated (SIGTERM); everything started was stopped"),
    }
}

/// The options both binaries take.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// `all`, or the name of one run.
    pub run: String,
    /// The CI version: fewer users, shorter runs.
    #[arg(long)]
    pub short: bool,
    /// Output dir (default: `loadtest/results/<suite>-<run>-<UTC stamp>/`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Simulated users (replaces the run's number).
    #[arg(long)]
    pub users: Option<usize>,
    /// Where roost-proxy and roost-worker are (default: beside this binary).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl CommonArgs {
    /// The runs named, of kind `K`.
    pub fn runs<K: RunKind>(&self) -> Result<Vec<K>> {
        K::select(&self.run)
    }

    /// The options every suite takes; `roost-proxy` and `roost-worker` in
    /// `--bin-dir`, or beside this executable.
    pub fn options(&self) -> Result<RunOptions> {
        let binaries = match &self.bin_dir {
            Some(dir) => Binaries::in_dir(dir),
            None => Binaries::beside_current_exe(),
        }
        .context("locate roost-proxy and roost-worker")?;
        Ok(RunOptions {
            short: self.short,
            out: self.out.clone(),
            binaries,
            users: self.users,
        })
    }
}
