//! Raw HTTP/1.1 on a TCP socket, for requests whose bytes matter: exact
//! header sizes and counts, odd request targets, pipelining, half-closes,
//! stalled or abandoned bodies. Every read is bounded by [`RAW_TIMEOUT`].
//!
//! ```ignore
//! let mut conn = Conn::open(fleet.proxy_addr).await;
//! conn.send(&request("GET", "/v1/whoami", &[(KEY_HEADER, "alice")])).await;
//! assert_eq!(conn.reply().await.status, 200);
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{assert_json_error, KEY_HEADER};

/// How long one raw read (a whole response) or one write may take.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// `METHOD target HTTP/1.1` with a `host` header and then `headers`,
/// ending the header section; no body. `target` is written as is.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nhost: proxy\r\n");
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += "\r\n";
    text.into_bytes()
}

/// [`request`] carrying `body`, with its `content-length`.
pub fn with_body(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("content-length", &length));
    let mut bytes = request(method, target, &all);
    bytes.extend_from_slice(body);
    bytes
}

/// `GET /v1/whoami` keyed by `key` in the `x-user-id` header.
pub fn whoami(key: &str) -> Vec<u8> {
    request("GET", "/v1/whoami", &[(KEY_HEADER, key)])
}

/// `GET /v1/whoami` keyed by `alice` with `count` header fields in all
/// (`host` and the key among them), short enough (under 4 KiB for 300
/// fields) that the proxy reads it whole before answering, so closing
/// leaves nothing unread to reset on.
pub fn request_with_fields(count: usize) -> Vec<u8> {
    let names: Vec<String> = (2..count).map(|i| format!("f{i}")).collect();
    let mut headers = vec![(KEY_HEADER, "alice")];
    headers.extend(names.iter().map(|name| (name.as_str(), "1")));
    request("GET", "/v1/whoami", &headers)
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The worker that answered (`x-roost-worker`), if one did.
    pub fn worker(&self) -> Option<&str> {
        self.header("x-roost-worker")
    }

    /// The body as JSON; panics with the reply when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("expected a JSON body, got {self:?}: {e}"))
    }

    /// The `error` of a JSON error body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let body: Value = serde_json::from_str(&self.body).ok()?;
        body["error"].as_str().map(str::to_owned)
    }

    /// Whether the server said it closes the connection after this reply.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Assert `reply` is `status` with the JSON error `code`, from the proxy
/// (no worker answered).
pub fn assert_refused(reply: &Reply, status: u16, code: &str, context: &str) {
    assert_eq!(reply.status, status, "{context}: {reply:?}");
    assert_eq!(reply.worker(), None, "{context}: no worker answered");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{context}"
    );
    assert_json_error(&reply.body, code, context);
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// One client connection, with what was read past the last response (a
/// pipelined response may arrive in the same read as the one before it).
pub struct Conn {
    stream: TcpStream,
    unread: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub async fn try_open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(RAW_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        Ok(Conn {
            stream,
            unread: Vec::new(),
        })
    }

