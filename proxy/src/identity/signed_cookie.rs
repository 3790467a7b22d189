//! Signed cookies: ids this fleet vouches for.
//!
//! The value is `id.expiry.signature`: `expiry` in Unix seconds (the cookie
//! is valid while `now < expiry`), `signature` = base64url without padding
//! of HMAC-SHA256(secret, `"id.expiry"`). The routing key is `id`. Every
//! proxy of the fleet shares the secret, so any of them accepts a cookie
//! another minted. Changing the secret logs every user out, unless the old
//! one stays on as the previous secret, accepted but never signed with, until
//! the cookies it signed expire.
//!
//! The signature is checked before anything it covers is trusted, and in
//! constant time (see [`Secret::verify`]); the expiry inside the signed part
//! means an old cookie cannot be extended without the secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::identity::{is_routable, Invalid, Secret};

/// Signs cookie values with one secret, and verifies them with it or with
/// the secret being rotated out.
#[derive(Debug, Clone)]
pub struct CookieSigner {
    secret: Secret,
    previous: Option<Secret>,
}

impl CookieSigner {
    pub fn new(secret: Secret) -> Self {
        CookieSigner {
            secret,
            previous: None,
        }
    }

    /// Also accept what `previous` signed (it never signs again).
    pub fn verifying_also(self, previous: Option<Secret>) -> Self {
        CookieSigner { previous, ..self }
    }

    /// The cookie value naming `id` until `expiry` (Unix seconds). `id`
    /// should be a cookie-safe token without `.` (minted ids are hex).
    pub fn sign(&self, id: &str, expiry: u64) -> String {
        let message = format!("{id}.{expiry}");
        let signature = URL_SAFE_NO_PAD.encode(self.secret.tag(message.as_bytes()));
        format!("{message}.{signature}")
    }

    /// The id `value` names, if this secret signed it and it has not
    /// expired at `now`.
    pub fn verify<'v>(&self, value: &'v [u8], now: u64) -> Result<&'v str, Invalid> {
        let not_three = Invalid::Malformed("not `id.expiry.signature`");
        let (message, signature) = rsplit_once(value, b'.').ok_or(not_three.clone())?;
        let (id, expiry) = rsplit_once(message, b'.').ok_or(not_three)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Invalid::Malformed("the signature is not base64url"))?;
        let signed_by = |secret: &Secret| secret.verify(message, &signature);
        if !signed_by(&self.secret) && !self.previous.as_ref().is_some_and(signed_by) {
            return Err(Invalid::BadSignature);
        }
        // Signed by us: what follows only fails for a value we should not
        // have signed, but a key must still be one we can forward.
        let expiry =
            parse_seconds(expiry).ok_or(Invalid::Malformed("the expiry is not a number"))?;
        if now >= expiry {
            return Err(Invalid::Expired);
        }
        std::str::from_utf8(id)
            .ok()
            .filter(|id| is_routable(id))
            .ok_or(Invalid::Malformed("the id is not a usable key"))
    }
}

/// A `{signed_cookie: NAME, ...}` source: the cookie, its signer, and how
/// long the cookies minted for it last.
#[derive(Debug, Clone)]
pub struct SignedCookie {
    /// The cookie's name.
    pub name: String,
    pub signer: CookieSigner,
    /// Lifetime of a minted cookie, in seconds.
    pub ttl_s: u64,
}

/// `value` split at its last `sep`.
fn rsplit_once(value: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = value.iter().rposition(|&b| b == sep)?;
    let (before, after) = value.split_at(at);
    Some((before, after.get(1..)?))
}

