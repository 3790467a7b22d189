//! Routing-key extraction: the configured sources, tried in order.
//!
//! The key is parsed once per request (in `request_filter`) and kept in the
//! request context; everything after that works on the extracted bytes.

use http::header::COOKIE;
use pingora::http::RequestHeader;

use crate::config::KeySource;

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
        self.sources
            .iter()
            .find_map(|source| match source {
                KeySource::Header(name) => header_value(request, name),
                KeySource::Cookie(name) => cookie_value(request, name),
            })
            .map(<[u8]>::to_vec)
    }
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
        let mut request = RequestHeader::build("GET", b"/", None).expect("valid request");
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
}
