//! Request smuggling and HTTP/1.1 conformance at the edge, byte for byte on
//! raw sockets: for every malformed or ambiguous request the proxy gives
//! the answer nginx or HAProxy give, and a safe one. Either it refuses the
//! request itself (400, or 414/431/501 where that is the standard answer)
//! and closes the connection, or it forwards exactly one well-framed
//! request, and nothing after it that the client did not frame as a
//! request of its own.
//!
//! The witnesses are a recording fake worker ([`Recorder`]: what it parsed
//! is what a worker would see) and a [`Tap`] between the proxy and it (the
//! bytes the proxy wrote on each worker connection, and whether that
//! connection ended). Every case is written in one write with a
//! well-formed request behind it, the canary. A proxy that framed the case
//! differently from how it was sent would forward the canary, or a piece
//! of the case, as a request of its own; the canary is answered only when
//! the proxy kept the connection after a request it framed exactly.
//!
//! The suite pins the proxy's answers, so a rewrite of the forward path
//! can be checked against it before and after. (It found one unsafe
//! forward, a coding before `chunked`, now refused with 501.)

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::raw::{find, Conn, Reply};
use support::upstream::{Recorded, Recorder};
use support::{eventually, FleetConfig, Missing, TestFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Written right behind every case, in the same write.
const CANARY: &str = "GET /canary HTTP/1.1\r\nhost: proxy\r\n\r\n";
/// The canary as the fake worker records it.
const CANARY_SEEN: &str = "GET /canary";
/// How long a connection the proxy means to close may stay open: after a
/// refusal it lingers while the client still sends (1 s of silence at
/// most, `linger::LINGER_IDLE`).
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
/// How long a request the proxy forwarded may take to be recorded, and a
/// worker connection it dropped to end.
const RECORD_WITHIN: Duration = Duration::from_secs(2);

/// The start of a POST to `/v1/whoami?{query}`, before its framing fields.
fn post(query: &str) -> String {
    format!("POST /v1/whoami?{query} HTTP/1.1\r\nhost: proxy\r\n")
}

/// `GET /v1/whoami` with these header lines (each ended by CRLF here)
/// after `host`, and the end of the head.
fn get(lines: &[&str]) -> String {
    let fields: String = lines.iter().map(|line| format!("{line}\r\n")).collect();
    format!("GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\n{fields}\r\n")
}

/// [`post`] as the fake worker records it (`METHOD target`).
fn posted(query: &str) -> String {
    format!("POST /v1/whoami?{query}")
}

/// The proxy in front of one recording fake worker, through a [`Tap`]:
/// keyless requests go to it, no rate limit.
struct Edge {
    fleet: TestFleet,
    tap: Tap,
    fake: Recorder,
}

impl Edge {
    async fn start() -> Edge {
        let fake = Recorder::start("fake").await;
        let tap = Tap::start(fake.addr).await;
        let mut config = FleetConfig::new(0)
            .missing(Missing::Any)
            .yaml("limits: {rate: {per_s: 0}}\n");
        // `with_fake_worker`, but the proxy reaches the fake through the tap.
        config.workers.push((fake.id.clone(), 1.0));
        config.fakes.push((fake.id.clone(), tap.addr));
        let fleet = TestFleet::start(config).await;
        Edge { fleet, tap, fake }
    }

    /// A connection on which `case` and the canary behind it were written
    /// in one write. A failed write is no error: the proxy may refuse and
    /// close before it has read everything.
    async fn send(&self, case: &[u8]) -> Conn {
        let mut conn = Conn::open(self.fleet.proxy_addr).await;
        let _ = conn.try_send(&[case, CANARY.as_bytes()].concat()).await;
        conn
    }

    /// How many requests the fake worker has received so far.
    fn mark(&self) -> usize {
        self.fake.requests().len()
    }

    /// The requests the fake worker received after `mark`, once there are
    /// `expected` (or [`RECORD_WITHIN`] has passed).
    async fn seen_since(&self, mark: usize, expected: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + RECORD_WITHIN;
        while self.fake.requests().len() < mark + expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.fake.requests().split_off(mark)
    }

    /// What the proxy wrote after the head of the request `seen` (`METHOD
    /// target`) on the worker connection that carried it, once that
    /// connection has ended; panics naming `what` after [`RECORD_WITHIN`].
    async fn wire_after_head(&self, what: &str, seen: &str) -> Vec<u8> {
        let line = format!("{seen} HTTP/1.1\r\n");
        let waiting = format!("{what}: the end of the worker connection that carried {seen:?}");
        eventually(RECORD_WITHIN, &waiting, || async {
            self.tap.after_head(line.as_bytes())
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// The tap
// ---------------------------------------------------------------------------

/// A relay between the proxy and the fake worker that keeps, for every
/// connection the proxy opens to the worker, the bytes the proxy wrote on
/// it and whether it has ended: what the fake cannot tell (it reads no
/// chunked body, and does not say which connection a request came on).
struct Tap {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    accept: JoinHandle<()>,
}

/// One worker connection through the [`Tap`].
#[derive(Default)]
struct Link {
    /// What the proxy wrote, in order.
    sent: Mutex<Vec<u8>>,
    /// The proxy closed its side (or it broke).
    ended: AtomicBool,
}

impl Tap {
    /// Listen on a 127.0.0.1 port and relay every connection to `worker`.
    async fn start(worker: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tap on 127.0.0.1");
        let addr = listener.local_addr().expect("the tap's address");
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(tap_connections(listener, worker, Arc::clone(&links)));
        Tap {
            addr,
            links,
            accept,
        }
    }

    /// What the proxy wrote after the head that starts with `line`, on an
    /// ended connection that carried it.
    fn after_head(&self, line: &[u8]) -> Option<Vec<u8>> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .iter()
            .filter(|link| link.ended.load(Ordering::SeqCst))
            .find_map(|link| {
                let sent = link.sent.lock().unwrap_or_else(|p| p.into_inner());
                let start = find(&sent, line)?;
                let end = start + find(&sent[start..], b"\r\n\r\n")? + 4;
                Some(sent[end..].to_vec())
            })
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relay each connection the proxy opens to a new one to `worker`, both
/// ways, until either side ends it.
async fn tap_connections(
    listener: TcpListener,
    worker: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
) {
    while let Ok((proxy, _)) = listener.accept().await {
        let Ok(upstream) = TcpStream::connect(worker).await else {
            continue;
        };
        let link = Arc::new(Link::default());
        links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&link));
        let (mut from_proxy, mut to_proxy) = proxy.into_split();
        let (mut from_worker, mut to_worker) = upstream.into_split();
        tokio::spawn(async move {
            // Keep recording after the worker is gone: whatever the proxy
            // still writes on this connection is what matters.
            let mut chunk = [0u8; 16 * 1024];
            let mut worker_open = true;
            while let Ok(n @ 1..) = from_proxy.read(&mut chunk).await {
                let bytes = &chunk[..n];
                link.sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                worker_open = worker_open && to_worker.write_all(bytes).await.is_ok();
            }
            link.ended.store(true, Ordering::SeqCst);
            let _ = to_worker.shutdown().await;
        });
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_worker, &mut to_proxy).await;
            let _ = to_proxy.shutdown().await;
        });
    }
}

/// `METHOD target` of each request.
fn summaries(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

/// A chunked [`post`] with this body, as sent.
fn chunked(query: &str, body: &str) -> String {
    format!("{}transfer-encoding: chunked\r\n\r\n{body}", post(query))
}

// ---------------------------------------------------------------------------
// The two safe answers
// ---------------------------------------------------------------------------

/// Assert the proxy refused `case` itself, with one of `statuses`, and
/// closed the connection, and the fake worker received `forwarded`
/// (`METHOD target`: a head the proxy sent before it found the body
/// malformed) and never the canary.
async fn assert_refused(
    edge: &Edge,
    what: &str,
    case: impl AsRef<[u8]>,
    statuses: &[u16],
    forwarded: &[&str],
) {
    let mark = edge.mark();
    let mut conn = edge.send(case.as_ref()).await;
    let reply = conn
        .try_reply()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    assert_eq!(reply.worker(), None, "{what}: a worker answered: {reply:?}");
    assert!(
        statuses.contains(&reply.status),
        "{what}: {statuses:?} expected: {reply:?}"
    );
    assert!(
        conn.closes_within(CLOSE_WITHIN).await,
        "{what}: the connection stayed open {CLOSE_WITHIN:?} after the {}",
        reply.status
    );
    let seen = edge.seen_since(mark, forwarded.len()).await;
    assert_eq!(
        summaries(&seen),
        forwarded,
        "{what}: what the worker received"
    );
}

/// On a fresh [`Edge`], assert each `(what, case)` is refused with one of
/// `statuses` and the connection closed, nothing forwarded.
async fn assert_each_refused<C: AsRef<[u8]>>(statuses: &[u16], cases: &[(&str, C)]) {
    let edge = Edge::start().await;
    for (what, case) in cases {
        assert_refused(&edge, what, case, statuses, &[]).await;
    }
}

/// The next answer on `conn`, asserted to be the fake worker's 200 to
/// `request`.
async fn worker_answer(conn: &mut Conn, what: &str, request: &str) -> Reply {
    let reply = conn
        .try_reply()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer to {request}: {e}"));
    assert_eq!(
        (reply.status, reply.worker()),
        (200, Some("fake")),
        "{what}: the answer to {request}: {reply:?}"
    );
    reply
}

/// What the proxy does once it has answered a forwarded case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Keeps the connection: the canary is forwarded and answered, as a
    /// request of its own.
    ServesCanary,
    /// Closes it: the canary is never forwarded.
    Closes,
}

/// Assert the proxy forwarded `case` as exactly one request, `forwarded`
/// (`METHOD target`), answered with the worker's 200, and then did `then`.
/// Returns the request as the worker received it.
async fn assert_forwarded_once(
    edge: &Edge,
    what: &str,
    case: impl AsRef<[u8]>,
    forwarded: &str,
    then: Then,
) -> Recorded {
    let mark = edge.mark();
    let mut conn = edge.send(case.as_ref()).await;
    expect_forwarded_once(edge, what, &mut conn, mark, forwarded, then).await
}

/// [`assert_forwarded_once`] for a case already written on `conn`, the
/// canary behind it, with the fake worker's count at `mark` before.
async fn expect_forwarded_once(
    edge: &Edge,
    what: &str,
    conn: &mut Conn,
    mark: usize,
    forwarded: &str,
    then: Then,
) -> Recorded {
    worker_answer(conn, what, "the case").await;
    let mut expected = vec![forwarded];
    match then {
        Then::ServesCanary => {
            worker_answer(conn, what, "the canary").await;
            expected.push(CANARY_SEEN);
        }
        Then::Closes => assert!(
            conn.closes_within(CLOSE_WITHIN).await,
            "{what}: the connection stayed open {CLOSE_WITHIN:?} after the answer"
        ),
    }
    let mut seen = edge.seen_since(mark, expected.len()).await;
    assert_eq!(
        summaries(&seen),
        expected,
        "{what}: what the worker received"
    );
    seen.swap_remove(0)
}

// ---------------------------------------------------------------------------
// Framing: Content-Length and Transfer-Encoding
// ---------------------------------------------------------------------------

/// Content-Length and `Transfer-Encoding: chunked` together, in either
/// order, the canary inside the body by the Content-Length and a request
/// of its own by the chunked framing (the CL.TE / TE.CL smuggling shape).
/// nginx (since 1.21.1) answers 400 and closes. HAProxy (its reg-test
/// `http_transfer_encoding.vtc`) drops the Content-Length, forwards the
/// body chunked and closes after the response (RFC 9112 §6.1, §6.3):
/// Roost gives HAProxy's answer: the worker sees one request framed by
/// chunked alone, its body the last chunk and nothing more, and never the
/// canary.
#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_chunked_is_framed_by_chunked_then_closed() {
    let edge = Edge::start().await;
    let length = "0\r\n\r\n".len() + CANARY.len();
    let cases = [
        (
            "Content-Length, then Transfer-Encoding",
            "cl-te",
            format!("content-length: {length}\r\ntransfer-encoding: chunked"),
        ),
        (
            "Transfer-Encoding, then Content-Length",
            "te-cl",
            format!("transfer-encoding: chunked\r\ncontent-length: {length}"),
        ),
    ];
    for (what, query, framing) in cases {
        let case = format!("{}{framing}\r\n\r\n0\r\n\r\n", post(query));
        let seen = posted(query);
        let got = assert_forwarded_once(&edge, what, &case, &seen, Then::Closes).await;
        assert_eq!(got.values("transfer-encoding"), ["chunked"], "{what}");
        assert!(got.values("content-length").is_empty(), "{what}: {got:?}");
        let body = edge.wire_after_head(what, &seen).await;
        assert_eq!(
            String::from_utf8_lossy(&body),
            "0\r\n\r\n",
            "{what}: the body on the worker connection"
        );
    }
}

