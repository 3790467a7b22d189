//! One simulated device's HTTP client: sends a logical operation through
//! the proxy, retries it after a 5xx or a transport error (same
//! `Idempotency-Key`, so a retry cannot apply a change twice), and turns
//! every attempt into a ledger [`Record`].

use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::ledger::{Durability, Effect, Kind, Ledger, Op, Phase, Record};
use roost_testkit::fleet::LEASE_MS;

/// The header the proxy takes the user key from (its config says so).
pub const USER_HEADER: &str = "x-user-id";
/// A device gives up on an attempt after this (a transport `timeout` in the
/// ledger, retried with the same `Idempotency-Key`): the workers' lease
/// plus a second, 3 s. Issue 15 promises a client of a frozen worker at
/// most about `lease_ms` of latency and no error: the proxy leaves the
/// frozen worker after `suspect_after_ms`, and the key's next candidate
/// serves the request once the frozen worker's lease has run out, 2.0–2.1 s
/// after it was sent (the SIGSTOP target allows lease + 500 ms). A device
/// that gave up at the lease itself would count exactly those requests as
/// failed, so the promise could never be seen kept; it must wait longer
/// than lease + 500 ms. It stays shorter than the SIGSTOP pause and the
/// proxy's `upstream_timeout_ms` (both 5 s): a request that stays inside a
/// frozen worker (one the proxy does not take away) still ends in a client
/// timeout and a retry, rather than waiting out the pause.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(LEASE_MS + 1_000);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of one operation before it is given up (unacknowledged).
const MAX_ATTEMPTS: u32 = 40;

/// A logical operation: one entity, one request, tried until answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub entity: Kind,
    pub op: Op,
    pub path: String,
    pub body: Option<Value>,
    pub durability: Option<Durability>,
    /// Unique per operation; sent as `Idempotency-Key` on mutations.
    pub op_id: String,
    pub effect: Option<Effect>,
}

impl Call {
    /// A call of `op` on `path` with no body, durability or effect.
    pub fn new(entity: Kind, op: Op, path: &str, op_id: String) -> Call {
        Call {
            entity,
            op,
            path: path.into(),
            body: None,
            durability: None,
            op_id,
            effect: None,
        }
    }

    /// The same call with a JSON body.
    pub fn with_body(self, body: Value) -> Call {
        Call {
            body: Some(body),
            ..self
        }
    }

    fn method(&self) -> Method {
        match self.op {
            Op::Get => Method::GET,
            Op::Patch => Method::PATCH,
            Op::Add | Op::Acquire | Op::Release | Op::Checkout => Method::POST,
        }
    }

    fn idempotency_key(&self) -> Option<&str> {
        (!self.op.is_read()).then_some(self.op_id.as_str())
    }
}

/// A device of one user: its own connection pool, its own records.
pub struct Client {
    http: reqwest::Client,
    base: String,
    user: String,
    device: u8,
    phase: Phase,
    ledger: Ledger,
    /// Sent with every request besides the user header (a probe's
    /// `x-roost-key` and hop token, which the proxy sets on other requests).
    headers: HeaderMap,
}

/// An HTTP client with the devices' timeouts; `idle_per_host` keep-alive
/// connections are kept for reuse.
pub fn http_client(idle_per_host: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_max_idle_per_host(idle_per_host)
        .build()
        .context("build an HTTP client")
}

impl Client {
    /// A device with its own connection pool.
    pub fn new(base: &str, user: &str, device: u8, phase: Phase, ledger: Ledger) -> Result<Self> {
        Ok(Client::with_http(
            http_client(usize::MAX)?,
            base,
            user,
            device,
            phase,
            ledger,
        ))
    }

    /// A device that shares `http`'s connection pool with others.
    pub fn with_http(
        http: reqwest::Client,
        base: &str,
        user: &str,
        device: u8,
        phase: Phase,
        ledger: Ledger,
    ) -> Self {
        Client {
            http,
            base: base.to_owned(),
            user: user.to_owned(),
            device,
            phase,
            ledger,
            headers: HeaderMap::new(),
        }
    }

    /// The same device, sending `headers` with every request too.
    pub fn with_headers(self, headers: HeaderMap) -> Self {
        Client { headers, ..self }
    }

