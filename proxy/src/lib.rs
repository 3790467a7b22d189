//! `roost-proxy`: Roost's sticky reverse proxy on Pingora.
//!
//! Every device of a user is routed to the same worker: the proxy extracts the
//! user's key, ranks the workers for it by weighted rendezvous hashing, and
//! sends the request to the first live one. See `DESIGN.md` ("Routing").
//!
//! # Layout
//!
//! - [`config`]: the YAML config ([`config::schema`]), the objects it
//!   builds ([`config::build`]) and file:line errors; [`reload`]: the
//!   config read again and swapped in on SIGHUP.
//! - [`key`]: routing-key extraction (headers, cookies, path segments,
//!   verified identities), tried in the configured order.
//! - [`identity`]: signed cookies and JWTs: verification, minting, and why
//!   a credential was refused (pure; no I/O on the request path).
//! - [`select`]: HRW as a Pingora `BackendSelection`.
//! - [`health`]: rise/fall health state; [`checker`]: the active checker.
//! - [`fleet`]: the roster of workers (selection, health, metrics), swapped
//!   whole when the live set changes; shared by everything below.
//! - [`discovery`]: the live workers read from the store's workers table.
//! - [`policy`]: what every request goes through, whichever engine
//!   carries it: admission, the choice of worker, retries, errors, logs.
//! - [`lean`]: the engine for plain HTTP/1.1 keep-alive requests, the
//!   common case; it hands any other connection to
//! - [`proxy`]: Pingora's generic path (`ProxyHttp`), hooks in phase order.
//! - [`limits`]: what one request may carry (header, key, body), answered
//!   before any worker sees it; [`rate`]: the per-key token bucket.
//! - [`timeouts`]: the clock on every client connection (header read,
//!   keep-alive idle) and the body and write timeouts.
//! - [`connections`]: the open connections of each client address.
//! - [`linger`]: reading what a client still sends after an early reply,
//!   so the reply reaches it.
//! - [`tls`]: the TLS listener's certificate and key.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/admin/workers`,
//!   `/admin/route`; [`lifecycle`]: readiness, and the drain SIGTERM starts.
//! - [`metrics`], [`reply`], [`logging`]: what the others report with.
//! - `fuzzing` (with the `fuzzing` feature): entry points of the fuzz targets and their regression
//!   tests.

pub mod admin;
pub mod checker;
pub mod config;
pub mod connections;
pub mod discovery;
pub mod fleet;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod identity;
pub mod key;
pub mod lean;
pub mod lifecycle;
pub mod limits;
pub mod linger;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rate;
pub mod reload;
pub mod reply;
pub mod select;
pub mod timeouts;
pub mod tls;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::checker::HealthChecker;
use crate::config::{Loaded, ProxyConfig};
use crate::connections::PerAddressLimit;
use crate::discovery::Discovery;
use crate::fleet::Fleet;
use crate::lean::LeanPath;
use crate::lifecycle::{DrainSignal, DrainWatch, Lifecycle};
use crate::policy::{Policy, SharedPolicy};
use crate::proxy::RoostProxy;
use crate::reload::{ReloadOnHangup, Reloader};
use crate::tls::LiveCertificate;

/// How the proxy comes by its listening sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Bind them.
    Fresh,
    /// Take them from the running proxy over `upgrade_sock` (it hands them
    /// over on SIGQUIT): a zero-downtime binary upgrade.
    Upgrade,
}

