//! `roost-worker --id ID --listen ADDR [--admin-listen ADDR] [--store URL] [--config FILE]`
//!
//! Runs until SIGTERM or SIGINT, then drains: `/readyz` fails, requests in
//! flight finish, everything dirty is flushed, and the process exits 0 (1 if
//! the last flush could not complete).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use roost_worker::calls::http::HttpCalls;
use roost_worker::calls::peers::Peers;
use roost_worker::calls::Caller;
use roost_worker::config::{WorkerConfig, DEFAULT_STORE};
use roost_worker::engine::Engine;
use roost_worker::http::{serve, Api, Listeners};
use roost_worker::lease::Lease;
use roost_worker::runtime::Runtime;
use roost_worker::stateless::StatelessEngine;
use roost_worker::store::postgres::PostgresStore;
use roost_worker::store::{Member, MemberStatus};

/// mimalloc: every request allocates and frees small buffers (parsed JSON,
/// replies, encoded rows); glibc's malloc (`malloc_consolidate`,
/// `unlink_chunk`) took about 5 µs of a cart update in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Roost's worker")]
struct Args {
    /// This worker's id; must match the id in the proxy's config.
    #[arg(long)]
    id: String,
    /// Address of the entity API, the internal routes and the probes (what
    /// proxies and other workers reach).
    #[arg(long)]
    listen: SocketAddr,
    /// Address of `/metrics` and the probes, for the operator's network
    /// only (default: no admin listener, so no metrics).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Address the proxies reach this worker at, as registered in the
    /// workers table (default: the --listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// `postgres://…` or `sqlite://PATH`.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Optional YAML file: flush timing, durability defaults, limits.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Benchmark baseline: keep nothing in memory, run one Postgres
    /// transaction per request (needs a postgres:// store).
    #[arg(long)]
    stateless: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match args.config.as_deref().map(WorkerConfig::load).transpose() {
        Ok(config) => config.unwrap_or_default().with_env_secrets(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("roost-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roost-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args, config));
    // Idle blocking-pool threads (SQLite) would otherwise hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("roost-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serve until a signal, then drain. `Ok(false)`: the drain left changes
/// unflushed.
async fn run(args: Args, config: WorkerConfig) -> anyhow::Result<bool> {
    let listeners = Listeners {
        public: bind(args.listen).await?,
        admin: match args.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        },
    };
    let drain = config.drain();
    let (engine, runtime, caller) = if args.stateless {
        let store = PostgresStore::connect(&args.store).await.with_context(|| {
            format!(
                "--stateless needs a postgres store; cannot open {}",
                args.store
            )
        })?;
        (
            Engine::Stateless(Arc::new(StatelessEngine::new(&store, &args.id))),
            None,
            None,
        )
    } else {
        let opened = roost_worker::store::open(&args.store)
            .await
            .with_context(|| format!("cannot open the store {}", args.store))?;
        let member = Member {
            id: args.id.clone(),
            addr: args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.to_string()),
        };
        let lease = Lease::join(Arc::clone(&opened.registry), &member, config.lease())
            .await
            .with_context(|| format!("cannot join the fleet as {}", args.id))?;
        let runtime = Runtime::start(&args.id, opened.store, lease, config.runtime());
        let caller = start_caller(&args.id, &config, &runtime).await?;
        (
            Engine::Memory(Arc::clone(&runtime)),
            Some(runtime),
            Some(caller),
        )
    };
    if config.proxy_token.is_none() {
        tracing::warn!("proxy_token is not set: the entity API takes requests from anyone who reaches this worker");
    }
    tracing::info!(id = %args.id, listen = %args.listen, admin_listen = %args.admin_listen.map_or("off".into(), |a| a.to_string()), store = %redact(&args.store), stateless = args.stateless, "roost-worker ready");

    let api = Arc::new(Api::new(engine, config, caller));
    let registry = runtime.as_ref().map(|r| Arc::clone(r.registry()));
    let signalled = async move {
        shutdown_signal().await;
        if let Some(registry) = registry {
            if let Err(e) = registry.set_status(MemberStatus::Draining).await {
                tracing::warn!(error = %e, "cannot announce the drain in the workers table");
            }
        }
    };
    let finished = serve(listeners, api, signalled, drain).await;
    tracing::info!(
        in_flight_finished = finished,
        "draining: flushing everything dirty"
    );
    let Some(runtime) = runtime else {
        return Ok(true);
    };
    let flushed = runtime.drain(Instant::now() + drain.grace).await;
    if flushed {
        tracing::info!("roost-worker stopped");
    } else {
        tracing::error!(
            active = runtime.active(),
            "drain timed out with changes unflushed"
        );
    }
    Ok(flushed)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The caller of entity-to-entity calls, with its view of the live workers
/// read once before serving and kept fresh in the background.
async fn start_caller(
    id: &str,
    config: &WorkerConfig,
    runtime: &Runtime,
) -> anyhow::Result<Caller> {
    if config.hash_seed.is_none() {
        tracing::warn!("hash_seed is not set: calls between entities are routed by a different HRW than the proxy's unless its hash_seed is empty too");
    }
    if config.internal_token.is_none() {
        tracing::warn!("internal_token is not set: this worker neither takes nor makes calls to other workers' entities");
    }
    let peers = Arc::new(Peers::new(id, config.seed(), Arc::clone(runtime.store())));
    peers.refresh_soon().await;
    let refresh = std::time::Duration::from_millis(config.peers_refresh_ms);
    let changes = runtime.registry().fleet_changes();
    tokio::spawn(Arc::clone(&peers).keep_fresh(refresh, changes));
    let http = HttpCalls::new(config.internal_token.clone())
        .context("cannot build the HTTP client for calls to other workers")?;
    Ok(Caller::new(peers, http))
}

/// The store URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
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
