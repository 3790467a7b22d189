//! What a request asks of an entity: path segments and bodies parsed into
//! entity requests, with the 400s a client can act on. Pure functions (no
//! I/O, no state), so the API and the fuzz targets ([`crate::fuzzing`])
//! run the very same code.

use serde::Deserialize;

use super::body;
use crate::entities::cart::CartRequest;
use crate::entities::inventory::{InventoryCall, InventoryRequest};
use crate::entities::quota::QuotaRequest;
use crate::entities::session::{IfMatch, SessionRequest};
use crate::entity::Reply;
use percent_encoding::percent_decode_str;

/// Longest SKU, quota name, reservation or idempotency key accepted.
pub const MAX_NAME_BYTES: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    sku: String,
    qty: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Acquire {
    limit: u64,
    ttl_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    stock: u64,
}

/// `PUT /v1/session`: the whole document.
pub fn session_put(body: &[u8], if_match: Option<IfMatch>) -> Result<SessionRequest, Reply> {
    Ok(SessionRequest::Put {
        document: body::json(body)?,
        if_match,
    })
}

/// `PATCH /v1/session`: a JSON merge patch.
pub fn session_patch(body: &[u8], if_match: Option<IfMatch>) -> Result<SessionRequest, Reply> {
    Ok(SessionRequest::Patch {
        patch: body::json(body)?,
        if_match,
    })
}

/// `POST /v1/cart/items {"sku", "qty"}`.
pub fn add_item(body: &[u8]) -> Result<CartRequest, Reply> {
    let item: AddItem = body::json_object(body)?;
    if item.qty == 0 {
        return Err(Reply::error(400, "invalid_qty", "qty must be at least 1"));
    }
    Ok(CartRequest::Add {
        sku: check_name("sku", item.sku)?,
        qty: item.qty,
    })
}

/// `DELETE /v1/cart/items/{sku}`.
pub fn remove_item(sku: &str) -> Result<CartRequest, Reply> {
    Ok(CartRequest::Remove {
        sku: decode_segment(sku)?,
    })
}

/// `POST /v1/quota/{name}/acquire {"limit", "ttl_ms"}`.
pub fn acquire(name: &str, body: &[u8]) -> Result<QuotaRequest, Reply> {
    let name = decode_segment(name)?;
    let acquire: Acquire = body::json_object(body)?;
    if acquire.limit == 0 || acquire.ttl_ms == 0 {
        return Err(Reply::error(
            400,
            "invalid_request",
            "limit and ttl_ms must be at least 1",
        ));
    }
    Ok(QuotaRequest::Acquire {
        name,
        limit: acquire.limit,
        ttl_ms: acquire.ttl_ms,
    })
}

/// `POST /v1/quota/{name}/release {"token"}`.
pub fn release(name: &str, body: &[u8]) -> Result<QuotaRequest, Reply> {
    let name = decode_segment(name)?;
    let release: Release = body::json_object(body)?;
    Ok(QuotaRequest::Release {
        name,
        token: release.token,
    })
}

/// `PUT /v1/inventory/{sku} {"stock"}`.
pub fn set_stock(body: &[u8]) -> Result<InventoryRequest, Reply> {
    let set: SetStock = body::json_object(body)?;
    Ok(InventoryRequest::SetStock(set.stock))
}

/// The body of a call to an inventory, checked like client input.
pub fn inventory_call(body: &[u8]) -> Result<InventoryRequest, Reply> {
    let call: InventoryCall = body::json_object(body)?;
    let (InventoryCall::Reserve { reservation, .. } | InventoryCall::Release { reservation }) =
        &call;
    check_name("reservation", reservation.clone())?;
    if let InventoryCall::Reserve { qty: 0, .. } = call {
        return Err(Reply::error(400, "invalid_qty", "qty must be at least 1"));
    }
    Ok(call.into())
}

/// A percent-decoded path segment, checked like any name.
pub fn decode_segment(segment: &str) -> Result<String, Reply> {
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| Reply::error(400, "invalid_path", "a path segment is not UTF-8"))?;
    check_name("path segment", decoded.into_owned())
}

/// Non-empty, at most [`MAX_NAME_BYTES`], no control characters.
pub fn check_name(what: &str, name: String) -> Result<String, Reply> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let message =
            format!("{what} must be 1 to {MAX_NAME_BYTES} bytes without control characters");
        return Err(Reply::error(400, "invalid_name", message));
    }
    Ok(name)
}
