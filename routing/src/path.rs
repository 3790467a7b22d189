//! Request paths in one canonical spelling, so the proxy routes, limits and
//! forwards exactly the path the worker then serves.
//!
//! A client can spell one resource many ways: `//v1/inventory/x`,
//! `/v1/./inventory/x`, `/v1/x/../inventory/x`, `/%761/inventory/x`. If the
//! proxy matched one spelling and the worker served another, a request could
//! slip past a path rule (the internal prefix, a path key source). So the
//! proxy normalises every path once, before anything looks at it, forwards
//! the normal form, and a worker refuses a path that is not already normal.
//!
//! What [`normalize`] does, in order (RFC 3986 §6.2.2):
//!
//! 1. percent-decodes the *unreserved* characters (`A-Z a-z 0-9 - . _ ~`),
//!    which mean the same encoded or not, and upper-cases the hex digits of
//!    every escape it keeps;
//! 2. collapses runs of `/` into one;
//! 3. removes `.` segments and resolves `..` against the segment before it.
//!
//! It refuses (the caller answers 400) what has no single meaning: a path
//! not starting with `/`, a `..` that climbs above the root, a malformed
//! escape (`%`, `%4`, `%zz`), and an escaped `/`, `\` or control character
//! (`%2F`, `%5C`, `%00`–`%1F`, `%7F`), which servers and frameworks split,
//! keep or decode differently. Other escapes (`%20`, `%3A`, UTF-8) are kept
//! as they are: the worker decodes those itself, segment by segment, and so
//! does the proxy's path key source. A trailing `/` is kept: `/v1/session/`
//! is another resource than `/v1/session`, as for nginx.

use std::borrow::Cow;

/// Why a path has no single meaning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    #[error("the path has a malformed percent escape")]
    BadEscape,
    #[error("the path escapes a '/', '\\' or control character (%{0:02X})")]
    AmbiguousEscape(u8),
}

/// The normal form of `path` (the path alone, without `?query`): borrowed
/// exactly when `path` is already normal, which is the common case.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plainly_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded[1..].split('/').peekable();
    // Whether the path ends in a directory (`/`, `/.`, `/..`): then the
    // normal form keeps one trailing slash.
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "" | "." => trailing_slash = last,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// No escape, no empty segment (but a trailing slash), no dot segment:
/// nothing to do. One pass over the bytes of `path` (which starts with `/`).
fn is_plainly_normal(path: &str) -> bool {
    let mut segments = path.as_bytes()[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let plain = match segment {
            b"" => segments.peek().is_none(),
            b"." | b".." => false,
            _ => !segment.contains(&b'%'),
        };
        if !plain {
            return false;
        }
    }
    true
}

/// Decode escapes of unreserved characters; keep the others (hex
/// upper-cased); refuse malformed and ambiguous ones.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = path[i..].find('%').map_or(bytes.len(), |at| i + at);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let byte = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or(PathError::BadEscape)?;
        if byte == b'/' || byte == b'\\' || byte.is_ascii_control() {
            return Err(PathError::AmbiguousEscape(byte));
        }
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

/// Whether the normal path `path` names the fleet's internal routes
/// ([`crate::headers::INTERNAL_PREFIX`]), in any letter case, the bare
/// `/internal` included.
pub fn is_internal(path: &str) -> bool {
    let prefix = crate::headers::INTERNAL_PREFIX;
    let bare = &prefix[..prefix.len() - 1];
    let head = path.get(..prefix.len()).unwrap_or(path);
    head.eq_ignore_ascii_case(prefix) || path.eq_ignore_ascii_case(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        let paths = [
            "/",
            "/v1/session",
            "/v1/session/",
            "/v1/inventory/show-1",
            "/v1/inventory/caf%C3%A9",
            "/v1/cart/items/%FF",
        ];
        for path in paths {
            assert!(matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path));
        }
    }

    #[test]
    fn repeated_slashes_and_dot_segments_are_resolved() {
        let cases = [
            ("//v1/inventory/show-1", "/v1/inventory/show-1"),
            ("/v1//inventory/show-1", "/v1/inventory/show-1"),
            ("/v1/./inventory/show-1", "/v1/inventory/show-1"),
            ("/v1/x/../inventory/show-1", "/v1/inventory/show-1"),
            ("/v1/inventory/show-1/.", "/v1/inventory/show-1/"),
            ("/v1/inventory/show-1/..", "/v1/inventory/"),
            ("/v1/session//", "/v1/session/"),
            ("//", "/"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/v1/...", "/v1/..."),
        ];
        for (path, expected) in cases {
            assert_eq!(normal(path), expected, "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_upper_case() {
        assert_eq!(normal("/%69nternal/v1"), "/internal/v1");
        assert_eq!(normal("/v1/%2e/inventory/x"), "/v1/inventory/x");
        assert_eq!(normal("/v1/%2E%2E/v1/session"), "/v1/session");
        assert_eq!(normal("/v1/inventory/show%3a1"), "/v1/inventory/show%3A1");
        assert_eq!(normal("/v1/inventory/caf%c3%a9"), "/v1/inventory/caf%C3%A9");
    }

    #[test]
    fn ambiguous_and_malformed_paths_are_refused() {
        let cases = [
            ("v1/session", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/..", PathError::AboveRoot),
            ("/v1/../../internal", PathError::AboveRoot),
            ("/v1/%2e%2e/%2e%2e/x", PathError::AboveRoot),
            ("/v1%2Finventory/x", PathError::AmbiguousEscape(b'/')),
            ("/v1%5cinventory", PathError::AmbiguousEscape(b'\\')),
            ("/v1/%00", PathError::AmbiguousEscape(0)),
            ("/v1/%", PathError::BadEscape),
            ("/v1/%4", PathError::BadEscape),
            ("/v1/%zz", PathError::BadEscape),
            ("/v1/%+1", PathError::BadEscape),
        ];
        for (path, expected) in cases {
            assert_eq!(normalize(path), Err(expected), "{path:?}");
        }
    }

    #[test]
    fn the_internal_prefix_is_recognised_in_any_case() {
        for path in [
            "/internal/v1/inventory/x",
            "/INTERNAL/",
            "/Internal",
            "/internal/",
        ] {
            assert!(is_internal(path), "{path}");
        }
        for path in ["/internals", "/v1/internal/x", "/", "/intern"] {
            assert!(!is_internal(path), "{path}");
        }
    }

    #[test]
    fn normalizing_is_idempotent() {
        for path in ["//a/./b/../c//", "/%7e%41/%3a", "/x/y/.."] {
            let once = normal(path);
            assert_eq!(normal(&once), once, "{path}");
        }
    }
}
