//! JWTs: a claim of a token signed by an identity provider (or by an
//! application sharing an HS256 secret) as the routing key.
//!
//! Compact JWS only (`header.claims.signature`, base64url without padding).
//! The checks, in order, each one a reason the token is refused:
//!
//! 1. the header's `alg` is one this source accepts: never `none`, and an
//!    HS256 token is refused by a source that accepts only RS256/ES256, so a
//!    public key can never be (mis)used as an HMAC secret;
//! 2. the signature, with the HS256 secret or with the JWKS key the header's
//!    `kid` names, which must be a key for that same `alg`;
//! 3. `exp` (required), `nbf` (when present), both with `leeway_s`;
//! 4. `iss` and `aud` (a string, or an array holding ours);
//! 5. the claim routed by: a non-empty string free of control characters.
//!
//! Nothing is trusted before its signature checks out, and the claims are
//! only read from the signed bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::identity::{is_routable, Invalid, Jwks, Secret};

/// The `alg` values a source may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys from the JWKS.
    Rs256,
    /// ECDSA on P-256 with SHA-256, keys from the JWKS.
    Es256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::Rs256, Algorithm::Es256];

    /// The JWS name (`HS256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }

    /// The algorithm named exactly `name` (JWS names are case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Algorithm::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

/// Verifies tokens for one `{jwt: ...}` source.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    /// The `alg` values accepted; any other is refused before the signature
    /// is looked at.
    pub algorithms: Vec<Algorithm>,
    /// The HS256 secret (required when HS256 is accepted).
    pub secret: Option<Secret>,
    /// The RS256/ES256 keys.
    pub jwks: Jwks,
    /// The required `iss`.
    pub issuer: String,
    /// The audience `aud` must name.
    pub audience: String,
    /// The claim routed by.
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

/// The JOSE header fields we read.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the issuer requires us to understand: we understand none.
    crit: Option<IgnoredAny>,
}

impl JwtVerifier {
    /// The routing key `token` carries, if it passes every check at `now`
    /// (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<String, Invalid> {
        let not_jws = Invalid::Malformed("not a compact JWS (header.claims.signature)");
        let (signed, signature) = token.rsplit_once('.').ok_or(not_jws.clone())?;
        let (header, claims) = signed.split_once('.').ok_or(not_jws.clone())?;
        if claims.contains('.') {
            return Err(not_jws);
        }
        let header: Header = decode_json(header, "the header is not base64url JSON with an `alg`")?;
        let algorithm = self.accepted(&header.alg)?;
        if header.crit.is_some() {
            return Err(Invalid::Malformed(
                "critical header extensions are not supported",
            ));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Invalid::Malformed("the signature is not base64url"))?;
        self.check_signature(algorithm, header.kid.as_deref(), signed, &signature)?;
        let claims: Map<String, Value> =
            decode_json(claims, "the claims are not a base64url JSON object")?;
        self.check_claims(&claims, now)?;
        claims
            .get(&self.claim)
            .and_then(Value::as_str)
            .filter(|key| is_routable(key))
            .map(str::to_owned)
            .ok_or_else(|| Invalid::BadClaim(self.claim.clone()))
    }

    /// [`verify`](Self::verify) for a token as it came off the wire.
    pub fn verify_bytes(&self, token: &[u8], now: u64) -> Result<String, Invalid> {
        let token =
            std::str::from_utf8(token).map_err(|_| Invalid::Malformed("the token is not UTF-8"))?;
        self.verify(token, now)
    }

    /// The token's `alg`, if this source accepts it.
    fn accepted(&self, alg: &str) -> Result<Algorithm, Invalid> {
        match Algorithm::from_name(alg) {
            Some(algorithm) if self.algorithms.contains(&algorithm) => Ok(algorithm),
            Some(_) => Err(Invalid::WrongAlgorithm("not one this source accepts")),
            None if alg.eq_ignore_ascii_case("none") => Err(Invalid::WrongAlgorithm(
                "unsigned tokens (`none`) are never accepted",
            )),
            None => Err(Invalid::WrongAlgorithm("unknown algorithm")),
        }
    }

    fn check_signature(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
        signed: &str,
        signature: &[u8],
    ) -> Result<(), Invalid> {
        let valid = match algorithm {
            Algorithm::Hs256 => {
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or(Invalid::WrongAlgorithm("no HS256 secret is configured"))?;
                secret.verify(signed.as_bytes(), signature)
            }
            Algorithm::Rs256 | Algorithm::Es256 => {
                let key = kid
                    .and_then(|kid| self.jwks.get(kid))
                    .ok_or(Invalid::UnknownKey)?;
                if key.algorithm() != algorithm {
                    return Err(Invalid::WrongAlgorithm(
                        "the `kid` names a key for another algorithm",
                    ));
                }
                key.verify(signed.as_bytes(), signature)
            }
        };
        if valid {
            Ok(())
        } else {
            Err(Invalid::BadSignature)
        }
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<(), Invalid> {
        let exp = claims
            .get("exp")
            .ok_or(Invalid::Malformed("no `exp` claim"))?;
        let exp = numeric_date(exp).ok_or(Invalid::Malformed("`exp` is not a number"))?;
        if exp.saturating_add(self.leeway_s) <= now {
            return Err(Invalid::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(Invalid::Malformed("`nbf` is not a number"))?;
            if nbf > now.saturating_add(self.leeway_s) {
                return Err(Invalid::NotYetValid);
            }
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Invalid::WrongIssuer);
        }
        let audience = self.audience.as_str();
        let ours = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !ours {
            return Err(Invalid::WrongAudience);
        }
        Ok(())
    }
}

