//! The worker's configuration: command-line flags for what differs per
//! process (`--id`, `--listen`, `--store`), and an optional YAML file for
//! what a fleet shares (flush timing, limits, and a section per entity
//! type: its durability and settings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use roost_routing::config_file::{self, ConfigError, Invalid, Spanned, Validate};
use roost_routing::hrw::Seed;

use crate::entity::Durability;
use crate::ownership::lease::LeaseConfig;
use crate::runtime::flusher::FlushConfig;
use crate::runtime::RuntimeConfig;
use crate::store::postgres::POOL_SIZE;

/// The default store: an SQLite file every local worker can share.
pub const DEFAULT_STORE: &str = "sqlite://./roost-data/roost.db";

/// The default `flush_linger_us`, chosen by measurement (BENCHMARKS.md,
/// "Worker: cart updates").
const LINGER_US: u64 = 2_000;

/// The `--config` file of `roost-worker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Flush dirty entities at least this often.
    pub flush_interval_ms: u64,
    /// Rows per flush batch; a full batch is flushed at once.
    pub flush_batch_max: usize,
    /// Flush batches written at once, at most (each on a store connection
    /// of its own); a durable write that finds them all in flight joins
    /// the batch that starts when one lands.
    pub flush_pipeline: usize,
    /// How long a busy flusher waits before it starts a batch (a durable
    /// write came while a batch is in flight, or a batch landed with more
    /// queued), so more writes share its commit; 0: never. A durable write
    /// that finds the flusher idle never waits.
    pub flush_linger_us: u64,
    /// Entities unused this long are flushed and dropped from memory.
    pub idle_ms: u64,
    /// The threads that run requests, flushes and the lease. 1 runs
    /// everything on one thread (tokio's current-thread scheduler: no
    /// work stealing, no cross-thread wake-ups), as one event loop per CPU
    /// does. Default: the CPUs the worker may run on (its affinity and its
    /// cgroup's CPU quota), so a worker pinned to one CPU runs on one.
    pub threads: Option<usize>,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// The largest an entity's encoded state may grow: a client's change
    /// that would make it larger gets 413 `state_too_large` and is not
    /// applied (a change that shrinks a larger state is; calls between
    /// entities are not capped, since a reservation's release must always
    /// apply). The replies an entity remembers for `Idempotency-Key`s are
    /// kept within the same size, so a stored entity stays under about
    /// twice this.
    pub max_state_bytes: usize,
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
    /// How long after the last lease renewal that reached the store
    /// requests wait for a store that went away (Postgres restarting, a
    /// short partition) to come back, rather than fail: they are held, not
    /// answered, while the worker reconnects, takes its lock again and
    /// revalidates its entities; past it they get 503 and readiness fails.
    /// 0: no wait. Keep it under the proxy's `upstream_timeout_ms`.
    pub store_grace_ms: u64,
    /// A section per entity type the worker serves (by its kind name):
    /// `{cart: {durability: durable, settings: {limits: {tee: 1}}}}`.
    /// Checked against the registered types at start
    /// ([`crate::kinds::Kinds::configure`]).
    pub kinds: BTreeMap<String, Spanned<KindConfig>>,
    /// The proxies' `hash_seed` phrase: calls between entities are routed
    /// by the same HRW as clients, so they reach the worker the proxy sends
    /// the entity's clients to.
    pub hash_seed: Option<String>,
    /// Secret every proxy in front of the fleet sends in
    /// `x-roost-hop-token` (or `ROOST_PROXY_TOKEN`). Set, the entity API
    /// takes only requests that carry it; unset (a trusted network, tests),
    /// any request. It never opens the internal routes.
    pub proxy_token: Option<String>,
    /// Secret the workers of one fleet authenticate calls to each other
    /// with (or `ROOST_INTERNAL_TOKEN`); it opens only the internal routes,
    /// and needs `proxy_token` set too (and different). Unset: this worker
    /// accepts no calls from others and can call only entities it owns.
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
    /// How often the store is asked for entities whose alarms are due.
    pub alarm_poll_ms: u64,
    /// The file this config was read from, for errors found after
    /// loading (`None`: built in code, or the defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One entity type's section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindConfig {
    /// Durability when a request does not choose (default: the type's
    /// own, [`crate::entity::Entity::DURABILITY`]).
    pub durability: Option<Durability>,
    /// What the type's constructor takes
    /// ([`crate::kinds::Kinds::register_with`]).
    pub settings: Option<serde_json::Value>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            flush_interval_ms: 50,
            flush_batch_max: 512,
            flush_pipeline: 2,
            flush_linger_us: LINGER_US,
            idle_ms: 300_000,
            threads: None,
            max_body_bytes: 1 << 20,
            max_state_bytes: 1 << 20,
            drain_delay_ms: 1_000,
            drain_timeout_ms: 10_000,
            lease_ms: 2_000,
            heartbeat_ms: 500,
            handoff_timeout_ms: 3_000,
            store_grace_ms: 2_000,
            kinds: BTreeMap::new(),
            hash_seed: None,
            proxy_token: None,
            internal_token: None,
            admin_token: None,
            call_timeout_ms: 2_500,
            peers_refresh_ms: 250,
            alarm_poll_ms: 250,
            source: None,
        }
    }
}

