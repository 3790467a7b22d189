//! The config file as written: serde structs with their defaults, and the
//! checks that need nothing outside the file. What a field names outside
//! the file (a secret, a JWKS file, a certificate) is read by
//! [`super::build`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use roost_routing::config_file::{Invalid, Validate};
use roost_routing::hrw::validate_weight;
use roost_routing::postgres::Endpoint;

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
    /// A reload that changes `hash_seed` is refused unless this is true:
    /// a new seed moves most keys to another worker.
    #[serde(default)]
    pub allow_hash_seed_change: bool,
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
    /// A worker silent this long on a replay-safe request is suspected of
    /// being frozen: the proxy probes its `/healthz`, and if that gets no
    /// answer within as long again, takes the worker down and sends the
    /// request to the key's next candidate at once, instead of waiting out
    /// `upstream_timeout_ms`. A worker that answers the probe (it is busy,
    /// or itself waiting to claim a user) is waited for as before.
    #[serde(default = "default_suspect_after")]
    pub suspect_after_ms: u64,
    /// After SIGTERM, how long the proxy serves on with `/readyz` failing,
    /// so the load balancer in front stops sending it requests (default
    /// 1,000; set it to the balancer's check interval times its unhealthy
    /// threshold).
    #[serde(default = "default_drain_delay")]
    pub drain_delay_ms: u64,
    /// Then, its listeners closed, the longest the requests in flight get
    /// to finish before the proxy exits (default 10,000).
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_ms: u64,
    /// The Unix socket a proxy started with `--upgrade` takes the running
    /// proxy's listening sockets over (on SIGQUIT). One per proxy on a
    /// host.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: std::path::PathBuf,
    /// What one request may carry (headers, key, body, rate per key).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// How long a client may take to send a request or stay idle.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// A TLS (rustls) listener beside `listen`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The trusted hop: the workers' `proxy_token`, sent to them with every
    /// request so they take entity requests only through a proxy.
    #[serde(default)]
    pub trusted_hop: Option<TrustedHopConfig>,
}

fn default_upstream_timeout() -> u64 {
    5_000
}

fn default_suspect_after() -> u64 {
    300
}

fn default_drain_delay() -> u64 {
    1_000
}

fn default_drain_timeout() -> u64 {
    10_000
}

fn default_upgrade_sock() -> std::path::PathBuf {
    "/tmp/roost-proxy-upgrade.sock".into()
}

/// `trusted_hop:` — how a proxy proves to the workers that a request came
/// through it (and so through its identity checks and limits): the
/// workers' `proxy_token` in `x-roost-hop-token`, a header clients cannot
/// send (every `x-roost-*` header from a client is stripped). It opens the
/// entity API only: calls between workers need the workers' own
/// `internal_token`, which a proxy never holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedHopConfig {
    /// Environment variable holding the token (preferred).
    #[serde(default)]
    pub token_env: Option<Spanned<String>>,
    /// A file holding the token (a mounted secret), read again on reload.
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    /// The token itself (keep secrets out of files where you can).
    #[serde(default)]
    pub token: Option<Spanned<String>>,
}

/// Shortest hop token accepted (the workers ask the same of theirs).
pub const MIN_HOP_TOKEN_BYTES: usize = 16;

/// `key:` — the ordered list of sources and what to do without a key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Tried in order; the first one that yields a key wins. List `path`
    /// sources first: a browser asking for `/v1/inventory/x` usually also
    /// carries its user's header or cookie, and a shared entity must be
    /// routed by its own key, not by whoever asks for it.
    pub sources: Vec<Spanned<KeySourceConfig>>,
    /// What to do with a request that has no key.
    #[serde(default)]
    pub missing: MissingKey,
}

