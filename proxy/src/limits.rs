//! Limits on what one request may carry, each answered with the project's
//! JSON error before any worker sees the request:
//!
//! | limit | status, `error` | checked |
//! |---|---|---|
//! | header bytes, header count (the fields the proxy adds included) | 431 `headers_too_large` | first thing in `request_filter` |
//! | declared body (`Content-Length`) | 413 `body_too_large` | same |
//! | `Content-Length` values that disagree, or are not numbers | 400 `invalid_content_length` | same |
//! | path with no single meaning | 400 `invalid_path` | next ([`roost_routing::path`]) |
//! | path under the fleet's internal prefix | 404 `not_found` | same |
//! | key length, key charset | 400 `invalid_key` | once the key is known |
//! | requests per key (keyless: per client address) | 429 `rate_limited` + `Retry-After` | same ([`crate::rate`]) |
//! | streamed (chunked) body | 413 `body_too_large` | `request_body_filter`, as it arrives |
//! | body stalls | 408 `request_timeout` | Pingora's read timeout, answered in `fail_to_proxy` |
//! | connections per client address | 429 `too_many_connections`, then close | on accept ([`crate::connections`]) |
//!
//! Why here and not in Pingora: Pingora's HTTP/1 parser has limits of its
//! own ([`PINGORA_MAX_HEADERS`], [`PINGORA_MAX_HEADER_BYTES`]), far above
//! ours, and answers a bare `400` with an empty body when they are passed.
//! Ours are lower, so they are the ones a client meets, with a reason.
//!
//! A chunked body has no declared size: it streams to the worker as it
//! arrives, and is cut off when it passes the limit. The worker then has
//! seen the header and part of the body but never a whole request (its
//! connection is dropped); the client gets 413 unless the worker already
//! answered, in which case its connection is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::{KeylessRate, LimitsConfig};
use crate::metrics::{count_rejection, Limit};
use crate::rate::RateLimiter;
use crate::reply::ErrorReply;
use crate::timeouts::ClientTimeouts;

/// Most header fields Pingora 0.9's HTTP/1 parser accepts (`MAX_HEADERS`,
/// pingora-core `src/protocols/http/v1/common.rs`); past it, it answers 400.
pub const PINGORA_MAX_HEADERS: usize = 256;
/// Most header bytes Pingora 0.9 reads before answering 400
/// (`MAX_HEADER_SIZE`, same file).
pub const PINGORA_MAX_HEADER_BYTES: usize = 1_048_575;
/// Header fields the proxy may add to a request it forwards
/// (`x-roost-key`, `x-roost-hop-token`): counted against `max_headers`, so
/// what reaches a worker is within the limit too.
pub const ADDED_HEADERS: usize = 2;

/// What a client is held to: the configured limits, the rate sketch
/// (shared by every request) and the client timeouts.
pub struct Limits {
    max_header_bytes: usize,
    max_headers: usize,
    max_key_bytes: usize,
    max_body_bytes: u64,
    max_connections_per_address: u32,
    /// `None` when `rate.per_s` is 0.
    rate: Option<Arc<RateLimiter>>,
    /// What limits requests with no key of their own.
    keyless: KeylessRate,
    timeouts: ClientTimeouts,
}

impl Limits {
    /// `secret` seeds the rate sketch's hash (the config's `hash_seed`).
    /// `previous` is the sketch of the limits these replace (on a reload):
    /// kept, with its buckets, when the rate and the seed are unchanged.
    pub fn new(
        config: &LimitsConfig,
        timeouts: ClientTimeouts,
        secret: &str,
        previous: Option<&Arc<RateLimiter>>,
    ) -> Self {
        let (per_s, burst) = (config.rate.per_s.value, config.rate.burst.value);
        let rate = match previous {
            Some(kept) if kept.is(per_s, burst, secret) => Some(Arc::clone(kept)),
            _ => RateLimiter::new(per_s, burst, secret).map(Arc::new),
        };
        Limits {
            max_header_bytes: config.max_header_bytes.value,
            max_headers: config.max_headers.value,
            max_key_bytes: config.max_key_bytes.value,
            max_body_bytes: config.max_body_bytes.value,
            max_connections_per_address: config.max_connections_per_address.value,
            rate,
            keyless: config.rate.keyless,
            timeouts,
        }
    }

