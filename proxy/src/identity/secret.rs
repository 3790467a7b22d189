//! HMAC-SHA256 keys, for signed cookies and HS256 tokens alike.
//!
//! One type for both so a secret's rules live in one place: at least
//! [`MIN_SECRET_BYTES`] (a shorter secret can be brute-forced offline from a
//! single cookie), read once at start, never printed (`Debug` is redacted,
//! and only the keyed HMAC state is kept, not the raw bytes), and tags
//! checked in constant time (`verify_slice`), so timing does not leak how
//! much of a forged signature was right.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The shortest secret accepted: HMAC-SHA256's own output size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a secret cannot be used. Never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{origin} is empty")]
    Empty { origin: String },
    #[error("{origin} has {len} bytes; a secret needs at least {MIN_SECRET_BYTES} (e.g. `openssl rand -base64 48`)")]
    TooShort { origin: String, len: usize },
}

/// An HMAC-SHA256 key.
#[derive(Clone)]
pub struct Secret {
    /// Keyed once; cloned per use (cheaper than re-keying, and the raw
    /// secret need not be kept).
    mac: Hmac<Sha256>,
}

impl Secret {
    /// A secret from its bytes; `origin` names where they came from in
    /// errors ("the secret", "environment variable X").
    pub fn new(bytes: &[u8], origin: &str) -> Result<Self, SecretError> {
        let origin = origin.to_owned();
        if bytes.is_empty() {
            return Err(SecretError::Empty { origin });
        }
        if bytes.len() < MIN_SECRET_BYTES {
            let len = bytes.len();
            return Err(SecretError::TooShort { origin, len });
        }
        // HMAC takes keys of any length, so this cannot fail.
        let mac = Hmac::new_from_slice(bytes).map_err(|_| SecretError::Empty { origin })?;
        Ok(Secret { mac })
    }

    /// HMAC-SHA256(secret, `message`).
    pub fn tag(&self, message: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `tag` is HMAC-SHA256(secret, `message`), compared in
    /// constant time. A tag of the wrong length is simply wrong.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn short_and_empty_secrets_are_refused_without_echoing_them() {
        let error = Secret::new(b"hunter2", "the secret").expect_err("7 bytes");
        assert_eq!(
            error,
            SecretError::TooShort {
                origin: "the secret".into(),
                len: 7
            }
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(matches!(
            Secret::new(b"", "x"),
            Err(SecretError::Empty { .. })
        ));
        assert!(Secret::new(KEY, "x").is_ok());
    }

    #[test]
    fn tags_verify_and_any_change_fails() {
        let secret = Secret::new(KEY, "x").expect("long enough");
        let tag = secret.tag(b"alice.1700000000");
        assert_eq!(tag.len(), 32);
        assert!(secret.verify(b"alice.1700000000", &tag));
        assert!(!secret.verify(b"alice.1700000001", &tag));
        assert!(!secret.verify(b"alice.1700000000", &tag[..31]));
        let other = Secret::new(b"another secret, also 32 bytes...", "x").expect("long enough");
        assert!(!other.verify(b"alice.1700000000", &tag));
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