/// One entry of `key.sources`, as written. Exactly one of `header`,
/// `cookie`, `path`, `signed_cookie` and `jwt`; `prefix` and `kinds` only
/// beside `path`;
/// `secret_env`, `secret_file`, `secret`, the `previous_secret` ones and
/// `ttl_s` only beside `signed_cookie`:
///
/// - `{header: x-user-id}`: the header's value, trimmed (trusted setups
///   only: the client chooses it);
/// - `{cookie: uid}`: the cookie's value, unquoted (trusted setups only);
/// - `{path: "/v1/{kind}/{key}", kinds: [inventory, room]}`: the same for
///   every shared kind of the workers' generic scheme at once: the key is
///   `{kind}:` + the decoded `{key}` segment (no `prefix`); `kinds` (the
///   shared kinds) keeps a per-user kind's paths for the user's key;
/// - `{path: "/v1/inventory/{key}", prefix: "inventory:"}`: for a request
///   path (query string excluded) whose first segments match the template's
///   literal segments byte for byte, `prefix` + the percent-decoded `{key}`
///   segment (non-empty). More segments may follow:
///   `/v1/inventory/show-1/holds` gives `inventory:show-1`. A path that does
///   not match, or whose segment does not decode to UTF-8 free of control
///   characters, yields nothing from this source;
/// - `{signed_cookie: sid, secret_env: ROOST_COOKIE_SECRET, ttl_s: 2592000}`:
///   the id of a cookie `id.expiry.signature` signed with the secret (see
///   [`crate::identity::signed_cookie`]);
/// - `{jwt: {header: authorization, algorithms: [RS256], jwks: PATH, ...}}`:
///   a claim of a verified JWT (see [`JwtConfig`]).
///
/// A verified source (`signed_cookie`, `jwt`) whose credential is absent
/// yields nothing; one whose credential is present but fails verification
/// answers 401 at once.
///
/// A struct rather than an externally tagged enum because `path` and
/// `signed_cookie` take more fields; [`to_source`](Self::to_source) checks
/// the combination and builds the source, once, at load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySourceConfig {
    /// A request header's name.
    pub header: Option<Spanned<String>>,
    /// A cookie's name.
    pub cookie: Option<Spanned<String>>,
    /// A path template: `/`-separated segments, exactly one of them `{key}`,
    /// the others literal.
    pub path: Option<Spanned<String>>,
    /// Beside a `path` with a `{kind}` segment: the kinds it routes (by
    /// default any). List the workers' shared kinds, so a per-user kind's
    /// paths (`/v1/cart/checkout`) fall through to the user's key.
    pub kinds: Option<Spanned<Vec<String>>>,
    /// Put before the decoded segment (default empty). It must match what
    /// the workers prepend to the same entity's id (`inventory:`), since both
    /// hash the whole key; no control characters, since the key is forwarded
    /// in the `x-roost-key` header.
    pub prefix: Option<Spanned<String>>,
    /// A signed cookie's name.
    pub signed_cookie: Option<Spanned<String>>,
    /// Beside `signed_cookie`: the environment variable holding the HMAC
    /// secret (read at start; at least 32 bytes). Preferred over `secret`.
    pub secret_env: Option<Spanned<String>>,
    /// Beside `signed_cookie`: a file holding the HMAC secret (a mounted
    /// secret), read at start and again on every reload.
    pub secret_file: Option<Spanned<String>>,
    /// Beside `signed_cookie`: the HMAC secret itself, at least 32 bytes.
    pub secret: Option<Spanned<String>>,
    /// Beside `signed_cookie`: the secret being rotated out, from
    /// `previous_secret_env`, `previous_secret_file` or `previous_secret`.
    /// Cookies it signed are still accepted; new ones are signed with
    /// `secret` only. Drop it once every cookie it signed has expired.
    pub previous_secret_env: Option<Spanned<String>>,
    pub previous_secret_file: Option<Spanned<String>>,
    pub previous_secret: Option<Spanned<String>>,
    /// Beside `signed_cookie`: how long a minted cookie lasts, in seconds
    /// (default 30 days).
    pub ttl_s: Option<Spanned<u64>>,
    /// A JWT source.
    pub jwt: Option<Spanned<JwtConfig>>,
}

/// A minted signed cookie lasts 30 days unless `ttl_s` says otherwise.
pub const DEFAULT_COOKIE_TTL_S: u64 = 30 * 24 * 3600;

/// `{jwt: {...}}` — route by a claim of a verified JWT.
///
/// ```yaml
/// - jwt:
///     header: authorization       # `Bearer <token>`; or `cookie: NAME`
///     claim: sub
///     algorithms: [RS256, ES256]  # a subset of HS256, RS256, ES256
///     jwks: /etc/roost/jwks.json  # RS256/ES256 keys, by kid
///     issuer: https://id.example.com
///     audience: roost
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// A header holding `Bearer <token>` (usually `authorization`).
    pub header: Option<Spanned<String>>,
    /// Or a cookie holding the bare token. Exactly one of the two.
    pub cookie: Option<Spanned<String>>,
    /// The claim routed by; its value must be a string (default `sub`).
    #[serde(default = "default_claim")]
    pub claim: Spanned<String>,
    /// The `alg` values accepted: a subset of `HS256`, `RS256`, `ES256`.
    pub algorithms: Vec<Spanned<String>>,
    /// HS256's secret: an environment variable (preferred) ...
    pub secret_env: Option<Spanned<String>>,
    /// ... a file (read again on reload) ...
    pub secret_file: Option<Spanned<String>>,
    /// ... or the secret itself; at least 32 bytes either way.
    pub secret: Option<Spanned<String>>,
    /// A JWKS file with the RS256/ES256 public keys, read at start and on
    /// every reload (relative to the working directory).
    pub jwks: Option<Spanned<String>>,
    /// The required `iss`.
    pub issuer: Spanned<String>,
    /// The value `aud` must be or hold.
    pub audience: Spanned<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30, at
    /// most 600).
    #[serde(default = "default_leeway")]
    pub leeway_s: Spanned<u64>,
}