    /// Try `call` until it gets an answer that is not a 5xx, it has been
    /// tried `MAX_ATTEMPTS` times, or `keep_trying` says stop. Every
    /// attempt goes to the ledger; the last one is returned.
    pub async fn perform(&self, call: &Call, keep_trying: impl Fn() -> bool) -> Record {
        let mut attempt = 1;
        loop {
            let record = self.attempt(call, attempt).await;
            self.ledger.push(record.clone());
            if !is_retryable(&record) || attempt >= MAX_ATTEMPTS || !keep_trying() {
                return record;
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Send `call` once.
    async fn attempt(&self, call: &Call, attempt: u32) -> Record {
        let clock = self.ledger.clock();
        let mut record = self.blank_record(call, attempt, clock.now_us());
        let mut request = self
            .http
            .request(call.method(), format!("{}{}", self.base, call.path))
            .headers(self.headers.clone())
            .header(USER_HEADER, &self.user);
        if let Some(key) = call.idempotency_key() {
            request = request.header("idempotency-key", key);
        }
        if let Some(durability) = call.durability {
            request = request.header("roost-durability", durability.header_value());
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                response.bytes().await.map(|body| (status, headers, body))
            }
            Err(e) => Err(e),
        };
        record.t_done_us = clock.now_us();
        match answer {
            Ok((status, headers, body)) => fill_reply(&mut record, status, &headers, &body),
            Err(e) => record.error = Some(transport_error(e)),
        }
        record
    }

    fn blank_record(&self, call: &Call, attempt: u32, t_send_us: u64) -> Record {
        Record {
            phase: self.phase,
            user: self.user.clone(),
            device: self.device,
            entity: call.entity,
            op: call.op,
            op_id: call.op_id.clone(),
            idempotency_key: call.idempotency_key().map(str::to_owned),
            durability: call.durability,
            attempt,
            t_send_us,
            t_done_us: t_send_us,
            status: None,
            error: None,
            worker: None,
            epoch: None,
            version: None,
            effect: call.effect.clone(),
            body: None,
        }
    }
}

/// A transport error or a 5xx may be retried: the operation's outcome is
/// unknown or it was refused for now (503), and the `Idempotency-Key`
/// makes a repeat harmless.
fn is_retryable(record: &Record) -> bool {
    record.status.is_none_or(|status| status >= 500)
}

/// 100 ms, 200 ms, … capped at 500 ms: shorter than a 503's
/// `Retry-After: 1`, so the ledger sees recovery at that resolution.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(u64::from(attempt.min(5)) * 100)
}

/// Status, Roost headers, and the body where a check needs it.
fn fill_reply(record: &mut Record, status: u16, headers: &HeaderMap, body: &[u8]) {
    record.status = Some(status);
    record.worker = header(headers, "x-roost-worker").map(str::to_owned);
    record.epoch = header(headers, "x-roost-epoch").and_then(|e| e.parse().ok());
    record.version = header(headers, "etag").and_then(parse_etag);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if !record.is_2xx() {
        record.error = Some(
            json.as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no_error_code")
                .to_owned(),
        );
    }
    if record.op == Op::Acquire && record.is_2xx() {
        remember_token(record, json.as_ref());
    }
    if record.op.keeps_body() {
        record.body = json;
    }
}

/// Put the token an acquire was granted into its effect.
fn remember_token(record: &mut Record, json: Option<&Value>) {
    let granted = json
        .and_then(|j| j.get("token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(Effect::QuotaToken { token, .. }) = &mut record.effect {
        *token = granted;
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `"7"`, `W/"7"` or `7` → 7.
fn parse_etag(value: &str) -> Option<u64> {
    let value = value.trim();
    value
        .strip_prefix("W/")
        .unwrap_or(value)
        .trim_matches('"')
        .parse()
        .ok()
}

/// `kind (detail: cause: …)`, without the URL (the ledger has the path).
fn transport_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    format!("{kind} ({detail})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_parse_in_every_form() {
        assert_eq!(parse_etag("\"7\""), Some(7));
        assert_eq!(parse_etag("W/\"7\""), Some(7));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("\"x\""), None);
    }

    #[test]
    fn a_device_outwaits_the_sigstop_target_but_not_the_pause() {
        let target = Duration::from_millis(LEASE_MS + 500);
        assert!(target < REQUEST_TIMEOUT && REQUEST_TIMEOUT < crate::fault::SIGSTOP_PAUSE);
    }

    #[test]
    fn backoff_grows_to_half_a_second() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(9), Duration::from_millis(500));
    }
}
