//! The proxy's configuration: one serde struct, loaded from YAML, validated
//! before anything binds.
//!
//! Every error names the file, the line and the field, as
//! `FILE:LINE:COLUMN: field `NAME`: MESSAGE`, so an operator can jump to it
//! (see [`roost_routing::config_file`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use roost_routing::config_file::{self, Invalid, Validate};
use roost_routing::hrw::validate_weight;

use crate::identity::mint::MAX_AGE_MARGIN_S;
use crate::identity::{Algorithm, CookieSigner, Jwks, JwtVerifier, Secret, SignedCookie};
use crate::key::{KeySource, PathTemplate, TokenAt};

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
    /// The token itself (keep secrets out of files where you can).
    #[serde(default)]
    pub token: Option<Spanned<String>>,
}

/// Shortest hop token accepted (the workers ask the same of theirs).
pub const MIN_HOP_TOKEN_BYTES: usize = 16;

impl TrustedHopConfig {
    /// The token, from the environment or inline: at least
    /// [`MIN_HOP_TOKEN_BYTES`] visible ASCII characters (it travels in a
    /// header).
    pub fn token(&self) -> Result<String, Invalid> {
        let (token, location, field) = match (&self.token_env, &self.token) {
            (Some(env), None) => {
                let value = std::env::var(&env.value).map_err(|_| {
                    let message = format!("environment variable {} is not set", env.value);
                    Invalid::at(env.referenced, "token_env", message)
                })?;
                (value, env.referenced, "token_env")
            }
            (None, Some(inline)) => (inline.value.clone(), inline.referenced, "token"),
            (Some(_), Some(inline)) => {
                let message = "give `token_env` or `token`, not both";
                return Err(Invalid::at(inline.referenced, "token", message));
            }
            (None, None) => {
                let message = "needs the workers' proxy_token: `token_env: VARIABLE` (preferred) or `token: \"...\"`";
                return Err(Invalid::top("trusted_hop", message));
            }
        };
        if token.len() < MIN_HOP_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            let message = format!(
                "the token must be at least {MIN_HOP_TOKEN_BYTES} visible ASCII characters, like the workers' proxy_token"
            );
            return Err(Invalid::at(location, field, message));
        }
        Ok(token)
    }
}

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

impl KeyConfig {
    /// The sources the [`KeyExtractor`](crate::key::KeyExtractor) tries, in
    /// order, or the first entry that is unusable. Reads the secrets'
    /// environment variables and the JWKS files, so it runs at start only.
    pub fn to_sources(&self) -> Result<Vec<KeySource>, Invalid> {
        let sources: Vec<KeySource> = self
            .sources
            .iter()
            .map(|entry| entry.value.to_source(entry.referenced))
            .collect::<Result<_, _>>()?;
        let can_mint = sources
            .iter()
            .any(|source| matches!(source, KeySource::SignedCookie(_)));
        if self.missing == MissingKey::Mint && !can_mint {
            return Err(Invalid::top(
                "key.missing",
                "`mint` needs a `signed_cookie` source in key.sources to sign the new ids with",
            ));
        }
        Ok(sources)
    }
}

/// One entry of `key.sources`, as written. Exactly one of `header`,
/// `cookie`, `path`, `signed_cookie` and `jwt`; `prefix` and `kinds` only
/// beside `path`;
/// `secret_env`, `secret` and `ttl_s` only beside `signed_cookie`:
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
    /// Beside `signed_cookie`: the HMAC secret itself, at least 32 bytes.
    pub secret: Option<Spanned<String>>,
    /// Beside `signed_cookie`: how long a minted cookie lasts, in seconds
    /// (default 30 days).
    pub ttl_s: Option<Spanned<u64>>,
    /// A JWT source.
    pub jwt: Option<Spanned<JwtConfig>>,
}

/// A minted signed cookie lasts 30 days unless `ttl_s` says otherwise.
pub const DEFAULT_COOKIE_TTL_S: u64 = 30 * 24 * 3600;