/// Two Content-Length fields that disagree, or one holding a list of
/// different lengths: no single length. nginx and HAProxy answer 400 and
/// close (identical values count as one: RFC 9110 §8.6).
#[tokio::test(flavor = "multi_thread")]
async fn conflicting_content_lengths_are_refused_then_closed() {
    let two = format!(
        "{}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        post("two")
    );
    let list = format!("{}content-length: 5, 6\r\n\r\nhello!", post("list"));
    assert_each_refused(&[400], &[("two fields, 5 and 6", two), ("\"5, 6\"", list)]).await;
}

/// A Transfer-Encoding whose last coding is not `chunked` leaves the body
/// with no framing (RFC 9112 §6.3); an unknown coding alone is the same.
/// HAProxy answers 400 (`http_transfer_encoding.vtc`: `chunked, gzip`,
/// `gzip`); nginx answers 501 to any Transfer-Encoding but `chunked`.
/// Both close.
#[tokio::test(flavor = "multi_thread")]
async fn transfer_encodings_not_ending_in_chunked_are_refused_then_closed() {
    let case = |codings| {
        format!(
            "{}transfer-encoding: {codings}\r\n\r\n0\r\n\r\n",
            post("te")
        )
    };
    assert_each_refused(
        &[400],
        &[
            ("chunked, then gzip", case("chunked, gzip")),
            ("an unknown coding alone", case("x-unknown")),
        ],
    )
    .await;
}

