//! Routing-key extraction: the configured sources, tried in order.
//!
//! The key is parsed once per request (in `request_filter`) and kept in the
//! request context; everything after that works on the extracted bytes.
//!
//! A source is a header, a cookie, a segment of the request path (a
//! [`PathTemplate`]), or a verified identity: a signed cookie or a JWT (see
//! [`crate::identity`]). Path templates are split once, at config load, so
//! matching a request allocates nothing but the key itself.
//!
//! A plain source without a value yields nothing and the next is tried; so
//! does a verified source whose credential is absent. A verified source whose
//! credential is present but fails verification stops the search with a
//! [`Rejection`]: trying the next source would let a forger choose the key.
//!
//! The parsers ([`find_cookie`], [`bearer_token`], [`path_key`],
//! [`PathTemplate`]) take plain bytes and never panic, for the fuzz targets.

use std::sync::Arc;

use http::header::COOKIE;
use percent_encoding::percent_decode_str;
use pingora::http::RequestHeader;

use crate::identity::{is_routable, JwtVerifier, Rejection, SignedCookie};

/// One place to find the routing key, parsed from a `key.sources` entry
/// (see [`crate::config::KeySourceConfig`]).
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The value of a request header, trimmed. For trusted setups only: the
    /// client chooses it.
    Header(String),
    /// The value of a cookie, unquoted. For trusted setups only.
    Cookie(String),
    /// `prefix` + the percent-decoded `{key}` segment of a path that matches
    /// `template`: shared entities (an inventory item) are routed by their
    /// own key, not by the user who happens to ask.
    Path {
        template: PathTemplate,
        prefix: String,
    },
    /// The id of a cookie the fleet signed (`id.expiry.signature`).
    SignedCookie(Arc<SignedCookie>),
    /// A claim of a JWT, verified, from a bearer header or a cookie.
    Jwt {
        from: TokenAt,
        verifier: Arc<JwtVerifier>,
    },
}

/// Verified sources hold secrets and keys, which are not compared: two are
/// equal only when they are the very same source.
impl PartialEq for KeySource {
    fn eq(&self, other: &Self) -> bool {
        use KeySource::*;
        match (self, other) {
            (Header(a), Header(b)) | (Cookie(a), Cookie(b)) => a == b,
            (
                Path {
                    template: t1,
                    prefix: p1,
                },
                Path {
                    template: t2,
                    prefix: p2,
                },
            ) => t1 == t2 && p1 == p2,
            (SignedCookie(a), SignedCookie(b)) => Arc::ptr_eq(a, b),
            (Jwt { verifier: a, .. }, Jwt { verifier: b, .. }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for KeySource {}

/// Where a JWT source finds its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAt {
    /// A header whose value is `Bearer <token>` (usually `authorization`).
    /// Another scheme (`Basic ...`) is not a token and counts as absent.
    Bearer(String),
    /// A cookie holding the bare token.
    Cookie(String),
}

impl TokenAt {
    /// The raw token, if the request carries one here.
    fn token<'r>(&self, request: &'r RequestHeader) -> Option<&'r [u8]> {
        match self {
            TokenAt::Bearer(name) => bearer_token(request.headers.get(name)?.as_bytes()),
            TokenAt::Cookie(name) => cookie_value(request, name),
        }
    }
}

/// Finds a request's routing key from the configured sources.
#[derive(Debug, Clone)]
pub struct KeyExtractor {
    sources: Vec<KeySource>,
}

impl KeyExtractor {
    pub fn new(sources: Vec<KeySource>) -> Self {
        KeyExtractor { sources }
    }