impl KeySourceConfig {
    /// The source this entry names; `entry` is where the entry is, for an
    /// entry that names no field to point at.
    pub fn to_source(&self, entry: Location) -> Result<KeySource, Invalid> {
        let mut named: Vec<(&str, Location)> = [
            ("header", location_of(&self.header)),
            ("cookie", location_of(&self.cookie)),
            ("path", location_of(&self.path)),
            ("signed_cookie", location_of(&self.signed_cookie)),
            ("jwt", location_of(&self.jwt)),
        ]
        .into_iter()
        .filter_map(|(kind, at)| Some((kind, at?)))
        .collect();
        // Point at the second one written: the first reads as intended.
        named.sort_by_key(|(_, at)| (at.line(), at.column()));
        if let [(kind, _), (other, at), ..] = named.as_slice() {
            let message = format!(
                "a source takes exactly one of header, cookie, path, signed_cookie and jwt, \
                 not both `{kind}` and `{other}`: list them as separate sources, in the \
                 order to try them"
            );
            return Err(Invalid::at(*at, other, message));
        }
        self.check_companions(named.first().map(|(kind, _)| *kind))?;
        if let Some(name) = &self.header {
            return Ok(KeySource::Header(name.value.clone()));
        }
        if let Some(name) = &self.cookie {
            return Ok(KeySource::Cookie(name.value.clone()));
        }
        if let Some(template) = &self.path {
            return self.path_source(template);
        }
        if let Some(name) = &self.signed_cookie {
            return self.signed_cookie_source(name);
        }
        match &self.jwt {
            Some(jwt) => jwt.value.to_source(jwt.referenced),
            None => Err(Invalid::at(
                entry,
                "key.sources",
                "each source needs one of `header`, `cookie`, `path`, `signed_cookie` or `jwt`",
            )),
        }
    }

    /// Fields that go beside one kind of source only must not be beside
    /// another (or alone).
    fn check_companions(&self, kind: Option<&str>) -> Result<(), Invalid> {
        let companions = [
            ("prefix", location_of(&self.prefix), "path"),
            ("kinds", location_of(&self.kinds), "path"),
            ("secret_env", location_of(&self.secret_env), "signed_cookie"),
            ("secret", location_of(&self.secret), "signed_cookie"),
            ("ttl_s", location_of(&self.ttl_s), "signed_cookie"),
        ];
        for (field, at, owner) in companions {
            if let Some(at) = at.filter(|_| kind != Some(owner)) {
                let message = format!("goes only beside `{owner}`");
                return Err(Invalid::at(at, field, message));
            }
        }
        Ok(())
    }

    fn path_source(&self, template: &Spanned<String>) -> Result<KeySource, Invalid> {
        let mut parsed = PathTemplate::parse(&template.value)
            .map_err(|why| Invalid::at(template.referenced, "path", why))?;
        match (&self.kinds, &self.prefix, parsed.has_kind()) {
            (Some(kinds), _, false) => {
                let message = "goes only beside a path with a `{kind}` segment";
                return Err(Invalid::at(kinds.referenced, "kinds", message));
            }
            (_, Some(prefix), true) => {
                let message = "a path with `{kind}` prefixes the key with `{kind}:` itself";
                return Err(Invalid::at(prefix.referenced, "prefix", message));
            }
            (Some(kinds), _, true) => {
                parsed = parsed
                    .only_kinds(&kinds.value)
                    .map_err(|why| Invalid::at(kinds.referenced, "kinds", why))?;
            }
            _ => {}
        }
        let prefix = match &self.prefix {
            Some(prefix) if prefix.value.contains(char::is_control) => {
                let message = format!(
                    "{:?} has a control character; the key is sent in a header",
                    prefix.value
                );
                return Err(Invalid::at(prefix.referenced, "prefix", message));
            }
            Some(prefix) => prefix.value.clone(),
            None => String::new(),
        };
        Ok(KeySource::Path {
            template: parsed,
            prefix,
        })
    }

    fn signed_cookie_source(&self, name: &Spanned<String>) -> Result<KeySource, Invalid> {
        if name.value.is_empty() {
            return Err(Invalid::at(
                name.referenced,
                "signed_cookie",
                "must not be empty",
            ));
        }
        let secret = resolve_secret(
            (name.referenced, "signed_cookie"),
            self.secret_env.as_ref(),
            self.secret.as_ref(),
        )?;
        let ttl_s = match &self.ttl_s {
            Some(ttl) if ttl.value <= MAX_AGE_MARGIN_S => {
                let message = format!(
                    "must be more than {MAX_AGE_MARGIN_S} s (browsers are told to drop the \
                     cookie that much before it expires)"
                );
                return Err(Invalid::at(ttl.referenced, "ttl_s", message));
            }
            Some(ttl) => ttl.value,
            None => DEFAULT_COOKIE_TTL_S,
        };
        Ok(KeySource::SignedCookie(Arc::new(SignedCookie {
            name: name.value.clone(),
            signer: CookieSigner::new(secret),
            ttl_s,
        })))
    }
}

