//! The worker's configuration: command-line flags for what differs per
//! process (`--id`, `--listen`, `--store`), and an optional YAML file for
//! what a fleet shares (flush timing, durability defaults, limits).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use roost_routing::config_file::{self, ConfigError, Invalid, Validate};
use roost_routing::hrw::Seed;

use crate::http::Drain;
use crate::lease::LeaseConfig;
use crate::runtime::flusher::FlushConfig;
use crate::runtime::{Durability, RuntimeConfig};

/// The default store: an SQLite file every local worker can share.
pub const DEFAULT_STORE: &str = "sqlite://./roost-data/roost.db";

/// The `--config` file of `roost-worker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Flush dirty entities at least this often.
    pub flush_interval_ms: u64,
    /// Rows per flush batch; a full batch is flushed at once.
    pub flush_batch_max: usize,
    /// Entities unused this long are flushed and dropped from memory.
    pub idle_ms: u64,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// On SIGTERM, how long to go on serving (with `/readyz` failing) before
    /// the listener closes, so proxies stop sending requests first.
    pub drain_delay_ms: u64,
    /// On SIGTERM, how long to wait for in-flight requests and the last flush.
    pub drain_timeout_ms: u64,
    /// How long a heartbeat keeps this worker's lease; others may claim its
    /// entities once it has run out.
    pub lease_ms: u64,
    /// How often the lease is renewed (well under `lease_ms`).
    pub heartbeat_ms: u64,
    /// The longest a claim waits for a live owner to hand an entity over
    /// (longer than `lease_ms`, so a frozen owner's entities are claimed
    /// when its lease runs out rather than refused); past it, 503.
    pub handoff_timeout_ms: u64,
    /// Durability when a request does not choose, per entity type
    /// (`session`, `cart`, `quota`).
    pub durability: HashMap<String, Durability>,
    /// Per-SKU, per-user purchase limits for carts: `{tee-limited: 1}`.
    pub limits: HashMap<String, u64>,
    /// The proxies' `hash_seed` phrase: calls between entities are routed
    /// by the same HRW as clients, so they reach the worker the proxy sends
    /// the entity's clients to.
    pub hash_seed: Option<String>,
    /// Secret the workers of one fleet authenticate calls to each other
    /// with (or `ROOST_INTERNAL_TOKEN`). Unset: this worker accepts no
    /// calls from others and can call only entities it owns.
    pub internal_token: Option<String>,
    /// Secret of admin calls such as `PUT /v1/inventory/{sku}`, sent as
    /// `Authorization: Bearer …` (or `ROOST_ADMIN_TOKEN`). Unset: admin
    /// calls are refused.
    pub admin_token: Option<String>,
    /// The longest one round of calls to other entities may take, retries
    /// included, before the request gets 503 (its calls finish with the
    /// entity's next request). Under `handoff_timeout_ms`, since a
    /// hand-over of the calling entity waits for its calls; long enough
    /// to outwait a frozen receiver's lease (`lease_ms`).
    pub call_timeout_ms: u64,
    /// How often the view of live workers calls are routed over is re-read
    /// (also at once when a call fails).
    pub peers_refresh_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            flush_interval_ms: 50,
            flush_batch_max: 512,
            idle_ms: 300_000,
            max_body_bytes: 1 << 20,
            drain_delay_ms: 1_000,
            drain_timeout_ms: 10_000,
            lease_ms: 2_000,
            heartbeat_ms: 500,
            handoff_timeout_ms: 3_000,
            durability: HashMap::new(),
            limits: HashMap::new(),
            hash_seed: None,
            internal_token: None,
            admin_token: None,
            call_timeout_ms: 2_500,
            peers_refresh_ms: 250,
        }
    }
}

/// Entity types a durability default may name.
const KINDS: [&str; 4] = ["session", "cart", "quota", "inventory"];

/// Environment variables that override the secrets in the file.
pub const INTERNAL_TOKEN_ENV: &str = "ROOST_INTERNAL_TOKEN";
pub const ADMIN_TOKEN_ENV: &str = "ROOST_ADMIN_TOKEN";

