//! The objects a checked config describes, built once: the key sources
//! (with their secrets and JWKS keys), the trusted-hop token and the TLS
//! certificate. Everything here reads outside the file (the environment,
//! files), so a config is built once when the proxy starts and once per
//! reload, and the request path only ever sees built objects.

use std::path::Path;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use serde_saphyr::{Location, Spanned};

use roost_routing::config_file::Invalid;

use super::schema::*;
use crate::identity::mint::MAX_AGE_MARGIN_S;
use crate::identity::{Algorithm, CookieSigner, Jwks, JwtVerifier, Secret, SignedCookie};
use crate::key::{KeySource, PathTemplate, TokenAt};
use crate::tls::TlsFile;

/// What a checked config names outside itself, read and built: the
/// request path's key sources, the hop token and the TLS certificate.
pub struct Built {
    pub sources: Vec<KeySource>,
    pub hop_token: Option<http::HeaderValue>,
    pub tls: Option<Arc<CertifiedKey>>,
}

impl Built {
    /// Read and build everything `config` names; the first unusable field
    /// is the error.
    pub fn from_config(config: &ProxyConfig) -> Result<Self, Invalid> {
        let hop_token = config.trusted_hop.as_ref().map(TrustedHopConfig::token);
        Ok(Built {
            hop_token: hop_token.transpose()?,
            sources: config.key.to_sources()?,
            tls: config
                .tls
                .as_ref()
                .map(TlsConfig::certified_key)
                .transpose()?,
        })
    }
}

impl TlsConfig {
    /// The chain and key, loaded and checked to match (an error names the
    /// file).
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, Invalid> {
        let loaded = crate::tls::certified_key(&self.cert.value, &self.key.value);
        loaded.map(Arc::new).map_err(|e| {
            let (field, at) = match e.file {
                TlsFile::Cert => ("cert", self.cert.referenced),
                TlsFile::Key => ("key", self.key.referenced),
            };
            Invalid::at(at, field, e.to_string())
        })
    }
}

impl TrustedHopConfig {
    /// The token, from `token_env`, `token_file` or `token`: at least
    /// [`MIN_HOP_TOKEN_BYTES`] visible ASCII characters (it travels in a
    /// header).
    pub fn token(&self) -> Result<http::HeaderValue, Invalid> {
        let fields = SecretFields {
            name: "token",
            env: self.token_env.as_ref(),
            file: self.token_file.as_ref(),
            inline: self.token.as_ref(),
        };
        let Some(token) = fields.read()? else {
            let message = "needs the workers' proxy_token: `token_env: VARIABLE`, `token_file: PATH` or `token: \"...\"`";
            return Err(Invalid::top("trusted_hop", message));
        };
        let usable = token.value.len() >= MIN_HOP_TOKEN_BYTES
            && token.value.bytes().all(|b| b.is_ascii_graphic());
        let mut value = http::HeaderValue::from_str(&token.value)
            .ok()
            .filter(|_| usable)
            .ok_or_else(|| {
                let message = format!(
                    "{} must be at least {MIN_HOP_TOKEN_BYTES} visible ASCII characters, like the workers' proxy_token",
                    token.origin
                );
                Invalid::at(token.at, &token.field, message)
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl KeyConfig {
    /// The sources the [`KeyExtractor`](crate::key::KeyExtractor) tries, in
    /// order, or the first entry that is unusable. Reads the secrets (from
    /// the environment or files) and the JWKS files, so it runs once per
    /// load: at start and on each reload.
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
            (
                "secret_file",
                location_of(&self.secret_file),
                "signed_cookie",
            ),
            ("secret", location_of(&self.secret), "signed_cookie"),
            (
                "previous_secret_env",
                location_of(&self.previous_secret_env),
                "signed_cookie",
            ),
            (
                "previous_secret_file",
                location_of(&self.previous_secret_file),
                "signed_cookie",
            ),
            (
                "previous_secret",
                location_of(&self.previous_secret),
                "signed_cookie",
            ),
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
        let current = SecretFields {
            name: "secret",
            env: self.secret_env.as_ref(),
            file: self.secret_file.as_ref(),
            inline: self.secret.as_ref(),
        };
        let secret = current.hmac_key((name.referenced, "signed_cookie"))?;
        let previous = SecretFields {
            name: "previous_secret",
            env: self.previous_secret_env.as_ref(),
            file: self.previous_secret_file.as_ref(),
            inline: self.previous_secret.as_ref(),
        };
        let previous = previous.read()?.map(SecretValue::hmac_key).transpose()?;
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
            signer: CookieSigner::new(secret).verifying_also(previous),
            ttl_s,
        })))
    }
}

