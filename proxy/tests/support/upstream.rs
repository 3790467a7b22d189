//! A fake worker that records what the proxy forwards: the witness for
//! tests about the bytes a worker receives (which headers, which path),
//! now that a real worker tells a client nothing it did not send itself.
//!
//! It answers every request `200` with `{"worker": ID}` and `x-roost-worker:
//! ID` (health probes included, so the proxy counts it up), keeps
//! connections alive, and records every request but the probes.
//!
//! ```ignore
//! let fake = Recorder::start("fake").await;
//! let fleet = TestFleet::start(FleetConfig::new(0).with_fake_worker(&fake)).await;
//! fleet.get_keyed("alice").await;
//! let seen = fake.requests();
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the fake worker received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target, byte for byte.
    pub target: String,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `x-roost-*` headers, `(name, value)`.
    pub fn roost_headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with("x-roost-"))
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// The fake worker: stops when dropped.
pub struct Recorder {
    pub id: String,
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    server: JoinHandle<()>,
}

impl Recorder {
    /// Listen on a 127.0.0.1 port and serve until dropped.
    pub async fn start(id: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake worker on 127.0.0.1");
        let addr = listener.local_addr().expect("the fake worker's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn(serve(listener, id.to_owned(), Arc::clone(&requests)));
        Recorder {
            id: id.to_owned(),
            addr,
            requests,
            server,
        }
    }

    /// The requests received so far, probes excluded, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last request received; panics if none was.
    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("the fake worker {} received no request", self.id))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, id: String, requests: Arc<Mutex<Vec<Recorded>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(connection(stream, id.clone(), Arc::clone(&requests)));
    }
}

/// Serve one connection until the peer closes it or sends something this
/// fake does not parse.
async fn connection(mut stream: TcpStream, id: String, requests: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    while let Some(request) = next_request(&mut stream, &mut buf).await {
        if !matches!(request.target.as_str(), "/readyz" | "/healthz") {
            requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(request);
        }
        let body = format!("{{\"worker\":{id:?}}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-roost-worker: {id}\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Read one request (its head, and a `content-length` body, discarded).
async fn next_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = head.trim_end().split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, target) = (start.next()?.to_owned(), start.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < length {
        read_more(stream, buf).await?;
    }
    buf.drain(..length);
    Some(Recorded {
        method,
        target,
        headers,
    })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