    /// Write `bytes`; panics if the write fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .await
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", bytes.len()));
    }

    /// Write `bytes` (bounded by [`RAW_TIMEOUT`]: a peer that stopped
    /// reading gives an error, not a hang).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(RAW_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::other("write timed out"))?
    }

    /// Close the writing half (a FIN): the request is complete, the
    /// response may still come.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .unwrap_or_else(|e| panic!("shut down the writing half: {e}"));
    }

    /// Read one whole response; panics if none arrives.
    pub async fn reply(&mut self) -> Reply {
        self.try_reply().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Read one whole response (interim 1xx responses skipped); `Err` with
    /// what arrived when the connection ends or fails before it, or after
    /// [`RAW_TIMEOUT`].
    pub async fn try_reply(&mut self) -> Result<Reply, String> {
        tokio::time::timeout(RAW_TIMEOUT, async {
            loop {
                let reply = self.read_reply().await?;
                if !(100..200).contains(&reply.status) {
                    return Ok(reply);
                }
            }
        })
        .await
        .map_err(|_| format!("no whole response within {RAW_TIMEOUT:?}"))?
    }

    /// How long until the peer closes the connection (EOF or reset),
    /// reading and discarding anything it sends; panics after `limit`.
    pub async fn closed_after(&mut self, since: Instant, limit: Duration) -> Duration {
        assert!(
            self.closes_within(limit).await,
            "the peer kept the connection open for {limit:?}"
        );
        since.elapsed()
    }

    /// Whether the peer closes the connection (EOF or reset) within
    /// `limit`, reading and discarding anything it sends meanwhile.
    pub async fn closes_within(&mut self, limit: Duration) -> bool {
        let wait = async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// The next response, an interim (1xx) one included, if it starts to
    /// arrive within `limit` (`None`: nothing did); once it has started,
    /// reading the rest is bounded by [`RAW_TIMEOUT`]. `Err` as for
    /// [`Conn::try_reply`].
    pub async fn next_response_within(&mut self, limit: Duration) -> Option<Result<Reply, String>> {
        if self.unread.is_empty() {
            match tokio::time::timeout(limit, self.fill()).await {
                Err(_) => return None,
                Ok(Err(e)) => return Some(Err(e)),
                Ok(Ok(_)) => {}
            }
        }
        let rest = tokio::time::timeout(RAW_TIMEOUT, self.read_reply()).await;
        Some(rest.unwrap_or_else(|_| Err(format!("no whole response within {RAW_TIMEOUT:?}"))))
    }

    /// Read more bytes into `unread`: how many (0 at EOF).
    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.map_err(|e| {
            format!(
                "read failed ({e}) after {:?}",
                String::from_utf8_lossy(&self.unread)
            )
        })?;
        self.unread.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Take `n` bytes, reading as needed.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.unread.len() < n {
            if self.fill().await? == 0 {
                return Err(format!(
                    "the connection closed {} bytes into a {n}-byte body",
                    self.unread.len()
                ));
            }
        }
        Ok(self.unread.drain(..n).collect())
    }

    /// Take bytes up to and including the next `delimiter`.
    async fn take_through(&mut self, delimiter: &[u8]) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = find(&self.unread, delimiter) {
                return Ok(self.unread.drain(..i + delimiter.len()).collect());
            }
            if self.fill().await? == 0 {
                return Err(format!(
                    "the connection closed before a whole response: {:?}",
                    String::from_utf8_lossy(&self.unread)
                ));
            }
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        let head = self.take_through(b"\r\n\r\n").await?;
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        let body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if reply
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked().await?
        } else if let Some(length) = reply.header("content-length") {
            let length = length
                .parse()
                .map_err(|e| format!("content-length {length:?}: {e}"))?;
            self.take(length).await?
        } else {
            // Delimited by the end of the connection.
            while self.fill().await? > 0 {}
            std::mem::take(&mut self.unread)
        };
        reply.body = String::from_utf8_lossy(&body).into_owned();
        Ok(reply)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.take_through(b"\r\n").await?;
            let line = String::from_utf8_lossy(&line);
            let size = line.trim().split(';').next().unwrap_or_default();
            let size =
                usize::from_str_radix(size, 16).map_err(|e| format!("chunk size {size:?}: {e}"))?;
            if size == 0 {
                // Trailer fields, if any, up to the empty line.
                while self.take_through(b"\r\n").await?.len() > 2 {}
                return Ok(body);
            }
            body.extend(self.take(size).await?);
            self.take(2).await?;
        }
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Write `bytes` on a fresh connection and read one response.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut conn = Conn::open(addr).await;
    conn.send(bytes).await;
    conn.reply().await
}

/// Write `parts` on a fresh connection, one write each, then read one
/// response, as a client that sends its whole request before reading
/// does. A failed write ends the writing (the server may answer, and stop
/// reading, before a large body is all sent); a failed read is an `Err`.
pub async fn exchange_parts(addr: SocketAddr, parts: &[&[u8]]) -> Result<Reply, String> {
    let mut conn = Conn::try_open(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    for part in parts {
        if conn.try_send(part).await.is_err() {
            break;
        }
    }
    conn.try_reply().await
}
