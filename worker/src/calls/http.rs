//! Calls to other workers over HTTP: `POST /internal/v1/{kind}/{id}/{action}` with
//! the call's body, its idempotency id as `Idempotency-Key`, and the
//! fleet's internal token. reqwest keeps the connections alive between
//! calls and bounds each attempt by the call's deadline.

use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use roost_routing::headers;
use serde_json::value::RawValue;

use crate::entity::{Call, Reply};

/// What a path segment escapes: everything but the unreserved characters,
/// so the path is already in the normal form the receiver insists on
/// (`roost_routing::path`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The longest a connection attempt may take (loopback or one network).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why an attempt got no reply.
#[derive(Debug, thiserror::Error)]
pub enum HttpCallError {
    #[error("internal_token is not configured, so this worker cannot call others")]
    NoToken,
    #[error("the deadline passed")]
    Deadline,
    #[error(transparent)]
    Request(#[from] reqwest::Error),
}

/// The HTTP side of calls.
pub struct HttpCalls {
    client: reqwest::Client,
    token: Option<String>,
}

impl HttpCalls {
    pub fn new(token: Option<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpCalls { client, token })
    }

    /// Send `call` to the worker at `addr` once.
    pub async fn post(
        &self,
        addr: &str,
        call: &Call,
        deadline: Instant,
    ) -> Result<Reply, HttpCallError> {
        let token = self.token.as_deref().ok_or(HttpCallError::NoToken)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpCallError::Deadline);
        }
        let url = format!(
            "http://{addr}/internal/v1/{}/{}/{}",
            utf8_percent_encode(&call.kind, SEGMENT),
            utf8_percent_encode(&call.id, SEGMENT),
            utf8_percent_encode(&call.action, SEGMENT)
        );
        let response = self
            .client
            .post(url)
            .timeout(left)
            .header(headers::INTERNAL_TOKEN, token)
            .header("idempotency-key", &call.idempotency_id)
            .header("content-type", "application/json")
            .body(call.body.get().to_owned())
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(reply_of(status, body))
    }
}

/// A received response as a reply; a body that is not JSON becomes a 502
/// (undecided, so the call is tried again).
fn reply_of(status: u16, body: String) -> Reply {
    if body.is_empty() {
        return Reply { status, body: None };
    }
    match RawValue::from_string(body) {
        Ok(body) => Reply {
            status,
            body: Some(body),
        },
        Err(e) => Reply::error(
            502,
            "bad_reply",
            format!("a {status} reply is not JSON: {e}"),
        ),
    }
}
