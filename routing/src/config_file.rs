//! Loading a YAML config file the way both binaries do: serde-saphyr, then a
//! `validate()` step, with every error naming the file, the line and the
//! field, as `FILE:LINE:COLUMN: field `NAME`: MESSAGE`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
pub use serde_saphyr::{Location, Spanned};

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

/// A check a config must pass after it parsed.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// Why a parsed config is unusable, and where.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// Where the offending value is (from a `Spanned` field), or
    /// `Location::UNKNOWN` to point at the field's top-level key.
    pub location: Location,
    /// Dotted path of the field, e.g. `health.path`.
    pub field: String,
    pub message: String,
}

impl Invalid {
    /// At a known location (a `Spanned` field's `referenced`).
    pub fn at(location: Location, field: &str, message: impl Into<String>) -> Self {
        Invalid {
            location,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// At the line of the top-level key `field` sits under.
    pub fn top(field: &str, message: impl Into<String>) -> Self {
        Self::at(Location::UNKNOWN, field, message)
    }
}

/// Read, parse and validate `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    parse(path, &read(path)?)
}

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        line: 1,
        column: 1,
        field: "(file)".into(),
        message: format!("cannot read the config file: {e}"),
    })
}

/// Parse and validate `text`, naming `path` in errors.
pub fn parse<T: DeserializeOwned + Validate>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let config: T = serde_saphyr::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
    config
        .validate()
        .map_err(|invalid| invalid.in_file(path, text))?;
    Ok(config)
}

impl Invalid {
    /// Where in `text` (the file at `path`) this is, as a `ConfigError`.
    pub fn in_file(self, path: &Path, text: &str) -> ConfigError {
        let (line, column) = if self.location == Location::UNKNOWN {
            (line_of_top_level(text, &self.field), 1)
        } else {
            (self.location.line(), self.location.column())
        };
        ConfigError {
            path: path.to_owned(),
            line,
            column,
            field: self.field,
            message: self.message,
        }
    }
}

/// Turn a serde-saphyr error into a `ConfigError` naming the field at its
/// location (serde's message names unknown fields; for bad values we read
/// the key off the YAML line itself).
fn syntax_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> ConfigError {
    let plain = error.without_snippet();
    let location = plain.location().unwrap_or(Location::UNKNOWN);
    let (line, column) = (location.line().max(1), location.column().max(1));
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    ConfigError {
        path: path.to_owned(),
        line,
        column,
        field: field_at(text, line, column).unwrap_or_else(|| "(document)".into()),
        message: strip_location_suffix(&plain.render_with_options(options)),
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
