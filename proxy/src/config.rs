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

use crate::key::{KeySource, PathTemplate};

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
    /// order, or the first entry that names none or several.
    pub fn to_sources(&self) -> Result<Vec<KeySource>, Invalid> {
        self.sources
            .iter()
            .map(|entry| entry.value.to_source(entry.referenced))
            .collect()
    }
}

/// One entry of `key.sources`, as written. Exactly one of `header`, `cookie`
/// and `path`; `prefix` only beside `path`:
///
/// - `{header: x-user-id}`: the header's value, trimmed;
/// - `{cookie: uid}`: the cookie's value, unquoted;
/// - `{path: "/v1/inventory/{key}", prefix: "inventory:"}`: for a request
///   path (query string excluded) whose first segments match the template's
///   literal segments byte for byte, `prefix` + the percent-decoded `{key}`
///   segment (non-empty). More segments may follow:
///   `/v1/inventory/show-1/holds` gives `inventory:show-1`. A path that does
///   not match, or whose segment does not decode to UTF-8 free of control
///   characters, yields nothing from this source.
///
/// A struct rather than an externally tagged enum because `path` takes a
/// second field; [`to_source`](Self::to_source) checks the combination and
/// pre-splits the template, once, at load.
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
    /// Put before the decoded segment (default empty). It must match what
    /// the workers prepend to the same entity's id (`inventory:`), since both
    /// hash the whole key; no control characters, since the key is forwarded
    /// in the `x-roost-key` header.
    pub prefix: Option<Spanned<String>>,
}

impl KeySourceConfig {
    /// The source this entry names; `entry` is where the entry is, for an
    /// entry that names no field to point at.
    pub fn to_source(&self, entry: Location) -> Result<KeySource, Invalid> {
        let mut named: Vec<_> = [
            self.header.as_ref().map(|name| ("header", name)),
            self.cookie.as_ref().map(|name| ("cookie", name)),
            self.path.as_ref().map(|template| ("path", template)),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Point at the second one written: the first reads as intended.
        named.sort_by_key(|(_, value)| (value.referenced.line(), value.referenced.column()));
        if let [(kind, _), (other, value), ..] = named.as_slice() {
            let message = format!(
                "a source takes exactly one of header, cookie and path, not both `{kind}` \
                 and `{other}`: list them as separate sources, in the order to try them"
            );
            return Err(Invalid::at(value.referenced, other, message));
        }
        if let (Some(prefix), None) = (&self.prefix, &self.path) {
            let message = "goes only beside `path` (a header or cookie value is used as sent)";
            return Err(Invalid::at(prefix.referenced, "prefix", message));
        }
        if let Some(name) = &self.header {
            return Ok(KeySource::Header(name.value.clone()));
        }
        if let Some(name) = &self.cookie {
            return Ok(KeySource::Cookie(name.value.clone()));
        }
        match &self.path {
            Some(template) => self.path_source(template),
            None => Err(Invalid::at(
                entry,
                "key.sources",
                "each source needs one of `header`, `cookie` or `path`",
            )),
        }
    }

    fn path_source(&self, template: &Spanned<String>) -> Result<KeySource, Invalid> {
        let parsed = PathTemplate::parse(&template.value)
            .map_err(|why| Invalid::at(template.referenced, "path", why))?;
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
    /// Checks serde cannot express: weights, unique ids, key sources, sane
    /// health numbers.
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
        Ok(())
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
        let text = include_str!("../../deploy/config/proxy.example.yaml");
        let first = sources(text).into_iter().next();
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
            "exactly one of header, cookie and path",
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
