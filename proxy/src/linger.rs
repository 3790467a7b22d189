//! Lingering close: when the proxy answers before it has read the whole
//! request (413, 431, 400, 401, 404, 429), it reads and discards what the
//! client is still sending, for a bounded time and size, before it closes.
//!
//! Why: a socket closed with unread bytes in its receive buffer makes the
//! kernel send a reset, and a reset destroys the reply still in flight to
//! the client: a client library that writes its whole body before reading
//! (most do) would see "connection reset" instead of the 413 that explains
//! it. nginx does the same (`lingering_close`, `lingering_time`,
//! `lingering_timeout`).
//!
//! | bound | value |
//! |---|---|
//! | all the lingering of one connection | [`LINGER_TOTAL`] |
//! | silence that ends it early | [`LINGER_IDLE`] |
//! | bytes discarded | [`LINGER_MAX_BYTES`] |

use std::time::Duration;

use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// The longest the proxy lingers on one connection.
pub const LINGER_TOTAL: Duration = Duration::from_secs(5);
/// Lingering ends when the client sends nothing for this long.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);
/// The most bytes discarded while lingering.
pub const LINGER_MAX_BYTES: usize = 16 << 20;

/// Read and discard the rest of the request's body (the reply is already
/// written), within the bounds above. The session is not kept alive: the
/// connection closes when the request ends.
pub async fn drain_request(session: &mut Session) {
    session.set_keepalive(None);
    let deadline = Instant::now() + LINGER_TOTAL;
    let mut discarded = 0;
    while !session.is_body_done() && discarded < LINGER_MAX_BYTES {
        let idle = deadline.min(Instant::now() + LINGER_IDLE);
        match timeout_at(idle, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => discarded += chunk.len(),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
}

/// Stop writing to a raw connection, then read and discard until the
/// client closes its side, within the bounds above.
pub async fn close_politely<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TOTAL;
    let mut buffer = vec![0; 16 * 1024];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        let idle = deadline.min(Instant::now() + LINGER_IDLE);
        match timeout_at(idle, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => discarded += read,
            _ => break,
        }
    }
}
