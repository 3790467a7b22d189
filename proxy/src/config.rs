//! The proxy's configuration: one serde struct, loaded from YAML, validated
//! before anything binds.
//!
//! Every error names the file, the line and the field, as
//! `FILE:LINE:COLUMN: field `NAME`: MESSAGE`, so an operator can jump to it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use roost_routing::hrw::validate_weight;

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
    /// The fleet, in any order (the order does not affect routing).
    pub workers: Vec<WorkerConfig>,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// Proxy worker threads; default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// One log line per request (default true).
    #[serde(default = "default_true")]
    pub access_log: bool,
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

/// A config file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: field `{field}`: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

impl ProxyConfig {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: 1,
            column: 1,
            field: "(file)".into(),
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parse and validate `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: ProxyConfig =
            serde_saphyr::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        config.validate().map_err(|(location, field, message)| {
            let (line, column) = if location == Location::UNKNOWN {
                (line_of_top_level(text, &field), 1)
            } else {
                (location.line(), location.column())
            };
            ConfigError {
                path: path.to_owned(),
                line,
                column,
                field,
                message,
            }
        })?;
        Ok(config)
    }

    /// Checks serde cannot express: weights, unique ids, sane health numbers.
    fn validate(&self) -> Result<(), (Location, String, String)> {
        let mut ids = HashSet::new();
        for worker in &self.workers {
            let id = &worker.id.value;
            if id.is_empty() {
                return Err((
                    worker.id.referenced,
                    "id".into(),
                    "must not be empty".into(),
                ));
            }
            if !ids.insert(id.as_str()) {
                let message = format!("duplicate worker id {id:?}");
                return Err((worker.id.referenced, "id".into(), message));
            }
            if let Err(e) = validate_weight(id, worker.weight.value) {
                return Err((worker.weight.referenced, "weight".into(), e.to_string()));
            }
        }
        let top = Location::UNKNOWN;
        if self.workers.is_empty() {
            return Err((
                top,
                "workers".into(),
                "at least one worker is required".into(),
            ));
        }
        if self.key.sources.is_empty() {
            return Err((
                top,
                "key.sources".into(),
                "at least one key source is required".into(),
            ));
        }
        let health = &self.health;
        if health.rise == 0 || health.fall == 0 || health.interval_ms == 0 || health.timeout_ms == 0
        {
            let message = "rise, fall, interval_ms and timeout_ms must all be greater than zero";
            return Err((top, "health".into(), message.into()));
        }
        if !health.path.starts_with('/') {
            return Err((top, "health.path".into(), "must start with '/'".into()));
        }
        if self.threads == Some(0) {
            return Err((top, "threads".into(), "must be greater than zero".into()));
        }
        Ok(())
    }

    /// Proxy threads to run: the configured number or one per CPU.
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// Turn a serde-saphyr error into a `ConfigError` naming the field at its
/// location (serde's message names unknown fields; for bad values we read
/// the key off the YAML line itself).
fn syntax_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> ConfigError {
    let plain = error.without_snippet();
    let location = plain.location().unwrap_or(Location::UNKNOWN);
    let (line, column) = (location.line().max(1), location.column().max(1));
    ConfigError {
        path: path.to_owned(),
        line,
        column,
        field: field_at(text, line, column).unwrap_or_else(|| "(document)".into()),
        message: strip_location_suffix(&plain.render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        })),
    }
}

/// The YAML key nearest before `column` on `line`: `addr` in
/// `- {id: w1, addr: nope}` when the error points at `nope`.
fn field_at(text: &str, line: u64, column: u64) -> Option<String> {
    let source = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let end = source
        .char_indices()
        .nth(usize::try_from(column).ok()?.saturating_sub(1))
        .map_or(source.len(), |(i, _)| i);
    let before = &source[..end];
    let colon = before
        .rfind(':')
        .or_else(|| source[end..].find(':').map(|i| i + end))?;
    let key = source[..colon]
        .rsplit(|c: char| c == '{' || c == ',' || c == '-' || c.is_whitespace())
        .find(|s| !s.is_empty())?;
    Some(key.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

/// The line of the top-level key that `field` (`health.path`) sits under, or
/// 1 when the key is absent.
fn line_of_top_level(text: &str, field: &str) -> u64 {
    let top = field.split('.').next().unwrap_or(field);
    text.lines()
        .position(|line| {
            line.strip_prefix(top)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(1, |i| i as u64 + 1)
}

/// serde-saphyr appends " at line L column C"; we print the location first.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_read_off_flow_and_block_lines() {
        let text = "listen: nope\nworkers:\n  - {id: w1, addr: bad, weight: 1}\n";
        assert_eq!(field_at(text, 1, 9).as_deref(), Some("listen"));
        assert_eq!(field_at(text, 3, 21).as_deref(), Some("addr"));
        assert_eq!(field_at(text, 3, 7).as_deref(), Some("id"));
    }

    #[test]
    fn semantic_errors_point_at_their_top_level_key() {
        let text = "listen: 127.0.0.1:1\nhealth:\n  path: healthz\n";
        assert_eq!(line_of_top_level(text, "health.path"), 2);
        assert_eq!(line_of_top_level(text, "workers"), 1);
    }
}