/// Where an optional field is, when it is there.
fn location_of<T>(field: &Option<Spanned<T>>) -> Option<Location> {
    field.as_ref().map(|spanned| spanned.referenced)
}

/// The HMAC secret named by `secret_env` or given as `secret`: exactly one
/// of them. `owner` is the field and place of the source that needs it.
fn resolve_secret(
    owner: (Location, &str),
    secret_env: Option<&Spanned<String>>,
    secret: Option<&Spanned<String>>,
) -> Result<Secret, Invalid> {
    match (secret_env, secret) {
        (Some(env), None) => Secret::from_env(&env.value)
            .map_err(|e| Invalid::at(env.referenced, "secret_env", e.to_string())),
        (None, Some(inline)) => Secret::new(inline.value.as_bytes(), "the secret")
            .map_err(|e| Invalid::at(inline.referenced, "secret", e.to_string())),
        (Some(_), Some(inline)) => Err(Invalid::at(
            inline.referenced,
            "secret",
            "give `secret_env` or `secret`, not both",
        )),
        (None, None) => Err(Invalid::at(
            owner.0,
            owner.1,
            "needs its HMAC secret: `secret_env: VARIABLE` (preferred) or `secret: \"...\"`",
        )),
    }
}

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
    /// ... or the secret itself; at least 32 bytes either way.
    pub secret: Option<Spanned<String>>,
    /// A JWKS file with the RS256/ES256 public keys, read at start
    /// (relative to the working directory).
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

impl JwtConfig {
    /// The source, with its secret and keys loaded; `at` is where `jwt:` is.
    pub fn to_source(&self, at: Location) -> Result<KeySource, Invalid> {
        let from = match (&self.header, &self.cookie) {
            (Some(header), None) => TokenAt::Bearer(header.value.clone()),
            (None, Some(cookie)) => TokenAt::Cookie(cookie.value.clone()),
            (Some(_), Some(cookie)) => {
                let message = "a jwt source reads `header` or `cookie`, not both";
                return Err(Invalid::at(cookie.referenced, "cookie", message));
            }
            (None, None) => {
                let message = "needs where the token is: `header: authorization` or `cookie: NAME`";
                return Err(Invalid::at(at, "jwt", message));
            }
        };
        let algorithms = self.algorithms(at)?;
        let secret = self.hs256_secret(at, &algorithms)?;
        let jwks = self.jwks(at, &algorithms)?;
        for (field, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("claim", &self.claim),
        ] {
            if value.value.is_empty() {
                return Err(Invalid::at(value.referenced, field, "must not be empty"));
            }
        }
        if self.leeway_s.value > MAX_LEEWAY_S {
            let message = format!("must be at most {MAX_LEEWAY_S} s");
            return Err(Invalid::at(self.leeway_s.referenced, "leeway_s", message));
        }
        let verifier = JwtVerifier {
            algorithms,
            secret,
            jwks,
            issuer: self.issuer.value.clone(),
            audience: self.audience.value.clone(),
            claim: self.claim.value.clone(),
            leeway_s: self.leeway_s.value,
        };
        Ok(KeySource::Jwt {
            from,
            verifier: Arc::new(verifier),
        })
    }

    /// `algorithms`, parsed: at least one, each a name we support.
    fn algorithms(&self, at: Location) -> Result<Vec<Algorithm>, Invalid> {
        if self.algorithms.is_empty() {
            return Err(Invalid::at(
                at,
                "algorithms",
                "list at least one of HS256, RS256, ES256",
            ));
        }
        self.algorithms
            .iter()
            .map(|name| {
                Algorithm::from_name(&name.value).ok_or_else(|| {
                    let message = format!(
                        "unknown algorithm {:?}: use HS256, RS256 or ES256 (`none` is never accepted)",
                        name.value
                    );
                    Invalid::at(name.referenced, "algorithms", message)
                })
            })
            .collect()
    }