/// A coding the proxy does not implement before a final `chunked`: the
/// framing is clear, but the proxy cannot decode the body, so it must not
/// forward it as if it were plain. nginx answers 501 (RFC 9112 §6.1: a
/// server SHOULD), HAProxy 422 (`http_transfer_encoding.vtc`); either
/// closes. Roost gives nginx's 501 `unsupported_transfer_coding`.
#[tokio::test(flavor = "multi_thread")]
async fn an_unimplemented_coding_before_chunked_is_refused_then_closed() {
    let case = format!(
        "{}transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        post("gzip")
    );
    assert_each_refused(&[501], &[("gzip, then chunked", case)]).await;
}

// ---------------------------------------------------------------------------
// The header section
// ---------------------------------------------------------------------------

/// A header line that starts with a space or a tab continues the one
/// before it (obs-fold), which a worker may read as a field of its own.
/// RFC 9112 §5.2 lets a server refuse it (400) or unfold it to spaces.
/// nginx answers 400 and closes; HAProxy unfolds it and forwards one
/// request. Roost gives nginx's answer.
#[tokio::test(flavor = "multi_thread")]
async fn obs_fold_is_refused_then_closed() {
    let space = get(&["x-a: 1", " x-b: 2"]);
    let tab = get(&["x-a: 1", "\tx-b: 2"]);
    assert_each_refused(&[400], &[("folded by a space", space), ("by a tab", tab)]).await;
}