/// Environment variables that override the secrets in the file.
pub const PROXY_TOKEN_ENV: &str = "ROOST_PROXY_TOKEN";
pub const INTERNAL_TOKEN_ENV: &str = "ROOST_INTERNAL_TOKEN";
pub const ADMIN_TOKEN_ENV: &str = "ROOST_ADMIN_TOKEN";

impl WorkerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = config_file::load(path)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Take the secrets from the environment where it sets them (so they
    /// need not sit in a file), and check them again as they now are.
    pub fn with_env_secrets(self) -> Result<Self, SecretsError> {
        self.with_secrets_from(|name| std::env::var(name).ok())
    }

    /// [`Self::with_env_secrets`] with the variables read by `var`.
    pub fn with_secrets_from(
        mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretsError> {
        let secrets = [
            (PROXY_TOKEN_ENV, &mut self.proxy_token),
            (INTERNAL_TOKEN_ENV, &mut self.internal_token),
            (ADMIN_TOKEN_ENV, &mut self.admin_token),
        ];
        for (name, secret) in secrets {
            if let Some(token) = var(name).filter(|v| !v.is_empty()) {
                *secret = Some(token);
            }
        }
        self.check_secrets(false)?;
        Ok(self)
    }

    /// Each secret travels in a header and must resist guessing; the
    /// proxies' and the workers' tokens are two different secrets, and the
    /// internal one never goes without the proxy one (the entity API would
    /// be open to anyone who reaches the worker). `proxy_token_later`: the
    /// environment will still set the proxy token.
    fn check_secrets(&self, proxy_token_later: bool) -> Result<(), SecretsError> {
        let secrets = [
            ("proxy_token", PROXY_TOKEN_ENV, &self.proxy_token),
            ("internal_token", INTERNAL_TOKEN_ENV, &self.internal_token),
            ("admin_token", ADMIN_TOKEN_ENV, &self.admin_token),
        ];
        let unusable = secrets
            .iter()
            .find(|(_, _, secret)| secret.as_deref().is_some_and(|s| !is_usable_secret(s)));
        if let Some(&(field, variable, _)) = unusable {
            let message = "must be at least 16 visible ASCII characters".into();
            return Err(SecretsError::new(field, variable, message));
        }
        match (&self.proxy_token, &self.internal_token) {
            (Some(proxy), Some(internal)) if proxy == internal => Err(SecretsError::new(
                "proxy_token",
                PROXY_TOKEN_ENV,
                "must differ from internal_token: a proxy's credential must not open the internal routes".into(),
            )),
            (None, Some(_)) if !proxy_token_later => Err(SecretsError::new(
                "internal_token",
                INTERNAL_TOKEN_ENV,
                format!("is set without proxy_token ({PROXY_TOKEN_ENV}): the entity API would take requests from anyone who reaches the worker"),
            )),
            _ => Ok(()),
        }
    }

    /// The HRW seed calls are routed with.
    pub fn seed(&self) -> Seed {
        Seed::from_phrase(self.hash_seed.as_deref().unwrap_or_default())
    }

    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            flush: FlushConfig {
                interval: Duration::from_millis(self.flush_interval_ms),
                batch_max: self.flush_batch_max,
                pipeline: self.flush_pipeline,
                linger: Duration::from_micros(self.flush_linger_us),
            },
            idle: Duration::from_millis(self.idle_ms),
            handoff_timeout: Duration::from_millis(self.handoff_timeout_ms),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_state_bytes: self.max_state_bytes,
        }
    }

    pub fn lease(&self) -> LeaseConfig {
        LeaseConfig {
            duration: Duration::from_millis(self.lease_ms),
            renew_every: Duration::from_millis(self.heartbeat_ms),
            join_patience: Duration::from_millis(self.lease_ms),
            store_grace: Duration::from_millis(self.store_grace_ms),
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn alarm_poll(&self) -> Duration {
        Duration::from_millis(self.alarm_poll_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
}

impl Validate for WorkerConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let positive = [
            ("flush_interval_ms", self.flush_interval_ms),
            ("flush_batch_max", self.flush_batch_max as u64),
            ("flush_pipeline", self.flush_pipeline as u64),
            ("idle_ms", self.idle_ms),
            ("threads", self.threads.map_or(1, |n| n as u64)),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_state_bytes", self.max_state_bytes as u64),
            ("lease_ms", self.lease_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("handoff_timeout_ms", self.handoff_timeout_ms),
            ("call_timeout_ms", self.call_timeout_ms),
            ("peers_refresh_ms", self.peers_refresh_ms),
            ("alarm_poll_ms", self.alarm_poll_ms),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Invalid::top(field, "must be greater than zero"));
        }
        self.validate_flush()?;
        if self.heartbeat_ms.saturating_mul(2) >= self.lease_ms {
            return Err(Invalid::top(
                "heartbeat_ms",
                format!(
                    "must be under half of lease_ms ({}), so one late heartbeat does not lose the lease",
                    self.lease_ms
                ),
            ));
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
        // The environment may still set the proxy token; checked again then.
        let proxy_token_later = std::env::var_os(PROXY_TOKEN_ENV).is_some_and(|v| !v.is_empty());
        self.check_secrets(proxy_token_later)
            .map_err(|e| Invalid::top(e.field, e.message))
    }
}

impl WorkerConfig {
    /// How many threads the runtime gets (`threads`, or the CPUs this
    /// process may run on).
    pub fn runtime_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Each batch in flight holds a store connection, so a pipeline takes
    /// at most half the Postgres pool (claims need the rest); a linger is
    /// a short wait within a flush interval.
    fn validate_flush(&self) -> Result<(), Invalid> {
        let max_pipeline = POOL_SIZE / 2;
        if self.flush_pipeline > max_pipeline {
            return Err(Invalid::top(
                "flush_pipeline",
                format!("must be at most {max_pipeline}: each batch in flight holds one of the {POOL_SIZE} store connections"),
            ));
        }
        if self.flush_linger_us >= self.flush_interval_ms.saturating_mul(1000) {
            return Err(Invalid::top(
                "flush_linger_us",
                format!(
                    "must be under flush_interval_ms ({} ms): a linger is a short wait for more writes to join a batch",
                    self.flush_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// A secret that cannot be used: which field, which variable may set it,
/// and why (never the secret itself).
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{field}` (or {variable}) {message}")]
pub struct SecretsError {
    pub field: &'static str,
    pub variable: &'static str,
    pub message: String,
}

impl SecretsError {
    fn new(field: &'static str, variable: &'static str, message: String) -> Self {
        SecretsError {
            field,
            variable,
            message,
        }
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
        rejected("flush_pipeline: 0\n", 1, "flush_pipeline");
        rejected("flush_pipeline: 9\n", 1, "flush_pipeline");
        rejected(
            "flush_interval_ms: 1\nflush_linger_us: 1000\n",
            2,
            "flush_linger_us",
        );
        rejected("max_state_bytes: 0\n", 1, "max_state_bytes");
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
        rejected("proxy_token: short\n", 1, "proxy_token");
        rejected("kinds: {cart: {durability: eventually}}\n", 1, "durability");
        rejected("kinds: {cart: {colour: blue}}\n", 1, "colour");
        rejected("no_such_field: 1\n", 1, "no_such_field");
    }

    const PROXY: &str = "proxy-token-for-tests";
    const INTERNAL: &str = "internal-token-for-tests";

    #[test]
    fn the_two_fleet_tokens_go_together_and_differ() {
        rejected(
            &format!("hash_seed: x\ninternal_token: {INTERNAL}\n"),
            2,
            "internal_token",
        );
        rejected(
            &format!("internal_token: {INTERNAL}\nproxy_token: {INTERNAL}\n"),
            2,
            "proxy_token",
        );
        let both = parse(&format!(
            "proxy_token: {PROXY}\ninternal_token: {INTERNAL}\n"
        ));
        assert!(both.is_ok(), "{both:?}");
        let proxy_only = parse(&format!("proxy_token: {PROXY}\n"));
        assert!(proxy_only.is_ok(), "{proxy_only:?}");
    }

    #[test]
    fn secrets_from_the_environment_are_checked_too() {
        let from = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let refused = |config: WorkerConfig, pairs| {
            config
                .with_secrets_from(from(pairs))
                .expect_err("the secrets are refused")
        };
        let alone = refused(WorkerConfig::default(), &[(INTERNAL_TOKEN_ENV, INTERNAL)]);
        assert_eq!(
            (alone.field, alone.variable),
            ("internal_token", INTERNAL_TOKEN_ENV)
        );
        let same = refused(
            WorkerConfig::default(),
            &[(INTERNAL_TOKEN_ENV, INTERNAL), (PROXY_TOKEN_ENV, INTERNAL)],
        );
        assert_eq!(same.field, "proxy_token");
        let short = refused(WorkerConfig::default(), &[(PROXY_TOKEN_ENV, "short")]);
        assert_eq!(short.variable, PROXY_TOKEN_ENV);
        for error in [alone, same, short] {
            let shown = error.to_string();
            assert!(
                !shown.contains(INTERNAL) && !shown.contains("short"),
                "{shown}"
            );
        }
        // The file's token, completed by the environment's.
        let file = WorkerConfig {
            internal_token: Some(INTERNAL.into()),
            ..WorkerConfig::default()
        };
        let config = file
            .with_secrets_from(from(&[(PROXY_TOKEN_ENV, PROXY)]))
            .expect("both tokens set");
        assert_eq!(config.proxy_token.as_deref(), Some(PROXY));
    }
}