/// Where an optional field is, when it is there.
fn location_of<T>(field: &Option<Spanned<T>>) -> Option<Location> {
    field.as_ref().map(|spanned| spanned.referenced)
}

/// The fields one secret may come from, at most one of them given:
/// `{name}_env` (an environment variable, read at start), `{name}_file` (a
/// file, read at start and on every reload, so a mounted secret can be
/// rotated) or `{name}` itself.
struct SecretFields<'c> {
    name: &'static str,
    env: Option<&'c Spanned<String>>,
    file: Option<&'c Spanned<String>>,
    inline: Option<&'c Spanned<String>>,
}

/// A secret as read, and the field it came from (for errors, which never
/// quote it).
struct SecretValue {
    value: String,
    field: String,
    at: Location,
    /// "environment variable X", "file X" or "the secret".
    origin: String,
}

impl SecretFields<'_> {
    /// The secret, if one of the fields is given.
    fn read(&self) -> Result<Option<SecretValue>, Invalid> {
        let given: Vec<(&str, &Spanned<String>)> =
            [("_env", self.env), ("_file", self.file), ("", self.inline)]
                .into_iter()
                .filter_map(|(suffix, field)| Some((suffix, field?)))
                .collect();
        let (suffix, field) = match given.as_slice() {
            [] => return Ok(None),
            [one] => *one,
            [(first, _), (second, at), ..] => {
                let message = format!(
                    "give one of `{0}_env`, `{0}_file` and `{0}`, not both `{0}{first}` and `{0}{second}`",
                    self.name
                );
                let field = format!("{}{second}", self.name);
                return Err(Invalid::at(at.referenced, &field, message));
            }
        };
        let name = format!("{}{suffix}", self.name);
        let unusable = |message: String| Invalid::at(field.referenced, &name, message);
        let (value, origin) = match suffix {
            "_env" => {
                let origin = format!("environment variable {}", field.value);
                let value = std::env::var(&field.value)
                    .map_err(|_| unusable(format!("{origin} is not set")))?;
                (value, origin)
            }
            "_file" => {
                let origin = format!("file {}", field.value);
                let value = std::fs::read_to_string(&field.value)
                    .map_err(|e| unusable(format!("cannot read {origin}: {e}")))?;
                // As `echo` or an editor writes it: the line end is not part of it.
                (value.trim_end_matches(['\n', '\r']).to_owned(), origin)
            }
            _ => (
                field.value.clone(),
                format!("the {}", self.name.replace('_', " ")),
            ),
        };
        Ok(Some(SecretValue {
            value,
            field: name.clone(),
            at: field.referenced,
            origin,
        }))
    }

    /// The HMAC key these fields give; `owner` is the field and place of
    /// what needs it, for when none is given.
    fn hmac_key(&self, owner: (Location, &str)) -> Result<Secret, Invalid> {
        let Some(secret) = self.read()? else {
            let message = format!(
                "needs its HMAC secret: `{0}_env: VARIABLE` (preferred), `{0}_file: PATH` or `{0}: \"...\"`",
                self.name
            );
            return Err(Invalid::at(owner.0, owner.1, message));
        };
        secret.hmac_key()
    }
}

impl SecretValue {
    fn hmac_key(self) -> Result<Secret, Invalid> {
        Secret::new(self.value.as_bytes(), &self.origin)
            .map_err(|e| Invalid::at(self.at, &self.field, e.to_string()))
    }
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
            let fields = SecretFields {
                name: "secret",
                env: self.secret_env.as_ref(),
                file: self.secret_file.as_ref(),
                inline: self.secret.as_ref(),
            };
            return fields.hmac_key((at, "jwt")).map(Some);
        }
        let unused = [
            ("secret_env", &self.secret_env),
            ("secret_file", &self.secret_file),
            ("secret", &self.secret),
        ]
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
