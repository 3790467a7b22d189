//! Running a worker: the one entry point that takes what differs per
//! process ([`RunOptions`]) and what a fleet shares ([`WorkerConfig`]),
//! starts everything in order, serves until `shutdown` resolves, and
//! drains.
//!
//! Start-up, in order: check the kinds against the config; bind the
//! listeners (so a taken port fails before anything joins the fleet); open
//! the store; join the fleet (the lease); start the runtime (flusher, lease
//! renewal, hand-overs); read the live workers for calls between entities;
//! wake entities whose alarms are due ([`crate::alarms`]); serve. Shutdown: announce the drain
//! in the workers table, fail readiness and serve on for `drain_delay_ms`,
//! stop accepting, let requests in flight finish, flush everything dirty
//! and release every entity ([`crate::http::serve`],
//! [`crate::runtime::Runtime::drain`]).
//!
//! The `roost-worker` binary (package `roost-builtins`) is this function
//! behind a command line and the process's signals, serving the built-in
//! kinds; an application's
//! own binary calls it the same way with its own [`Kinds`], and a test
//! with a future of its own as `shutdown`:
//!
//! ```no_run
//! use roost_worker::config::WorkerConfig;
//! use roost_worker::kinds::Kinds;
//! use roost_worker::run::{run, RunOptions, Stopped};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let options = RunOptions {
//!     id: "w1".into(),
//!     listen: "127.0.0.1:9001".parse()?,
//!     admin_listen: Some("127.0.0.1:9101".parse()?),
//!     advertise: None,
//!     store: "sqlite://./roost-data/roost.db".into(),
//!     stateless: false,
//! };
//! let config = WorkerConfig::default().with_env_secrets()?;
//! let kinds = Kinds::new(); // .register(YourType) for each entity type
//! let stopped = run(options, config, kinds, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! assert_eq!(stopped, Stopped::Drained);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::alarms::Waker;
use crate::calls::http::HttpCalls;
use crate::calls::peers::Peers;
use crate::calls::Caller;
use crate::config::WorkerConfig;
use crate::engine::Engine;
use crate::http::{serve, Api, Drain, Listeners};
use crate::kinds::{Kinds, KindsError};
use crate::ownership::lease::Lease;
use crate::runtime::Runtime;
use crate::stateless::StatelessEngine;
use crate::store::postgres::PostgresStore;
use crate::store::{Member, MemberStatus, Registry, StoreError};

/// What differs per worker process (the binary's command line).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// This worker's id; it must match the id proxies route by.
    pub id: String,
    /// The entity API, the internal routes and the probes: what proxies
    /// and other workers reach.
    pub listen: SocketAddr,
    /// `/metrics` and the probes, for the operator's network only; `None`
    /// serves no metrics.
    pub admin_listen: Option<SocketAddr>,
    /// The address proxies and other workers reach this one at, as
    /// registered in the workers table (default: `listen`).
    pub advertise: Option<String>,
    /// `postgres://…` or `sqlite://PATH`.
    pub store: String,
    /// Benchmark baseline: keep nothing in memory, one Postgres transaction
    /// per request (needs a `postgres://` store).
    pub stateless: bool,
}

