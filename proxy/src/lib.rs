//! `roost-proxy`: Roost's sticky reverse proxy on Pingora.
//!
//! Every device of a user is routed to the same worker: the proxy extracts the
//! user's key, ranks the workers for it by weighted rendezvous hashing, and
//! sends the request to the first live one. See `DESIGN.md` ("Routing").
//!
//! # Layout
//!
//! - [`config`]: the YAML config, its validation and file:line errors.
//! - [`key`]: routing-key extraction (headers, cookies, path segments).
//! - [`select`]: HRW as a Pingora `BackendSelection`.
//! - [`health`]: rise/fall health state, the active checker.
//! - [`fleet`]: the roster of workers (selection, health, metrics), swapped
//!   whole when the live set changes; shared by everything below.
//! - [`discovery`]: the live workers read from the store's workers table.
//! - [`proxy`]: the request path (`ProxyHttp`), hooks in phase order.
//! - [`admin`]: `/metrics`, `/admin/workers`, `/admin/route`.
//! - [`metrics`], [`reply`], [`logging`]: what the others report with.

pub mod admin;
pub mod config;
pub mod discovery;
pub mod fleet;
pub mod health;
pub mod key;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reply;
pub mod select;

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::config::ProxyConfig;
use crate::discovery::Discovery;
use crate::fleet::Fleet;
use crate::health::HealthChecker;
use crate::key::KeyExtractor;
use crate::proxy::RoostProxy;

/// Build the Pingora server for `config` and run it until it is told to stop
/// (SIGINT: fast; SIGTERM: graceful). Never returns on success.
pub fn run(config: ProxyConfig) -> anyhow::Result<()> {
    let fleet = Arc::new(Fleet::new(
        &config.hash_seed,
        &config.workers,
        &config.health,
    ));
    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
    server.bootstrap();
    let conf = Arc::clone(&server.configuration);

    // `ProxyConfig::load` has checked the sources; this only fails for a
    // config built some other way.
    let sources = config
        .key
        .to_sources()
        .map_err(|invalid| anyhow::anyhow!("field `{}`: {}", invalid.field, invalid.message))?;
    let proxy = RoostProxy::new(
        Arc::clone(&fleet),
        KeyExtractor::new(sources),
        config.key.missing,
        config.access_log,
        std::time::Duration::from_millis(config.upstream_timeout_ms),
    );
    let mut proxy_service =
        pingora::proxy::http_proxy_service_with_name(&conf, proxy, "roost-proxy");
    proxy_service.add_tcp(&config.listen.to_string());

    let mut admin = Service::new(
        "roost-admin".to_owned(),
        admin::AdminApp::new(Arc::clone(&fleet)),
    );
    admin.add_tcp(&config.admin_listen.to_string());

    let checker = background_service(
        "health-check",
        HealthChecker::new(Arc::clone(&fleet), &config.health)?,
    );

    server.add_service(proxy_service);
    server.add_service(admin);
    server.add_service(checker);
    if let Some(discovery) = &config.discovery {
        let discovery = Discovery::new(Arc::clone(&fleet), discovery)?;
        server.add_service(background_service("discovery", discovery));
    }
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, workers = fleet.roster().workers().len(), discovery = config.discovery.is_some(), "roost-proxy starting");
    server.run_forever()
}

fn server_conf(config: &ProxyConfig) -> ServerConf {
    ServerConf {
        threads: config.thread_count(),
        work_stealing: false,
        // SIGTERM: stop accepting at once, give in-flight requests 5 s.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    }
}
