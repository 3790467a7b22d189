//! `roost-tickets <plain|kill9|rolling|all> [--short] [--out DIR]
//! [--users N] [--concurrency N] [--bin-dir DIR]`: run the ticket sale
//! against real `roost-proxy` and `roost-worker` processes, print the
//! summary table, exit 1 if a MUST failed (2 if it could not run).
//!
//! A binary of its own beside `roost-faults` rather than a subcommand of
//! it: its runs and options are not the fault scenarios', and both stay
//! usable as they were; everything they share is in the library.

use std::process::ExitCode;

use clap::Parser;
use roost_loadtest::cli;
use roost_loadtest::tickets::{self, TicketOptions};

#[derive(Parser)]
#[command(
    version,
    about = "Roost's ticket sale: 100 tickets, thousands of buyers",
    long_about = "Roost's ticket sale: 100 tickets, users with two devices each racing to buy one. \\
                  Runs: plain, kill9, rolling, or all. Users default to 5,000 (1,000 with --short)."
)]
struct Args {
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Devices busy at once (default: 256).
    #[arg(long)]
    concurrency: Option<usize>,
}

fn main() -> ExitCode {
    let Args {
        common,
        concurrency,
    } = Args::parse();
    cli::main("roost-tickets", async move {
        let options = TicketOptions {
            runs: common.runs()?,
            common: common.options()?,
            concurrency,
        };
        tickets::run(&options).await
    })
}
