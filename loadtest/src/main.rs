//! `roost-faults <scenario|all> [--short] [--out DIR] [--users N]
//! [--think-ms MIN-MAX] [--bin-dir DIR]`:
//! run fault scenarios against real `roost-proxy` and `roost-worker`
//! processes, print the summary table, exit 1 if a MUST failed.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use roost_loadtest::binaries::Binaries;
use roost_loadtest::scenario::Scenario;
use roost_loadtest::suite::{self, SuiteOptions};

#[derive(Parser)]
#[command(version, about = "Roost's fault suite")]
struct Args {
    /// kill9, sigstop, pg-restart, rolling, scale, or all.
    scenario: String,
    /// The CI version: fewer users, shorter runs (all in under 3 minutes).
    #[arg(long)]
    short: bool,
    /// Output dir (default: `loadtest/results/faults-<scenario>-<UTC stamp>/`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Simulated users (default: 200, 60 with --short).
    #[arg(long)]
    users: Option<usize>,
    /// Think time between a device's operations, `MIN-MAX` ms.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_range)]
    think_ms: Option<RangeInclusive<u64>>,
    /// Where roost-proxy and roost-worker are (default: beside this binary).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // On SIGINT/SIGTERM the run is dropped, and with it every process and
    // cluster it started (their Drop stops them).
    let outcome = tokio::select! {
        outcome = run(args) => outcome,
        signal = interrupted() => Err(signal),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("roost-faults: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM, as the error to exit with.
async fn interrupted() -> anyhow::Error {
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

/// Whether every MUST held.
async fn run(args: Args) -> Result<bool> {
    let scenarios = Scenario::parse_selection(&args.scenario)?;
    let binaries = match &args.bin_dir {
        Some(dir) => Binaries::in_dir(dir),
        None => Binaries::beside_current_exe(),
    }
    .context("locate roost-proxy and roost-worker")?;
    let options = SuiteOptions {
        scenarios,
        short: args.short,
        out: args.out,
        binaries,
        users: args.users,
        think_ms: args.think_ms,
    };
    let result = suite::run(&options).await?;
    println!("{}", result.table);
    for broken in result.broken_musts() {
        println!("MUST broken: {broken}");
    }
    println!(
        "wall time {:.1} s; details in {}",
        result.wall_s,
        result.out_dir.join("summary.md").display()
    );
    Ok(result.musts_hold())
}

/// `40-120` → 40..=120.
fn parse_range(text: &str) -> Result<RangeInclusive<u64>, String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not MIN-MAX"))?;
    let parse = |n: &str| n.trim().parse::<u64>().map_err(|e| format!("{n:?}: {e}"));
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(format!("{min} is more than {max}"));
    }
    Ok(min..=max)
}
