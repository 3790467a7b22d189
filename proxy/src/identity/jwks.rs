//! The public keys RS256 and ES256 tokens are checked with: a JWKS document
//! (RFC 7517), read once at start, each key found by its `kid`.
//!
//! Each key is bound to one algorithm when it is loaded (an RSA key to
//! RS256, a P-256 key to ES256), and a token is checked only with a key of
//! its own `alg`: a public key is never used as an HMAC secret, nor an RSA
//! key for ES256.
//!
//! Keys this proxy cannot use (`use` other than `sig`, another `alg`, other
//! key types or curves) are skipped, so a provider's JWKS can be used as it
//! is; a key it would use but cannot read is an error, as is a file with no
//! usable key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::Sha256;

use crate::identity::Algorithm;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a JWKS file cannot be used. Names keys by position and `kid`, never
/// by their material.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a JWKS document ({0})")]
    Json(#[from] serde_json::Error),
    #[error("key {index} ({kid}): {why}")]
    Key {
        index: usize,
        kid: String,
        why: &'static str,
    },
    #[error("keys {first} and {second} share the kid {kid:?}")]
    DuplicateKid {
        first: usize,
        second: usize,
        kid: String,
    },
    #[error("no RS256 (RSA) or ES256 (P-256) signing key")]
    NoUsableKey,
}

/// A public key, bound to the one algorithm it checks.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Rs256(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Es256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Rs256(_) => Algorithm::Rs256,
            PublicKey::Es256(_) => Algorithm::Es256,
        }
    }

    /// Whether `signature` (as a JWS carries it) signs `message`. A
    /// signature of the wrong size or form is simply not valid.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Rs256(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            PublicKey::Es256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }
}

/// The usable keys of a JWKS document, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: HashMap<String, PublicKey>,
}

impl Jwks {
    /// Read and parse the JWKS file at `path`.
    pub fn load(path: &Path) -> Result<Self, JwksError> {
        let text = std::fs::read(path).map_err(|source| JwksError::Read {
            path: path.to_owned(),
            source,
        })?;
        Jwks::parse(&text)
    }

    /// Parse a JWKS document: `{"keys": [JWK, ...]}`.
    pub fn parse(text: &[u8]) -> Result<Self, JwksError> {
        let document: Document = serde_json::from_slice(text)?;
        let mut keys = HashMap::new();
        let mut positions = HashMap::new();
        for (index, jwk) in document.keys.iter().enumerate() {
            let Some(key) = jwk.to_key(index)? else {
                continue;
            };
            let kid = jwk.kid.clone().ok_or(JwksError::Key {
                index,
                kid: "no kid".into(),
                why: "has no `kid`, which tokens name their key by",
            })?;
            if let Some(first) = positions.insert(kid.clone(), index) {
                return Err(JwksError::DuplicateKid {
                    first,
                    second: index,
                    kid,
                });
            }
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Jwks { keys })
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&PublicKey> {
        self.keys.get(kid)
    }

    /// Whether some key checks `algorithm`.
    pub fn has_key_for(&self, algorithm: Algorithm) -> bool {
        self.keys.values().any(|key| key.algorithm() == algorithm)
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Jwk>,
}

/// One JWK, the fields we read (others, such as `x5c`, are ignored).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Jwk {
    /// The key, `None` when it is not one for RS256 or ES256 signatures.
    fn to_key(&self, index: usize) -> Result<Option<PublicKey>, JwksError> {
        if self.use_.as_deref().is_some_and(|use_| use_ != "sig") {
            return Ok(None);
        }
        let for_alg = |alg: &str| self.alg.as_deref().is_none_or(|named| named == alg);
        let invalid = |why| JwksError::Key {
            index,
            kid: self.kid.clone().unwrap_or_else(|| "no kid".into()),
            why,
        };
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) if for_alg("RS256") => {
                let n = component(&self.n).ok_or(invalid("`n` is missing or not base64url"))?;
                let e = component(&self.e).ok_or(invalid("`e` is missing or not base64url"))?;
                let key = rsa::PublicKey::new_with_size_limits(
                    rsa::BoxedUint::from_be_slice_vartime(&n),
                    rsa::BoxedUint::from_be_slice_vartime(&e),
                    MIN_RSA_BITS..=rsa::PublicKey::MAX_SIZE,
                )
                .map_err(|_| invalid("not a usable RSA public key (at least 2048 bits)"))?;
                Ok(Some(PublicKey::Rs256(rsa::pkcs1v15::VerifyingKey::new(
                    key,
                ))))
            }
            ("EC", Some("P-256")) if for_alg("ES256") => {
                let x = component(&self.x).ok_or(invalid("`x` is missing or not base64url"))?;
                let y = component(&self.y).ok_or(invalid("`y` is missing or not base64url"))?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(invalid("`x` and `y` must be 32 bytes each"));
                }
                let point = [&[0x04][..], &x, &y].concat();
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| invalid("not a point on P-256"))?;
                Ok(Some(PublicKey::Es256(key)))
            }
            _ => Ok(None),
        }
    }
}

/// A base64url (unpadded) member, decoded.
fn component(value: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value.as_deref()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_documents_say_why() {
        for (text, why) in [
            ("", "not a JWKS document"),
            ("{\"keys\": {}}", "not a JWKS document"),
            ("{\"keys\": []}", "no RS256"),
            (
                r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}, {"kty": "EC", "crv": "P-384", "x": "", "y": ""}]}"#,
                "no RS256",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "r", "use": "enc"}]}"#,
                "no RS256",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "r", "alg": "PS256"}]}"#,
                "no RS256",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "r", "e": "AQAB"}]}"#,
                "key 0 (r): `n` is missing",
            ),
            (
                r#"{"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}"#,
                "key 0 (r): not a usable RSA public key",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e", "x": "AQAB", "y": "AQAB"}]}"#,
                "key 0 (e): `x` and `y` must be 32 bytes",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#,
                "key 0 (e): not a point on P-256",
            ),
        ] {
            let error = Jwks::parse(text.as_bytes()).expect_err(text);
            assert!(error.to_string().contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let path = Path::new("/nonexistent/roost/jwks.json");
        let error = Jwks::load(path).expect_err("no such file");
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/roost/jwks.json: "),
            "{error}"
        );
    }
}
