//! `roost-worker --id ID --listen ADDR`

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use roost_worker::WorkerIdentity;

#[derive(Parser)]
#[command(version, about = "Roost's worker")]
struct Args {
    /// This worker's id; must match the id in the proxy's config.
    #[arg(long)]
    id: String,
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(id = %args.id, listen = %args.listen, "roost-worker ready");
    let identity = WorkerIdentity { id: args.id.into() };
    roost_worker::run(listener, identity, shutdown_signal()).await;
    tracing::info!("roost-worker stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}