impl WorkerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        config_file::load(path)
    }

    /// Take the secrets from the environment where it sets them (so they
    /// need not sit in a file).
    pub fn with_env_secrets(mut self) -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(token) = var(INTERNAL_TOKEN_ENV) {
            self.internal_token = Some(token);
        }
        if let Some(token) = var(ADMIN_TOKEN_ENV) {
            self.admin_token = Some(token);
        }
        self
    }

    /// The HRW seed calls are routed with.
    pub fn seed(&self) -> Seed {
        Seed::from_phrase(self.hash_seed.as_deref().unwrap_or_default())
    }

    /// Durability for `kind` when the request does not choose:
    /// write-behind unless configured.
    pub fn durability_of(&self, kind: &str) -> Durability {
        self.durability
            .get(kind)
            .copied()
            .unwrap_or(Durability::WriteBehind)
    }

    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            flush: FlushConfig {
                interval: Duration::from_millis(self.flush_interval_ms),
                batch_max: self.flush_batch_max,
            },
            idle: Duration::from_millis(self.idle_ms),
            handoff_timeout: Duration::from_millis(self.handoff_timeout_ms),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
        }
    }

    pub fn lease(&self) -> LeaseConfig {
        LeaseConfig {
            duration: Duration::from_millis(self.lease_ms),
            renew_every: Duration::from_millis(self.heartbeat_ms),
            join_patience: Duration::from_millis(self.lease_ms),
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn drain(&self) -> Drain {
        Drain {
            delay: Duration::from_millis(self.drain_delay_ms),
            grace: self.drain_timeout(),
        }
    }
}

impl Validate for WorkerConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let positive = [
            ("flush_interval_ms", self.flush_interval_ms),
            ("flush_batch_max", self.flush_batch_max as u64),
            ("idle_ms", self.idle_ms),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("lease_ms", self.lease_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("handoff_timeout_ms", self.handoff_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
            ("peers_refresh_ms", self.peers_refresh_ms),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Invalid::top(field, "must be greater than zero"));
        }
        if self.heartbeat_ms.saturating_mul(2) >= self.lease_ms {
            return Err(Invalid::top(
                "heartbeat_ms",
                format!(
                    "must be under half of lease_ms ({}), so one late heartbeat does not lose the lease",
                    self.lease_ms
                ),
            ));
        }
        if let Some(kind) = self
            .durability
            .keys()
            .find(|k| !KINDS.contains(&k.as_str()))
        {
            let message = format!(
                "unknown entity type {kind:?}; expected one of {}",
                KINDS.join(", ")
            );
            return Err(Invalid::top("durability", message));
        }
        if self.call_timeout_ms >= self.handoff_timeout_ms {
            return Err(Invalid::top(
                "call_timeout_ms",
                format!(
                    "must be under handoff_timeout_ms ({}): a hand-over of an entity waits for its calls",
                    self.handoff_timeout_ms
                ),
            ));
        }
        let secrets = [
            ("internal_token", &self.internal_token),
            ("admin_token", &self.admin_token),
        ];
        if let Some((field, _)) = secrets
            .iter()
            .find(|(_, secret)| secret.as_deref().is_some_and(|s| !is_usable_secret(s)))
        {
            // Both travel in headers.
            return Err(Invalid::top(
                field,
                "must be at least 16 visible ASCII characters",
            ));
        }
        if let Some((sku, _)) = self.limits.iter().find(|(_, limit)| **limit == 0) {
            return Err(Invalid::top(
                "limits",
                format!("limit of {sku:?} must be at least 1"),
            ));
        }
        Ok(())
    }
}

/// Long enough to resist guessing, and sendable as a header value.
fn is_usable_secret(secret: &str) -> bool {
    secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WorkerConfig, ConfigError> {
        config_file::parse(Path::new("worker.yaml"), text)
    }

    /// The error for `text` names `field` on `line`.
    fn rejected(text: &str, line: usize, field: &str) {
        let error = parse(text).expect_err("the config is refused");
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("worker.yaml:{line}:")),
            "{shown}"
        );
        assert!(shown.contains(&format!("`{field}`")), "{shown}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let example = include_str!("../../deploy/config/worker.example.yaml");
        let config = parse(example).expect("the example parses");
        assert_eq!(config.hash_seed.as_deref(), Some("change-me"));
    }

    #[test]
    fn timing_that_cannot_work_is_refused() {
        rejected("lease_ms: 1000\nheartbeat_ms: 500\n", 2, "heartbeat_ms");
        rejected(
            "handoff_timeout_ms: 2000\ncall_timeout_ms: 2000\n",
            2,
            "call_timeout_ms",
        );
        rejected("flush_interval_ms: 0\n", 1, "flush_interval_ms");
    }

    #[test]
    fn short_secrets_and_unknown_types_are_refused() {
        rejected("internal_token: short\n", 1, "internal_token");
        rejected("admin_token: short\n", 1, "admin_token");
        rejected(
            "internal_token: \"sixteen chars and a space\"\n",
            1,
            "internal_token",
        );
        rejected("durability: {ledger: durable}\n", 1, "durability");
        rejected("limits: {tee: 0}\n", 1, "limits");
        rejected("no_such_field: 1\n", 1, "no_such_field");
    }
}
