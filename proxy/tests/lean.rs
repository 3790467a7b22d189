//! The lean forward path (`proxy/src/lean/`), on real sockets against a
//! scripted fake worker: what it must keep of the generic path.
//!
//! - A worker's streamed body reaches the client piece by piece, as the
//!   worker writes it (server-sent events must not wait for the end), and
//!   the connection carries the next request after it.
//! - A worker that closes its idle connections (as a draining worker does)
//!   costs no request, not even one that may not be replayed.
//! - A connection whose request is not plain moves to the generic path
//!   with nothing lost, and keeps being served there.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::raw::{self, Conn};
use support::upstream::Recorder;
use support::{FleetConfig, Missing, TestFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long a step may take before the test fails.
const STEP: Duration = Duration::from_secs(5);

/// What the scripted worker does after answering a request.
#[derive(Clone, Copy, PartialEq)]
enum AfterReply {
    KeepOpen,
    /// Close the connection (it said nothing about closing: the proxy
    /// pools it, and finds it closed when it next takes it).
    Close,
}

/// A fake worker: `GET /stream` gets a chunked body whose second piece
/// waits for `release`; anything else a small JSON 200. Counts the
/// connections it accepted.
struct Scripted {
    addr: SocketAddr,
    release: Arc<Notify>,
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Scripted {
    async fn start(after: AfterReply) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the scripted worker on 127.0.0.1");
        let addr = listener.local_addr().expect("its address");
        let release = Arc::new(Notify::new());
        let connections = Arc::new(AtomicUsize::new(0));
        let (notify, count) = (Arc::clone(&release), Arc::clone(&connections));
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&notify), after));
            }
        });
        Scripted {
            addr,
            release,
            connections,
            server,
        }
    }

    /// A fleet whose only worker is this fake.
    async fn fleet(&self) -> TestFleet {
        let mut config = FleetConfig::new(0)
            .missing(Missing::Any)
            .yaml("limits: {rate: {per_s: 0}}\n");
        config.workers.push(("fake".to_owned(), 1.0));
        config.fakes.push(("fake".to_owned(), self.addr));
        TestFleet::start(config).await
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(mut stream: TcpStream, release: Arc<Notify>, after: AfterReply) {
    let mut buf = Vec::new();
    loop {
        let Some(target) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let written = if target == "/stream" {
            stream_events(&mut stream, &release).await
        } else {
            let body = br#"{"ok":true}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(&[head.as_bytes(), body].concat()).await
        };
        if written.is_err() || after == AfterReply::Close {
            return;
        }
    }
}

/// The head of a chunked event stream and its first event; the second
/// and the end once `release` is notified.
async fn stream_events(stream: &mut TcpStream, release: &Notify) -> std::io::Result<()> {
    let first = "data: one\n\n";
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{first}\r\n", first.len());
    stream
        .write_all(format!("{head}{chunk}").as_bytes())
        .await?;
    release.notified().await;
    let second = "data: two\n\n";
    let rest = format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len());
    stream.write_all(rest.as_bytes()).await
}

/// The target of the next request (its body, if any, is `Content-Length`
/// long and skipped); `None` when the connection ends.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < length {
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..length);
    head.split(' ').nth(1).map(str::to_owned)
}

/// Read from `stream` until `needle` has arrived; everything read.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let waited = tokio::time::timeout(STEP, async {
        while !String::from_utf8_lossy(seen).contains(needle) {
            let mut chunk = [0; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        waited.is_ok() && String::from_utf8_lossy(seen).contains(needle),
        "{needle:?} did not arrive; got {:?}",
        String::from_utf8_lossy(seen)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_body_reaches_the_client_as_the_worker_writes_it() {
    let worker = Scripted::start(AfterReply::KeepOpen).await;
    let fleet = worker.fleet().await;
    let mut client = TcpStream::connect(fleet.proxy_addr)
        .await
        .expect("connect to the proxy");
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("send the request");

    // The first event arrives while the worker still holds the second.
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, "data: one").await;
    assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
    worker.release.notify_one();
    read_until(&mut client, &mut seen, "0\r\n\r\n").await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains("data: two"), "{text:?}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text:?}"
    );

    // The chunked body ended where it should: the connection carries
    // the next request.
    client
        .write_all(b"GET /next HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("send the next request");
    let mut next = Vec::new();
    read_until(&mut client, &mut next, r#"{"ok":true}"#).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_closing_idle_connections_costs_no_request() {
    let worker = Scripted::start(AfterReply::Close).await;
    let fleet = worker.fleet().await;
    let mut client = Conn::open(fleet.proxy_addr).await;
    let before = worker.connections.load(Ordering::SeqCst);
    for i in 0..10 {
        // A POST without an Idempotency-Key: not replay-safe, so it must
        // never be sent into a connection the worker has closed.
        let body = format!("{{\"n\":{i}}}");
        let request = raw::with_body("POST", "/v1/cart/items", &[], body.as_bytes());
        client.send(&request).await;
        let reply = client.reply().await;
        assert_eq!(reply.status, 200, "request {i}: {reply:?}");
        assert!(!reply.closes(), "the client's connection stays open");
        // The worker's close reaches the proxy before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = worker.connections.load(Ordering::SeqCst) - before;
    assert!(opened >= 10, "one worker connection per request: {opened}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_moves_to_the_generic_path_with_nothing_lost() {
    let fake = Recorder::start("fake").await;
    let fleet = TestFleet::start(
        FleetConfig::new(0)
            .missing(Missing::Any)
            .yaml("limits: {rate: {per_s: 0}}\n")
            .with_fake_worker(&fake),
    )
    .await;
    let mut client = Conn::open(fleet.proxy_addr).await;
    // Plain, then a body too large to read whole (streamed: the generic
    // path), then plain again on the same connection.
    let large = vec![b'x'; 100 * 1024];
    let requests = [
        raw::request("GET", "/v1/one", &[]),
        raw::with_body("POST", "/v1/two", &[], &large),
        raw::request("GET", "/v1/three", &[]),
    ];
    for request in &requests {
        client.send(request).await;
        let reply = client.reply().await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.worker(), Some("fake"));
    }
    let seen: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(seen, ["GET /v1/one", "POST /v1/two", "GET /v1/three"]);
}
