//! The lean path's side of a worker connection: a pool of idle
//! keep-alive connections per thread and per worker, one request written
//! whole, the response head read and rewritten for the client, the body
//! read as it comes.
//!
//! Why a pool per thread: the proxy's threads each run their own
//! single-threaded runtime and never hand a task to another, so a
//! connection is only ever used by the thread that opened it, and taking
//! one costs no lock. A pooled connection the worker has closed (a worker
//! closes its idle connections when it drains) is seen when it is taken:
//! one non-blocking read tells, so a request is not sent into a closed
//! connection in the common case (see [`Upstream::take`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{Chunked, Framing};
use super::head::push_field;
use super::timed;
use super::Io::{Connect, Read, Write};
use crate::metrics::{self, Benign};
use crate::proxy::{CONNECT_TIMEOUT, UPSTREAM_IDLE_TIMEOUT};

/// The most idle connections kept per worker and thread.
const POOL_MAX: usize = 256;
/// The most response-header bytes read from a worker.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most response-header fields read from a worker.
const MAX_RESPONSE_FIELDS: usize = 64;
/// How much is read from a worker at once.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// This thread's idle connections, by worker address (a short list:
    /// one entry per worker, searched without hashing).
    static POOL: RefCell<Vec<(SocketAddr, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

/// One connection to a worker, for one request.
pub struct Upstream {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    /// Taken from the pool rather than opened for this request.
    pub reused: bool,
}

/// A worker's response head, as the client gets it.
pub struct ResponseHead {
    pub status: u16,
    /// The status line and fields, less the hop-by-hop ones; the caller
    /// adds its own and the empty line.
    pub wire: Vec<u8>,
    pub framing: Framing,
    /// The worker says it cannot serve this key now ([`crate::policy::is_unavailable`]).
    pub unavailable: bool,
    /// The worker will close the connection after this response.
    pub close: bool,
}

impl Upstream {
    /// A live pooled connection to `addr`, unless `fresh` or none is left;
    /// otherwise a new one.
    pub async fn take(addr: SocketAddr, fresh: bool) -> Result<Upstream, Box<Error>> {
        if !fresh {
            if let Some(stream) = take_idle(addr) {
                return Ok(Upstream::over(stream, addr, true));
            }
        }
        let connect = TcpStream::connect(addr);
        let stream = timed(
            CONNECT_TIMEOUT,
            connect,
            Connect,
            "connecting to the worker",
        )
        .await
        .map_err(|e| e.into_up())?;
        // Requests and responses are written whole: nothing to coalesce.
        let _ = stream.set_nodelay(true);
        Ok(Upstream::over(stream, addr, false))
    }

    fn over(stream: TcpStream, addr: SocketAddr, reused: bool) -> Self {
        Upstream {
            stream,
            addr,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused,
        }
    }

    /// Write the whole request, then read the response head.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        timeout: Duration,
    ) -> Result<ResponseHead, Box<Error>> {
        let write = self.stream.write_all(request);
        timed(timeout, write, Write, "writing the request to the worker")
            .await
            .map_err(|e| e.into_up())?;
        loop {
            if let Some(head) = self.parse_head(head_request)? {
                return Ok(head);
            }
            if self.read_more(timeout).await? == 0 {
                let e = Error::explain(
                    ErrorType::ConnectionClosed,
                    "the worker closed the connection before answering",
                );
                return Err(e.into_up());
            }
        }
    }

    /// Read what the worker sends next (0: it closed the connection).
    pub async fn read_more(&mut self, timeout: Duration) -> Result<usize, Box<Error>> {
        self.buf.reserve(READ_CHUNK);
        let read = self.stream.read_buf(&mut self.buf);
        timed(timeout, read, Read, "reading from the worker")
            .await
            .map_err(|e| e.into_up())
    }

    /// The body bytes read so far, up to the body's end as `framing` sees
    /// it; what follows the end (nothing, from a sound worker) stays.
    pub fn take_body(&mut self, framing: &mut Framing) -> Result<bytes::Bytes, Box<Error>> {
        let taken = framing
            .consume(&self.buf)
            .map_err(|e| Error::explain(ErrorType::InvalidHTTPHeader, e.to_string()).into_up())?;
        Ok(self.buf.split_to(taken).freeze())
    }

    /// Back to this thread's pool, if the exchange left the connection
    /// clean: the response read to its end and nothing after it.
    pub fn release(self, framing: &Framing, close: bool) {
        if close || !framing.is_done() || !self.buf.is_empty() {
            return;
        }
        POOL.with_borrow_mut(|pool| {
            let slot = match pool.iter().position(|(addr, _)| *addr == self.addr) {
                Some(slot) => slot,
                None => {
                    pool.push((self.addr, Vec::new()));
                    pool.len() - 1
                }
            };
            let idle = &mut pool[slot].1;
            if idle.len() < POOL_MAX {
                idle.push(Idle {
                    stream: self.stream,
                    since: Instant::now(),
                });
            }
        });
    }

    /// The response head, once the whole of it is in; moves it out of the
    /// buffer.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<ResponseHead>, Box<Error>> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => {
                return Err(bad_response("a response header over 64 KiB"))
            }
            Err(e) => {
                return Err(bad_response(&format!(
                    "an unreadable response header ({e})"
                )))
            }
        };
        let head = client_head(&parsed, head_request)?;
        let _ = self.buf.split_to(len);
        Ok(Some(head))
    }
}