/// The most clock skew a JWT source may allow, in seconds.
pub const MAX_LEEWAY_S: u64 = 600;

fn default_claim() -> Spanned<String> {
    Spanned::new("sub".into(), Location::UNKNOWN, Location::UNKNOWN)
}

fn default_leeway() -> Spanned<u64> {
    Spanned::new(30, Location::UNKNOWN, Location::UNKNOWN)
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
    /// Mint a new random id, route by it, and set it as the (first)
    /// `signed_cookie` source's cookie on the response.
    Mint,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Path probed with `GET`; any 200 passes. The workers' `/readyz`
    /// fails while a worker drains or cannot be sure of its lease, so its
    /// users move at once.
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
            path: "/readyz".into(),
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
    /// Proxy threads to run: the configured number or one per CPU.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl Validate for ProxyConfig {
    /// Checks serde cannot express: weights, unique ids, sane health
    /// numbers, ranges. The key sources, the hop token and the TLS files
    /// are checked by building them ([`super::build`]).
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
            // The TLS settings and the CA file, as the discovery will load
            // them: `--check-config` and a reload see what the start would.
            if !store.starts_with("sqlite://") {
                if let Err(e) = Endpoint::from_url(store) {
                    return Err(Invalid::at(
                        discovery.store.referenced,
                        "store",
                        e.to_string(),
                    ));
                }
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
        if self.suspect_after_ms == 0 || self.suspect_after_ms >= self.upstream_timeout_ms {
            return Err(Invalid::top(
                "suspect_after_ms",
                "must be greater than zero and less than upstream_timeout_ms",
            ));
        }
        self.limits.validate()?;
        self.timeouts.validate()?;
        if let Some(tls) = &self.tls {
            tls.validate(&[self.listen, self.admin_listen])?;
        }
        Ok(())
    }
}

/// A value written nowhere: a default, pointing at its section's key.
pub(crate) fn unwritten<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// `Invalid` unless `value` is within `range`, naming `field` (a dotted
/// path for a default, which has no line of its own).
fn check_range<T>(
    value: &Spanned<T>,
    range: std::ops::RangeInclusive<T>,
    field: &str,
    why: &str,
) -> Result<(), Invalid>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value.value) {
        return Ok(());
    }
    let name = match value.referenced {
        Location::UNKNOWN => field,
        _ => field.rsplit('.').next().unwrap_or(field),
    };
    let message = format!(
        "{} is outside {}..={}: {why}",
        value.value,
        range.start(),
        range.end()
    );
    Err(Invalid::at(value.referenced, name, message))
}

/// `limits:` — what one request may carry. Each breach is answered by the
/// proxy with a JSON error before any worker sees the request; see
/// [`crate::limits`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Request line plus header fields, in bytes as sent (431
    /// `headers_too_large`). At most Pingora's own parse limit,
    /// [`limits::PINGORA_MAX_HEADER_BYTES`](crate::limits::PINGORA_MAX_HEADER_BYTES).
    pub max_header_bytes: Spanned<usize>,
    /// Header fields as forwarded, the proxy's own included (431
    /// `headers_too_large`). At most what a worker parses,
    /// [`WORKER_MAX_HEADERS`](roost_routing::headers::WORKER_MAX_HEADERS).
    pub max_headers: Spanned<usize>,
    /// Routing key length in bytes (400 `invalid_key`), prefix included.
    pub max_key_bytes: Spanned<usize>,
    /// Request body in bytes (413 `body_too_large`).
    pub max_body_bytes: Spanned<u64>,
    /// Requests per key per second (429 `rate_limited`).
    pub rate: RateConfig,
    /// Connections one client address may hold open at once; the next is
    /// answered 429 `too_many_connections` and closed.
    pub max_connections_per_address: Spanned<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: unwritten(16 * 1024),
            max_headers: unwritten(100),
            max_key_bytes: unwritten(256),
            max_body_bytes: unwritten(1024 * 1024),
            rate: RateConfig::default(),
            max_connections_per_address: unwritten(512),
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        use crate::limits::{ADDED_HEADERS, PINGORA_MAX_HEADER_BYTES};
        use roost_routing::headers::WORKER_MAX_HEADERS;
        let pingora = "Pingora itself answers a bare 400 past it";
        check_range(
            &self.max_header_bytes,
            1..=PINGORA_MAX_HEADER_BYTES,
            "limits.max_header_bytes",
            pingora,
        )?;
        check_range(
            &self.max_headers,
            ADDED_HEADERS + 1..=WORKER_MAX_HEADERS,
            "limits.max_headers",
            "a worker parses at most that many fields, the two the proxy adds included",
        )?;
        let key = "the key is forwarded in a header";
        check_range(
            &self.max_key_bytes,
            1..=self.max_header_bytes.value,
            "limits.max_key_bytes",
            key,
        )?;
        check_range(
            &self.max_body_bytes,
            1..=u64::MAX,
            "limits.max_body_bytes",
            "must be greater than zero",
        )?;
        check_range(
            &self.max_connections_per_address,
            1..=u32::MAX,
            "limits.max_connections_per_address",
            "must be greater than zero",
        )?;
        self.rate.validate()
    }
}

