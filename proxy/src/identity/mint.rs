//! `missing: mint`: a new identity for a request that carries none.
//!
//! The id is 128 bits from the operating system's CSPRNG, written as 32
//! lowercase hex digits: unguessable, so no user can step into another's
//! id, and unique without any coordination between proxies. It is signed
//! like any other signed cookie and set on the response, so the user's next
//! requests carry it and reach the same worker.

use crate::identity::SignedCookie;

/// How much earlier than the signed expiry the browser is told to drop the
/// cookie (`Max-Age` = ttl − this): `Max-Age` counts from when the browser
/// got the cookie, a little after we signed it, and a cookie sent just
/// after its expiry would be refused (401) rather than re-minted.
pub const MAX_AGE_MARGIN_S: u64 = 60;

/// A freshly minted identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The new id: the routing key of this request.
    pub id: String,
    /// The `Set-Cookie` header value that hands it to the client.
    pub set_cookie: String,
}

impl Minted {
    /// A new random id, signed for `cookie` to expire `cookie.ttl_s` after
    /// `now`; `secure` (the client connection is TLS) adds `Secure`.
    pub fn new(cookie: &SignedCookie, now: u64, secure: bool) -> Result<Self, getrandom::Error> {
        let id = random_id()?;
        let value = cookie.signer.sign(&id, now.saturating_add(cookie.ttl_s));
        let max_age_s = cookie.ttl_s.saturating_sub(MAX_AGE_MARGIN_S).max(1);
        Ok(Minted {
            set_cookie: set_cookie(&cookie.name, &value, max_age_s, secure),
            id,
        })
    }
}

/// 128 random bits as 32 lowercase hex digits.
pub fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{:032x}", u128::from_be_bytes(bytes)))
}

/// A `Set-Cookie` value: the whole site (`Path=/`), out of scripts' reach
/// (`HttpOnly`), not sent on cross-site subrequests (`SameSite=Lax`), and
/// over TLS only when the client came over TLS (`Secure`; a plain-HTTP
/// client would never send it back).
pub fn set_cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CookieSigner, Secret};

    fn cookie(ttl_s: u64) -> SignedCookie {
        let secret = Secret::new(b"a test secret of at least 32 bytes", "x").expect("long enough");
        SignedCookie {
            name: "sid".into(),
            signer: CookieSigner::new(secret),
            ttl_s,
        }
    }

    #[test]
    fn ids_are_32_lowercase_hex_digits_and_differ() {
        let a = random_id().expect("the OS has randomness");
        let b = random_id().expect("the OS has randomness");
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_minted_cookie_verifies_to_its_id_and_carries_the_attributes() {
        let now = 1_700_000_000;
        let cookie = cookie(3600);
        let minted = Minted::new(&cookie, now, false).expect("minted");
        let value = format!("{}.{}.", minted.id, now + 3600);
        let expected_prefix = format!("sid={value}");
        assert!(
            minted.set_cookie.starts_with(&expected_prefix),
            "{minted:?}"
        );
        assert!(
            minted
                .set_cookie
                .ends_with("; Path=/; Max-Age=3540; HttpOnly; SameSite=Lax"),
            "{minted:?}"
        );
        let signed = minted
            .set_cookie
            .strip_prefix("sid=")
            .and_then(|rest| rest.split(';').next())
            .expect("a value");
        assert_eq!(
            cookie.signer.verify(signed.as_bytes(), now),
            Ok(minted.id.as_str())
        );

        let secure = Minted::new(&cookie, now, true).expect("minted");
        assert!(
            secure.set_cookie.ends_with("; SameSite=Lax; Secure"),
            "{secure:?}"
        );
    }
}
