//! Request bodies: read at most `max_body_bytes`, parse JSON with errors a
//! client can act on.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use serde::de::DeserializeOwned;

use crate::entity::Reply;

/// Read the whole body, or 413 when it is (or claims to be) larger than `max`.
pub async fn read(request: Request<Incoming>, max: usize) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "body_too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Reply::error(
            400,
            "bad_body",
            format!("cannot read the body: {e}"),
        )),
    }
}

/// Parse `body` as `T`: 400 `invalid_json` when it is not JSON, 400
/// `invalid_request` when it is JSON of the wrong shape.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(400, "invalid_json", format!("the body is not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| Reply::error(400, "invalid_request", e.to_string()))
}

/// Like [`json`], for bodies that must be a JSON object (serde would
/// otherwise accept a struct written as a positional array).
pub fn json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let value: serde_json::Value = json(body)?;
    if !value.is_object() {
        return Err(Reply::error(
            400,
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(|e| Reply::error(400, "invalid_request", e.to_string()))
}
