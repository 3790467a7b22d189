//! Request bodies: read at most `max_body_bytes`, parse JSON with errors a
//! client can act on.
//!
//! A body over the limit is answered (413) as soon as it is known to be too
//! large, before the client has sent all of it. Closing the connection
//! then, with the rest unread, makes the kernel reset it: the client (or a
//! proxy forwarding the body) fails writing the rest and never reads the
//! reply. So, like nginx's lingering close, the rest is read and dropped in
//! the background, for at most [`DISCARD_TIME`] and [`DISCARD_BYTES`], and
//! the connection closes once it is all read (the 413 says
//! `Connection: close`). hyper alone drains only what is already buffered.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::HeaderMap;

use crate::entity::Reply;

/// After a 413, the longest the rest of the body is read for.
pub const DISCARD_TIME: Duration = Duration::from_secs(2);
/// After a 413, the most of the rest of the body that is read.
pub const DISCARD_BYTES: usize = 4 << 20;

/// Read the whole body, or 413 when it is (or claims to be) larger than `max`.
pub async fn read(headers: &HeaderMap, mut body: Incoming, max: usize) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "body_too_large",
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Such a client sends no body until told to go on, and the 413 says no.
    let waits_to_send = headers
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared.is_some_and(|length| length > max as u64) {
        if !waits_to_send {
            discard(body);
        }
        return Err(too_large());
    }
    match read_at_most(&mut body, max).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => {
            discard(body);
            Err(too_large())
        }
        Err(e) => Err(Reply::error(
            400,
            "bad_body",
            format!("cannot read the body: {e}"),
        )),
    }
}

/// The body's data, or `None` once it is larger than `max`. A body that
/// comes in one frame (nearly all: the request's bytes are in hyper's
/// read buffer already) is that frame's bytes, with no copy and no
/// allocation; `http_body_util`'s `collect` queues every frame first.
/// Trailers are dropped, as `collect().to_bytes()` drops them.
async fn read_at_most(body: &mut Incoming, max: usize) -> Result<Option<Bytes>, hyper::Error> {
    let mut whole = Bytes::new(); // the body while it is one frame
    let mut joined: Option<BytesMut> = None; // once it is more
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let length = joined.as_ref().map_or(whole.len(), BytesMut::len);
        if length + data.len() > max {
            return Ok(None);
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut both = BytesMut::with_capacity(whole.len() + data.len());
                both.extend_from_slice(&whole);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(Some(joined.map_or(whole, BytesMut::freeze)))
}

/// Read and drop the rest of `body` in the background, within
/// [`DISCARD_TIME`] and [`DISCARD_BYTES`]; then hyper closes the connection.
fn discard(mut body: Incoming) {
    tokio::spawn(async move {
        let drain = async {
            let mut left = DISCARD_BYTES;
            while let Some(Ok(frame)) = body.frame().await {
                let length = frame.data_ref().map_or(0, Bytes::len);
                match left.checked_sub(length) {
                    Some(rest) => left = rest,
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}
