//! The proxy's configuration, in two steps:
//!
//! - [`schema`]: the YAML file as serde structs, and the checks that need
//!   nothing but the file (ranges, unique ids, listeners apart);
//! - [`build`]: what the file names outside itself (secrets in the
//!   environment or in files, JWKS files, TLS certificates) read once and
//!   turned into the objects the request path runs with.
//!
//! [`Loaded`] is both, done: a proxy starts from one, and a reload
//! ([`crate::reload`]) builds a new one beside the running one and swaps
//! it in only when all of it is usable.
//!
//! Every error names the file, the line and the field, as
//! `FILE:LINE:COLUMN: field `NAME`: MESSAGE`, so an operator can jump to it
//! (see [`roost_routing::config_file`]).

pub mod build;
pub mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;

use roost_routing::config_file;

pub use build::Built;
pub use roost_routing::config_file::ConfigError;
pub use schema::*;

/// A config file that parsed, passed its checks and built.
pub struct Loaded {
    pub config: ProxyConfig,
    pub built: Built,
}

impl Loaded {
    /// Read, check and build the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &config_file::read(path)?)
    }

    /// Check and build `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: ProxyConfig = config_file::parse(path, text)?;
        let built = Built::from_config(&config).map_err(|invalid| invalid.in_file(path, text))?;
        Ok(Loaded { config, built })
    }
}
