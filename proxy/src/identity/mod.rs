//! Verified identity: routing keys a client cannot choose for itself.
//!
//! A plain `x-user-id` header or `uid` cookie names whoever the client says,
//! so anyone can step into anyone's session. The sources here name only ids
//! someone we trust vouched for: a cookie this fleet signed, or a JWT an
//! identity provider signed. A credential that is present but fails any check
//! is refused outright (401), never skipped: falling through to a plain
//! source would let a forger pick the key after all.
//!
//! Everything here is pure: no I/O on the request path, no clock (callers
//! pass `now`, in Unix seconds), and every function that reads client input
//! takes `&[u8]`/`&str`, returns a `Result`, and never panics, so the same
//! code serves the proxy, the tests and the fuzz targets.
//!
//! # Layout
//!
//! - [`secret`]: HMAC-SHA256 keys, from the environment or the config;
//!   never printed, tags checked in constant time.
//! - [`signed_cookie`]: `id.expiry.signature` cookies: sign and verify.
//! - [`mint`]: new random ids and their `Set-Cookie`, for `missing: mint`.
//! - [`jwt`]: compact JWS tokens (HS256, RS256, ES256): signature, `exp`,
//!   `nbf`, `iss`, `aud`, and the claim routed by.
//! - [`jwks`]: the RS256/ES256 public keys, from a JWKS file read at start.
//! - [`rejection`]: why a credential was refused: the 401 message and the
//!   `roost_proxy_identity_rejections_total` metric.

pub mod jwks;
pub mod jwt;
pub mod mint;
pub mod rejection;
pub mod secret;
pub mod signed_cookie;

pub use jwks::{Jwks, JwksError, PublicKey};
pub use jwt::{Algorithm, JwtVerifier};
pub use mint::Minted;
pub use rejection::{Credential, Invalid, Rejection};
pub use secret::{Secret, SecretError};
pub use signed_cookie::{CookieSigner, SignedCookie};

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (0 if the clock is before 1970, which expires
/// nothing and makes nothing valid early).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Whether a verified id may be used as a routing key: non-empty and free
/// of control characters, since the key is forwarded in `x-roost-key`.
pub fn is_routable(id: &str) -> bool {
    !id.is_empty() && !id.contains(char::is_control)
}
