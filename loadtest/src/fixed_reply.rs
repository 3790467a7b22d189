//! A fixed-reply HTTP/1.1 backend: a bare hyper server that gives every
//! request the same small 200, for `bench/proxy.sh`'s `light` layout.
//!
//! Behind real roost-workers a proxy's CPU per request is measured beside
//! the workers' own, on the same core, so what the proxy costs is diluted
//! by what the workers cost. Three of these in the workers' place do
//! almost nothing per request, so the proxy's share shows; and one of them
//! as the target on its own is the bare-hyper floor that a worker's
//! no-state route (`/v1/whoami`) is held against.
//!
//! Every request — any method, any path, so the proxy's active health
//! check (`GET /readyz` by default; any 200 passes) passes too — is
//! answered with 200, `content-type: application/json`, `x-roost-worker:
//! <id>` (the header a worker sends, by which a benchmark sees which
//! backend answered) and `{"key":"fixed-reply","worker":"<id>"}`, the shape
//! and about the size of a worker's whoami body. A request body is read
//! and dropped; connections are kept alive. hyper as the worker uses it:
//! HTTP/1.1 only, one task per connection, `TCP_NODELAY`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The header that names the backend that answered, as a worker's does.
const WORKER: &str = "x-roost-worker";

/// The one answer, built once: each request clones two cheap handles.
#[derive(Debug, Clone)]
pub struct FixedReply {
    worker: HeaderValue,
    body: Bytes,
}

impl FixedReply {
    /// The answer of backend `id`.
    pub fn new(id: &str) -> Result<Self> {
        let worker = HeaderValue::from_str(id)
            .with_context(|| format!("backend id {id:?} is not a valid header value"))?;
        let body = serde_json::to_vec(&serde_json::json!({"worker": id, "key": "fixed-reply"}))?;
        Ok(FixedReply {
            worker,
            body: body.into(),
        })
    }

    /// The response to any request.
    fn response(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body.clone()));
        let headers = response.headers_mut();
        headers.insert(HeaderName::from_static(WORKER), self.worker.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    /// Read and drop `request`'s body, then answer it.
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut body = request.into_body();
        // A body that breaks off ends the connection anyway: stop reading.
        while let Some(Ok(_frame)) = body.frame().await {}
        self.response()
    }
}

/// Answer every connection accepted on `listener` with `reply` until
/// `shutdown` resolves; connections still open are then dropped.
pub async fn serve(listener: TcpListener, reply: FixedReply, shutdown: impl Future<Output = ()>) {
    let reply = Arc::new(reply);
    tokio::select! {
        () = shutdown => {}
        never = accept(listener, reply) => match never {},
    }
}

async fn accept(listener: TcpListener, reply: Arc<FixedReply>) -> Infallible {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                eprintln!("roost-fixed-reply: accept failed: {e}");
                continue;
            }
        };
        // Responses are small: send them at once (as the worker does).
        let _ = stream.set_nodelay(true);
        let reply = Arc::clone(&reply);
        let service = service_fn(move |request| {
            let reply = Arc::clone(&reply);
            async move { Ok::<_, Infallible>(reply.answer(request).await) }
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_any_request_with_the_fixed_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let reply = FixedReply::new("w1").expect("reply");
        tokio::spawn(serve(listener, reply, std::future::pending()));
        let client = reqwest::Client::new();
        for request in [
            client.get(format!("{base}/readyz")),
            client.get(format!("{base}/v1/whoami")),
            client
                .post(format!("{base}/v1/cart/items"))
                .body("x".repeat(100_000)),
        ] {
            let response = request.send().await.expect("an answer");
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()[WORKER], "w1");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let body = response.text().await.expect("a body");
            assert_eq!(body, r#"{"key":"fixed-reply","worker":"w1"}"#);
        }
    }
}