/// Rewrite a worker's response head for the client and find its framing.
fn client_head(
    parsed: &httparse::Response<'_, '_>,
    head_request: bool,
) -> Result<ResponseHead, Box<Error>> {
    let status = parsed.code.ok_or_else(|| bad_response("no status"))?;
    if status < 200 {
        return Err(bad_response(
            "an interim response to a request that asked for none",
        ));
    }
    let mut wire = Vec::with_capacity(256);
    wire.extend_from_slice(
        format!("HTTP/1.1 {status} {}\r\n", parsed.reason.unwrap_or("")).as_bytes(),
    );
    let (mut length, mut chunked, mut close, mut unavailable) = (None, None, false, false);
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("connection") {
            close |= field
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            continue;
        }
        if name.eq_ignore_ascii_case("keep-alive") || name.eq_ignore_ascii_case("proxy-connection")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (length, value) {
                (_, None) => return Err(bad_response("an unreadable Content-Length")),
                (Some(seen), Some(v)) if seen != v => {
                    return Err(bad_response("two Content-Lengths"))
                }
                (_, value) => length = value,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = field
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(roost_routing::headers::UNAVAILABLE) {
            unavailable = status == 503;
        }
        push_field(&mut wire, name.as_bytes(), field.value);
    }
    if chunked.is_some() && length.is_some() {
        return Err(bad_response("both Transfer-Encoding and Content-Length"));
    }
    let framing = match (head_request || matches!(status, 204 | 304), chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked(Chunked::default()),
        (false, Some(false), _) => Framing::UntilClose,
        (false, None, Some(length)) => Framing::Length(length),
        (false, None, None) => Framing::UntilClose,
    };
    Ok(ResponseHead {
        status,
        wire,
        close: close || framing == Framing::UntilClose,
        framing,
        unavailable,
    })
}

/// A live idle connection to `addr` from this thread's pool, dropping
/// those the worker closed or that idled too long.
fn take_idle(addr: SocketAddr) -> Option<TcpStream> {
    POOL.with_borrow_mut(|pool| {
        let (_, idle) = pool.iter_mut().find(|(idle_addr, _)| *idle_addr == addr)?;
        while let Some(Idle { stream, since }) = idle.pop() {
            if since.elapsed() < UPSTREAM_IDLE_TIMEOUT && is_open(&stream) {
                return Some(stream);
            }
            metrics::count(Benign::PoolMiss);
        }
        None
    })
}

/// Whether an idle connection is still open: nothing to read yet (a
/// closed one reads end-of-file; a sound worker sends nothing unasked).
fn is_open(stream: &TcpStream) -> bool {
    let mut probe = [0; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn bad_response(what: &str) -> Box<Error> {
    Error::explain(
        ErrorType::InvalidHTTPHeader,
        format!("the worker sent {what}"),
    )
    .into_up()
}
