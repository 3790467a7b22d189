//! Postgres connections configured the way libpq is, so that a store URL
//! that works with `psql` works with Roost: the worker's `--store` and the
//! proxy's `discovery.store` both go through [`Endpoint::from_url`], and
//! both reach a managed Postgres over TLS with the password kept out of
//! the URL.
//!
//! tokio-postgres parses URLs itself, but it knows only
//! `sslmode=disable|prefer|require`, refuses libpq's other parameters and
//! has no TLS of its own. So the libpq parameters are taken out of the URL
//! first, tokio-postgres parses the rest, and they are then applied as
//! libpq applies them:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked; its chain is, when a root certificate is at hand |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | chains to a root certificate |
//! | `verify-full` | always | chains to a root certificate and names the host |
//!
//! - The root certificates: the PEM file `sslrootcert`, else
//!   `~/.postgresql/root.crt`.
//! - The password: the URL's, else `PGPASSWORD`, else the first matching
//!   line of the password file ([`passfile`]): the `passfile` parameter,
//!   else `PGPASSFILE`, else `~/.pgpass`.
//! - `PGSSLMODE` and `PGSSLROOTCERT` stand in for parameters the URL
//!   leaves out.
//!
//! Where this differs from libpq it refuses rather than guesses, with an
//! error naming the setting: `sslmode=allow` and `sslrootcert=system` are
//! not supported, a named root certificate or password file that cannot be
//! read is an error, and so is a password file others may read (libpq
//! skips it). A handshake that fails under `prefer` is an error rather
//! than a retry in plain text (tokio-postgres does not retry).
//!
//! [`tls`]: the rustls connector and its certificate verifiers.

pub mod passfile;
pub mod tls;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use tokio_postgres::{Client, Connection, Socket};

pub use tls::{certificate_rejected, HandshakeError, MakeRustlsConnect, TlsStream};

use tls::Verification;

/// Why a store URL cannot be used. Never holds the password.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("bad postgres URL: {0}")]
    Url(String),
    #[error(
        "{setting}={value:?}: must be one of disable, prefer, require, verify-ca, verify-full"
    )]
    SslMode {
        setting: &'static str,
        value: String,
    },
    #[error(
        "{setting}=allow is not supported: use prefer (TLS whenever the server offers it) \
         or disable"
    )]
    SslModeAllow { setting: &'static str },
    #[error("{setting}=system is not supported: name a PEM file of the CA certificates to trust")]
    SystemRoots { setting: &'static str },
    #[error(
        "sslmode={mode} checks the server's certificate, so it needs the CA: set \
         sslrootcert (or PGSSLROOTCERT) to a PEM file of CA certificates{default}"
    )]
    NoRootCert { mode: SslMode, default: String },
    #[error("{setting} {}: {reason}", path.display())]
    RootCert {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{setting} {}: {reason}", path.display())]
    PassFile {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// libpq's `sslmode`, as [`Endpoint`] applies it (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(setting: Setting) -> Result<Self, PostgresError> {
        Ok(match setting.value.as_str() {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(PostgresError::SslModeAllow {
                    setting: setting.name,
                })
            }
            _ => {
                return Err(PostgresError::SslMode {
                    setting: setting.name,
                    value: setting.value,
                })
            }
        })
    }

    /// Whether a connection without a trusted certificate chain is refused.
    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The libpq variables that stand in for what a URL leaves out, read once
/// so tests can give their own.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `PGSSLMODE`.
    pub sslmode: Option<String>,
    /// `PGSSLROOTCERT`.
    pub sslrootcert: Option<String>,
    /// `PGPASSWORD`.
    pub password: Option<String>,
    /// `PGPASSFILE`.
    pub passfile: Option<PathBuf>,
    /// `HOME`: where `.postgresql/root.crt` and `.pgpass` are looked for.
    pub home: Option<PathBuf>,
}

impl Environment {
    /// This process's variables (empty ones count as unset, as in libpq).
    pub fn of_process() -> Self {
        let text = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Environment {
            sslmode: text("PGSSLMODE"),
            sslrootcert: text("PGSSLROOTCERT"),
            password: text("PGPASSWORD"),
            passfile: path("PGPASSFILE"),
            home: path("HOME"),
        }
    }
}

