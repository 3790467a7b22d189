//! `roost-fixed-reply --listen 127.0.0.1:PORT [--id ID]`: a bare hyper
//! HTTP/1.1 server that answers every request with the same small 200 JSON
//! ([`roost_loadtest::fixed_reply`]), on one thread, until SIGINT/SIGTERM.
//!
//! It exists for `loadtest/bench/proxy.sh`: three of them stand in for the
//! workers in its `light` layout, so a proxy's own CPU per request is not
//! diluted by the workers', and one alone (`direct-light`) is the bare-hyper
//! peer the worker's no-state route is measured against.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use roost_loadtest::cli::interrupted;
use roost_loadtest::fixed_reply::{self, FixedReply};

#[derive(Parser)]
#[command(
    name = "roost-fixed-reply",
    version,
    about = "A bare hyper server answering every request with a fixed 200 JSON (benchmark backend)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Sent as `x-roost-worker` and in the body, as a worker sends its id.
    #[arg(long, default_value = "fixed-reply")]
    id: String,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roost-fixed-reply: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let reply = FixedReply::new(&args.id)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        fixed_reply::serve(listener, reply, async {
            interrupted().await;
        })
        .await;
        Ok(())
    })
}
