//! Reload: the config file read again on SIGHUP or `POST /admin/reload`,
//! as nginx and HAProxy do, without dropping a connection.
//!
//! The new file is checked and built in full beside the running config
//! ([`Loaded`]); only then is it applied, all at once:
//!
//! - the request policy (key sources and their secrets, limits, rate,
//!   client and upstream timeouts, the trusted hop, the access log) is
//!   swapped whole: a request in flight finishes under the policy it
//!   started with, the next one takes the new one ([`SharedPolicy`]);
//! - the configured workers and their weights rebuild the roster, keeping
//!   the health of every worker that stays ([`Fleet::reconfigure`]);
//! - the TLS certificate is replaced for new handshakes
//!   ([`LiveCertificate`]).
//!
//! A file that fails any check changes nothing: the error names the file,
//! the line and the field, and is logged and returned. Fields that only a
//! restart can change (listeners, threads, health checks, discovery, the
//! drain, the upgrade socket) keep their running values and are reported.
//! A new `hash_seed` moves most keys to another worker, so it is refused
//! unless the file says `allow_hash_seed_change: true`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use roost_routing::config_file::{self, Invalid};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{ConfigError, Loaded, ProxyConfig};
use crate::fleet::Fleet;
use crate::metrics::PROXY;
use crate::policy::{Policy, SharedPolicy};
use crate::tls::LiveCertificate;

/// What a reload changes, and what it was built from.
pub struct Reloader {
    path: PathBuf,
    /// The config the proxy started with: what restart-only fields are
    /// compared with.
    started: ProxyConfig,
    /// The `hash_seed` in force. Its lock also keeps reloads one at a time.
    hash_seed: Mutex<String>,
    policy: SharedPolicy,
    fleet: Arc<Fleet>,
    certificate: Option<Arc<LiveCertificate>>,
}

/// A reload that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Fields that differ from the running proxy's and need a restart
    /// (they keep their running values until then).
    pub restart_needed: Vec<&'static str>,
}

impl Reloader {
    /// `path` is the config file the proxy `started` with; the policy, the
    /// fleet and the certificate are what it runs with.
    pub fn new(
        path: &Path,
        started: &ProxyConfig,
        policy: SharedPolicy,
        fleet: Arc<Fleet>,
        certificate: Option<Arc<LiveCertificate>>,
    ) -> Self {
        Reloader {
            path: path.to_owned(),
            started: started.clone(),
            hash_seed: Mutex::new(started.hash_seed.clone()),
            policy,
            fleet,
            certificate,
        }
    }

    /// The policy requests start with (what a reload swaps).
    pub fn policy(&self) -> SharedPolicy {
        Arc::clone(&self.policy)
    }

