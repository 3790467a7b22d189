//! Why a credential was refused.
//!
//! The text goes to the client in the 401 body (`{"error":
//! "invalid_identity", "message": "jwt: expired"}`), so it names the problem
//! and never echoes the credential; a short label per reason feeds
//! `roost_proxy_identity_rejections_total{source, reason}`, so an operator
//! sees forgery attempts and clock or key trouble without reading logs.

use std::fmt;
use std::sync::LazyLock;

use pingora_prometheus::prometheus::{register_int_counter_vec, IntCounterVec};

/// What is wrong with a credential that is present.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Not in the credential's format; says which part is off.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Well formed, but not signed by the configured secret or key.
    #[error("bad signature")]
    BadSignature,
    /// Signed, but past its expiry (`exp`, or the cookie's expiry).
    #[error("expired")]
    Expired,
    /// Signed, but its `nbf` is still ahead.
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is missing or another issuer's.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is missing or does not name this service.
    #[error("wrong audience")]
    WrongAudience,
    /// An `alg` this source does not accept (including `none`), or a key
    /// for another algorithm than the token's; says which.
    #[error("wrong algorithm: {0}")]
    WrongAlgorithm(&'static str),
    /// The token's `kid` names no key of the JWKS (or it has none).
    #[error("unknown key id")]
    UnknownKey,
    /// The claim routed by is missing, not a string, empty, or holds a
    /// control character.
    #[error("bad claim: `{0}` is missing or not a usable string")]
    BadClaim(String),
}

impl Invalid {
    /// The metric label for this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Malformed(_) => "malformed",
            Invalid::BadSignature => "bad_signature",
            Invalid::Expired => "expired",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::WrongIssuer => "wrong_issuer",
            Invalid::WrongAudience => "wrong_audience",
            Invalid::WrongAlgorithm(_) => "wrong_algorithm",
            Invalid::UnknownKey => "unknown_key",
            Invalid::BadClaim(_) => "bad_claim",
        }
    }
}

/// The kind of source that refused a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    SignedCookie,
    Jwt,
}

impl Credential {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Credential::SignedCookie => "signed_cookie",
            Credential::Jwt => "jwt",
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::SignedCookie => "signed cookie",
            Credential::Jwt => "jwt",
        })
    }
}

/// A refused credential: which kind of source, and why. Displays as the
/// 401 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{credential}: {invalid}")]
pub struct Rejection {
    pub credential: Credential,
    pub invalid: Invalid,
}

impl Rejection {
    pub fn signed_cookie(invalid: Invalid) -> Self {
        Rejection {
            credential: Credential::SignedCookie,
            invalid,
        }
    }

    pub fn jwt(invalid: Invalid) -> Self {
        Rejection {
            credential: Credential::Jwt,
            invalid,
        }
    }

    /// Count it in `roost_proxy_identity_rejections_total`.
    pub fn count(&self) {
        REJECTIONS
            .with_label_values(&[self.credential.label(), self.invalid.reason()])
            .inc();
    }
}

/// Registered on the first rejection, in the default registry that
/// `/metrics` serves (see [`crate::metrics`]).
static REJECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "roost_proxy_identity_rejections_total",
        "Requests refused (401 invalid_identity) for a credential that failed verification.",
        &["source", "reason"]
    )
    .expect("register roost_proxy_identity_rejections_total")
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_source_and_the_reason_only() {
        let rejection = Rejection::jwt(Invalid::WrongAlgorithm("`none` is never accepted"));
        assert_eq!(
            rejection.to_string(),
            "jwt: wrong algorithm: `none` is never accepted"
        );
        assert_eq!(
            Rejection::signed_cookie(Invalid::Expired).to_string(),
            "signed cookie: expired"
        );
        assert_eq!(rejection.invalid.reason(), "wrong_algorithm");
    }
}