    /// How many connections one client address may hold open.
    pub fn max_connections_per_address(&self) -> u32 {
        self.max_connections_per_address
    }

    /// The per-key rate sketch, if the rate is limited.
    pub fn rate(&self) -> Option<&Arc<RateLimiter>> {
        self.rate.as_ref()
    }

    /// The client timeouts the request path tells where a request starts
    /// and ends.
    pub fn timeouts(&self) -> &ClientTimeouts {
        &self.timeouts
    }

    /// The header (`bytes` as sent, request line included) and declared
    /// body size of a request just read: the reply
    /// refusing it, if a limit is passed; otherwise the body length it
    /// declares (`None`: chunked or no body).
    pub fn check_request(
        &self,
        request: &RequestHeader,
        bytes: usize,
    ) -> Result<Option<u64>, ErrorReply> {
        let fields = request.headers.len() + ADDED_HEADERS;
        if bytes > self.max_header_bytes || fields > self.max_headers {
            let message = format!(
                "the request header is {bytes} bytes in {} fields; at most {} bytes and {} fields are accepted",
                request.headers.len(),
                self.max_header_bytes,
                self.max_headers - ADDED_HEADERS.min(self.max_headers),
            );
            return Err(refuse(Limit::Headers, 431, "headers_too_large", message));
        }
        if let Err(message) = only_chunked(&request.headers) {
            return Err(refuse(
                Limit::Framing,
                501,
                "unsupported_transfer_coding",
                message,
            ));
        }
        match declared_length(&request.headers) {
            Err(message) => Err(refuse(
                Limit::Framing,
                400,
                "invalid_content_length",
                message,
            )),
            Ok(Some(length)) if length > self.max_body_bytes => Err(self.body_too_large()),
            Ok(declared) => Ok(declared),
        }
    }

    /// A request path that is not normal: the reply refusing it (400, or
    /// 404 under the internal prefix), or the normal path to route and
    /// forward instead (`None` when it is normal already).
    pub fn check_path(&self, path: &str) -> Result<Option<String>, ErrorReply> {
        let normal = roost_routing::path::normalize(path)
            .map_err(|e| refuse(Limit::InvalidPath, 400, "invalid_path", format!("{e}")))?;
        if roost_routing::path::is_internal(&normal) {
            let message = format!("no route for {normal}");
            return Err(refuse(Limit::InternalPath, 404, "not_found", message));
        }
        Ok(match normal {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(normal) => Some(normal),
        })
    }

    /// The routing key's length and charset, then its rate: the reply
    /// refusing the request, if any.
    pub fn check_key(&self, key: &[u8]) -> Option<ErrorReply> {
        if key.len() > self.max_key_bytes {
            let message = format!(
                "the routing key is {} bytes; at most {} are accepted",
                key.len(),
                self.max_key_bytes
            );
            return Some(refuse(Limit::Key, 400, "invalid_key", message));
        }
        if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
            let message = "the routing key may hold only visible ASCII (0x21 to 0x7E)";
            return Some(refuse(Limit::Key, 400, "invalid_key", message));
        }
        self.check_rate(key, "this key")
    }

    /// The rate of a request with no key of its own (keyless, or given a
    /// freshly minted id): by client address unless `rate.keyless` is
    /// `off`.
    pub fn check_keyless(&self, client: Option<std::net::IpAddr>) -> Option<ErrorReply> {
        if self.keyless != KeylessRate::Address {
            return None;
        }
        // Its own namespace: no routing key starts with a NUL byte.
        let bucket = format!("\0addr:{}", client?);
        self.check_rate(bucket.as_bytes(), "this client address")
    }

    fn check_rate(&self, bucket: &[u8], whose: &str) -> Option<ErrorReply> {
        let wait = self.rate.as_ref()?.check(bucket).err()?;
        let seconds = retry_after_s(wait);
        let message = format!("too many requests for {whose}; retry in {seconds} s");
        Some(refuse(Limit::Rate, 429, "rate_limited", message).retry_after(seconds))
    }

    /// Add a body chunk to the request's running total `received`; past
    /// the limit, an error that [`Self::reply_to`] answers with 413.
    pub fn count_body(&self, received: &mut u64, chunk: Option<&Bytes>) -> Result<()> {
        let Some(chunk) = chunk else {
            return Ok(());
        };
        *received = received.saturating_add(chunk.len() as u64);
        if *received <= self.max_body_bytes {
            return Ok(());
        }
        count_rejection(Limit::Body);
        Error::e_explain(
            ErrorType::HTTPStatus(413),
            format!("request body over {} bytes", self.max_body_bytes),
        )
    }

    /// The reply for an error a limit caused while proxying: 413 for a
    /// body cut off by [`Self::count_body`], 408 for a body that stopped
    /// arriving (Pingora's downstream read timeout, set from
    /// `timeouts.body_idle_ms`, or [`body_stalled`]).
    pub fn reply_to(&self, e: &Error) -> Option<ErrorReply> {
        match e.etype() {
            ErrorType::HTTPStatus(413) => Some(self.body_too_large()),
            ErrorType::HTTPStatus(408) => Some(refuse(
                Limit::BodyTimeout,
                408,
                "request_timeout",
                "the request body stopped arriving",
            )),
            ErrorType::ReadTimedout if *e.esource() == ErrorSource::Downstream => Some(refuse(
                Limit::BodyTimeout,
                408,
                "request_timeout",
                "the request body stopped arriving",
            )),
            _ => None,
        }
    }

    fn body_too_large(&self) -> ErrorReply {
        let message = format!("the request body is over {} bytes", self.max_body_bytes);
        refuse(Limit::Body, 413, "body_too_large", message)
    }
}