/// Lines ended by a bare LF instead of CRLF. RFC 9112 §2.2 lets a
/// recipient accept them; nginx and HAProxy do, and forward one request.
/// So does Roost, which writes the head anew with CRLF: the worker sees
/// one request with its fields intact, and the canary apart.
#[tokio::test(flavor = "multi_thread")]
async fn bare_lf_line_endings_are_forwarded_once() {
    let edge = Edge::start().await;
    let what = "a head with bare LF line endings";
    let case = "GET /v1/whoami HTTP/1.1\nhost: proxy\nx-a: 1\n\n";
    let seen =
        assert_forwarded_once(&edge, what, &case, "GET /v1/whoami", Then::ServesCanary).await;
    assert_eq!(seen.values("x-a"), ["1"], "{what}: {seen:?}");
    assert_eq!(seen.values("host"), ["proxy"], "{what}: {seen:?}");
}

/// A space between a field name and its colon (`Host : x`): some servers
/// strip it and read `Host`, others do not, so the field means different
/// things to each. RFC 9112 §5.1: a server MUST answer 400. nginx (since
/// 1.21.1) and HAProxy answer 400 and close.
#[tokio::test(flavor = "multi_thread")]
async fn a_space_before_the_colon_is_refused_then_closed() {
    let host = "GET /v1/whoami HTTP/1.1\r\nhost : proxy\r\n\r\n".to_owned();
    let other = get(&["x-a : 1"]);
    assert_each_refused(&[400], &[("`host : proxy`", host), ("`x-a : 1`", other)]).await;
}