    /// The HS256 secret when HS256 is accepted, else none (and no
    /// `secret_env` or `secret` field).
    fn hs256_secret(
        &self,
        at: Location,
        algorithms: &[Algorithm],
    ) -> Result<Option<Secret>, Invalid> {
        if algorithms.contains(&Algorithm::Hs256) {
            let (env, inline) = (self.secret_env.as_ref(), self.secret.as_ref());
            return resolve_secret((at, "jwt"), env, inline).map(Some);
        }
        let unused = [("secret_env", &self.secret_env), ("secret", &self.secret)]
            .into_iter()
            .find_map(|(field, value)| Some((field, location_of(value)?)));
        match unused {
            Some((field, at)) => {
                let message = "is used only by HS256, which `algorithms` does not list";
                Err(Invalid::at(at, field, message))
            }
            None => Ok(None),
        }
    }

    /// The JWKS file's keys when RS256 or ES256 is accepted (with a key for
    /// each), else none (and no `jwks` field).
    fn jwks(&self, at: Location, algorithms: &[Algorithm]) -> Result<Jwks, Invalid> {
        let asymmetric: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|alg| *alg != Algorithm::Hs256)
            .collect();
        let path = match (&self.jwks, asymmetric.is_empty()) {
            (None, true) => return Ok(Jwks::default()),
            (Some(path), true) => {
                let message = "is used only by RS256 and ES256, which `algorithms` does not list";
                return Err(Invalid::at(path.referenced, "jwks", message));
            }
            (None, false) => {
                let message =
                    "RS256 and ES256 need `jwks: PATH`, a JWKS file with their public keys";
                return Err(Invalid::at(at, "jwks", message));
            }
            (Some(path), false) => path,
        };
        let jwks = Jwks::load(Path::new(&path.value))
            .map_err(|e| Invalid::at(path.referenced, "jwks", e.to_string()))?;
        if let Some(missing) = asymmetric.iter().find(|alg| !jwks.has_key_for(**alg)) {
            let message = format!("{:?} has no {} key", path.value, missing.name());
            return Err(Invalid::at(path.referenced, "jwks", message));
        }
        Ok(jwks)
    }
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
#[derive(Debug, Clone, Deserialize)]
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
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        config_file::load(path)
    }

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
    /// Checks serde cannot express: weights, unique ids, key sources, sane
    /// health numbers.
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(hop) = &self.trusted_hop {
            hop.token()?;
        }
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
        self.key.to_sources()?;
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
    /// The address is free of the other listeners, and both files load
    /// and match (an error names the file).
    fn validate(&self, others: &[SocketAddr]) -> Result<(), Invalid> {
        if others.contains(&self.listen.value) {
            let message = "must differ from `listen` and `admin_listen`";
            return Err(Invalid::at(self.listen.referenced, "listen", message));
        }
        crate::tls::certified_key(&self.cert.value, &self.key.value).map_err(|e| {
            let (field, at) = match e.file {
                crate::tls::TlsFile::Cert => ("cert", self.cert.referenced),
                crate::tls::TlsFile::Key => ("key", self.key.referenced),
            };
            Invalid::at(at, field, e.to_string())
        })?;
        Ok(())
    }
}

/// The `limits:`, `timeouts:` and `tls:` sections: defaults, and errors
/// that name the line and the field.
#[cfg(test)]
mod client_section_tests {
    use super::*;

