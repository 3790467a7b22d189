//! The request heads the lean path takes, and the head it sends a worker.
//!
//! The lean path takes only what it can frame beyond doubt: an HTTP/1.1
//! request in origin form with a common method, CRLF line ends, at most
//! one `Content-Length` of at most [`PREREAD_MAX_BYTES`], no
//! `Transfer-Encoding`, `Expect`, `Upgrade` or `TE`, and a `Connection`
//! header naming only `close` or `keep-alive`. Everything else, well-formed
//! or not, is [`Parsed::Generic`]: the connection goes to Pingora's
//! generic path, which answers it as it always has (the conformance suite
//! pins those answers). So the lean path never has to decide an ambiguous
//! case; it only has to recognise that a case is not plain.

use http::{HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use roost_routing::headers;

use crate::proxy::PREREAD_MAX_BYTES;

/// The most header fields a lean request may carry (more go generic).
const MAX_FIELDS: usize = 64;

/// A request head the lean path takes.
#[derive(Debug)]
pub struct Head {
    pub request: RequestHeader,
    /// Bytes of the head as sent, request line to the empty line.
    pub len: usize,
    /// The body's length (0 without `Content-Length`).
    pub body_len: usize,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Parsed {
    Lean(Box<Head>),
    /// The head is not complete yet.
    Partial,
    /// Not a request the lean path takes: hand the connection to
    /// Pingora's generic path.
    Generic,
}

/// Read a request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Generic,
    };
    match lean_head(&parsed, &buf[..len]) {
        Some(head) => Parsed::Lean(Box::new(head)),
        None => Parsed::Generic,
    }
}

fn lean_head(parsed: &httparse::Request<'_, '_>, raw: &[u8]) -> Option<Head> {
    if parsed.version != Some(1) || has_bare_lf(raw) {
        return None;
    }
    let method = lean_method(parsed.method?)?;
    let path = parsed.path?;
    if !path.starts_with('/') {
        return None;
    }
    let mut request =
        RequestHeader::build_no_case(method, path.as_bytes(), Some(parsed.headers.len())).ok()?;
    let (mut body_len, mut close) = (None, false);
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        match name.as_str() {
            "transfer-encoding" | "expect" | "upgrade" | "te" => return None,
            "content-length" if body_len.is_some() => return None,
            "content-length" => body_len = Some(lean_length(field.value)?),
            "connection" => close |= asks_close(field.value)?,
            _ => {}
        }
        request.append_header(name, value).ok()?;
    }
    Some(Head {
        request,
        len: raw.len(),
        body_len: body_len.unwrap_or(0),
        close,
    })
}

/// The methods the lean path forwards; any other (CONNECT, TRACE, an
/// extension method) goes generic.
fn lean_method(method: &str) -> Option<Method> {
    Some(match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        _ => return None,
    })
}

/// A line ended by LF alone: httparse takes it, Pingora answers it.
fn has_bare_lf(raw: &[u8]) -> bool {
    raw.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
}

/// A plain decimal `Content-Length` small enough to read whole.
fn lean_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 19 {
        return None;
    }
    let length: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (length <= PREREAD_MAX_BYTES).then(|| usize::try_from(length).ok())?
}

/// Whether a `Connection` value asks to close; `None` when it names
/// anything but `close` and `keep-alive` (a hop-by-hop header to remove,
/// which the generic path handles).
fn asks_close(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
            return None;
        }
    }
    Some(close)
}

/// Fields a client sends that stop at the proxy: hop-by-hop fields
/// (RFC 9110 §7.6.1) and every `x-roost-*` (only the proxy sets those).
fn stops_here(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection"
    ) || headers::is_reserved(name.as_str())
}

/// The request as a worker gets it: the client's request line (its path
/// normalised) and fields, less those that stop here, plus the routing
/// key and the trusted-hop token; then the body.
pub fn upstream_request(
    request: &RequestHeader,
    key: Option<&[u8]>,
    hop_token: Option<&HeaderValue>,
    body: &[u8],
) -> Vec<u8> {
    let mut wire = Vec::with_capacity(512 + body.len());
    wire.extend_from_slice(request.method.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(request.raw_path());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers.iter().filter(|(name, _)| !stops_here(name)) {
        push_field(&mut wire, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(key) = key {
        push_field(&mut wire, headers::KEY.as_bytes(), key);
    }
    if let Some(token) = hop_token {
        push_field(&mut wire, headers::HOP_TOKEN.as_bytes(), token.as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(body);
    wire
}

/// Append `name: value` and CRLF.
pub fn push_field(wire: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    wire.extend_from_slice(name);
    wire.extend_from_slice(b": ");
    wire.extend_from_slice(value);
    wire.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(raw: &str) -> Option<Box<Head>> {
        match parse(raw.as_bytes()) {
            Parsed::Lean(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn plain_requests_are_lean() {
        let raw = "POST /v1/cart?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let head = lean(raw).expect("lean");
        assert_eq!(head.request.method, Method::POST);
        assert_eq!(head.request.raw_path(), b"/v1/cart?x=1");
        assert_eq!((head.body_len, head.close), (2, true));
        assert_eq!(head.len, raw.len() - 2, "the head ends before the body");
    }

    #[test]
    fn anything_not_plain_goes_generic() {
        for raw in [
            "GET /a HTTP/1.0\r\n\r\n",
            "GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET /a HTTP/1.1\nHost: a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST /a HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
            "POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: x-secret\r\n\r\n",
            "GET /a HTTP/1.1\r\nX: a\0b\r\n\r\n",
        ] {
            assert!(lean(raw).is_none(), "{raw:?} went lean");
        }
    }

    #[test]
    fn an_incomplete_head_is_partial() {
        assert!(matches!(parse(b"GET /a HTTP/1.1\r\nHost"), Parsed::Partial));
    }

    #[test]
    fn the_worker_gets_no_client_sent_roost_field_and_no_hop_by_hop_field() {
        let head = lean(
            "GET /a HTTP/1.1\r\nHost: h\r\nX-Roost-Key: forged\r\nConnection: keep-alive\r\n\r\n",
        )
        .expect("lean");
        let token = HeaderValue::from_static("t");
        let wire = upstream_request(&head.request, Some(b"u1"), Some(&token), b"");
        let wire = String::from_utf8(wire).expect("utf-8");
        assert_eq!(
            wire,
            "GET /a HTTP/1.1\r\nhost: h\r\nx-roost-key: u1\r\nx-roost-hop-token: t\r\n\r\n"
        );
    }
}