/// A base64url JSON part of the token, or `Malformed(why)`.
fn decode_json<T: DeserializeOwned>(part: &str, why: &'static str) -> Result<T, Invalid> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(Invalid::Malformed(why))
}

/// A NumericDate (RFC 7519: seconds, possibly fractional) as whole seconds.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            // Saturates at u64::MAX; the fraction is dropped.
            .map(|seconds| seconds as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"the HS256 secret, 32 bytes or more";
    const ISSUER: &str = "https://issuer.test";

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A compact JWS of `header` and `claims`, signed by `sign`.
    fn token(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = b64(&sign(signed.as_bytes()));
        format!("{signed}.{signature}")
    }

    fn secret() -> Secret {
        Secret::new(SECRET, "the secret").expect("long enough")
    }

    fn hs256(claims: &Value) -> String {
        token(&json!({"alg": "HS256", "typ": "JWT"}), claims, |m| {
            secret().tag(m)
        })
    }

    /// Valid claims for alice, with `changes` applied (`null` removes).
    fn claims(changes: Value) -> Value {
        let mut claims = json!({"sub": "alice", "iss": ISSUER, "aud": "roost", "exp": NOW + 60});
        for (name, value) in changes.as_object().expect("an object of changes") {
            match value {
                Value::Null => claims.as_object_mut().expect("object").remove(name),
                value => claims
                    .as_object_mut()
                    .expect("object")
                    .insert(name.clone(), value.clone()),
            };
        }
        claims
    }

    fn verifier(algorithms: &[Algorithm], jwks: Jwks) -> JwtVerifier {
        JwtVerifier {
            algorithms: algorithms.to_vec(),
            secret: algorithms.contains(&Algorithm::Hs256).then(secret),
            jwks,
            issuer: ISSUER.into(),
            audience: "roost".into(),
            claim: "sub".into(),
            leeway_s: 30,
        }
    }

    fn hs_only() -> JwtVerifier {
        verifier(&[Algorithm::Hs256], Jwks::default())
    }

    /// A P-256 key and a JWKS holding its public half as `kid`.
    fn ec_key(kid: &str) -> (p256::ecdsa::SigningKey, Jwks) {
        use p256::elliptic_curve::Generate;
        let key = p256::ecdsa::SigningKey::generate();
        let point = key.verifying_key().to_sec1_point(false);
        let xy = point.as_bytes().get(1..).expect("an uncompressed point");
        let (x, y) = xy.split_at(32);
        let jwks =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(x), "y": b64(y)}]});
        let jwks = Jwks::parse(jwks.to_string().as_bytes()).expect("a valid JWKS");
        (key, jwks)
    }

    fn es256(key: &p256::ecdsa::SigningKey, header: &Value, claims: &Value) -> String {
        token(header, claims, |m| {
            let signature: p256::ecdsa::Signature = key.sign(m);
            signature.to_bytes().to_vec()
        })
    }

    fn assert_refused(verifier: &JwtVerifier, token: &str, expected: &Invalid) {
        assert_eq!(
            verifier.verify(token, NOW).as_ref(),
            Err(expected),
            "{token}"
        );
    }

    #[test]
    fn a_valid_hs256_token_gives_its_claim() {
        assert_eq!(
            hs_only().verify(&hs256(&claims(json!({}))), NOW),
            Ok("alice".into())
        );
        let many =
            claims(json!({"aud": ["other", "roost"], "exp": (NOW + 60) as f64 + 0.5, "nbf": NOW}));
        assert_eq!(hs_only().verify(&hs256(&many), NOW), Ok("alice".into()));
        let mut by_email = hs_only();
        by_email.claim = "email".into();
        let token = hs256(&claims(json!({"email": "alice@example.com"})));
        assert_eq!(by_email.verify(&token, NOW), Ok("alice@example.com".into()));
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let v = hs_only();
        let ok = |changes| assert!(v.verify(&hs256(&claims(changes)), NOW).is_ok());
        ok(json!({"exp": NOW - 29}));
        ok(json!({"nbf": NOW + 30}));
        for (changes, expected) in [
            (json!({"exp": NOW - 30}), Invalid::Expired),
            (json!({"exp": 0}), Invalid::Expired),
            (json!({"nbf": NOW + 31}), Invalid::NotYetValid),
            (json!({"exp": null}), Invalid::Malformed("no `exp` claim")),
            (
                json!({"exp": "soon"}),
                Invalid::Malformed("`exp` is not a number"),
            ),
            (
                json!({"exp": -5}),
                Invalid::Malformed("`exp` is not a number"),
            ),
            (
                json!({"nbf": "now"}),
                Invalid::Malformed("`nbf` is not a number"),
            ),
        ] {
            assert_refused(&v, &hs256(&claims(changes)), &expected);
        }
        assert!(v
            .verify(&hs256(&claims(json!({"exp": u64::MAX}))), NOW)
            .is_ok());
    }

    #[test]
    fn issuer_and_audience_must_be_ours() {
        for (changes, expected) in [
            (json!({"iss": "https://evil.test"}), Invalid::WrongIssuer),
            (json!({"iss": null}), Invalid::WrongIssuer),
            (json!({"iss": 7}), Invalid::WrongIssuer),
            (json!({"iss": [ISSUER]}), Invalid::WrongIssuer),
            (json!({"aud": "another-service"}), Invalid::WrongAudience),
            (json!({"aud": null}), Invalid::WrongAudience),
            (json!({"aud": ["a", "b"]}), Invalid::WrongAudience),
            (json!({"aud": {"roost": true}}), Invalid::WrongAudience),
        ] {
            assert_refused(&hs_only(), &hs256(&claims(changes)), &expected);
        }
    }

    #[test]
    fn the_routed_claim_must_be_a_usable_string() {
        let expected = Invalid::BadClaim("sub".into());
        for changes in [
            json!({"sub": null}),
            json!({"sub": 42}),
            json!({"sub": ""}),
            json!({"sub": "ali\nce"}),
            json!({"sub": ["alice"]}),
        ] {
            assert_refused(&hs_only(), &hs256(&claims(changes)), &expected);
        }
    }

    #[test]
    fn forged_and_tampered_tokens_are_refused() {
        let valid = hs256(&claims(json!({})));
        let (signed, signature) = valid.rsplit_once('.').expect("three parts");
        let (header, _) = signed.split_once('.').expect("three parts");
        let mallory = b64(claims(json!({"sub": "mallory"})).to_string().as_bytes());
        let other = Secret::new(b"not the secret, but just as long!!", "x").expect("long enough");
        let forged = token(&json!({"alg": "HS256"}), &claims(json!({})), |m| {
            other.tag(m)
        });
        for token in [
            format!("{header}.{mallory}.{signature}"),
            format!("{signed}.{}", b64(&[0; 32])),
            format!("{signed}."),
            forged,
        ] {
            assert_refused(&hs_only(), &token, &Invalid::BadSignature);
        }
    }

    #[test]
    fn algorithms_are_allow_listed_and_none_is_never_accepted() {
        let body = claims(json!({}));
        let unsigned = |alg: &str| token(&json!({"alg": alg}), &body, |_| Vec::new());
        let none = Invalid::WrongAlgorithm("unsigned tokens (`none`) are never accepted");
        assert_refused(&hs_only(), &unsigned("none"), &none);
        assert_refused(&hs_only(), &unsigned("NONE"), &none);
        assert_refused(
            &hs_only(),
            &unsigned("HS512"),
            &Invalid::WrongAlgorithm("unknown algorithm"),
        );
        assert_refused(
            &hs_only(),
            &unsigned("hs256"),
            &Invalid::WrongAlgorithm("unknown algorithm"),
        );

        // An HS256 token against an ES256-only source, even one "signed"
        // with the public key's bytes as the HMAC secret: refused for its
        // alg, before any key is touched.
        let (key, jwks) = ec_key("ec-1");
        let es_only = verifier(&[Algorithm::Es256], jwks);
        let public = key.verifying_key().to_sec1_point(false);
        let confused = token(&json!({"alg": "HS256", "kid": "ec-1"}), &body, |m| {
            Secret::new(public.as_bytes(), "x")
                .expect("65 bytes")
                .tag(m)
        });
        assert_refused(
            &es_only,
            &confused,
            &Invalid::WrongAlgorithm("not one this source accepts"),
        );
        assert_refused(
            &es_only,
            &hs256(&body),
            &Invalid::WrongAlgorithm("not one this source accepts"),
        );
    }

    #[test]
    fn es256_tokens_are_checked_with_the_key_their_kid_names() {
        let (key, jwks) = ec_key("ec-1");
        let both = verifier(&[Algorithm::Rs256, Algorithm::Es256], jwks);
        let body = claims(json!({}));
        let signed = es256(&key, &json!({"alg": "ES256", "kid": "ec-1"}), &body);
        assert_eq!(both.verify(&signed, NOW), Ok("alice".into()));

        let (other_key, _) = ec_key("ec-1");
        let forged = es256(&other_key, &json!({"alg": "ES256", "kid": "ec-1"}), &body);
        assert_refused(&both, &forged, &Invalid::BadSignature);
        let unknown = es256(&key, &json!({"alg": "ES256", "kid": "ec-2"}), &body);
        assert_refused(&both, &unknown, &Invalid::UnknownKey);
        let no_kid = es256(&key, &json!({"alg": "ES256"}), &body);
        assert_refused(&both, &no_kid, &Invalid::UnknownKey);
        let as_rsa = es256(&key, &json!({"alg": "RS256", "kid": "ec-1"}), &body);
        assert_refused(
            &both,
            &as_rsa,
            &Invalid::WrongAlgorithm("the `kid` names a key for another algorithm"),
        );
    }

    /// Every prefix of a valid token, and the token with each byte replaced
    /// by a few others, gives an answer (mostly a refusal), never a panic.
    #[test]
    fn truncated_and_mutated_tokens_never_panic() {
        let (key, jwks) = ec_key("ec-1");
        let verifier = verifier(&[Algorithm::Hs256, Algorithm::Es256], jwks);
        let body = claims(json!({}));
        for token in [
            hs256(&body),
            es256(&key, &json!({"alg": "ES256", "kid": "ec-1"}), &body),
        ] {
            let mut accepted = 0;
            for end in 0..=token.len() {
                accepted += usize::from(verifier.verify(&token[..end], NOW).is_ok());
            }
            assert_eq!(accepted, 1, "only the whole token verifies");
            for at in 0..token.len() {
                for byte in [b'.', b'A', b'_', b'=', b' ', b'\x7f'] {
                    let mut mutated = token.clone().into_bytes();
                    mutated[at] = byte;
                    let mutated = String::from_utf8(mutated).expect("ASCII");
                    if mutated != token {
                        let _ = verifier.verify(&mutated, NOW);
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_tokens_say_which_part_is_off() {
        let valid = hs256(&claims(json!({})));
        let not_jws = Invalid::Malformed("not a compact JWS (header.claims.signature)");
        let bad_header = Invalid::Malformed("the header is not base64url JSON with an `alg`");
        let bad_claims = Invalid::Malformed("the claims are not a base64url JSON object");
        let signed_header = |header: &Value| token(header, &claims(json!({})), |m| secret().tag(m));
        let cases = [
            (String::new(), not_jws.clone()),
            ("abc".into(), not_jws.clone()),
            ("a.b".into(), not_jws.clone()),
            (format!("{valid}.x"), not_jws.clone()),
            ("!!.e30.x".into(), bad_header.clone()),
            (signed_header(&json!({"typ": "JWT"})), bad_header.clone()),
            (signed_header(&json!({"alg": 256})), bad_header.clone()),
            (signed_header(&json!(["HS256"])), bad_header.clone()),
            (
                signed_header(&json!({"alg": "HS256", "crit": ["exp"]})),
                Invalid::Malformed("critical header extensions are not supported"),
            ),
            (
                format!("{}.!!", valid.rsplit_once('.').map_or("", |(s, _)| s)),
                Invalid::Malformed("the signature is not base64url"),
            ),
            (
                token(&json!({"alg": "HS256"}), &json!(["alice"]), |m| {
                    secret().tag(m)
                }),
                bad_claims.clone(),
            ),
            (
                token(&json!({"alg": "HS256"}), &json!("alice"), |m| {
                    secret().tag(m)
                }),
                bad_claims,
            ),
        ];
        for (token, expected) in cases {
            assert_refused(&hs_only(), &token, &expected);
        }
    }
}