    /// A valid config (7 lines) followed by `extra`.
    fn with(extra: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\nhash_seed: \"t\"\n\
             key:\n  sources: [{{header: x-user-id}}]\n\
             workers:\n  - {{id: w1, addr: 127.0.0.1:9001}}\n{extra}"
        )
    }

    fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        config_file::parse(Path::new("proxy.yaml"), text)
    }

    /// Assert `extra` is refused at `line`, naming `field`, saying `why`.
    fn assert_refused(extra: &str, line: u64, field: &str, why: &str) {
        let error = parse(&with(extra)).expect_err(extra);
        assert_eq!((error.line, error.field.as_str()), (line, field), "{error}");
        assert!(error.message.contains(why), "{error}");
    }

    #[test]
    fn absent_sections_take_the_documented_defaults() {
        let config = parse(&with("")).expect("valid");
        let limits = &config.limits;
        assert_eq!(
            (
                limits.max_header_bytes.value,
                limits.max_headers.value,
                limits.max_key_bytes.value,
                limits.max_body_bytes.value,
            ),
            (16_384, 100, 256, 1_048_576)
        );
        assert_eq!(
            (limits.rate.per_s.value, limits.rate.burst.value),
            (100, 200)
        );
        let t = &config.timeouts;
        assert_eq!(
            (
                t.header_read_ms.value,
                t.body_idle_ms.value,
                t.keepalive_idle_ms.value,
                t.write_ms.value,
            ),
            (10_000, 30_000, 60_000, 30_000)
        );
        assert!(config.tls.is_none());
        let partial = parse(&with("limits: {rate: {per_s: 0}}\n")).expect("valid");
        assert_eq!(
            partial.limits.rate.burst.value, 200,
            "unwritten fields keep defaults"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_where_written() {
        assert_refused("limits: {max_headers: 300}\n", 8, "max_headers", "worker");
        assert_refused("limits: {max_headers: 2}\n", 8, "max_headers", "worker");
        assert_refused(
            "limits:\n  max_header_bytes: 0\n",
            9,
            "max_header_bytes",
            "1..=",
        );
        assert_refused(
            "limits:\n  rate: {per_s: 10, burst: 0}\n",
            9,
            "burst",
            "1 to a million",
        );
        assert_refused(
            "timeouts: {body_idle_ms: 0}\n",
            8,
            "body_idle_ms",
            "at least 1 ms",
        );
        assert_refused(
            "limits: {max_key_bytes: 20000}\n",
            8,
            "max_key_bytes",
            "forwarded in a header",
        );
    }

    #[test]
    fn a_default_that_no_longer_fits_is_refused_at_its_section() {
        // max_key_bytes (256 by default) cannot exceed max_header_bytes.
        assert_refused(
            "limits: {max_header_bytes: 100}\n",
            8,
            "limits.max_key_bytes",
            "1..=100",
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert_refused(
            "limits:\n  max_bdy_bytes: 1\n",
            9,
            "max_bdy_bytes",
            "unknown field",
        );
        assert_refused("timeouts:\n  idle_ms: 1\n", 9, "idle_ms", "unknown field");
    }

    #[test]
    fn the_tls_listener_must_be_its_own_and_its_files_must_load() {
        assert_refused(
            "tls: {listen: 127.0.0.1:8080, cert: a.pem, key: b.pem}\n",
            8,
            "listen",
            "must differ",
        );
        assert_refused(
            "tls:\n  listen: 127.0.0.1:8443\n  cert: /nonexistent/roost.crt\n  key: b.pem\n",
            10,
            "cert",
            "/nonexistent/roost.crt",
        );
        assert_refused(
            "tls: {listen: 127.0.0.1:8443}\n",
            8,
            "tls",
            "missing field `cert`",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config whose `key.sources` (line 5) is `sources`.
    fn yaml(sources: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin_listen: 127.0.0.1:9090\nhash_seed: \"t\"\n\
             key:\n  sources: {sources}\nworkers:\n  - {{id: w1, addr: 127.0.0.1:9001}}\n"
        )
    }

    fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
        config_file::parse(Path::new("proxy.yaml"), text)
    }

    fn sources(text: &str) -> Vec<KeySource> {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}\nis valid: {e}"));
        config.key.to_sources().expect("validated sources convert")
    }

    fn path(template: &str, prefix: &str) -> KeySource {
        KeySource::Path {
            template: PathTemplate::parse(template).expect("valid template"),
            prefix: prefix.into(),
        }
    }

    /// Assert `sources` is rejected at line 5, at the column where `at`
    /// starts, naming `field`, with `why` in the message.
    fn assert_rejected(sources: &str, at: &str, field: &str, why: &str) {
        let text = yaml(sources);
        let error = parse(&text).expect_err(sources);
        let line = format!("  sources: {sources}");
        let column = line.find(at).map(|i| i as u64 + 1);
        assert_eq!(
            (error.line, Some(error.column), error.field.as_str()),
            (5, column, field),
            "{sources}: {error}"
        );
        assert!(error.message.contains(why), "{sources}: {error}");
        assert!(
            error.to_string().starts_with("proxy.yaml:5:"),
            "the file and line lead: {error}"
        );
    }

    #[test]
    fn header_and_cookie_sources_keep_their_form() {
        assert_eq!(
            sources(&yaml("[{header: x-user-id}, {cookie: uid}]")),
            [
                KeySource::Header("x-user-id".into()),
                KeySource::Cookie("uid".into())
            ]
        );
    }

    #[test]
    fn path_sources_take_an_optional_prefix_and_keep_their_order() {
        let flow = r#"[{path: "/v1/inventory/{key}", prefix: "inventory:"}, {header: x-user-id}, {path: "/v1/quota/{key}/acquire"}]"#;
        assert_eq!(
            sources(&yaml(flow)),
            [
                path("/v1/inventory/{key}", "inventory:"),
                KeySource::Header("x-user-id".into()),
                path("/v1/quota/{key}/acquire", ""),
            ]
        );
        let block = yaml(
            "\n    - path: /v1/inventory/{key}\n      prefix: \"inventory:\"\n    - cookie: uid",
        );
        assert_eq!(
            sources(&block),
            [
                path("/v1/inventory/{key}", "inventory:"),
                KeySource::Cookie("uid".into())
            ]
        );
    }

    #[test]
    fn the_example_config_parses_with_the_path_source_first() {
        let example = include_str!("../../deploy/config/proxy.example.yaml");
        // Its trusted-hop token comes from the environment, which a unit
        // test cannot set (`unsafe_code` is forbidden); the proxy tests
        // check the example whole with the variable set.
        let text: String = example
            .lines()
            .filter(|line| !line.starts_with("trusted_hop:"))
            .map(|line| format!("{line}\n"))
            .collect();
        let first = sources(&text).into_iter().next();
        assert_eq!(first, Some(path("/v1/inventory/{key}", "inventory:")));
    }

    #[test]
    fn a_source_with_two_kinds_is_rejected_at_the_second() {
        assert_rejected(
            "[{header: a, cookie: b}]",
            "b}",
            "cookie",
            "not both `header` and `cookie`",
        );
        assert_rejected(
            r#"[{path: "/v1/{key}", header: a}]"#,
            "a}",
            "header",
            "exactly one of header, cookie, path, signed_cookie and jwt",
        );
        assert_rejected(
            &format!(
                "[{{signed_cookie: sid, secret: {SECRET}, \
                 jwt: {{header: a, algorithms: [HS256], issuer: i, audience: a}}}}]"
            ),
            "{header",
            "jwt",
            "not both `signed_cookie` and `jwt`",
        );
    }

    #[test]
    fn a_prefix_needs_a_path() {
        assert_rejected(
            r#"[{header: a, prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "only beside `path`",
        );
        assert_rejected(
            r#"[{prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "only beside `path`",
        );
    }

    #[test]
    fn kinds_go_with_a_kind_template_and_a_prefix_does_not() {
        assert_rejected(
            r#"[{path: "/v1/inventory/{key}", kinds: [inventory]}]"#,
            "[inventory]",
            "kinds",
            "`{kind}` segment",
        );
        assert_rejected(
            r#"[{path: "/v1/{kind}/{key}", prefix: "p:"}]"#,
            "\"p:\"",
            "prefix",
            "prefixes the key",
        );
        assert_rejected(
            r#"[{path: "/v1/{kind}/{key}", kinds: [Room]}]"#,
            "[Room]",
            "kinds",
            "not a kind name",
        );
        let parsed = sources(&yaml(
            r#"[{path: "/v1/{kind}/{key}", kinds: [inventory, room]}, {header: x-user-id}]"#,
        ));
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn an_empty_source_is_rejected_where_it_is() {
        assert_rejected("[{header: a}, {}]", "{}", "key.sources", "needs one of");
    }

    #[test]
    fn bad_templates_are_rejected_naming_path() {
        for (template, why) in [
            ("v1/{key}", "must start with '/'"),
            ("/v1/inventory", "exactly one `{key}`"),
            ("/{key}/{key}", "exactly one `{key}`"),
            ("/v1/{key}/{id}", "`{` and `}` only"),
            ("/v1//{key}", "empty segments"),
        ] {
            let sources = format!("[{{path: \"{template}\", prefix: \"p:\"}}]");
            assert_rejected(&sources, &format!("\"{template}\""), "path", why);
        }
    }

    #[test]
    fn a_prefix_with_a_control_character_is_rejected() {
        let sources = r#"[{path: "/v1/{key}", prefix: "inv\n:"}]"#;
        assert_rejected(sources, r#""inv\n:""#, "prefix", "control character");
    }

    /// A 34-byte inline secret, quoted.
    const SECRET: &str = "\"a test secret of at least 32 bytes\"";

    #[test]
    fn a_signed_cookie_source_takes_a_secret_and_an_optional_ttl() {
        let text = yaml(&format!(
            "[{{signed_cookie: sid, secret: {SECRET}}}, {{header: x-user-id}}]"
        ));
        let config = parse(&text).unwrap_or_else(|e| panic!("valid: {e}"));
        let sources = config.key.to_sources().expect("valid sources");
        let [KeySource::SignedCookie(cookie), KeySource::Header(_)] = sources.as_slice() else {
            panic!("a signed cookie, then a header: {sources:?}");
        };
        assert_eq!(
            (cookie.name.as_str(), cookie.ttl_s),
            ("sid", DEFAULT_COOKIE_TTL_S)
        );
        let text = yaml(&format!(
            "[{{signed_cookie: sid, secret: {SECRET}, ttl_s: 3600}}]"
        ));
        let sources = sources_of(&text);
        assert!(matches!(&sources[..], [KeySource::SignedCookie(c)] if c.ttl_s == 3600));
    }

    fn sources_of(text: &str) -> Vec<KeySource> {
        parse(text)
            .unwrap_or_else(|e| panic!("{text}\nis valid: {e}"))
            .key
            .to_sources()
            .expect("validated sources convert")
    }

    #[test]
    fn a_signed_cookie_needs_exactly_one_usable_secret() {
        assert_rejected(
            r#"[{signed_cookie: sid, secret: "short"}]"#,
            "\"short\"",
            "secret",
            "the secret has 5 bytes; a secret needs at least 32",
        );
        assert_rejected(
            "[{signed_cookie: sid, secret_env: ROOST_TEST_VARIABLE_NEVER_SET}]",
            "ROOST_TEST_VARIABLE_NEVER_SET",
            "secret_env",
            "environment variable ROOST_TEST_VARIABLE_NEVER_SET is not set",
        );
        assert_rejected(
            &format!("[{{signed_cookie: sid, secret_env: X, secret: {SECRET}}}]"),
            SECRET,
            "secret",
            "not both",
        );
        assert_rejected(
            "[{signed_cookie: sid}]",
            "sid",
            "signed_cookie",
            "needs its HMAC secret",
        );
        assert_rejected(
            &format!("[{{header: a, secret: {SECRET}}}]"),
            SECRET,
            "secret",
            "goes only beside `signed_cookie`",
        );
        assert_rejected(
            &format!("[{{signed_cookie: sid, secret: {SECRET}, ttl_s: 60}}]"),
            "60",
            "ttl_s",
            "more than 60 s",
        );
    }

    #[test]
    fn mint_needs_a_signed_cookie_source() {
        let text = yaml("[{header: x-user-id}]").replace("key:\n", "key:\n  missing: mint\n");
        let error = parse(&text).expect_err("mint without a signed cookie");
        assert_eq!(
            (error.line, error.field.as_str()),
            (4, "key.missing"),
            "{error}"
        );
        assert!(
            error.message.contains("needs a `signed_cookie` source"),
            "{error}"
        );
        assert!(error.to_string().starts_with("proxy.yaml:4:"), "{error}");
        let text = yaml(&format!("[{{signed_cookie: sid, secret: {SECRET}}}]"))
            .replace("key:\n", "key:\n  missing: mint\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("valid: {e}"));
        assert_eq!(config.key.missing, MissingKey::Mint);
    }

    /// `{jwt: {FIELDS}}` with an issuer and an audience.
    fn jwt(fields: &str) -> String {
        format!("[{{jwt: {{{fields}, issuer: https://id.test, audience: roost}}}}]")
    }

    #[test]
    fn an_hs256_jwt_source_reads_a_header_or_a_cookie() {
        let sources = sources_of(&yaml(&jwt(&format!(
            "header: authorization, algorithms: [HS256], secret: {SECRET}, leeway_s: 5"
        ))));
        let [KeySource::Jwt { from, verifier }] = sources.as_slice() else {
            panic!("one jwt source: {sources:?}");
        };
        assert_eq!(from, &TokenAt::Bearer("authorization".into()));
        assert_eq!(verifier.algorithms, [Algorithm::Hs256]);
        assert_eq!((verifier.claim.as_str(), verifier.leeway_s), ("sub", 5));
        assert_eq!(
            (verifier.issuer.as_str(), verifier.audience.as_str()),
            ("https://id.test", "roost")
        );
        let sources = sources_of(&yaml(&jwt(&format!(
            "cookie: idt, claim: email, algorithms: [HS256], secret: {SECRET}"
        ))));
        assert!(
            matches!(&sources[..], [KeySource::Jwt { from: TokenAt::Cookie(c), .. }] if c == "idt")
        );
    }

    #[test]
    fn jwt_sources_are_checked_field_by_field() {
        let hs = |rest: &str| {
            jwt(&format!(
                "header: authorization, algorithms: [HS256], secret: {SECRET}{rest}"
            ))
        };
        for (sources, at, field, why) in [
            (
                jwt("header: authorization, algorithms: [HS512]"),
                "HS512",
                "algorithms",
                "unknown algorithm \"HS512\"",
            ),
            (
                jwt("header: authorization, algorithms: [none]"),
                "none",
                "algorithms",
                "`none` is never accepted",
            ),
            (
                jwt("header: authorization, algorithms: []"),
                "{header",
                "algorithms",
                "at least one",
            ),
            (
                jwt("algorithms: [HS256]"),
                "{algorithms",
                "jwt",
                "`header: authorization` or `cookie: NAME`",
            ),
            (
                jwt("header: a, cookie: b, algorithms: [HS256]"),
                "b,",
                "cookie",
                "not both",
            ),
            (
                jwt("header: a, algorithms: [HS256]"),
                "{header",
                "jwt",
                "needs its HMAC secret",
            ),
            (
                jwt(&format!("header: a, algorithms: [RS256], secret: {SECRET}")),
                SECRET,
                "secret",
                "used only by HS256",
            ),
            (
                jwt("header: a, algorithms: [RS256]"),
                "{header",
                "jwks",
                "need `jwks: PATH`",
            ),
            (
                jwt("header: a, algorithms: [ES256], jwks: /nonexistent/jwks.json"),
                "/nonexistent",
                "jwks",
                "cannot read /nonexistent/jwks.json",
            ),
            (
                hs(", jwks: keys.json"),
                "keys.json",
                "jwks",
                "used only by RS256 and ES256",
            ),
            (hs(", leeway_s: 601"), "601", "leeway_s", "at most 600"),
            (hs(", claim: \"\""), "\"\"", "claim", "must not be empty"),
        ] {
            assert_rejected(&sources, at, field, why);
        }
    }

    #[test]
    fn a_jwks_without_a_key_for_an_accepted_algorithm_is_rejected() {
        let path = std::env::temp_dir().join(format!(
            "roost-config-test-{}-jwks.json",
            std::process::id()
        ));
        let rsa_only =
            r#"{"keys": [{"kty": "EC", "crv": "P-384", "kid": "skipped", "x": "", "y": ""}]}"#;
        std::fs::write(&path, rsa_only).expect("write a temp JWKS");
        let sources = jwt(&format!(
            "header: a, algorithms: [RS256], jwks: {}",
            path.display()
        ));
        let at = path.display().to_string();
        assert_rejected(
            &sources,
            &at,
            "jwks",
            "no RS256 (RSA) or ES256 (P-256) signing key",
        );
        std::fs::remove_file(&path).expect("remove the temp JWKS");
    }

    #[test]
    fn jwt_fields_are_closed_and_issuer_and_audience_required() {
        let text = yaml(&jwt(&format!(
            "header: a, algorithms: [HS256], secret: {SECRET}, aud: x"
        )));
        let error = parse(&text).expect_err("an unknown field");
        assert!(error.message.contains("unknown field `aud`"), "{error}");
        let text = yaml(&format!(
            "[{{jwt: {{header: a, algorithms: [HS256], secret: {SECRET}, audience: roost}}}}]"
        ));
        let error = parse(&text).expect_err("no issuer");
        assert!(error.message.contains("missing field `issuer`"), "{error}");
        assert_eq!(error.line, 5, "{error}");
    }

    #[test]
    fn unknown_source_fields_are_rejected() {
        let text = yaml(r#"[{path: "/v1/{key}", prefx: "p:"}]"#);
        let error = parse(&text).expect_err("an unknown field is rejected");
        assert_eq!(error.line, 5, "{error}");
        assert!(error.message.contains("unknown field `prefx`"), "{error}");
        let block = yaml("\n    - path: /v1/{key}\n      prefx: \"p:\"");
        let error = parse(&block).expect_err("an unknown field is rejected");
        assert_eq!((error.line, error.field.as_str()), (7, "prefx"), "{error}");
    }
}