    /// The first key any source yields, in source order, checking verified
    /// credentials at `now` (Unix seconds); or why a present credential was
    /// refused.
    pub fn extract(&self, request: &RequestHeader, now: u64) -> Result<Option<Vec<u8>>, Rejection> {
        for source in &self.sources {
            if let Some(key) = source.key(request, now)? {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The signed-cookie source new ids are minted for (`missing: mint`):
    /// the first one listed.
    pub fn minter(&self) -> Option<&SignedCookie> {
        self.sources.iter().find_map(|source| match source {
            KeySource::SignedCookie(cookie) => Some(&**cookie),
            _ => None,
        })
    }
}

impl KeySource {
    /// This source's key for `request`: `None` when it has none here.
    fn key(&self, request: &RequestHeader, now: u64) -> Result<Option<Vec<u8>>, Rejection> {
        Ok(match self {
            KeySource::Header(name) => header_value(request, name).map(<[u8]>::to_vec),
            KeySource::Cookie(name) => cookie_value(request, name).map(<[u8]>::to_vec),
            KeySource::Path { template, prefix } => template.key(request.uri.path(), prefix),
            KeySource::SignedCookie(cookie) => cookie_value(request, &cookie.name)
                .map(|value| {
                    cookie
                        .signer
                        .verify(value, now)
                        .map(|id| id.as_bytes().to_vec())
                })
                .transpose()
                .map_err(Rejection::signed_cookie)?,
            KeySource::Jwt { from, verifier } => from
                .token(request)
                .map(|token| verifier.verify_bytes(token, now).map(String::into_bytes))
                .transpose()
                .map_err(Rejection::jwt)?,
        })
    }
}

/// One segment of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request's segment byte for byte (not decoded).
    Literal(Box<str>),
    /// `{key}`: any non-empty segment, captured.
    Key,
    /// `{kind}`: an entity kind's name (lower-case letters, digits, `-`,
    /// `_`; one of the template's kinds when it lists them), captured.
    Kind,
}

/// A path template such as `/v1/inventory/{key}` or `/v1/{kind}/{key}`:
/// `/`-separated segments, exactly one of them `{key}`, at most one
/// `{kind}`, the others literal.
///
/// It matches a request path whose first segments are the template's (the
/// `{key}` one being any non-empty segment); further segments may follow, so
/// `/v1/inventory/show-1/holds` is about the same entity as
/// `/v1/inventory/show-1`. With `{kind}`, one template routes every shared
/// kind of the workers' generic scheme: the key is `{kind}:{key}`, which
/// is what the workers route a shared entity by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Box<[Segment]>,
    /// The kinds `{kind}` may be (`None`: any).
    kinds: Option<Box<[Box<str>]>>,
}

impl PathTemplate {
    /// Split `template` into segments, or say why it is not one: it must
    /// start with `/`, have exactly one `{key}` segment and no other `{` or
    /// `}`, and no empty segment (`//` or a trailing `/` would only match
    /// paths nobody means).
    pub fn parse(template: &str) -> Result<Self, String> {
        let invalid = |why: &str| Err(format!("path template {template:?} {why}"));
        let Some(rest) = template.strip_prefix('/') else {
            return invalid("must start with '/'");
        };
        let segments: Box<[Segment]> = rest
            .split('/')
            .map(|segment| match segment {
                "{key}" => Segment::Key,
                "{kind}" => Segment::Kind,
                literal => Segment::Literal(literal.into()),
            })
            .collect();
        if segments.iter().filter(|s| **s == Segment::Key).count() != 1 {
            return invalid("must have exactly one `{key}` segment");
        }
        if segments.iter().filter(|s| **s == Segment::Kind).count() > 1 {
            return invalid("may have one `{kind}` segment at most");
        }
        for segment in &segments {
            let Segment::Literal(literal) = segment else {
                continue;
            };
            if literal.contains(['{', '}']) {
                return invalid("may use `{` and `}` only in its `{key}` and `{kind}` segments");
            }
            if literal.is_empty() {
                return invalid("must not have empty segments (`//` or a trailing `/`)");
            }
        }
        Ok(PathTemplate {
            segments,
            kinds: None,
        })
    }

    /// Whether the template has a `{kind}` segment.
    pub fn has_kind(&self) -> bool {
        self.segments.contains(&Segment::Kind)
    }

    /// The template matching only these kinds in its `{kind}` segment.
    pub fn only_kinds(self, kinds: &[String]) -> Result<Self, String> {
        if let Some(bad) = kinds.iter().find(|kind| !is_kind_name(kind)) {
            return Err(format!(
                "{bad:?} is not a kind name (lower-case letters, digits, '-' and '_')"
            ));
        }
        Ok(PathTemplate {
            kinds: Some(kinds.iter().map(|kind| kind.as_str().into()).collect()),
            ..self
        })
    }

    /// The raw (still percent-encoded) `{key}` segment of `path`, if `path`
    /// matches. `path` excludes the query string.
    pub fn capture<'p>(&self, path: &'p str) -> Option<&'p str> {
        self.captures(path).map(|(_, key)| key)
    }