/// `limits.rate:` — a token bucket per routing key: `per_s` tokens a
/// second, at most `burst` saved up. `per_s: 0` turns it off. Keyless and
/// minted requests (`key.missing: any`, `mint`) have no key of their own
/// yet, so by default they are limited by client address instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    pub per_s: Spanned<u32>,
    pub burst: Spanned<u32>,
    /// What limits a request with no key of its own.
    pub keyless: KeylessRate,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per_s: unwritten(100),
            burst: unwritten(200),
            keyless: KeylessRate::Address,
        }
    }
}

/// `limits.rate.keyless:` — the bucket of a request without a key of its
/// own (keyless under `missing: any`, or given a freshly minted id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeylessRate {
    /// One bucket per client IP address (behind a shared NAT, its clients
    /// share it).
    Address,
    /// Not limited.
    Off,
}

impl RateConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.per_s.value == 0 {
            return Ok(());
        }
        check_range(
            &self.per_s,
            0..=1_000_000,
            "limits.rate.per_s",
            "at most a million a second (0 turns the limit off)",
        )?;
        check_range(
            &self.burst,
            1..=1_000_000,
            "limits.rate.burst",
            "a bucket holds 1 to a million requests",
        )
    }
}

/// `timeouts:` — how long a client may take, so a slow or idle client
/// (slowloris) cannot hold a connection; see [`crate::timeouts`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// From a connection's accept (or a kept-alive connection's first
    /// byte of the next request) to the end of the request's header.
    pub header_read_ms: Spanned<u64>,
    /// Longest wait for the next piece of a request body (408
    /// `request_timeout`).
    pub body_idle_ms: Spanned<u64>,
    /// Longest wait for the next request on a kept-alive connection.
    pub keepalive_idle_ms: Spanned<u64>,
    /// Longest wait for one write to the client to finish (a client that
    /// stops reading its response).
    pub write_ms: Spanned<u64>,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header_read_ms: unwritten(10_000),
            body_idle_ms: unwritten(30_000),
            keepalive_idle_ms: unwritten(60_000),
            write_ms: unwritten(30_000),
        }
    }
}

impl TimeoutsConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let day = 86_400_000;
        for (value, field) in [
            (&self.header_read_ms, "timeouts.header_read_ms"),
            (&self.body_idle_ms, "timeouts.body_idle_ms"),
            (&self.keepalive_idle_ms, "timeouts.keepalive_idle_ms"),
            (&self.write_ms, "timeouts.write_ms"),
        ] {
            check_range(value, 1..=day, field, "at least 1 ms, at most a day")?;
        }
        Ok(())
    }
}

/// `tls:` — terminate TLS (rustls, HTTP/1.1) on a second listener beside
/// `listen`; see [`crate::tls`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address TLS clients connect to.
    pub listen: Spanned<SocketAddr>,
    /// PEM certificate chain: the server certificate first, then any
    /// intermediates.
    pub cert: Spanned<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key: Spanned<std::path::PathBuf>,
}

impl TlsConfig {
    /// The address is free of the other listeners (the files are read by
    /// [`super::build`]).
    fn validate(&self, others: &[SocketAddr]) -> Result<(), Invalid> {
        if others.contains(&self.listen.value) {
            let message = "must differ from `listen` and `admin_listen`";
            return Err(Invalid::at(self.listen.referenced, "listen", message));
        }
        Ok(())
    }
}
