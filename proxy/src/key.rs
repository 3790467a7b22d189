//! Routing-key extraction: the configured sources, tried in order.
//!
//! The key is parsed once per request (in `request_filter`) and kept in the
//! request context; everything after that works on the extracted bytes.
//!
//! A source is a header, a cookie, or a segment of the request path (a
//! [`PathTemplate`]). Path templates are split once, at config load, so
//! matching a request allocates nothing but the key itself.

use http::header::COOKIE;
use percent_encoding::percent_decode_str;
use pingora::http::RequestHeader;

/// One place to find the routing key, parsed from a `key.sources` entry
/// (see [`crate::config::KeySourceConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The value of a request header, trimmed.
    Header(String),
    /// The value of a cookie, unquoted.
    Cookie(String),
    /// `prefix` + the percent-decoded `{key}` segment of a path that matches
    /// `template`: shared entities (an inventory item) are routed by their
    /// own key, not by the user who happens to ask.
    Path {
        template: PathTemplate,
        prefix: String,
    },
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

    /// The first non-empty key any source yields, in source order.
    pub fn extract(&self, request: &RequestHeader) -> Option<Vec<u8>> {
        self.sources.iter().find_map(|source| match source {
            KeySource::Header(name) => header_value(request, name).map(<[u8]>::to_vec),
            KeySource::Cookie(name) => cookie_value(request, name).map(<[u8]>::to_vec),
            KeySource::Path { template, prefix } => {
                path_key(template.capture(request.uri.path())?, prefix)
            }
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
}

/// A path template such as `/v1/inventory/{key}`: `/`-separated segments,
/// exactly one of them `{key}`, the others literal.
///
/// It matches a request path whose first segments are the template's (the
/// `{key}` one being any non-empty segment); further segments may follow, so
/// `/v1/inventory/show-1/holds` is about the same entity as
/// `/v1/inventory/show-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Box<[Segment]>,
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
                literal => Segment::Literal(literal.into()),
            })
            .collect();
        if segments.iter().filter(|s| **s == Segment::Key).count() != 1 {
            return invalid("must have exactly one `{key}` segment");
        }
        for segment in &segments {
            let Segment::Literal(literal) = segment else {
                continue;
            };
            if literal.contains(['{', '}']) {
                return invalid("may use `{` and `}` only in its one `{key}` segment");
            }
            if literal.is_empty() {
                return invalid("must not have empty segments (`//` or a trailing `/`)");
            }
        }
        Ok(PathTemplate { segments })
    }

    /// The raw (still percent-encoded) `{key}` segment of `path`, if `path`
    /// matches. `path` excludes the query string.
    pub fn capture<'p>(&self, path: &'p str) -> Option<&'p str> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let mut key = None;
        for expected in &self.segments {
            let segment = segments.next()?;
            match expected {
                Segment::Literal(literal) if segment == &**literal => {}
                Segment::Key if !segment.is_empty() => key = Some(segment),
                _ => return None,
            }
        }
        key
    }
}

/// `prefix` + the percent-decoded `segment`: exactly the bytes the worker
/// computes for the same entity, so both route it to the same owner.
///
/// `None` when the decoded segment is not UTF-8 (the worker could not name
/// the entity) or holds a control character (it could not be forwarded in
/// `x-roost-key`, a header value); the next source is tried instead.
fn path_key(segment: &str, prefix: &str) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(prefix.len() + segment.len());
    key.extend_from_slice(prefix.as_bytes());
    key.extend(percent_decode_str(segment));
    let decoded = std::str::from_utf8(&key[prefix.len()..]).ok()?;
    (!decoded.contains(char::is_control)).then_some(key)
}

/// A header's value with surrounding whitespace trimmed, if non-empty.
fn header_value<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    let value = request.headers.get(name)?.as_bytes().trim_ascii();
    (!value.is_empty()).then_some(value)
}

/// The value of cookie `name` from any `Cookie` header (RFC 6265 §5.4 pairs
/// separated by `;`; a double-quoted value is unquoted).
fn cookie_value<'r>(request: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    request
        .headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (cookie, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
            (cookie == name.as_bytes()).then(|| unquote(value))
        })
        .filter(|value| !value.is_empty())
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

    fn extractor() -> KeyExtractor {
        KeyExtractor::new(vec![
            KeySource::Header("x-user-id".into()),
            KeySource::Cookie("uid".into()),
        ])
    }

    #[test]
    fn header_wins_over_cookie() {
        let req = request(&[("x-user-id", "alice"), ("cookie", "uid=bob")]);
        assert_eq!(extractor().extract(&req).as_deref(), Some(&b"alice"[..]));
    }

    #[test]
    fn cookie_is_found_among_others_and_across_headers() {
        let req = request(&[
            ("cookie", "a=1; b=2"),
            ("cookie", "theme=dark; uid=\"bob\""),
        ]);
        assert_eq!(extractor().extract(&req).as_deref(), Some(&b"bob"[..]));
    }

    #[test]
    fn empty_values_and_prefix_names_do_not_count() {
        let req = request(&[("x-user-id", "  "), ("cookie", "uidx=1; uid=")]);
        assert_eq!(extractor().extract(&req), None);
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
        let key = path_first().extract(&request_to(path, &[("x-user-id", "alice")]))?;
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
            only_path.extract(&request_to("/v1/inventory/%FF", &[])),
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