    /// Read the file again and apply it, or change nothing; either way
    /// the outcome is logged and counted.
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let outcome = self.try_reload();
        match &outcome {
            Ok(reloaded) => {
                PROXY.reloads[0].inc();
                PROXY.last_reload_successful.set(1);
                tracing::info!(file = %self.path.display(), restart_needed = ?reloaded.restart_needed, "config reloaded");
            }
            Err(e) => {
                PROXY.reloads[1].inc();
                PROXY.last_reload_successful.set(0);
                tracing::error!(error = %e, "config reload refused; nothing changed");
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<Reloaded, ConfigError> {
        let mut hash_seed = self.hash_seed.lock().unwrap_or_else(|p| p.into_inner());
        let text = config_file::read(&self.path)?;
        let loaded = Loaded::parse(&self.path, &text)?;
        check_hash_seed(&hash_seed, &loaded.config).map_err(|e| e.in_file(&self.path, &text))?;
        let restart_needed = restart_needed(&self.started, &loaded.config);
        let certificate = loaded.built.tls.clone();
        if let (Some(live), Some(new)) = (&self.certificate, certificate) {
            live.replace(new);
        }
        self.fleet
            .reconfigure(&loaded.config.hash_seed, &loaded.config.workers);
        hash_seed.clone_from(&loaded.config.hash_seed);
        let previous = self.policy.load_full();
        let policy = Policy::new(Arc::clone(&self.fleet), loaded, Some(&previous));
        self.policy.store(Arc::new(policy));
        Ok(Reloaded { restart_needed })
    }
}

/// A `hash_seed` other than the running one re-ranks every key: most users
/// move to another worker, which takes them over from their last flush.
/// Only a file that says so may do that.
fn check_hash_seed(running: &str, config: &ProxyConfig) -> Result<(), Invalid> {
    if config.hash_seed == running || config.allow_hash_seed_change {
        return Ok(());
    }
    Err(Invalid::top(
        "hash_seed",
        "differs from the running proxy's: most keys would move to another worker; \
         add `allow_hash_seed_change: true` if that is intended (and give every proxy \
         of the fleet the same seed)",
    ))
}

/// The fields of `new` that differ from `started` and that only a restart
/// applies.
fn restart_needed(started: &ProxyConfig, new: &ProxyConfig) -> Vec<&'static str> {
    let tls_listen = |config: &ProxyConfig| config.tls.as_ref().map(|tls| tls.listen.value);
    let discovery = |config: &ProxyConfig| {
        let discovery = config.discovery.as_ref();
        discovery.map(|d| (d.store.value.clone(), d.interval_ms))
    };
    [
        ("listen", started.listen != new.listen),
        ("admin_listen", started.admin_listen != new.admin_listen),
        ("threads", started.thread_count() != new.thread_count()),
        ("tls.listen", tls_listen(started) != tls_listen(new)),
        ("health", started.health != new.health),
        ("discovery", discovery(started) != discovery(new)),
        (
            "drain_delay_ms",
            started.drain_delay_ms != new.drain_delay_ms,
        ),
        (
            "drain_timeout_ms",
            started.drain_timeout_ms != new.drain_timeout_ms,
        ),
        ("upgrade_sock", started.upgrade_sock != new.upgrade_sock),
    ]
    .into_iter()
    .filter_map(|(field, changed)| changed.then_some(field))
    .collect()
}

/// SIGHUP's default action ends the process. Take it over before anything
/// else (tokio keeps a handler for the life of the process, whichever
/// runtime installed it), so a reload sent while the proxy still starts is
/// ignored (the file was just read) rather than a kill.
pub fn keep_hangups_from_killing() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async { signal(SignalKind::hangup()).map(drop) })
}

/// Reloads on SIGHUP, for as long as the proxy runs.
pub struct ReloadOnHangup {
    reloader: Arc<Reloader>,
}

impl ReloadOnHangup {
    pub fn new(reloader: Arc<Reloader>) -> Self {
        ReloadOnHangup { reloader }
    }
}

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /admin/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    // The outcome is logged and counted by `reload`.
                    let _ = self.reloader.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> ProxyConfig {
        let text = format!(
            "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\nhash_seed: \"t\"\n\
             key:\n  sources: [{{header: x-user-id}}]\n\
             workers:\n  - {{id: w1, addr: 127.0.0.1:9001}}\n{extra}"
        );
        config_file::parse(Path::new("proxy.yaml"), &text).expect("a valid config")
    }

    #[test]
    fn only_restart_only_fields_are_reported() {
        let started = config("");
        let live = config("upstream_timeout_ms: 9000\nlimits: {max_body_bytes: 10}\n");
        assert!(restart_needed(&started, &live).is_empty());
        let moved =
            config("threads: 7\nhealth: {interval_ms: 1000}\n").clone_with_listen("127.0.0.1:8081");
        assert_eq!(
            restart_needed(&started, &moved),
            ["listen", "threads", "health"]
        );
    }

    #[test]
    fn a_new_hash_seed_needs_the_file_to_allow_it() {
        let reseeded = config("").with_seed("u");
        assert!(check_hash_seed("t", &config("")).is_ok());
        let refused = check_hash_seed("t", &reseeded).expect_err("refused");
        assert_eq!(refused.field, "hash_seed");
        let allowed = config("allow_hash_seed_change: true\n").with_seed("u");
        assert!(check_hash_seed("t", &allowed).is_ok());
    }

    impl ProxyConfig {
        fn clone_with_listen(mut self, listen: &str) -> Self {
            self.listen = listen.parse().expect("an address");
            self
        }

        fn with_seed(mut self, seed: &str) -> Self {
            self.hash_seed = seed.into();
            self
        }
    }
}