/// How a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Everything dirty was flushed and every entity released.
    Drained,
    /// The drain ran out of time with changes unflushed (the next owners
    /// take over from the last flush).
    Unflushed,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Kinds(#[from] KindsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store {url}: {source}")]
    Store { url: String, source: StoreError },
    #[error("--stateless needs a postgres store; cannot open {url}: {source}")]
    Stateless { url: String, source: StoreError },
    #[error("cannot join the fleet as {id}: {source}")]
    Join { id: String, source: StoreError },
    #[error("cannot build the HTTP client for calls to other workers: {0}")]
    CallClient(#[from] reqwest::Error),
}

/// What serves requests, once started.
struct Started {
    engine: Engine,
    /// `None` for the stateless baseline.
    runtime: Option<Arc<Runtime>>,
    caller: Option<Caller>,
}

/// Run a worker serving `kinds` until `shutdown` resolves, then drain it.
pub async fn run(
    options: RunOptions,
    config: WorkerConfig,
    kinds: Kinds,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, StartError> {
    crate::metrics::register_at_start();
    let catalog = Arc::new(kinds.configure(&config)?);
    let listeners = bind_listeners(&options).await?;
    let drain = Drain {
        delay: config.drain_delay(),
        grace: config.drain_timeout(),
    };
    let started = if options.stateless {
        start_stateless(&options).await?
    } else {
        start_in_memory(&options, &config).await?
    };
    log_ready(&options, &config);
    let Started {
        engine,
        runtime,
        caller,
    } = started;
    let alarm_poll = config.alarm_poll();
    let peers = caller.as_ref().map(|caller| Arc::clone(caller.peers()));
    let api = Arc::new(Api::new(engine, config, catalog, caller));
    let (stop_waking, waking_stopped) = tokio::sync::watch::channel(false);
    if let (Some(runtime), Some(peers)) = (&runtime, peers) {
        let waker = Waker::new(Arc::clone(runtime.store()), peers, Arc::clone(&api));
        tokio::spawn(waker.run(alarm_poll, waking_stopped));
    }
    let registry = runtime.as_ref().map(|r| Arc::clone(r.registry()));
    let announced = announce_drain(shutdown, registry);
    let finished = serve(listeners, api, announced, drain).await;
    let _ = stop_waking.send(true);
    tracing::info!(
        in_flight_finished = finished,
        "draining: flushing everything dirty"
    );
    match runtime {
        Some(runtime) => Ok(drain_runtime(&runtime, drain.grace).await),
        None => Ok(Stopped::Drained),
    }
}

/// The public listener and the admin one (if asked for).
async fn bind_listeners(options: &RunOptions) -> Result<Listeners, StartError> {
    Ok(Listeners {
        public: bind(options.listen).await?,
        admin: match options.admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        },
    })
}

fn log_ready(options: &RunOptions, config: &WorkerConfig) {
    if config.proxy_token.is_none() {
        tracing::warn!("proxy_token is not set: the entity API takes requests from anyone who reaches this worker");
    }
    tracing::info!(
        id = %options.id,
        listen = %options.listen,
        admin_listen = %options.admin_listen.map_or("off".into(), |a| a.to_string()),
        store = %redact(&options.store),
        stateless = options.stateless,
        threads = config.runtime_threads(),
        "roost-worker ready"
    );
}

/// Resolves once `shutdown` has and the drain is announced in the workers
/// table (so proxies stop routing here), or could not be.
async fn announce_drain(shutdown: impl Future<Output = ()>, registry: Option<Arc<dyn Registry>>) {
    shutdown.await;
    if let Some(registry) = registry {
        if let Err(e) = registry.set_status(MemberStatus::Draining).await {
            tracing::warn!(error = %e, "cannot announce the drain in the workers table");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

/// The benchmark baseline: no state in memory, no lease, no calls.
async fn start_stateless(options: &RunOptions) -> Result<Started, StartError> {
    let store = PostgresStore::connect(&options.store)
        .await
        .map_err(|source| StartError::Stateless {
            url: redact(&options.store),
            source,
        })?;
    Ok(Started {
        engine: Engine::Stateless(Arc::new(StatelessEngine::new(&store, &options.id))),
        runtime: None,
        caller: None,
    })
}

/// Open the store, join the fleet, start the runtime and the caller.
async fn start_in_memory(
    options: &RunOptions,
    config: &WorkerConfig,
) -> Result<Started, StartError> {
    let opened = crate::store::open(&options.store)
        .await
        .map_err(|source| StartError::Store {
            url: redact(&options.store),
            source,
        })?;
    let member = Member {
        id: options.id.clone(),
        addr: options
            .advertise
            .clone()
            .unwrap_or_else(|| options.listen.to_string()),
    };
    let lease = Lease::join(Arc::clone(&opened.registry), &member, config.lease())
        .await
        .map_err(|source| StartError::Join {
            id: options.id.clone(),
            source,
        })?;
    let runtime = Runtime::start(&options.id, opened.store, lease, config.runtime());
    let caller = start_caller(&options.id, config, &runtime).await?;
    Ok(Started {
        engine: Engine::Memory(Arc::clone(&runtime)),
        runtime: Some(runtime),
        caller: Some(caller),
    })
}

/// The caller of entity-to-entity calls, with its view of the live workers
/// read once before serving and kept fresh in the background.
async fn start_caller(
    id: &str,
    config: &WorkerConfig,
    runtime: &Runtime,
) -> Result<Caller, StartError> {
    if config.hash_seed.is_none() {
        tracing::warn!("hash_seed is not set: calls between entities are routed by a different HRW than the proxy's unless its hash_seed is empty too");
    }
    if config.internal_token.is_none() {
        tracing::warn!("internal_token is not set: this worker neither takes nor makes calls to other workers' entities");
    }
    let peers = Arc::new(Peers::new(id, config.seed(), Arc::clone(runtime.store())));
    peers.refresh_soon().await;
    let refresh = Duration::from_millis(config.peers_refresh_ms);
    let changes = runtime.registry().fleet_changes();
    tokio::spawn(Arc::clone(&peers).keep_fresh(refresh, changes));
    let http = HttpCalls::new(config.internal_token.clone())?;
    Ok(Caller::new(peers, http))
}

/// Flush and release everything within `grace`.
async fn drain_runtime(runtime: &Runtime, grace: Duration) -> Stopped {
    if runtime.drain(Instant::now() + grace).await {
        tracing::info!("roost-worker stopped");
        Stopped::Drained
    } else {
        tracing::error!(
            active = runtime.active(),
            "drain timed out with changes unflushed"
        );
        Stopped::Unflushed
    }
}

/// The store URL without a password (in the credentials or a `password=`
/// parameter), for logs and errors.
pub fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<&str> = query
                .split('&')
                .map(|param| {
                    if param.starts_with("password=") {
                        "password=***"
                    } else {
                        param
                    }
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_store_url_loses_its_password_only() {
        assert_eq!(
            redact("postgres://roost:s3cret@db:5432/roost"),
            "postgres://roost:***@db:5432/roost"
        );
        assert_eq!(
            redact("postgres://roost@db/roost"),
            "postgres://roost@db/roost"
        );
        assert_eq!(
            redact("postgres://roost@db/roost?sslmode=verify-full&password=s3cret&passfile=/p"),
            "postgres://roost@db/roost?sslmode=verify-full&password=***&passfile=/p"
        );
        assert_eq!(
            redact("sqlite://./roost-data/roost.db"),
            "sqlite://./roost-data/roost.db"
        );
    }
}
