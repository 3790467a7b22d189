//! The worker's command line, for `roost-worker` and for an application's
//! own worker binary, which is this with its own kinds:
//!
//! ```no_run
//! use roost_worker::kinds::Kinds;
//!
//! fn main() -> std::process::ExitCode {
//!     // .register(YourType) for each of your entity types.
//!     roost_worker::cli::main(Kinds::new())
//! }
//! ```
//!
//! (`roost-worker` itself is this with the built-in kinds:
//! `roost_builtins::builtins()`.)
//!
//! `BINARY --id ID --listen ADDR [--admin-listen ADDR] [--store URL]
//! [--config FILE]` runs until SIGTERM or SIGINT, then drains: `/readyz`
//! fails, requests in flight finish, everything dirty is flushed, and the
//! process exits 0 (1 if the last flush could not complete). Everything but
//! the command line, the config file and the signals is [`crate::run`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::config::{WorkerConfig, DEFAULT_STORE};
use crate::kinds::Kinds;
use crate::run::{run, RunOptions, Stopped};

#[derive(Parser)]
#[command(version, about = "A Roost worker")]
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
    /// `sqlite://PATH`, or `postgres://USER@HOST[:PORT]/DB` with libpq's
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert=CA.pem`. Without a password in the URL it is read from
    /// PGPASSWORD, or from the password file (`passfile=`, PGPASSFILE,
    /// ~/.pgpass); PGSSLMODE and PGSSLROOTCERT work as in libpq.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: String,
    /// Optional YAML file: flush timing, limits, and each entity type's
    /// durability and settings.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Benchmark baseline: keep nothing in memory, run one Postgres
    /// transaction per request (needs a postgres:// store).
    #[arg(long)]
    stateless: bool,
}

/// The async runtime: one thread runs everything on tokio's current-thread
/// scheduler; more get the multi-thread one, a worker thread each.
fn build_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}

/// Parse the command line and the config file, run a worker serving
/// `kinds` until SIGTERM or SIGINT, and say how it ended.
pub fn main(kinds: Kinds) -> ExitCode {
    let args = Args::parse();
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    init_logging();
    let runtime = match build_runtime(config.runtime_threads()) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roost-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serve = run(args.into_options(), config, kinds, shutdown_signal());
    let result = runtime.block_on(serve);
    // Idle blocking-pool threads (SQLite) would otherwise hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        Ok(Stopped::Unflushed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("roost-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    fn into_options(self) -> RunOptions {
        RunOptions {
            id: self.id,
            listen: self.listen,
            admin_listen: self.admin_listen,
            advertise: self.advertise,
            store: self.store,
            stateless: self.stateless,
        }
    }
}

/// The `--config` file (or the defaults) with the secrets the environment
/// sets, checked; the error as it should be printed.
fn load_config(path: Option<&Path>) -> Result<WorkerConfig, String> {
    let config = path
        .map(WorkerConfig::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    config
        .unwrap_or_default()
        .with_env_secrets()
        .map_err(|e| format!("roost-worker: {e}"))
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
