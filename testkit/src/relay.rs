//! A TCP relay between one worker and the store that a fault can cut
//! without closing anything: the partition that leases exist for.
//!
//! A kill closes the worker's sockets and a Postgres restart closes the
//! server's, so in both the store notices at once and frees the worker's
//! advisory lock. A partition closes nothing: both ends keep their sockets,
//! the worker's session (and its lock) stays alive in Postgres, and the
//! worker's queries simply get no answer. Only the lease tells the rest of
//! the fleet that the worker's entities may be claimed, and only the lease
//! tells the worker to stop serving what it holds. That is the case this
//! relay makes: it listens on `127.0.0.1:0`, forwards every connection to
//! the store, and on [`Relay::cut`] stops forwarding in both directions
//! until [`Relay::heal`].
//!
//! # Held, not dropped
//!
//! While cut, the relay stops *reading*: bytes sent meanwhile wait in the
//! kernel's socket buffers (and a chunk already read waits in the relay),
//! and on heal they are delivered in order. That is what TCP does across a
//! real partition shorter than its retransmission timeout (minutes): the
//! segments are retransmitted and arrive late, never lost and never out of
//! order. Dropping bytes instead would not model a network at all — it
//! would desynchronise the Postgres protocol on a connection that stays
//! open, which no partition can do. So after the heal the worker's queued
//! statements (lease renewals, flushes, claims) do reach the store, late:
//! exactly the stale writes the epoch fence must refuse. A connection
//! opened during the cut is accepted (the kernel completes the handshake
//! anyway) but not connected onwards until the heal.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes one direction of a connection reads at a time.
const CHUNK: usize = 16 * 1024;

/// A running relay to one upstream address. Dropped, it closes every
/// connection it relays.
pub struct Relay {
    addr: SocketAddr,
    /// `true` while cut. Every forwarding task waits on a receiver before
    /// each read and each write; dropping the sender (with the relay) ends
    /// them.
    cut: watch::Sender<bool>,
    /// The accept loop; it owns the connections' tasks (a `JoinSet`, which
    /// aborts them when the loop is aborted and drops it).
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listen on a free `127.0.0.1` port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the relay to 127.0.0.1:0")?;
        let addr = listener.local_addr().context("address of the relay")?;
        let (cut, state) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, upstream, state));
        Ok(Relay { addr, cut, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop forwarding in both directions; every socket stays open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forward again, the held bytes first.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(relay_connection(client, upstream, state.clone()));
                }
                Err(e) => {
                    eprintln!("relay to {upstream}: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Connect `client` onwards once the relay is not cut, then forward both
/// ways until either side closes.
async fn relay_connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<bool>,
) {
    if !wait_open(&mut state).await {
        return;
    }
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("relay to {upstream}: connect failed: {e}");
            return;
        }
    };
    // Postgres messages are small and latency-bound: no Nagle on either hop.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        forward(client_read, server_write, state.clone()),
        forward(server_read, client_write, state),
    );
}

/// Copy `from` to `to`, reading and writing only while not cut; on end of
/// input, pass the end on.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<bool>,
) {
    let mut chunk = vec![0u8; CHUNK];
    loop {
        if !wait_open(&mut state).await {
            return;
        }
        let read = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        // Cut between the read and the write: the chunk waits here.
        if !wait_open(&mut state).await {
            return;
        }
        if to.write_all(&chunk[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Wait until the relay is not cut; `false` once the relay is gone.
async fn wait_open(state: &mut watch::Receiver<bool>) -> bool {
    state.wait_for(|cut| !*cut).await.is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.expect("read");
        buf
    }

    #[tokio::test]
    async fn a_cut_holds_bytes_on_an_open_socket_and_a_heal_delivers_them() {
        let relay = Relay::start(echo_server().await).await.expect("relay");
        let mut client = TcpStream::connect(relay.addr()).await.expect("connect");
        client.write_all(b"before").await.expect("write");
        assert_eq!(read_exact(&mut client, 6).await, b"before");

        relay.cut();
        client
            .write_all(b"during")
            .await
            .expect("the socket stays open");
        let mut buf = [0u8; 6];
        let waited = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing may come back while cut");

        relay.heal();
        assert_eq!(read_exact(&mut client, 6).await, b"during");
    }

    #[tokio::test]
    async fn a_connection_opened_during_a_cut_goes_through_after_the_heal() {
        let relay = Relay::start(echo_server().await).await.expect("relay");
        relay.cut();
        let mut client = TcpStream::connect(relay.addr()).await.expect("connect");
        client.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        let waited = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing may come back while cut");
        relay.heal();
        assert_eq!(read_exact(&mut client, 5).await, b"hello");
    }
}
