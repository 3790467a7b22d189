//! The proxy's configuration: one serde struct, loaded from YAML, validated
//! before anything binds.
//!
//! Every error names the file, the line and the field, as
//! `FILE:LINE:COLUMN: field `NAME`: MESSAGE`, so an operator can jump to it
//! (see [`roost_routing::config_file`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use roost_routing::config_file::{self, Invalid, Validate};
use roost_routing::hrw::validate_weight;

pub use roost_routing::config_file::ConfigError;

/// The whole `roost-proxy` config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/admin/*`). Keep it private.
    pub admin_listen: SocketAddr,
    /// Phrase the HRW seed is derived from. Every proxy in front of the same
    /// fleet must use the same phrase; keep it secret so clients cannot choose
    /// which worker their keys land on.
    pub hash_seed: String,
    /// Where the routing key comes from.
    pub key: KeyConfig,
    /// The static part of the fleet, in any order (the order does not affect
    /// routing). May be empty when `discovery` finds the workers.
    #[serde(default)]
    pub workers: Vec<WorkerConfig>,
    /// Also route to the workers the store lists as live.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Proxy worker threads; default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// One log line per request (default true).
    #[serde(default = "default_true")]
    pub access_log: bool,
    /// A worker that has taken a request and sends nothing back for this
    /// long is taken down (it is frozen or cut off) and the request is
    /// retried on the key's next candidate when that is safe (an idempotent
    /// method or an `Idempotency-Key`), else answered 504. Keep it above the
    /// workers' `handoff_timeout_ms`: a live worker may wait that long to
    /// claim a user from a frozen one.
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_ms: u64,
}

fn default_upstream_timeout() -> u64 {
    5_000
}

/// `key:` — the ordered list of sources and what to do without a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Tried in order; the first one present wins.
    pub sources: Vec<KeySource>,
    /// What to do with a request that has no key.
    #[serde(default)]
    pub missing: MissingKey,
}

/// One place to find the routing key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum KeySource {
    /// `{header: x-user-id}`: the value of a request header.
    Header(String),
    /// `{cookie: uid}`: the value of a cookie.
    Cookie(String),
}

/// `missing:` — the policy for keyless requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// 401 with a JSON error.
    #[default]
    Reject,
    /// Send it to any live worker (round robin).
    Any,
}

/// One worker of the fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Stable id; it feeds the hash, so renaming a worker moves its keys.
    pub id: Spanned<String>,
    pub addr: SocketAddr,
    /// Relative share of keys; finite and greater than zero.
    #[serde(default = "default_weight")]
    pub weight: Spanned<f64>,
}

/// `discovery:` — read the live workers from the workers table the workers
/// register themselves in (beside the static `workers:` list, which always
/// stays in the roster).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The workers' store: `postgres://…` or `sqlite://PATH`.
    pub store: Spanned<String>,
    /// How often to read it; a draining or expired worker leaves the live
    /// set within this (and at once for requests, since its listener closes).
    #[serde(default = "default_discovery_interval")]
    pub interval_ms: u64,
}

fn default_discovery_interval() -> u64 {
    250
}

/// `health:` — active HTTP checks with rise/fall thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path probed with `GET`; any 200 passes.
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive passes that bring a worker up (a new worker starts down).
    pub rise: u32,
    /// Consecutive failures that take a worker down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/healthz".into(),
            interval_ms: 250,
            timeout_ms: 200,
            rise: 2,
            fall: 2,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_weight() -> Spanned<f64> {
    Spanned::new(1.0, Location::UNKNOWN, Location::UNKNOWN)
}

impl ProxyConfig {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        config_file::load(path)
    }

    /// Proxy threads to run: the configured number or one per CPU.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl Validate for ProxyConfig {
    /// Checks serde cannot express: weights, unique ids, sane health numbers.
    fn validate(&self) -> Result<(), Invalid> {
        let mut ids = HashSet::new();
        for worker in &self.workers {
            let id = &worker.id.value;
            if id.is_empty() {
                return Err(Invalid::at(worker.id.referenced, "id", "must not be empty"));
            }
            if !ids.insert(id.as_str()) {
                let message = format!("duplicate worker id {id:?}");
                return Err(Invalid::at(worker.id.referenced, "id", message));
            }
            if let Err(e) = validate_weight(id, worker.weight.value) {
                return Err(Invalid::at(
                    worker.weight.referenced,
                    "weight",
                    e.to_string(),
                ));
            }
        }
        if self.workers.is_empty() && self.discovery.is_none() {
            return Err(Invalid::top(
                "workers",
                "at least one worker is required, or a discovery section",
            ));
        }
        if let Some(discovery) = &self.discovery {
            let store = &discovery.store.value;
            if !["postgres://", "postgresql://", "sqlite://"]
                .iter()
                .any(|scheme| store.starts_with(scheme))
            {
                return Err(Invalid::at(
                    discovery.store.referenced,
                    "store",
                    "must be postgres://… or sqlite://PATH",
                ));
            }
            if discovery.interval_ms == 0 {
                return Err(Invalid::top(
                    "discovery.interval_ms",
                    "must be greater than zero",
                ));
            }
        }
        if self.key.sources.is_empty() {
            return Err(Invalid::top(
                "key.sources",
                "at least one key source is required",
            ));
        }
        let health = &self.health;
        if [health.rise, health.fall].contains(&0)
            || [health.interval_ms, health.timeout_ms].contains(&0)
        {
            let message = "rise, fall, interval_ms and timeout_ms must all be greater than zero";
            return Err(Invalid::top("health", message));
        }
        if !health.path.starts_with('/') {
            return Err(Invalid::top("health.path", "must start with '/'"));
        }
        if self.threads == Some(0) {
            return Err(Invalid::top("threads", "must be greater than zero"));
        }
        if self.upstream_timeout_ms == 0 {
            return Err(Invalid::top(
                "upstream_timeout_ms",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}
