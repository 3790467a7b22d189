//! The test worker's routes: `/healthz` for liveness, everything else 200
//! with a JSON body naming the worker and echoing every `x-roost-*` header it
//! received (so tests can see what the proxy forwarded).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use roost_routing::headers;

use crate::server::WorkerIdentity;

/// Answer one request. Every response carries `x-roost-worker`.
pub async fn respond(
    request: Request<Incoming>,
    identity: WorkerIdentity,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if request.uri().path() == "/healthz" {
        Bytes::from_static(b"ok\n")
    } else {
        let forwarded: serde_json::Map<String, serde_json::Value> = request
            .headers()
            .iter()
            .filter(|(name, _)| headers::is_reserved(name.as_str()))
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into(),
                )
            })
            .collect();
        let key = forwarded.get(headers::KEY).cloned();
        let body =
            serde_json::json!({"worker": &*identity.id, "key": key, "roost_headers": forwarded});
        Bytes::from(body.to_string())
    };
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        headers::WORKER,
        hyper::header::HeaderValue::from_str(&identity.id)
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("invalid-id")),
    );
    Ok(response)
}