/// A value and the name it was given under (a URL parameter or a
/// variable), so an error can say which one to fix.
struct Setting {
    name: &'static str,
    value: String,
}

impl Setting {
    /// The URL's parameter `param` if given, else the variable `var`.
    fn pick(
        url: Option<String>,
        param: &'static str,
        env: Option<&String>,
        var: &'static str,
    ) -> Option<Setting> {
        match url {
            Some(value) => Some(Setting { name: param, value }),
            None => env.map(|value| Setting {
                name: var,
                value: value.clone(),
            }),
        }
    }
}

/// The libpq parameters tokio-postgres does not know, taken out of a URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct LibpqParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    passfile: Option<String>,
}

/// Where and how to connect: tokio-postgres' settings with the password
/// filled in, and the TLS connector `sslmode` asks for.
#[derive(Clone)]
pub struct Endpoint {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl Endpoint {
    /// Read `url` (`postgres://…`) with this process's libpq variables.
    pub fn from_url(url: &str) -> Result<Self, PostgresError> {
        Self::resolve(url, &Environment::of_process())
    }

    /// Read `url` with `env` standing in for the process's variables.
    pub fn resolve(url: &str, env: &Environment) -> Result<Self, PostgresError> {
        let (rest, params) = split_url(url)?;
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e| PostgresError::Url(describe(&e)))?;
        let mode = Setting::pick(params.sslmode, "sslmode", env.sslmode.as_ref(), "PGSSLMODE")
            .map_or(Ok(SslMode::Prefer), SslMode::parse)?;
        let rootcert = Setting::pick(
            params.sslrootcert,
            "sslrootcert",
            env.sslrootcert.as_ref(),
            "PGSSLROOTCERT",
        );
        let verification = verification(mode, rootcert, env)?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        fill_password(&mut config, params.passfile, env)?;
        let tls = MakeRustlsConnect::new(mode, verification)?;
        Ok(Endpoint { config, tls })
    }

    /// tokio-postgres' settings (for a pool that connects by itself).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector to connect with.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// A new connection; the caller drives the returned connection future.
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls()).await
    }
}

impl fmt::Debug for Endpoint {
    /// tokio-postgres' own `Debug`, which hides the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `error` and its causes, `: `-separated: tokio-postgres' own message
/// names only the kind of failure ("error performing TLS handshake").
pub fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text += ": ";
        text += &cause.to_string();
        source = cause.source();
    }
    text
}

/// `url` without the [`LibpqParams`], and those (percent-decoded). The
/// query starts at the first `?` after the first `@`, where tokio-postgres
/// ends the credentials, so a `?` in a password is not taken for it.
fn split_url(url: &str) -> Result<(String, LibpqParams), PostgresError> {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(query) = url[after_credentials..]
        .find('?')
        .map(|at| after_credentials + at)
    else {
        return Ok((url.to_owned(), LibpqParams::default()));
    };
    let mut params = LibpqParams::default();
    let mut kept = Vec::new();
    for pair in url[query + 1..].split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match decode(key)?.as_ref() {
            "sslmode" => &mut params.sslmode,
            "sslrootcert" => &mut params.sslrootcert,
            "passfile" => &mut params.passfile,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(decode(value)?.into_owned());
    }
    let mut rest = url[..query].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
}

fn decode(text: &str) -> Result<Cow<'_, str>, PostgresError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| PostgresError::Url("a query parameter is not UTF-8 once decoded".into()))
}

/// Which certificates the connector accepts, as libpq decides: a root
/// certificate that is at hand (named, or the default file existing) is
/// checked in every mode that uses TLS; the `verify-*` modes insist on one.
fn verification(
    mode: SslMode,
    rootcert: Option<Setting>,
    env: &Environment,
) -> Result<Verification, PostgresError> {
    if mode == SslMode::Disable {
        return Ok(Verification::None);
    }
    let (path, setting) = match rootcert {
        Some(setting) if setting.value == "system" => {
            return Err(PostgresError::SystemRoots {
                setting: setting.name,
            })
        }
        Some(setting) => (PathBuf::from(setting.value), setting.name),
        None => {
            let default = env
                .home
                .as_ref()
                .map(|home| home.join(".postgresql/root.crt"));
            match default {
                Some(path) if path.exists() => (path, "sslrootcert (default)"),
                _ if mode.verifies() => {
                    let default = env.home.as_ref().map_or(String::new(), |home| {
                        format!(
                            ", or put it at {}",
                            home.join(".postgresql/root.crt").display()
                        )
                    });
                    return Err(PostgresError::NoRootCert { mode, default });
                }
                _ => return Ok(Verification::None),
            }
        }
    };
    let roots = Arc::new(load_roots(&path, setting)?);
    Ok(match mode {
        SslMode::VerifyFull => Verification::Full(roots),
        _ => Verification::Chain(roots),
    })
}