/// Build the Pingora server for the config loaded from `path` and run it
/// until it is told to stop (SIGINT: at once; SIGTERM: the drain of
/// [`lifecycle`]; SIGQUIT: the hand over to an upgraded proxy, then the
/// drain; SIGHUP: a [`reload`]). Returns only on SIGINT.
pub fn run(path: &Path, loaded: Loaded, start: Start) -> anyhow::Result<()> {
    reload::keep_hangups_from_killing().context("cannot take over SIGHUP")?;
    metrics::register_at_start();
    let config = loaded.config.clone();
    let certificate = loaded
        .built
        .tls
        .clone()
        .map(LiveCertificate::new)
        .map(Arc::new);
    let fleet = Arc::new(Fleet::new(
        &config.hash_seed,
        &config.workers,
        &config.health,
    ));
    let options = Opt {
        upgrade: start == Start::Upgrade,
        ..Opt::default()
    };
    // Before any socket is taken: workers that answer now serve the first
    // request (an upgraded proxy starts accepting the moment it has them).
    let checker = HealthChecker::new(Arc::clone(&fleet), &config.health)?;
    checker.first_round()?;
    let mut server = Server::new_with_opt_and_conf(Some(options), server_conf(&config));
    server.bootstrap();
    let conf = Arc::clone(&server.configuration);

    let lifecycle = Arc::new(Lifecycle::new(Arc::clone(&fleet)));
    let policy = Policy::new(Arc::clone(&fleet), loaded, None).shared();
    let reloader = Reloader::new(
        path,
        &config,
        policy,
        Arc::clone(&fleet),
        certificate.clone(),
    );
    let reloader = Arc::new(reloader);
    let closed = lifecycle.listeners_closed();
    let proxy_service = proxy_service(&conf, reloader.policy(), closed, &config, certificate)?;

    let mut admin = Service::new(
        "roost-admin".to_owned(),
        admin::AdminApp::new(
            Arc::clone(&fleet),
            Arc::clone(&lifecycle),
            Arc::clone(&reloader),
        ),
    );
    admin.add_tcp(&config.admin_listen.to_string());

    let checker = background_service("health-check", checker);

    server.add_service(proxy_service);
    server.add_service(admin);
    server.add_service(checker);
    server.add_service(background_service("reload", ReloadOnHangup::new(reloader)));
    let listeners = std::iter::once(config.listen)
        .chain(config.tls.as_ref().map(|tls| tls.listen.value))
        .collect();
    server.add_service(background_service(
        "drain",
        DrainWatch::new(Arc::clone(&lifecycle), listeners, config.drain_timeout()),
    ));
    if let Some(discovery) = &config.discovery {
        let discovery = Discovery::new(Arc::clone(&fleet), discovery)?;
        discovery.first_read()?;
        server.add_service(background_service("discovery", discovery));
    }
    tracing::info!(listen = %config.listen, tls = ?config.tls.as_ref().map(|tls| tls.listen.value), admin = %config.admin_listen, workers = fleet.roster().workers().len(), discovery = config.discovery.is_some(), "roost-proxy starting");
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainSignal::new(lifecycle, config.drain_delay())),
    });
    Ok(())
}

/// The client-facing service, on `listen` and, with a `tls` section, on its
/// TLS listener too (same proxy, same limits). Its layers, outermost first:
fn proxy_service(
    conf: &Arc<ServerConf>,
    policy: SharedPolicy,
    closed: watch::Receiver<bool>,
    config: &ProxyConfig,
    certificate: Option<Arc<LiveCertificate>>,
) -> anyhow::Result<Service<ClientApp>> {
    // Pingora's HTTP proxy running Roost's request path for what is not
    // plain HTTP/1.1,
    let generic = pingora::proxy::http_proxy(conf, RoostProxy::new(Arc::clone(&policy)));
    // behind the lean path (every connection timed, see [`timeouts`]),
    let app = LeanPath::new(generic, Arc::clone(&policy), closed);
    // admitted only within its address's connection limit.
    let app = PerAddressLimit::new(app, policy);
    let mut service = Service::new("roost-proxy".to_owned(), app);
    service.add_tcp(&config.listen.to_string());
    if let (Some(tls), Some(certificate)) = (&config.tls, certificate) {
        service.add_tls_with_settings(
            &tls.listen.value.to_string(),
            None,
            tls::settings(certificate)?,
        );
    }
    Ok(service)
}

/// The client-facing app, as [`proxy_service`] layers it.
type ClientApp = PerAddressLimit<LeanPath<HttpProxy<RoostProxy>>>;

fn server_conf(config: &ProxyConfig) -> ServerConf {
    ServerConf {
        threads: config.thread_count(),
        work_stealing: false,
        // Once the listeners close, Pingora waits this long before it
        // shuts its runtimes down: a backstop for the drain, which ends
        // the process itself when the last connection is gone.
        grace_period_seconds: Some(config.drain_timeout().as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    }
}