/// A NUL, or a CR not followed by LF, inside a header value: a recipient
/// may end the value (or the line) there and read the rest as another
/// field (RFC 9110 §5.5: MUST reject, or replace with SP). nginx and
/// HAProxy answer 400 and close.
#[tokio::test(flavor = "multi_thread")]
async fn nul_and_bare_cr_in_header_values_are_refused_then_closed() {
    let nul = get(&["x-a: 1\0x-b: 2"]);
    let cr = get(&["x-a: 1\rx-b: 2"]);
    assert_each_refused(&[400], &[("a NUL in a value", nul), ("a bare CR", cr)]).await;
}

// ---------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------

/// Chunk sizes that are not hex, negative, past 64 bits, or followed by a
/// 64 KiB chunk extension, each after a good chunk. nginx and HAProxy
/// answer a malformed chunk size 400 and close (nginx reads the whole
/// body before it forwards anything; HAProxy takes at most 13 hex digits
/// and needs the whole chunk-size line, extensions included, within its
/// 16 KiB buffer). Roost
/// streams a chunked body, so the worker has seen the head (and might see
/// the good chunk) before the bad size is read: the proxy answers 400,
/// closes, and ends that worker connection with nothing more written on
/// it, so no later request can land inside the unfinished body. The same
/// body with good sizes is forwarded, re-chunked, extensions dropped.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_chunk_sizes_are_refused_then_closed() {
    let edge = Edge::start().await;
    let good = "5\r\nhello\r\n";
    let extension = "e".repeat(64 << 10);
    let cases = [
        ("a size that is not hex", "hex", "zz".to_owned()),
        ("a negative size", "negative", "-5".to_owned()),
        ("a size past 64 bits", "overflow", "f".repeat(18)),
        (
            "a 64 KiB chunk extension",
            "extension",
            format!("5;{extension}"),
        ),
    ];
    for (what, query, size) in cases {
        let case = chunked(query, &format!("{good}{size}\r\nhello\r\n0\r\n\r\n"));
        let seen = posted(query);
        assert_refused(&edge, what, &case, &[400], &[&seen]).await;
        let after = edge.wire_after_head(what, &seen).await;
        assert!(
            good.as_bytes().starts_with(&after),
            "{what}: after the head, the worker connection carried more than the good chunk: \
             {:?}",
            String::from_utf8_lossy(&after)
        );
    }

    let what = "good chunk sizes";
    let case = chunked("good", &format!("{good}5;ext=1\r\nhello\r\n0\r\n\r\n"));
    let seen = posted("good");
    let got = assert_forwarded_once(&edge, what, &case, &seen, Then::ServesCanary).await;
    assert_eq!(got.values("transfer-encoding"), ["chunked"], "{what}");
    // The worker connection may then carry the canary, as a request of its
    // own (the fake reads no chunked body and drops the connection, so
    // the proxy may have to send the canary again on another).
    let wire = edge.wire_after_head(what, &seen).await;
    let body = format!("{good}{good}0\r\n\r\n");
    let shown = String::from_utf8_lossy(&wire);
    let after = wire
        .strip_prefix(body.as_bytes())
        .unwrap_or_else(|| panic!("{what}: the body on the worker connection: {shown:?}"));
    assert!(
        after.is_empty() || after == CANARY.as_bytes(),
        "{what}: after the body, the worker connection carried {shown:?}"
    );
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// Two complete requests in one write, the second with a body and
/// `Connection: close`, then the canary. nginx and HAProxy answer both,
/// in order, and close after the second (RFC 9112 §9.3.2, §9.6): the
/// canary is never read. The worker sees the two apart (the body's five
/// bytes do not swallow the next request), and the second answer is the
/// one that says it closes, so the answers are in order.
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_and_forwarded_apart() {
    let edge = Edge::start().await;
    let what = "two pipelined requests";
    let first = "GET /v1/whoami?n=1 HTTP/1.1\r\nhost: proxy\r\n\r\n";
    let second = "POST /v1/whoami?n=2 HTTP/1.1\r\nhost: proxy\r\ncontent-length: 5\r\n\
                  connection: close\r\n\r\nhello";
    let mark = edge.mark();
    let mut conn = edge.send(format!("{first}{second}").as_bytes()).await;
    for (request, closes) in [("the first", false), ("the second", true)] {
        let reply = worker_answer(&mut conn, what, request).await;
        assert_eq!(
            reply.closes(),
            closes,
            "{what}: only the answer to the second says it closes: {reply:?}"
        );
    }
    assert!(
        conn.closes_within(CLOSE_WITHIN).await,
        "{what}: the connection stayed open after the request that asked to close it"
    );
    let seen = edge.seen_since(mark, 2).await;
    assert_eq!(
        summaries(&seen),
        ["GET /v1/whoami?n=1", "POST /v1/whoami?n=2"],
        "{what}: what the worker received"
    );
    assert_eq!(seen[1].values("content-length"), ["5"], "{what}");
}