/// Decimal digits only (no sign, no spaces), fitting in a `u64`.
fn parse_seconds(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn signer() -> CookieSigner {
        CookieSigner::new(
            Secret::new(b"a test secret of at least 32 bytes", "x").expect("long enough"),
        )
    }

    #[test]
    fn a_signed_value_verifies_to_its_id_until_it_expires() {
        let value = signer().sign("alice", NOW + 10);
        assert!(
            value.starts_with(&format!("alice.{}.", NOW + 10)),
            "{value}"
        );
        assert_eq!(signer().verify(value.as_bytes(), NOW), Ok("alice"));
        assert_eq!(signer().verify(value.as_bytes(), NOW + 9), Ok("alice"));
        assert_eq!(
            signer().verify(value.as_bytes(), NOW + 10),
            Err(Invalid::Expired)
        );
    }

    #[test]
    fn ids_may_hold_dots_since_the_value_is_split_from_the_right() {
        let value = signer().sign("alice@example.com", NOW + 10);
        assert_eq!(
            signer().verify(value.as_bytes(), NOW),
            Ok("alice@example.com")
        );
    }

    /// `value` with its `part`-th `.`-separated field (from the right: 0 is
    /// the signature, 1 the expiry, 2 the id) replaced by `with`.
    fn replace(value: &str, part: usize, with: &str) -> String {
        let mut parts: Vec<&str> = value.rsplitn(3, '.').collect();
        parts[part] = with;
        parts.reverse();
        parts.join(".")
    }

    #[test]
    fn tampering_with_the_id_the_expiry_or_the_signature_is_caught() {
        let value = signer().sign("alice", NOW + 10);
        let signature = value.rsplit('.').next().expect("three parts");
        let mut flipped = signature.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ASCII");
        for tampered in [
            replace(&value, 2, "mallory"),
            replace(&value, 2, "alicf"),
            replace(&value, 1, &(NOW + 1_000_000).to_string()),
            replace(&value, 1, &format!("0{}", NOW + 10)),
            replace(&value, 0, &flipped),
            replace(&value, 0, &signature[..40]), // decodes, to 30 bytes
        ] {
            assert_eq!(
                signer().verify(tampered.as_bytes(), NOW),
                Err(Invalid::BadSignature),
                "{tampered}"
            );
        }
        let other = CookieSigner::new(
            Secret::new(b"another secret, also long enough!", "x").expect("long enough"),
        );
        assert_eq!(
            other.verify(value.as_bytes(), NOW),
            Err(Invalid::BadSignature)
        );
    }

    #[test]
    fn a_rotated_signer_accepts_the_previous_secrets_cookies_and_signs_with_the_new_one() {
        let new_secret = Secret::new(b"another secret, also long enough!", "x").expect("long");
        let rotated =
            CookieSigner::new(new_secret.clone()).verifying_also(Some(signer().secret.clone()));
        let old_cookie = signer().sign("alice", NOW + 10);
        assert_eq!(rotated.verify(old_cookie.as_bytes(), NOW), Ok("alice"));
        let new_cookie = rotated.sign("bob", NOW + 10);
        assert_eq!(
            CookieSigner::new(new_secret).verify(new_cookie.as_bytes(), NOW),
            Ok("bob"),
            "signed with the new secret"
        );
        assert_eq!(
            signer().verify(new_cookie.as_bytes(), NOW),
            Err(Invalid::BadSignature),
            "not with the previous one"
        );
    }

    #[test]
    fn truncated_and_mutated_values_never_panic_and_never_verify() {
        let value = signer().sign("alice", NOW + 10).into_bytes();
        for end in 0..value.len() {
            assert!(signer().verify(&value[..end], NOW).is_err());
        }
        for at in 0..value.len() {
            for byte in [b'.', b'0', b'A', b'-', 0, 0xff] {
                let mut mutated = value.clone();
                mutated[at] = byte;
                if mutated != value {
                    assert!(signer().verify(&mutated, NOW).is_err(), "{mutated:?}");
                }
            }
        }
    }

    #[test]
    fn malformed_values_say_so() {
        let valid = signer().sign("alice", NOW + 10);
        for (value, why) in [
            ("", "not `id.expiry.signature`"),
            ("alice", "not `id.expiry.signature`"),
            ("alice.123", "not `id.expiry.signature`"),
            ("alice.123.!!!", "not base64url"),
            ("alice.123.abc=", "not base64url"),
            (
                &replace(
                    &valid,
                    0,
                    &format!("{}=", valid.rsplit('.').next().unwrap_or_default()),
                ),
                "not base64url",
            ),
        ] {
            match signer().verify(value.as_bytes(), NOW) {
                Err(Invalid::Malformed(message)) => {
                    assert!(message.contains(why), "{value}: {message}")
                }
                other => panic!("{value}: expected malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_value_we_signed_with_a_bad_expiry_or_id_is_still_refused() {
        let signer = signer();
        let forged_format = |id: &str, expiry: &str| {
            let message = format!("{id}.{expiry}");
            let tag = URL_SAFE_NO_PAD.encode(signer.secret.tag(message.as_bytes()));
            format!("{message}.{tag}")
        };
        for (value, expected) in [
            (forged_format("alice", "+5"), "the expiry is not a number"),
            (
                forged_format("alice", "99999999999999999999"),
                "the expiry is not a number",
            ),
            (
                forged_format("", &(NOW + 10).to_string()),
                "the id is not a usable key",
            ),
            (
                forged_format("a\u{7}b", &(NOW + 10).to_string()),
                "the id is not a usable key",
            ),
        ] {
            assert_eq!(
                signer.verify(value.as_bytes(), NOW),
                Err(Invalid::Malformed(expected)),
                "{value:?}"
            );
        }
        assert_eq!(
            signer.verify(b"\xff.\xfe.\x00", NOW),
            Err(Invalid::Malformed("the signature is not base64url"))
        );
    }
}
