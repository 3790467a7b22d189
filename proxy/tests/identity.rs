//! Verified identity through the real proxy and real workers: signed
//! cookies, JWTs (HS256, RS256, ES256, keys from a JWKS file written here)
//! and `missing: mint`.
//!
//! Every refused credential must get 401 `invalid_identity` and never reach
//! a worker, even with a plain `x-user-id` header beside it (the workers'
//! own request metrics are the witness); every valid one must route by its
//! id, to the worker `/admin/route` names.

mod support;

use std::sync::LazyLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::elliptic_curve::Generate;
use roost_proxy::config::Loaded;
use roost_proxy::identity::Secret;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use support::{
    cookie_signer, eventually, free_port, https_client, metric_value, now_s as now, self_signed,
    FleetConfig, Missing, Served, Source, TempDir, TestFleet, COOKIE_SECRET, COOKIE_SECRET_ENV,
};

const ISSUER: &str = "https://id.roost.test";
const AUDIENCE: &str = "roost";
const JWT_SECRET: &str = "the HS256 secret shared with the app, 48 bytes.";
const JWT_SECRET_ENV: &str = "ROOST_TEST_JWT_SECRET";
/// The plain header every refused request also carries: it must not win.
const PLAIN: (&str, &str) = ("x-user-id", "mallory");

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------
// Keys and tokens
// ---------------------------------------------------------------------------

/// The issuer's keys, generated once per test binary (an RSA key takes a
/// second or so in a debug build).
struct Keys {
    rsa: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    /// The RSA modulus, big-endian: what a confused verifier would use as
    /// an HMAC secret.
    rsa_modulus: Vec<u8>,
    ec: p256::ecdsa::SigningKey,
    /// A P-256 key the JWKS does not hold: a forger's.
    ec_forger: p256::ecdsa::SigningKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let rsa = rsa::PrivateKey::generate();
    let rsa_modulus = rsa.n().to_be_bytes().to_vec();
    Keys {
        rsa: rsa::pkcs1v15::SigningKey::new(rsa),
        rsa_modulus,
        ec: p256::ecdsa::SigningKey::generate(),
        ec_forger: p256::ecdsa::SigningKey::generate(),
    }
});

/// A big-endian integer without its leading zero bytes (JWK's form).
fn minimal(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The JWKS document of [`KEYS`]: `rsa-1` and `ec-1`, plus keys the proxy
/// must skip.
fn jwks() -> String {
    let keys = &*KEYS;
    let public = keys.rsa.as_ref().to_public_key();
    let point = keys.ec.verifying_key().to_sec1_point(false);
    let (x, y) = point.as_bytes()[1..].split_at(32);
    json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
         "n": b64(minimal(&public.n().to_be_bytes())), "e": b64(minimal(&public.e().to_be_bytes()))},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(x), "y": b64(y)},
        {"kty": "oct", "kid": "skipped-symmetric", "k": b64(b"not for us")},
        {"kty": "RSA", "kid": "skipped-encryption", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]})
    .to_string()
}

/// How a test token is signed.
#[derive(Clone, Copy)]
enum Signing<'k> {
    Hs256(&'k [u8]),
    Rs256,
    Es256(&'k p256::ecdsa::SigningKey),
    /// `alg: none`, empty signature.
    Unsigned,
}

impl Signing<'_> {
    fn sign(self, message: &[u8]) -> Vec<u8> {
        match self {
            Signing::Hs256(secret) => Secret::new(secret, "test").expect("32+ bytes").tag(message),
            Signing::Rs256 => KEYS.rsa.sign(message).to_vec(),
            Signing::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            Signing::Unsigned => Vec::new(),
        }
    }
}

/// A compact JWS of `header` and `claims`.
fn jws(header: &Value, claims: &Value, signing: Signing) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{signed}.{}", b64(&signing.sign(signed.as_bytes())))
}

/// A token with valid claims for `mallory` under `header`.
fn mallory(header: Value, signing: Signing) -> String {
    jws(&header, &claims("mallory", &json!({})), signing)
}