/// An HTTP/1.0 request without `Connection: keep-alive` (RFC 9112 §9.3):
/// nginx and HAProxy answer it and close, and never read the canary.
#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_without_keep_alive_is_answered_then_closed() {
    let edge = Edge::start().await;
    let case = "GET /v1/whoami HTTP/1.0\r\nhost: proxy\r\n\r\n";
    assert_forwarded_once(&edge, "HTTP/1.0", case, "GET /v1/whoami", Then::Closes).await;
}

/// `Expect: 100-continue` with a 5-byte body, the client waiting a while
/// for the go-ahead before it sends the body anyway (as curl does, 1 s).
/// nginx answers `100 Continue` itself; HAProxy forwards the expectation
/// and relays the server's `100`. Roost forwards it too: this fake worker
/// sends no `100`, so the client hears nothing until it sends the body
/// (a `100` from the proxy would be as good; a final answer before the
/// body is not what Roost gives). Then the request is forwarded once, its
/// body framed exactly (the canary behind it is a request of its own).
#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_forwards_the_request_once() {
    let edge = Edge::start().await;
    let what = "Expect: 100-continue";
    let mark = edge.mark();
    let mut conn = Conn::open(edge.fleet.proxy_addr).await;
    let head = format!(
        "{}content-length: 5\r\nexpect: 100-continue\r\n\r\n",
        post("expect")
    );
    conn.send(head.as_bytes()).await;
    if let Some(early) = conn.next_response_within(Duration::from_millis(500)).await {
        let early = early.unwrap_or_else(|e| panic!("{what}: before the body: {e}"));
        assert_eq!(early.status, 100, "{what}: before the body: {early:?}");
    }
    conn.send(format!("hello{CANARY}").as_bytes()).await;
    let seen = expect_forwarded_once(
        &edge,
        what,
        &mut conn,
        mark,
        &posted("expect"),
        Then::ServesCanary,
    )
    .await;
    assert_eq!(seen.values("content-length"), ["5"], "{what}: {seen:?}");
}

