//! Connections per client address, so one client cannot hold the proxy's
//! sockets and memory (thousands of idle connections kept open until their
//! idle timeout).
//!
//! [`PerAddressLimit`] is a server app around the client-facing app: every
//! accepted connection takes a slot of its client's IP address for as long
//! as the connection lives (a `Slot` guard, released on drop however the
//! connection ends). The connection past `limits.max_connections_per_address`
//! gets a 429 `too_many_connections` JSON reply and is closed, politely: the
//! proxy stops writing, then reads what the client sends for a short while
//! so the kernel does not reset the connection under the reply (see
//! [`crate::linger`]).
//!
//! It also keeps `roost_proxy_client_connections`, the count of every open
//! client connection, which a drain waits on ([`crate::lifecycle`]).
//!
//! Why here and not in Pingora: Pingora 0.9 has no per-address connection
//! limit, and its listener gives the app each connection once, before the
//! first request, which is the one place a connection can be counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::metrics::PROXY;
use crate::metrics::{self, Limit};
use crate::policy::SharedPolicy;
use crate::reply::ErrorReply;

/// A server app that admits at most `limits.max_connections_per_address`
/// connections per client address to `app` (as the policy in force says
/// when each connection arrives).
pub struct PerAddressLimit<A> {
    app: Arc<A>,
    policy: SharedPolicy,
    open: Arc<OpenConnections>,
}

impl<A> PerAddressLimit<A> {
    pub fn new(app: A, policy: SharedPolicy) -> Self {
        PerAddressLimit {
            app: Arc::new(app),
            policy,
            open: Arc::new(OpenConnections::default()),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PerAddressLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Open::counted();
        // A connection without an IP peer (a Unix socket) is not limited.
        let Some(address) = client_address(&*stream) else {
            return self.app.process_new(stream, shutdown).await;
        };
        let max = self.policy.load().limits().max_connections_per_address();
        match OpenConnections::admit(&self.open, address, max) {
            Some(_slot) => self.app.process_new(stream, shutdown).await,
            None => {
                refuse(stream, max).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// One open client connection in `roost_proxy_client_connections`, for
/// as long as it lives.
struct Open;

impl Open {
    fn counted() -> Self {
        PROXY.client_connections.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        PROXY.client_connections.dec();
    }
}

/// Open connections by client address.
#[derive(Default)]
struct OpenConnections {
    /// Addresses with at least one open connection. A std mutex: held for a
    /// map lookup, never across an `.await`.
    by_address: Mutex<HashMap<IpAddr, u32>>,
}

impl OpenConnections {
    /// A slot for one more connection from `address`, if it holds fewer
    /// than `max`.
    fn admit(open: &Arc<Self>, address: IpAddr, max: u32) -> Option<Slot> {
        let mut by_address = open.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = by_address.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            open: Arc::clone(open),
            address,
        })
    }
}

/// One admitted connection; gives its slot back when dropped.
struct Slot {
    open: Arc<OpenConnections>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_address = self
            .open
            .by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// The client's IP address, when it connected over IP.
pub fn client_address<S: GetSocketDigest + ?Sized>(stream: &S) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    Some(digest.peer_addr()?.as_inet()?.ip())
}

/// Answer 429 on a connection over the limit and close it.
async fn refuse(mut stream: Stream, max: u32) {
    metrics::count_rejection(Limit::Connections);
    let reply = ErrorReply::new(
        429,
        "too_many_connections",
        format!("this client address already holds {max} connections"),
    );
    let written = async {
        stream.write_all(&reply.to_http1()).await?;
        stream.flush().await
    };
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "could not send too_many_connections");
        return;
    }
    crate::linger::close_politely(&mut stream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back_on_drop() {
        let open = Arc::new(OpenConnections::default());
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let first = OpenConnections::admit(&open, a, 2).expect("one");
        let _second = OpenConnections::admit(&open, a, 2).expect("two");
        assert!(
            OpenConnections::admit(&open, a, 2).is_none(),
            "three is over"
        );
        assert!(
            OpenConnections::admit(&open, b, 2).is_some(),
            "another address"
        );
        drop(first);
        assert!(
            OpenConnections::admit(&open, a, 2).is_some(),
            "a slot came back"
        );
    }
}