/// The error for a request whose body stopped arriving while a worker
/// waited for it: the client's fault, answered 408 by [`Limits::reply_to`].
pub fn body_stalled(cause: Box<Error>) -> Box<Error> {
    let mut e = Error::because(
        ErrorType::HTTPStatus(408),
        "the request body stopped arriving while the worker waited for it",
        cause,
    );
    e.set_retry(false);
    e.into_down()
}

/// The body length a request declares: `None` without `Content-Length`;
/// an error message when its values (several fields, or a comma-separated
/// list in one) disagree or are not numbers. Identical values count as one
/// (RFC 9110 §8.6).
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, String> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let length = std::str::from_utf8(item)
                .ok()
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
                .ok_or("Content-Length is not a number")?;
            if declared.is_some_and(|seen| seen != length) {
                return Err("the request declares different Content-Length values".into());
            }
            declared = Some(length);
        }
    }
    Ok(declared)
}

/// A request's `Transfer-Encoding` may name `chunked` alone: a coding
/// before it (`gzip, chunked`) would reach the worker as plain `chunked`
/// and its body be read as if it were not coded. RFC 9112 §6.1: 501, as
/// nginx answers. (Codings after `chunked`, and unknown ones alone, are
/// refused by Pingora's parser already.)
fn only_chunked(headers: &http::HeaderMap) -> Result<(), String> {
    let codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    for coding in codings {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(format!(
                "the transfer coding {:?} is not implemented; send the body chunked only",
                String::from_utf8_lossy(coding)
            ));
        }
    }
    Ok(())
}