// ---------------------------------------------------------------------------
// The request target and line lengths
// ---------------------------------------------------------------------------

/// The absolute form of the request target (RFC 9112 §3.2.2: a server
/// MUST accept it). nginx and HAProxy accept it, HAProxy answering 400
/// when its authority and `Host` disagree (`h1_host_normalization.vtc`).
/// Roost does both, and forwards the target as sent when its path is
/// already normal (nginx would send the origin form; both are safe): one
/// request, its `Host` the authority's.
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_targets_are_forwarded_once_unless_the_host_disagrees() {
    let edge = Edge::start().await;
    let what = "an absolute-form target";
    let case = "GET http://proxy/v1/whoami HTTP/1.1\r\nhost: proxy\r\n\r\n";
    let seen = assert_forwarded_once(
        &edge,
        what,
        case,
        "GET http://proxy/v1/whoami",
        Then::ServesCanary,
    )
    .await;
    assert_eq!(seen.values("host"), ["proxy"], "{what}: {seen:?}");

    let case = "GET http://other/v1/whoami HTTP/1.1\r\nhost: proxy\r\n\r\n";
    let what = "an absolute-form target whose authority is not the Host";
    assert_refused(&edge, what, case, &[400], &[]).await;
}

/// A request line over the proxy's header limit (`max_header_bytes`,
/// 16 KiB by default), and one over the 64 KiB a request target may have
/// (the `http` crate's bound). nginx answers 414 past
/// `large_client_header_buffers` (8 KiB); HAProxy 400 for a head past its
/// buffer (`tune.bufsize`, 16 KiB; haproxy/haproxy#1309). Both close.
/// Roost answers 431 (its limit counts the request line with the
/// fields), then Pingora's 400, and closes.
#[tokio::test(flavor = "multi_thread")]
async fn very_long_request_lines_are_refused_then_closed() {
    let edge = Edge::start().await;
    for (kib, status) in [(20, 431), (70, 400)] {
        let what = format!("a request line of {kib} KiB");
        let query = "q".repeat(kib << 10);
        let case = format!("GET /v1/whoami?{query} HTTP/1.1\r\nhost: proxy\r\n\r\n");
        assert_refused(&edge, &what, &case, &[status], &[]).await;
    }
}

/// A header line over the proxy's header limit (16 KiB), and one over
/// 64 KiB. nginx answers 400 ("Request Header Or Cookie Too Large", past
/// `large_client_header_buffers`); HAProxy 400 (past `tune.bufsize`).
/// Both close. Roost answers 431, and closes.
#[tokio::test(flavor = "multi_thread")]
async fn very_long_header_lines_are_refused_then_closed() {
    let edge = Edge::start().await;
    for kib in [20, 70] {
        let what = format!("a header line of {kib} KiB");
        let value = "v".repeat(kib << 10);
        let case = format!("GET /v1/whoami HTTP/1.1\r\nhost: proxy\r\nx-long: {value}\r\n\r\n");
        assert_refused(&edge, &what, &case, &[431], &[]).await;
    }
}