    /// The routing key of `path`, if it matches: `prefix` + the decoded
    /// `{key}` segment ([`path_key`]), or with `{kind}`, `{kind}:` + the
    /// decoded segment.
    pub fn key(&self, path: &str, prefix: &str) -> Option<Vec<u8>> {
        let (kind, segment) = self.captures(path)?;
        match kind {
            Some(kind) => prefixed_key(&[kind, ":"], segment),
            None => path_key(segment, prefix),
        }
    }

    /// The `{kind}` (if the template has one) and `{key}` segments of
    /// `path`, if it matches.
    fn captures<'p>(&self, path: &'p str) -> Option<(Option<&'p str>, &'p str)> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let (mut kind, mut key) = (None, None);
        for expected in &self.segments {
            let segment = segments.next()?;
            match expected {
                Segment::Literal(literal) if segment == &**literal => {}
                Segment::Key if !segment.is_empty() => key = Some(segment),
                Segment::Kind if self.takes_kind(segment) => kind = Some(segment),
                _ => return None,
            }
        }
        Some((kind, key?))
    }

    fn takes_kind(&self, segment: &str) -> bool {
        is_kind_name(segment)
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|kind| **kind == *segment))
    }
}

/// What the workers accept as a kind's name: lower-case ASCII letters,
/// digits, `-` and `_`, starting with a letter.
fn is_kind_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `prefix` + the percent-decoded `segment`: exactly the bytes the worker
/// computes for the same entity, so both route it to the same owner.
///
/// `None` when the decoded segment is not UTF-8 (the worker could not name
/// the entity) or is not [routable](is_routable) (it could not be forwarded
/// in `x-roost-key`, a header value); the next source is tried instead.
pub fn path_key(segment: &str, prefix: &str) -> Option<Vec<u8>> {
    prefixed_key(&[prefix], segment)
}

/// [`path_key`] with a prefix in parts.
fn prefixed_key(prefix: &[&str], segment: &str) -> Option<Vec<u8>> {
    let prefix_len = prefix.iter().map(|part| part.len()).sum::<usize>();
    let mut key = Vec::with_capacity(prefix_len + segment.len());
    for part in prefix {
        key.extend_from_slice(part.as_bytes());
    }
    key.extend(percent_decode_str(segment));
    let decoded = std::str::from_utf8(key.get(prefix_len..)?).ok()?;
    is_routable(decoded).then_some(key)
}

/// A header's value with surrounding whitespace trimmed, if non-empty.
fn header_value<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    let value = request.headers.get(name)?.as_bytes().trim_ascii();
    (!value.is_empty()).then_some(value)
}

/// The value of cookie `name` from any `Cookie` header, if non-empty.
fn cookie_value<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    request
        .headers
        .get_all(COOKIE)
        .iter()
        .find_map(|header| find_cookie(header.as_bytes(), name))
}

/// The value of cookie `name` in one `Cookie` header value (RFC 6265 §5.4:
/// `name=value` pairs separated by `;`), trimmed and unquoted; `None` when
/// it is absent or empty. The first non-empty pair with that name wins: an
/// empty one (a cleared cookie a browser still sends) never hides a real
/// value after it.
pub fn find_cookie<'h>(header: &'h [u8], name: &str) -> Option<&'h [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (cookie, value) = pair.split_at(eq);
        let value = unquote(value.get(1..)?.trim_ascii());
        (cookie.trim_ascii() == name.as_bytes() && !value.is_empty()).then_some(value)
    })
}

