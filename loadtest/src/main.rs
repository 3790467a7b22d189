//! `roost-faults <scenario|all> [--short] [--out DIR] [--users N]
//! [--think-ms MIN-MAX] [--bin-dir DIR]`:
//! run fault scenarios against real `roost-proxy` and `roost-worker`
//! processes, print the summary table, exit 1 if a MUST failed.

use std::ops::RangeInclusive;
use std::process::ExitCode;

use clap::Parser;
use roost_loadtest::cli;
use roost_loadtest::suite::{self, SuiteOptions};

#[derive(Parser)]
#[command(
    version,
    about = "Roost's fault suite",
    long_about = "Roost's fault suite. Runs: kill9, sigstop, pg-restart, rolling, scale, cut, blip, or all. \
                  Users default to 200 (60 with --short); all --short takes under 4 minutes."
)]
struct Args {
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Think time between a device's operations, `MIN-MAX` ms.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_range)]
    think_ms: Option<RangeInclusive<u64>>,
}

fn main() -> ExitCode {
    let Args { common, think_ms } = Args::parse();
    cli::main("roost-faults", async move {
        let options = SuiteOptions {
            scenarios: common.runs()?,
            common: common.options()?,
            think_ms,
        };
        suite::run(&options).await
    })
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
