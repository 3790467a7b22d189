//! Entry points of the fuzz targets (`proxy/fuzz/`) and of their regression
//! tests (`proxy/tests/fuzz_regressions.rs`): each takes any bytes and must
//! return, whatever they are — no panic, no hang. They call exactly what
//! the proxy runs on client input, so a crash found here is a crash a
//! client could cause.
//!
//! The verifiers use a fixed secret and the public keys in `jwks.json`
//! (test keys made for fuzzing; their private halves signed the seeds in
//! `proxy/fuzz/seeds/` and were then thrown away).

use std::path::Path;
use std::sync::{Arc, LazyLock};

use pingora::http::RequestHeader;
use roost_routing::config_file;

use crate::config::ProxyConfig;
use crate::identity::{Algorithm, CookieSigner, Jwks, JwtVerifier, Secret, SignedCookie};
use crate::key::{self, KeyExtractor, KeySource, PathTemplate, TokenAt};

/// The HMAC secret of the fuzzed verifiers (and of the seeds).
pub const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-0123456789";

/// A time inside every seed's validity (2026-11-27).
const NOW: u64 = 1_795_737_600;

/// The JWT verifier: HS256 with [`SECRET`], RS256 and ES256 with the keys of
/// `jwks.json`.
static JWT: LazyLock<Option<Arc<JwtVerifier>>> = LazyLock::new(|| {
    Some(Arc::new(JwtVerifier {
        algorithms: vec![Algorithm::Hs256, Algorithm::Rs256, Algorithm::Es256],
        secret: Some(Secret::new(SECRET, "the fuzzing secret").ok()?),
        jwks: Jwks::parse(include_bytes!("jwks.json")).ok()?,
        issuer: "https://id.example".into(),
        audience: "roost".into(),
        claim: "sub".into(),
        leeway_s: 30,
    }))
});

static COOKIE: LazyLock<Option<Arc<SignedCookie>>> = LazyLock::new(|| {
    Some(Arc::new(SignedCookie {
        name: "sid".into(),
        signer: CookieSigner::new(Secret::new(SECRET, "the fuzzing secret").ok()?),
        ttl_s: 3600,
    }))
});

/// Key extraction as the proxy does it: the input is a request path, then
/// header values one per line (`authorization`, `cookie`, `x-user-id`),
/// run through every kind of source; the pieces (cookie lookup, bearer
/// token, path template, percent-decoding) are also fed the raw input.
pub fn key_extraction(data: &[u8]) {
    let _ = key::find_cookie(data, "uid");
    let _ = key::bearer_token(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(template) = PathTemplate::parse(&text) {
        let _ = template.capture("/v1/inventory/show-1");
    }
    let _ = key::path_key(&text, "inventory:");
    let mut lines = text.lines();
    let path = lines.next().unwrap_or("/");
    let Ok(mut request) = RequestHeader::build("GET", path.as_bytes(), None) else {
        return;
    };
    for (name, value) in ["authorization", "cookie", "x-user-id"]
        .into_iter()
        .zip(lines)
    {
        if request.append_header(name, value).is_err() {
            return;
        }
    }
    let _ = extractor().extract(&request, NOW);
}

/// Signed-cookie verification, and signing then verifying what the input
/// names.
pub fn signed_cookie(data: &[u8]) {
    let Some(cookie) = COOKIE.as_ref() else {
        return;
    };
    let _ = cookie.signer.verify(data, NOW);
    if let Ok(id) = std::str::from_utf8(data) {
        let signed = cookie.signer.sign(id, NOW + 60);
        let _ = cookie.signer.verify(signed.as_bytes(), NOW);
    }
}

/// JWT verification (HS256, RS256, ES256), and the JWKS parser.
pub fn jwt(data: &[u8]) {
    let _ = Jwks::parse(data);
    if let Some(verifier) = JWT.as_ref() {
        let _ = verifier.verify_bytes(data, NOW);
    }
}

/// The proxy's config file parser and validation on any text.
pub fn proxy_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config_file::parse::<ProxyConfig>(Path::new("fuzz.yaml"), text);
    }
}

/// Every kind of source, verified ones first, as a real config lists them.
fn extractor() -> KeyExtractor {
    let mut sources = Vec::new();
    if let Some(verifier) = JWT.as_ref() {
        sources.push(KeySource::Jwt {
            from: TokenAt::Bearer("authorization".into()),
            verifier: Arc::clone(verifier),
        });
    }
    if let Some(cookie) = COOKIE.as_ref() {
        sources.push(KeySource::SignedCookie(Arc::clone(cookie)));
    }
    if let Ok(template) = PathTemplate::parse("/v1/inventory/{key}") {
        sources.push(KeySource::Path {
            template,
            prefix: "inventory:".into(),
        });
    }
    sources.push(KeySource::Header("x-user-id".into()));
    sources.push(KeySource::Cookie("uid".into()));
    KeyExtractor::new(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds signed with the fuzzing keys pass, so the fuzzer starts
    /// from tokens that reach every check (not only the parsers).
    #[test]
    fn the_signed_seeds_verify() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let verifier = JWT.as_ref().expect("the fuzzing verifier builds");
        for alg in ["hs256", "rs256", "es256"] {
            let token = std::fs::read(seeds.join("jwt").join(alg)).expect("read the seed");
            assert_eq!(
                verifier.verify_bytes(&token, NOW).as_deref(),
                Ok("alice"),
                "{alg}"
            );
        }
        let none = std::fs::read(seeds.join("jwt/none")).expect("read the seed");
        assert!(verifier.verify_bytes(&none, NOW).is_err());
        let cookie = COOKIE.as_ref().expect("the fuzzing signer builds");
        let valid = std::fs::read(seeds.join("signed_cookie/valid")).expect("read the seed");
        assert_eq!(cookie.signer.verify(&valid, NOW), Ok("alice"));
    }
}