/// Every certificate of the PEM file at `path`, as trust anchors.
fn load_roots(path: &Path, setting: &'static str) -> Result<RootCertStore, PostgresError> {
    let error = |reason: String| PostgresError::RootCert {
        setting,
        path: path.to_owned(),
        reason,
    };
    let certificates = crate::pem::certificates(path).map_err(error)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| error(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Give `config` a password when the URL has none: `PGPASSWORD`, else the
/// password file's first line that matches.
fn fill_password(
    config: &mut tokio_postgres::Config,
    passfile: Option<String>,
    env: &Environment,
) -> Result<(), PostgresError> {
    if config.get_password().is_some_and(|p| !p.is_empty()) {
        return Ok(());
    }
    if let Some(password) = &env.password {
        config.password(password);
        return Ok(());
    }
    let (path, setting, named) = match (passfile, &env.passfile, &env.home) {
        (Some(path), _, _) => (PathBuf::from(path), "passfile", true),
        (None, Some(path), _) => (path.clone(), "PGPASSFILE", true),
        (None, None, Some(home)) => (home.join(".pgpass"), "passfile (default)", false),
        (None, None, None) => return Ok(()),
    };
    let error = |reason: String| PostgresError::PassFile {
        setting,
        path: path.clone(),
        reason,
    };
    let Some(contents) = passfile::read(&path, named).map_err(error)? else {
        return Ok(());
    };
    if let Some(password) = passfile::find(&contents, &passfile::Wanted::of(config)) {
        config.password(password);
    }
    Ok(())
}

/// A fresh temp dir for one test's files, removed on drop.
#[cfg(test)]
pub(crate) struct TestDir(PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("roost-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a test dir");
        TestDir(dir)
    }

    /// `name` in the dir, holding `contents`, with `mode`.
    pub(crate) fn file(&self, name: &str, contents: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a test file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("chmod a test file");
        path
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn split(url: &str) -> (String, LibpqParams) {
        split_url(url).unwrap()
    }

    #[test]
    fn libpq_parameters_are_taken_out_and_the_rest_kept_in_order() {
        let (rest, params) = split(
            "postgres://u@db:5432/roost?application_name=w1&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5&passfile=/run/pgpass",
        );
        assert_eq!(
            rest,
            "postgres://u@db:5432/roost?application_name=w1&connect_timeout=5"
        );
        assert_eq!(
            params,
            LibpqParams {
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/etc/ca.pem".into()),
                passfile: Some("/run/pgpass".into()),
            }
        );
    }

    #[test]
    fn a_url_of_only_libpq_parameters_loses_its_query() {
        let (rest, params) = split("postgres://u@db/roost?sslmode=require");
        assert_eq!(rest, "postgres://u@db/roost");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (rest, params) = split("postgres://u:pa?ss@db/roost?sslmode=disable");
        assert_eq!(rest, "postgres://u:pa?ss@db/roost");
        assert_eq!(params.sslmode.as_deref(), Some("disable"));
        let (rest, params) = split("postgres://u:pa?ss@db/roost");
        assert_eq!(rest, "postgres://u:pa?ss@db/roost");
        assert_eq!(params, LibpqParams::default());
    }

    fn resolve(url: &str, env: &Environment) -> Result<Endpoint, PostgresError> {
        Endpoint::resolve(url, env)
    }

    fn ssl_mode(endpoint: &Endpoint) -> tokio_postgres::config::SslMode {
        endpoint.config().get_ssl_mode()
    }

    #[test]
    fn prefer_is_the_default_and_disable_turns_tls_off() {
        let env = Environment::default();
        let endpoint = resolve("postgres://u@db/roost", &env).unwrap();
        assert_eq!(ssl_mode(&endpoint), tokio_postgres::config::SslMode::Prefer);
        let endpoint = resolve("postgres://u@db/roost?sslmode=disable", &env).unwrap();
        assert_eq!(
            ssl_mode(&endpoint),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn the_environment_stands_in_for_what_the_url_leaves_out() {
        let env = Environment {
            sslmode: Some("disable".into()),
            password: Some("from-env".into()),
            ..Environment::default()
        };
        let endpoint = resolve("postgres://u@db/roost", &env).unwrap();
        assert_eq!(
            ssl_mode(&endpoint),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(endpoint.config().get_password(), Some(&b"from-env"[..]));
        let endpoint = resolve("postgres://u:in-url@db/roost?sslmode=require", &env).unwrap();
        assert_eq!(
            ssl_mode(&endpoint),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(endpoint.config().get_password(), Some(&b"in-url"[..]));
    }

    #[test]
    fn the_password_file_is_read_when_no_password_is_given() {
        let dir = TestDir::new("pg-passfile");
        let path = dir.file("pgpass", "db:5432:roost:u:from-file\n", 0o600);
        let url = format!("postgres://u@db/roost?passfile={}", path.display());
        let from_file = resolve(&url, &Environment::default()).unwrap();
        let env = Environment {
            password: Some("from-env".into()),
            ..Environment::default()
        };
        let from_env = resolve(&url, &env).unwrap();
        let other_user = resolve(&url.replace("u@", "v@"), &Environment::default()).unwrap();
        assert_eq!(from_file.config().get_password(), Some(&b"from-file"[..]));
        assert_eq!(from_env.config().get_password(), Some(&b"from-env"[..]));
        assert_eq!(other_user.config().get_password(), None);
    }

    #[test]
    fn bad_settings_are_errors_naming_the_setting() {
        let env = Environment {
            sslmode: Some("verify_full".into()),
            ..Environment::default()
        };
        let error = resolve("postgres://u@db/roost", &env).unwrap_err();
        assert!(
            error.to_string().starts_with("PGSSLMODE=\"verify_full\""),
            "{error}"
        );
        let env = Environment::default();
        let error = resolve("postgres://u@db/roost?sslmode=allow", &env).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("sslmode=allow is not supported"),
            "{error}"
        );
        let url = "postgres://u@db/roost?sslmode=verify-ca&sslrootcert=system";
        let error = resolve(url, &env).unwrap_err();
        assert!(
            error.to_string().starts_with("sslrootcert=system"),
            "{error}"
        );
        let url = "postgres://u@db/roost?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let error = resolve(url, &env).unwrap_err().to_string();
        assert!(
            error.starts_with("sslrootcert /nonexistent/ca.pem: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn verify_modes_without_a_root_certificate_say_where_to_put_one() {
        let env = Environment {
            home: Some("/nonexistent-home".into()),
            ..Environment::default()
        };
        let error = resolve("postgres://u@db/roost?sslmode=verify-full", &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("sslmode=verify-full"), "{error}");
        assert!(
            error.contains("/nonexistent-home/.postgresql/root.crt"),
            "{error}"
        );
        // Without one, require only encrypts, as in libpq.
        resolve("postgres://u@db/roost?sslmode=require", &env).unwrap();
    }

    #[test]
    fn a_root_certificate_file_without_certificates_is_refused() {
        let dir = TestDir::new("pg-roots");
        let empty = dir.file("empty.pem", "not a certificate\n", 0o644);
        let url = format!(
            "postgres://u@db/roost?sslmode=require&sslrootcert={}",
            empty.display()
        );
        let error = resolve(&url, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("sslrootcert "), "{error}");
        assert!(error.ends_with("holds no PEM CERTIFICATE block"), "{error}");
    }

    #[test]
    fn tokio_postgres_errors_do_not_show_the_password() {
        let error = resolve("postgres://u:s3cret@db:port/roost", &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("bad postgres URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let error = resolve(
            "postgres://u:s3cret@db/roost?sslcert=a.pem",
            &Environment::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.ends_with("unknown option `sslcert`"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        let endpoint = resolve("postgres://u:s3cret@db/roost", &Environment::default()).unwrap();
        assert!(!format!("{endpoint:?}").contains("s3cret"));
    }
}