/// Valid claims for `sub`, with `changes` applied (`null` removes one).
fn claims(sub: &str, changes: &Value) -> Value {
    let mut claims =
        json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600});
    let object = claims.as_object_mut().expect("an object");
    for (name, value) in changes.as_object().expect("an object of changes") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

fn hs256(sub: &str, changes: Value) -> String {
    jws(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(sub, &changes),
        Signing::Hs256(JWT_SECRET.as_bytes()),
    )
}

fn rs256(sub: &str, changes: Value) -> String {
    jws(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims(sub, &changes),
        Signing::Rs256,
    )
}

fn es256(sub: &str, changes: Value) -> String {
    jws(
        &json!({"alg": "ES256", "kid": "ec-1"}),
        &claims(sub, &changes),
        Signing::Es256(&KEYS.ec),
    )
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn cookie(name: &str, value: &str) -> (&'static str, String) {
    ("cookie", format!("theme=dark; {name}={value}"))
}

// ---------------------------------------------------------------------------
// Fleets
// ---------------------------------------------------------------------------

/// Three workers behind a proxy whose sources are, in order: a JWT from
/// `Authorization` (HS256, RS256, ES256), a JWT from cookie `idt` (RS256
/// only), signed cookie `sid`, and the plain `x-user-id` header.
async fn identity_fleet(dir: &TempDir) -> TestFleet {
    let jwks = dir.write("jwks.json", &jwks());
    let jwks = Value::from(jwks.display().to_string());
    let claims = format!("issuer: {ISSUER:?}, audience: {AUDIENCE}");
    let sources = vec![
        Source::Raw(format!(
            "{{jwt: {{header: authorization, algorithms: [HS256, RS256, ES256], \
             secret_env: {JWT_SECRET_ENV}, jwks: {jwks}, {claims}}}}}"
        )),
        Source::Raw(format!(
            "{{jwt: {{cookie: idt, claim: sub, algorithms: [RS256], jwks: {jwks}, {claims}, leeway_s: 30}}}}"
        )),
        support::signed_cookie_source("sid"),
        Source::Header(PLAIN.0.into()),
    ];
    let config = FleetConfig::new(3)
        .sources(sources)
        .proxy_env(JWT_SECRET_ENV, JWT_SECRET)
        .proxy_env(COOKIE_SECRET_ENV, COOKIE_SECRET);
    TestFleet::start(config).await
}

/// `GET /v1/whoami` with these headers.
async fn whoami(fleet: &TestFleet, headers: &[(&str, String)]) -> Served {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    fleet.get("/v1/whoami", &headers).await
}

/// Assert the request went through and was routed by `id`: the worker saw
/// `id` as the key and is the one `/admin/route` names for it.
async fn assert_routed_by(fleet: &TestFleet, served: &Served, id: &str, context: &str) {
    assert_eq!(served.status, 200, "{context}: {}", served.body);
    assert_eq!(served.json()["key"], id, "{context}: the worker's key");
    let owner = fleet.route(id).await.owner;
    assert_eq!(served.worker, owner, "{context}: routed to the key's owner");
}

// ---------------------------------------------------------------------------
// Refused credentials
// ---------------------------------------------------------------------------

/// A credential the proxy must refuse, with the `source` and `reason`
/// labels of `roost_proxy_identity_rejections_total` it must count it under.
struct Refused {
    what: &'static str,
    credential: (&'static str, String),
    source: &'static str,
    reason: &'static str,
}

impl Refused {
    /// Send it (with a plain `x-user-id` beside it, which must not win) and
    /// check the 401: `invalid_identity`, a message naming the source kind
    /// and the reason, never the credential or a secret.
    async fn assert_refused(&self, fleet: &TestFleet) {
        let what = self.what;
        let served = whoami(fleet, &[self.credential.clone(), (PLAIN.0, PLAIN.1.into())]).await;
        assert_eq!(served.status, 401, "{what}: {}", served.body);
        assert_eq!(served.worker, None, "{what}: no worker answered");
        let body = served.json();
        assert_eq!(body["error"], "invalid_identity", "{what}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        let kind = self.source.replace('_', " ");
        let reason = self.reason.replace('_', " ");
        assert!(
            message.starts_with(&format!("{kind}: {reason}")),
            "{what}: {message:?} names the source and the reason"
        );
        assert!(
            !message.contains(&self.credential.1) && !message.contains(COOKIE_SECRET),
            "{what}: the message never echoes the credential or a secret"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_malformed_identities_get_401_and_reach_no_worker() {
    let dir = TempDir::new("identity");
    let fleet = identity_fleet(&dir).await;
    let (past, future) = (json!(now() - 3600), json!(now() + 3600));
    let signed = cookie_signer(COOKIE_SECRET).sign("carol", now() + 600);
    let (carol, rest) = signed.split_once('.').expect("id.expiry.signature");
    let (expiry, signature) = rest.split_once('.').expect("id.expiry.signature");
    let confused_hs256 = mallory(
        json!({"alg": "HS256", "kid": "rsa-1"}),
        Signing::Hs256(&KEYS.rsa_modulus),
    );
    let valid_rs256 = rs256("alice", json!({}));
    let (rs_header, rs_rest) = valid_rs256.split_once('.').expect("a JWS");
    let (_, rs_signature) = rs_rest.split_once('.').expect("a JWS");
    let mallory_claims = b64(claims("mallory", &json!({})).to_string().as_bytes());
    let unsigned = |sub| {
        jws(
            &json!({"alg": "none"}),
            &claims(sub, &json!({})),
            Signing::Unsigned,
        )
    };

    let sid = |what, value: String, reason| Refused {
        what,
        credential: cookie("sid", &value),
        source: "signed_cookie",
        reason,
    };
    let jwt = |what, credential, reason| Refused {
        what,
        credential,
        source: "jwt",
        reason,
    };
    let signer = cookie_signer(COOKIE_SECRET);
    let cases = [
        // signed cookie
        sid(
            "cookie: another secret",
            cookie_signer(JWT_SECRET).sign("carol", now() + 600),
            "bad_signature",
        ),
        sid(
            "cookie: tampered id",
            format!("mallory.{expiry}.{signature}"),
            "bad_signature",
        ),
        sid(
            "cookie: tampered expiry",
            format!("{carol}.{}.{signature}", now() + 999_999),
            "bad_signature",
        ),
        sid(
            "cookie: tampered signature",
            format!("{carol}.{expiry}.{}", b64(&[7; 32])),
            "bad_signature",
        ),
        sid(
            "cookie: expired",
            signer.sign("carol", now() - 1),
            "expired",
        ),
        sid("cookie: malformed", "carol".into(), "malformed"),
        // HS256
        jwt(
            "hs256: another secret",
            bearer(&mallory(
                json!({"alg": "HS256"}),
                Signing::Hs256(COOKIE_SECRET.as_bytes()),
            )),
            "bad_signature",
        ),
        jwt(
            "hs256: expired",
            bearer(&hs256("alice", json!({"exp": past}))),
            "expired",
        ),
        jwt(
            "hs256: not yet valid",
            bearer(&hs256("alice", json!({"nbf": future}))),
            "not_yet_valid",
        ),
        jwt(
            "hs256: wrong issuer",
            bearer(&hs256("alice", json!({"iss": "https://evil.test"}))),
            "wrong_issuer",
        ),
        jwt(
            "hs256: wrong audience",
            bearer(&hs256("alice", json!({"aud": "another-app"}))),
            "wrong_audience",
        ),
        jwt(
            "hs256: no exp",
            bearer(&hs256("alice", json!({"exp": null}))),
            "malformed",
        ),
        jwt(
            "hs256: numeric sub",
            bearer(&hs256("alice", json!({"sub": 42}))),
            "bad_claim",
        ),
        jwt("jwt: malformed", bearer("not-a-jwt"), "malformed"),
        jwt(
            "jwt: alg none",
            bearer(&unsigned("mallory")),
            "wrong_algorithm",
        ),
        jwt(
            "hs256 signed with the RSA key",
            bearer(&confused_hs256),
            "bad_signature",
        ),
        // RS256
        jwt(
            "rs256: tampered claims",
            bearer(&format!("{rs_header}.{mallory_claims}.{rs_signature}")),
            "bad_signature",
        ),
        jwt(
            "rs256: expired",
            bearer(&rs256("alice", json!({"exp": past}))),
            "expired",
        ),
        jwt(
            "rs256: wrong audience",
            bearer(&rs256("alice", json!({"aud": ["a", "b"]}))),
            "wrong_audience",
        ),
        jwt(
            "rs256: unknown kid",
            bearer(&mallory(
                json!({"alg": "RS256", "kid": "rsa-2"}),
                Signing::Rs256,
            )),
            "unknown_key",
        ),
        jwt(
            "rs256: skipped kid",
            bearer(&mallory(
                json!({"alg": "RS256", "kid": "skipped-encryption"}),
                Signing::Rs256,
            )),
            "unknown_key",
        ),
        // ES256
        jwt(
            "es256: forger's key",
            bearer(&mallory(
                json!({"alg": "ES256", "kid": "ec-1"}),
                Signing::Es256(&KEYS.ec_forger),
            )),
            "bad_signature",
        ),
        jwt(
            "es256: expired",
            bearer(&es256("alice", json!({"exp": past}))),
            "expired",
        ),
        jwt(
            "es256: not yet valid",
            bearer(&es256("alice", json!({"nbf": future}))),
            "not_yet_valid",
        ),
        jwt(
            "es256: no issuer",
            bearer(&es256("alice", json!({"iss": null}))),
            "wrong_issuer",
        ),
        jwt(
            "es256 under the RSA kid",
            bearer(&mallory(
                json!({"alg": "ES256", "kid": "rsa-1"}),
                Signing::Es256(&KEYS.ec),
            )),
            "wrong_algorithm",
        ),
        // the RS256-only cookie source
        jwt(
            "rs256-only: hs256 token",
            cookie("idt", &hs256("alice", json!({}))),
            "wrong_algorithm",
        ),
        jwt(
            "rs256-only: hs256 with the RSA key",
            cookie("idt", &confused_hs256),
            "wrong_algorithm",
        ),
        jwt(
            "rs256-only: es256 token",
            cookie("idt", &es256("alice", json!({}))),
            "wrong_algorithm",
        ),
        jwt(
            "rs256-only: alg none",
            cookie("idt", &unsigned("alice")),
            "wrong_algorithm",
        ),
        jwt("rs256-only: malformed", cookie("idt", "a.b.c"), "malformed"),
    ];

    let mut expected_counts = std::collections::BTreeMap::new();
    for case in &cases {
        case.assert_refused(&fleet).await;
        *expected_counts
            .entry((case.source, case.reason))
            .or_insert(0.0) += 1.0;
    }

    assert_eq!(
        fleet.worker_requests("whoami").await,
        0,
        "no worker saw any refused request"
    );
    let metrics = fleet.metrics().await;
    for ((source, reason), count) in &expected_counts {
        let labels = [("source", *source), ("reason", *reason)];
        assert_eq!(
            metric_value(&metrics, "roost_proxy_identity_rejections_total", &labels),
            Some(*count),
            "rejections{{source={source}, reason={reason}}}"
        );
    }

    // The witness works: the plain header alone gets through and is counted.
    let served = whoami(&fleet, &[(PLAIN.0, PLAIN.1.into())]).await;
    assert_routed_by(&fleet, &served, "mallory", "the plain header alone").await;
    eventually(
        Duration::from_secs(5),
        "the worker to count the request",
        || async { (fleet.worker_requests("whoami").await == 1).then_some(()) },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Valid credentials
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn valid_credentials_route_by_their_verified_id() {
    let dir = TempDir::new("identity");
    let fleet = identity_fleet(&dir).await;
    let signed = cookie_signer(COOKIE_SECRET).sign("signed-user-7", now() + 600);
    let cases = [
        ("hs256", bearer(&hs256("hs-user-1", json!({}))), "hs-user-1"),
        ("rs256", bearer(&rs256("rs-user-2", json!({}))), "rs-user-2"),
        (
            "es256",
            bearer(&es256("es-user-3", json!({"aud": ["x", AUDIENCE]}))),
            "es-user-3",
        ),
        (
            "rs256 in the idt cookie",
            cookie("idt", &rs256("rs-user-4", json!({}))),
            "rs-user-4",
        ),
        ("signed cookie", cookie("sid", &signed), "signed-user-7"),
    ];
    for (what, credential, id) in &cases {
        // The plain header is last in the list: the verified id wins.
        let served = whoami(&fleet, &[credential.clone(), (PLAIN.0, PLAIN.1.into())]).await;
        assert_routed_by(&fleet, &served, id, what).await;
        let again = whoami(&fleet, std::slice::from_ref(credential)).await;
        assert_eq!(again.worker, served.worker, "{what}: sticky");
    }
    // Sources are tried in order: the Authorization JWT before the cookies.
    let both = [
        bearer(&es256("es-user-3", json!({}))),
        cookie("sid", &signed),
    ];
    let served = whoami(&fleet, &both).await;
    assert_routed_by(&fleet, &served, "es-user-3", "a JWT and a signed cookie").await;
}

// ---------------------------------------------------------------------------
// missing: mint
// ---------------------------------------------------------------------------

/// The `Set-Cookie` headers of a response.
fn set_cookies(served: &Served) -> Vec<String> {
    served
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("an ASCII Set-Cookie").to_owned())
        .collect()
}

/// Three workers behind a proxy that mints `sid` cookies (ttl one hour)
/// for keyless requests.
fn mint_config() -> FleetConfig {
    let sources = vec![Source::Raw(format!(
        "{{signed_cookie: sid, secret_env: {COOKIE_SECRET_ENV}, ttl_s: 3600}}"
    ))];
    FleetConfig::new(3)
        .sources(sources)
        .missing(Missing::Mint)
        .proxy_env(COOKIE_SECRET_ENV, COOKIE_SECRET)
}

#[tokio::test(flavor = "multi_thread")]
async fn mint_gives_a_keyless_request_a_signed_id_it_keeps() {
    let fleet = TestFleet::start(mint_config()).await;

    let first = whoami(&fleet, &[]).await;
    let minted_at = now();
    let cookies = set_cookies(&first);
    let [set_cookie] = cookies.as_slice() else {
        panic!("one Set-Cookie, got {cookies:?}");
    };
    let (pair, attributes) = set_cookie.split_once("; ").expect("attributes follow");
    assert_eq!(
        attributes, "Path=/; Max-Age=3540; HttpOnly; SameSite=Lax",
        "no Secure over plain HTTP"
    );
    let value = pair.strip_prefix("sid=").expect("the sid cookie");
    let mut parts = value.splitn(3, '.');
    let (id, expiry) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    assert!(
        id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "a 128-bit lowercase-hex id: {id:?}"
    );
    let expiry: u64 = expiry.parse().expect("a Unix-seconds expiry");
    assert!(
        expiry.abs_diff(minted_at + 3600) <= 5,
        "expires in ttl_s: {expiry}"
    );
    assert_eq!(
        cookie_signer(COOKIE_SECRET).verify(value.as_bytes(), minted_at),
        Ok(id),
        "signed with the source's secret"
    );
    assert_routed_by(&fleet, &first, id, "the minting request").await;

    let second = whoami(&fleet, &[cookie("sid", value)]).await;
    assert_routed_by(&fleet, &second, id, "the request with the minted cookie").await;
    assert_eq!(second.worker, first.worker, "the same worker");
    assert!(set_cookies(&second).is_empty(), "nothing new to set");

    let other = whoami(&fleet, &[]).await;
    let other_cookie = set_cookies(&other).concat();
    assert!(
        other.status == 200 && !other_cookie.contains(id),
        "another keyless request gets another id: {other_cookie}"
    );

    // Only a missing credential is minted for: a forged one is refused.
    let seen = fleet.worker_requests("whoami").await;
    let forged = format!("{}.{expiry}.{}", "0".repeat(32), b64(&[1; 32]));
    let refused = whoami(&fleet, &[cookie("sid", &forged)]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_identity");
    assert!(set_cookies(&refused).is_empty(), "no cookie for a forger");
    assert_eq!(
        fleet.worker_requests("whoami").await,
        seen,
        "no worker saw it"
    );
}

// ---------------------------------------------------------------------------
// Config errors
// ---------------------------------------------------------------------------

/// A config with these `key:` lines (from line 4) and one worker.
fn config_text(key: &str) -> String {
    format!(
        "listen: 127.0.0.1:18080\nadmin_listen: 127.0.0.1:19090\nhash_seed: \"t\"\n{key}\n\
         workers:\n  - {{id: w1, addr: 127.0.0.1:19001}}\n"
    )
}

#[test]
fn identity_config_errors_name_the_file_line_and_field() {
    let dir = TempDir::new("identity-config");
    let missing_jwks = dir.path().join("missing-jwks.json");
    let cases = [
        (
            "unset-env",
            "key:\n  sources:\n    - {signed_cookie: sid, secret_env: ROOST_TEST_NEVER_SET_SECRET}".to_owned(),
            6,
            "secret_env",
            "environment variable ROOST_TEST_NEVER_SET_SECRET is not set",
        ),
        (
            "short-secret",
            "key:\n  sources:\n    - signed_cookie: sid\n      secret: \"too short\"".to_owned(),
            7,
            "secret",
            "has 9 bytes; a secret needs at least 32",
        ),
        (
            "mint-without-signed-cookie",
            "key:\n  sources: [{header: x-user-id}]\n  missing: mint".to_owned(),
            4,
            "key.missing",
            "needs a `signed_cookie` source",
        ),
        (
            "unknown-alg",
            format!("key:\n  sources:\n    - jwt:\n        header: authorization\n        algorithms: [RS256, PS256]\n        jwks: {}\n        issuer: i\n        audience: a", missing_jwks.display()),
            8,
            "algorithms",
            "unknown algorithm \"PS256\"",
        ),
        (
            "unreadable-jwks",
            format!("key:\n  sources:\n    - jwt:\n        header: authorization\n        algorithms: [ES256]\n        jwks: {}\n        issuer: i\n        audience: a", missing_jwks.display()),
            9,
            "jwks",
            "cannot read",
        ),
    ];
    for (name, key, line, field, why) in cases {
        let path = dir.write(&format!("{name}.yaml"), &config_text(&key));
        let error = Loaded::load(&path).err().expect(name);
        assert_eq!(error.path, path, "{name}: {error}");
        assert_eq!(
            (error.line, error.field.as_str()),
            (line, field),
            "{name}: {error}"
        );
        assert!(error.message.contains(why), "{name}: {error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:{line}:", path.display())),
            "{name}: FILE:LINE leads: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_minted_over_tls_is_secure() {
    let certs = TempDir::new("identity-tls");
    let (cert, key, cert_pem) = self_signed(&certs, "proxy");
    let tls_addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = mint_config();
    config.extra_yaml = format!(
        "tls: {{listen: {tls_addr}, cert: {:?}, key: {:?}}}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let fleet = TestFleet::start(config).await;

    let url = format!("https://localhost:{}/v1/whoami", tls_addr.port());
    let response = https_client(&cert_pem, tls_addr)
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    let served = Served::from_response(response).await;
    let cookies = set_cookies(&served);
    let [set_cookie] = cookies.as_slice() else {
        panic!("one Set-Cookie over TLS, got {cookies:?}");
    };
    assert!(
        set_cookie.ends_with("; Path=/; Max-Age=3540; HttpOnly; SameSite=Lax; Secure"),
        "Secure over TLS: {set_cookie}"
    );
    let id = set_cookie
        .strip_prefix("sid=")
        .and_then(|value| value.split('.').next())
        .expect("sid=id.expiry.signature");
    assert_routed_by(&fleet, &served, id, "minted over TLS").await;

    let plain = whoami(&fleet, &[]).await;
    let plain_cookie = set_cookies(&plain).concat();
    assert!(
        plain_cookie.ends_with("SameSite=Lax"),
        "no Secure on the plain listener: {plain_cookie}"
    );
}