/// The token of a `Bearer <token>` header value (the scheme is
/// case-insensitive; RFC 6750), trimmed; `None` for another scheme or an
/// empty token, which carry no credential.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let value = value.trim_ascii();
    if !value.get(..SCHEME.len())?.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value.get(SCHEME.len()..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Invalid;

    fn request(headers: &[(&'static str, &str)]) -> RequestHeader {
        request_to("/", headers)
    }

    fn request_to(path: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut request =
            RequestHeader::build("GET", path.as_bytes(), None).expect("valid request");
        for (name, value) in headers {
            request.append_header(*name, *value).expect("valid header");
        }
        request
    }

    /// The key `extractor` finds in `request`, which it must not refuse.
    fn key_of(extractor: &KeyExtractor, request: &RequestHeader) -> Option<Vec<u8>> {
        extractor
            .extract(request, 0)
            .expect("plain sources refuse nothing")
    }

    fn extractor() -> KeyExtractor {
        KeyExtractor::new(vec![
            KeySource::Header("x-user-id".into()),
            KeySource::Cookie("uid".into()),
        ])
    }

    #[test]
    fn header_wins_over_cookie() {
        let req = request(&[("x-user-id", "alice"), ("cookie", "uid=bob")]);
        assert_eq!(key_of(&extractor(), &req).as_deref(), Some(&b"alice"[..]));
    }

    #[test]
    fn cookie_is_found_among_others_and_across_headers() {
        let req = request(&[
            ("cookie", "a=1; b=2"),
            ("cookie", "theme=dark; uid=\"bob\""),
        ]);
        assert_eq!(key_of(&extractor(), &req).as_deref(), Some(&b"bob"[..]));
    }

    #[test]
    fn an_empty_cookie_does_not_hide_a_later_value() {
        for header in [
            "uid=; uid=bob",
            "uid=\"\"; uid=bob",
            "uid= ;uid=bob; uid=eve",
        ] {
            let req = request(&[("cookie", header)]);
            assert_eq!(
                key_of(&extractor(), &req).as_deref(),
                Some(&b"bob"[..]),
                "{header}"
            );
        }
    }

    #[test]
    fn empty_values_and_prefix_names_do_not_count() {
        let req = request(&[("x-user-id", "  "), ("cookie", "uidx=1; uid=")]);
        assert_eq!(key_of(&extractor(), &req), None);
    }

    /// `{path: "/v1/inventory/{key}", prefix: "inventory:"}`, then the
    /// header and cookie sources of [`extractor`].
    fn path_first() -> KeyExtractor {
        let template = PathTemplate::parse("/v1/inventory/{key}").expect("valid template");
        KeyExtractor::new(vec![
            KeySource::Path {
                template,
                prefix: "inventory:".into(),
            },
            KeySource::Header("x-user-id".into()),
            KeySource::Cookie("uid".into()),
        ])
    }

    /// The key `path_first()` finds for `path` with `x-user-id: alice`.
    fn path_key_of(path: &str) -> Option<String> {
        let key = key_of(&path_first(), &request_to(path, &[("x-user-id", "alice")]))?;
        Some(String::from_utf8(key).expect("keys in these tests are UTF-8"))
    }

    /// Assert `path_first()` finds `key` for `path`, for each `(path, key)`;
    /// `alice` means the path source yielded nothing.
    fn assert_keys(cases: &[(&str, &str)]) {
        for (path, key) in cases {
            assert_eq!(path_key_of(path).as_deref(), Some(*key), "{path}");
        }
    }

    #[test]
    fn path_source_takes_the_key_segment_with_its_prefix() {
        assert_keys(&[("/v1/inventory/show-1", "inventory:show-1")]);
    }

    #[test]
    fn a_path_that_does_not_match_falls_through_to_the_next_source() {
        assert_keys(&[
            ("/v1/stock/show-1", "alice"), // a different literal
            ("/v2/inventory/show-1", "alice"),
            ("/v1/inventory", "alice"),  // the key segment is missing
            ("/v1/inventory/", "alice"), // the key segment is empty
            ("/v1/inventory//holds", "alice"),
            ("/v1//inventory/show-1", "alice"),
            ("/", "alice"),
        ]);
    }

    #[test]
    fn a_kind_template_routes_every_shared_kind_by_kind_and_id() {
        let any = PathTemplate::parse("/v1/{kind}/{key}").expect("valid template");
        let key = |template: &PathTemplate, path: &str| {
            template
                .key(path, "")
                .map(|key| String::from_utf8(key).expect("UTF-8"))
        };
        assert_eq!(
            key(&any, "/v1/room/lobby-1").as_deref(),
            Some("room:lobby-1")
        );
        assert_eq!(
            key(&any, "/v1/room/a%20b/post").as_deref(),
            Some("room:a b")
        );
        assert_eq!(key(&any, "/v1/Room/x"), None, "not a kind name");
        assert_eq!(key(&any, "/v1/ro%6Fm/x"), None, "kinds are not decoded");
        assert_eq!(key(&any, "/v1//x"), None);
        let shared = any
            .only_kinds(&["inventory".into(), "room".into()])
            .expect("kind names");
        assert_eq!(
            key(&shared, "/v1/inventory/show-1").as_deref(),
            Some("inventory:show-1")
        );
        assert_eq!(key(&shared, "/v1/cart/checkout"), None, "a per-user kind");
        assert!(PathTemplate::parse("/v1/{kind}/{kind}/{key}").is_err());
        let plain = PathTemplate::parse("/v1/{key}").expect("valid template");
        assert!(plain.only_kinds(&["Bad".into()]).is_err());
    }

    #[test]
    fn trailing_segments_are_allowed() {
        assert_keys(&[
            ("/v1/inventory/show-1/holds", "inventory:show-1"),
            ("/v1/inventory/show-1/", "inventory:show-1"),
        ]);
    }

    #[test]
    fn the_query_string_is_not_part_of_the_path() {
        assert_keys(&[
            ("/v1/inventory/show-1?hold=2&x=/y", "inventory:show-1"),
            ("/v1/?p=/v1/inventory/show-1", "alice"),
        ]);
    }

    #[test]
    fn the_key_segment_is_percent_decoded() {
        assert_keys(&[
            ("/v1/inventory/show%201", "inventory:show 1"),
            ("/v1/inventory/caf%C3%A9%2Fbar", "inventory:café/bar"),
            // `+` means a space only in forms, not in paths; a stray `%` stays.
            ("/v1/inventory/a+b%zz", "inventory:a+b%zz"),
        ]);
    }

    #[test]
    fn literal_segments_are_compared_undecoded() {
        assert_keys(&[("/v1/invent%6Fry/show-1", "alice")]);
    }

    #[test]
    fn a_segment_that_decodes_to_bad_utf8_or_a_control_character_yields_no_key() {
        assert_keys(&[
            ("/v1/inventory/%FF", "alice"),
            ("/v1/inventory/show%C3", "alice"),
            ("/v1/inventory/show%0A1", "alice"),
            ("/v1/inventory/show%00", "alice"),
            ("/v1/inventory/tab%09", "alice"),
        ]);
        let only_path = KeyExtractor::new(vec![KeySource::Path {
            template: PathTemplate::parse("/v1/inventory/{key}").expect("valid template"),
            prefix: String::new(),
        }]);
        assert_eq!(
            key_of(&only_path, &request_to("/v1/inventory/%FF", &[])),
            None
        );
    }

    #[test]
    fn the_key_may_sit_between_literals_and_the_prefix_is_optional() {
        let template = PathTemplate::parse("/v1/quota/{key}/acquire").expect("valid template");
        assert_eq!(template.capture("/v1/quota/api/acquire"), Some("api"));
        assert_eq!(template.capture("/v1/quota/api/acquire/x"), Some("api"));
        assert_eq!(template.capture("/v1/quota/api/release"), None);
        assert_eq!(template.capture("/v1/quota/api"), None);
        assert_eq!(template.capture("/v1/quota//acquire"), None);
        assert_eq!(path_key("a%20b", "").as_deref(), Some(&b"a b"[..]));
        let root = PathTemplate::parse("/{key}").expect("valid template");
        assert_eq!(root.capture("/x"), Some("x"));
        assert_eq!(root.capture("/"), None);
        assert_eq!(root.capture(""), None);
    }

    #[test]
    fn cookie_and_bearer_parsers_take_any_bytes() {
        let cookie = |header: &'static [u8]| find_cookie(header, "sid");
        let bearer = |value: &'static [u8]| bearer_token(value);
        type Case = (&'static [u8], Option<&'static [u8]>, Option<&'static [u8]>);
        let cases: [Case; 8] = [
            // (input, as a Cookie header for "sid", as an Authorization value)
            (b"a=1; sid = \"x.y\" ;b=2", Some(b"x.y"), None),
            (b"sid=first; sid=second", Some(b"first"), None),
            (b"Bearer abc.def", None, Some(b"abc.def")),
            (b"  bEaReR   sid=1  ", None, Some(b"sid=1")),
            (b"Basic c2lkPTE=", None, None),
            (b"Bearer  ", None, None),
            (b"sid=\"\"; =sid; Bearerabc", None, None),
            (b"\xff=\xfe;;", None, None),
        ];
        for (input, in_cookie, in_bearer) in cases {
            assert_eq!(cookie(input), in_cookie, "{input:?}");
            assert_eq!(bearer(input), in_bearer, "{input:?}");
        }
    }

    const SECRET: &[u8] = b"a test secret of at least 32 bytes";

    /// `{signed_cookie: sid}`, `{jwt: {header: authorization, HS256}}`,
    /// then the plain `x-user-id` header.
    fn verified_first() -> KeyExtractor {
        use crate::identity::{Algorithm, CookieSigner, Jwks, Secret};
        let secret = || Secret::new(SECRET, "the secret").expect("long enough");
        let cookie = SignedCookie {
            name: "sid".into(),
            signer: CookieSigner::new(secret()),
            ttl_s: 3600,
        };
        let verifier = JwtVerifier {
            algorithms: vec![Algorithm::Hs256],
            secret: Some(secret()),
            jwks: Jwks::default(),
            issuer: "https://issuer.test".into(),
            audience: "roost".into(),
            claim: "sub".into(),
            leeway_s: 30,
        };
        KeyExtractor::new(vec![
            KeySource::SignedCookie(Arc::new(cookie)),
            KeySource::Jwt {
                from: TokenAt::Bearer("authorization".into()),
                verifier: Arc::new(verifier),
            },
            KeySource::Header("x-user-id".into()),
        ])
    }

    #[test]
    fn a_verified_source_without_its_credential_yields_to_the_next() {
        let keys = verified_first();
        for headers in [
            vec![("x-user-id", "alice")],
            vec![("x-user-id", "alice"), ("cookie", "uid=bob; sid=")],
            vec![
                ("x-user-id", "alice"),
                ("authorization", "Basic YWxpY2U6cHc="),
            ],
        ] {
            let key = keys.extract(&request(&headers), 0);
            assert_eq!(key, Ok(Some(b"alice".to_vec())), "{headers:?}");
        }
        assert_eq!(keys.extract(&request(&[]), 0), Ok(None));
    }

    #[test]
    fn a_verified_credential_gives_its_id() {
        let keys = verified_first();
        let minter = keys.minter().expect("a signed-cookie source");
        let cookie = format!("sid={}", minter.signer.sign("carol", 100));
        let req = request(&[("cookie", &cookie), ("x-user-id", "alice")]);
        assert_eq!(keys.extract(&req, 99), Ok(Some(b"carol".to_vec())));
    }

    #[test]
    fn a_bad_credential_is_refused_and_never_falls_through() {
        let keys = verified_first();
        let minter = keys.minter().expect("a signed-cookie source");
        let expired = format!("sid={}", minter.signer.sign("carol", 100));
        for (header, value, expected) in [
            (
                "cookie",
                "sid=carol.99999999999.AAAA",
                Rejection::signed_cookie(Invalid::BadSignature),
            ),
            (
                "cookie",
                &expired,
                Rejection::signed_cookie(Invalid::Expired),
            ),
            (
                "cookie",
                "sid=carol",
                Rejection::signed_cookie(Invalid::Malformed("not `id.expiry.signature`")),
            ),
            (
                "authorization",
                "Bearer x",
                Rejection::jwt(Invalid::Malformed(
                    "not a compact JWS (header.claims.signature)",
                )),
            ),
            (
                "authorization",
                "Bearer e30.e30.",
                Rejection::jwt(Invalid::Malformed(
                    "the header is not base64url JSON with an `alg`",
                )),
            ),
        ] {
            let req = request(&[(header, value), ("x-user-id", "alice")]);
            assert_eq!(keys.extract(&req, 100), Err(expected), "{value}");
        }
        let mut req = request(&[("x-user-id", "alice")]);
        req.append_header(
            "authorization",
            http::HeaderValue::from_bytes(b"Bearer \xff").expect("opaque bytes"),
        )
        .expect("valid header");
        assert_eq!(
            keys.extract(&req, 100),
            Err(Rejection::jwt(Invalid::Malformed("the token is not UTF-8")))
        );
    }

    #[test]
    fn bad_templates_say_why() {
        for (template, why) in [
            ("v1/inventory/{key}", "must start with '/'"),
            ("", "must start with '/'"),
            ("/v1/inventory", "exactly one `{key}`"),
            ("/v1/{sku}", "exactly one `{key}`"),
            ("/{key}/{key}", "exactly one `{key}`"),
            ("/v1/{key}/{id}", "`{` and `}` only"),
            ("/v1/item-{key}", "exactly one `{key}`"),
            ("/v1/{key}/x}", "`{` and `}` only"),
            ("/v1//{key}", "empty segments"),
            ("/v1/{key}/", "empty segments"),
        ] {
            let error = PathTemplate::parse(template).expect_err(template);
            assert!(error.contains(why), "{template}: {error}");
            assert!(error.contains(&format!("{template:?}")), "{error}");
        }
    }
}
