//! JSON error replies: every error the proxy itself produces is
//! `{"error": "<code>", "message": "<text>"}` with a matching status.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;

/// An error reply the proxy writes itself.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    pub status: u16,
    /// Short machine-readable code, e.g. `missing_key`.
    pub error: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header, when retrying makes sense.
    pub retry_after_s: Option<u32>,
}

impl ErrorReply {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        ErrorReply {
            status,
            error,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({"error": self.error, "message": self.message});
        Bytes::from(body.to_string())
    }

    /// The response header for [`Self::body`].
    pub fn header(&self, body_len: usize) -> Result<ResponseHeader> {
        let mut header = ResponseHeader::build(self.status, Some(4))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", body_len)?;
        header.insert_header("cache-control", "no-store")?;
        if let Some(seconds) = self.retry_after_s {
            header.insert_header("retry-after", seconds)?;
        }
        Ok(header)
    }

    /// The whole reply as HTTP/1.1 bytes, for a connection written to
    /// directly; the connection closes after it.
    pub fn to_http1(&self) -> Vec<u8> {
        let body = self.body();
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|status| status.canonical_reason())
            .unwrap_or("");
        let mut wire = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\n",
            self.status,
            body.len()
        );
        if let Some(seconds) = self.retry_after_s {
            wire.push_str(&format!("retry-after: {seconds}\r\n"));
        }
        wire.push_str("connection: close\r\n\r\n");
        let mut wire = wire.into_bytes();
        wire.extend_from_slice(&body);
        wire
    }

    /// The standard short code for a status we pass through as an error.
    pub fn for_status(status: u16) -> Self {
        let (error, message) = match status {
            400 => ("bad_request", "the request could not be read"),
            502 => ("bad_gateway", "the worker failed to answer"),
            503 => ("unavailable", "no worker can take the request"),
            504 => ("gateway_timeout", "the worker did not answer in time"),
            _ => ("proxy_error", "the proxy could not complete the request"),
        };
        ErrorReply::new(status, error, message)
    }
}