/// Count the rejection and build its reply.
fn refuse(
    limit: Limit,
    status: u16,
    error: &'static str,
    message: impl Into<String>,
) -> ErrorReply {
    count_rejection(limit);
    ErrorReply::new(status, error, message)
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
fn retry_after_s(wait: Duration) -> u32 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{unwritten, RateConfig};

    fn limits(max_key_bytes: usize, per_s: u32, burst: u32) -> Limits {
        let config = LimitsConfig {
            max_key_bytes: unwritten(max_key_bytes),
            rate: RateConfig {
                per_s: unwritten(per_s),
                burst: unwritten(burst),
                ..RateConfig::default()
            },
            ..LimitsConfig::default()
        };
        Limits::new(&config, timeouts(), "test", None)
    }

    fn timeouts() -> ClientTimeouts {
        ClientTimeouts::new(&crate::config::TimeoutsConfig::default())
    }

    fn status_of(reply: Option<ErrorReply>) -> Option<(u16, &'static str)> {
        reply.map(|r| (r.status, r.error))
    }

    #[test]
    fn keys_are_checked_for_length_and_charset() {
        let limits = limits(8, 0, 0);
        assert_eq!(status_of(limits.check_key(b"12345678")), None);
        assert_eq!(status_of(limits.check_key(b"!~inv:x")), None);
        for bad in [
            &b"123456789"[..],
            b"a b",
            b"tab\t",
            b"caf\xc3\xa9",
            b"del\x7f",
        ] {
            assert_eq!(
                status_of(limits.check_key(bad)),
                Some((400, "invalid_key")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_over_its_rate_gets_429_with_retry_after() {
        let limits = limits(256, 1, 2);
        assert!(limits.check_key(b"k").is_none());
        assert!(limits.check_key(b"k").is_none());
        let reply = limits.check_key(b"k").expect("the third is over the burst");
        assert_eq!((reply.status, reply.error), (429, "rate_limited"));
        assert_eq!(reply.retry_after_s, Some(1));
        assert!(limits.check_key(b"other").is_none());
    }

    #[test]
    fn content_length_lists_must_agree() {
        let lengths = |values: &[&'static str]| {
            let mut headers = http::HeaderMap::new();
            for value in values {
                headers.append(CONTENT_LENGTH, http::HeaderValue::from_static(value));
            }
            declared_length(&headers)
        };
        assert_eq!(lengths(&[]), Ok(None));
        assert_eq!(lengths(&["12"]), Ok(Some(12)));
        assert_eq!(lengths(&["2000000, 2000000"]), Ok(Some(2_000_000)));
        assert_eq!(lengths(&["7", "7"]), Ok(Some(7)));
        for bad in [
            &["5, 6"][..],
            &["5", "6"],
            &["-1"],
            &["+5"],
            &[""],
            &["5,"],
            &["0x10"],
        ] {
            assert!(lengths(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keyless_requests_share_their_address_bucket() {
        let limits = limits(256, 1, 2);
        let alice: std::net::IpAddr = [127, 0, 0, 2].into();
        assert!(limits.check_keyless(Some(alice)).is_none());
        assert!(limits.check_keyless(Some(alice)).is_none());
        let reply = limits
            .check_keyless(Some(alice))
            .expect("the third is over the burst");
        assert_eq!((reply.status, reply.error), (429, "rate_limited"));
        assert!(limits.check_keyless(Some([127, 0, 0, 3].into())).is_none());
        assert!(
            limits.check_key(b"127.0.0.2").is_none(),
            "keys are another namespace"
        );
    }

    #[test]
    fn internal_and_ambiguous_paths_are_refused_others_normalised() {
        let limits = limits(256, 0, 0);
        let refused = |path| limits.check_path(path).err().map(|r| (r.status, r.error));
        assert_eq!(
            refused("/internal/v1/inventory/x"),
            Some((404, "not_found"))
        );
        assert_eq!(refused("//internal/v1/x"), Some((404, "not_found")));
        assert_eq!(refused("/v1/../%49NTERNAL/v1"), Some((404, "not_found")));
        assert_eq!(refused("/v1/%2F"), Some((400, "invalid_path")));
        assert_eq!(limits.check_path("/v1/cart").ok(), Some(None));
        assert_eq!(
            limits.check_path("/v1//cart").ok(),
            Some(Some("/v1/cart".to_owned()))
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        assert_eq!(retry_after_s(Duration::ZERO), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_s(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn body_chunks_are_counted_up_to_the_limit() {
        let limits = Limits::new(
            &LimitsConfig {
                max_body_bytes: unwritten(10),
                ..LimitsConfig::default()
            },
            timeouts(),
            "t",
            None,
        );
        let mut received = 0;
        let chunk = Bytes::from_static(b"12345");
        assert!(limits.count_body(&mut received, Some(&chunk)).is_ok());
        assert!(limits.count_body(&mut received, Some(&chunk)).is_ok());
        assert!(limits.count_body(&mut received, None).is_ok());
        let error = limits
            .count_body(&mut received, Some(&Bytes::from_static(b"!")))
            .expect_err("11 bytes is over 10");
        assert_eq!(error.etype(), &ErrorType::HTTPStatus(413));
        let reply = limits.reply_to(&error).expect("a limit error has a reply");
        assert_eq!((reply.status, reply.error), (413, "body_too_large"));
    }
}
