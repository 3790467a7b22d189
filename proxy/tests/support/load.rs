//! Closed-loop clients for the lifecycle tests (drain, upgrade, reload):
//! each sends `GET /v1/whoami` as one of its users in turn (so no key
//! meets its rate limit), one request at a time, as fast as answered or at
//! a set pace, on a kept-alive connection or on a new connection each time,
//! and tallies what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::KEY_HEADER;

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    pub by_first: AtomicU64,
    pub by_fallback: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().expect("tally lock").push(what);
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("tally lock").clone()
    }

    pub fn served(&self) -> u64 {
        self.by_first.load(Ordering::Relaxed) + self.by_fallback.load(Ordering::Relaxed)
    }
}

/// How a client uses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// One kept alive for as long as the proxy keeps it.
    KeptAlive,
    /// A new one for every request (`Connection: close`), as new users
    /// arrive.
    New,
}

/// `clients` closed-loop clients of `first`; when `first` refuses a
/// connection, a client moves to `fallback` (what a load balancer does)
/// and sends the request there; without one, that is a failure. Stopped
/// by [`Load::stop`].
pub struct Load {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(
        clients: usize,
        connections: Connections,
        first: SocketAddr,
        fallback: Option<SocketAddr>,
    ) -> Load {
        Self::start_paced(clients, connections, (first, fallback), None)
    }

    /// As [`Load::start`], each client sending at most one request every
    /// `pace` (`None`: as fast as answered).
    pub fn start_paced(
        clients: usize,
        connections: Connections,
        targets: (SocketAddr, Option<SocketAddr>),
        pace: Option<Duration>,
    ) -> Load {
        let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
        let clients = (0..clients)
            .map(|id| {
                let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
                let client = Client {
                    id,
                    connections,
                    pace,
                };
                tokio::spawn(closed_loop(client, targets, stop, tally))
            })
            .collect();
        Load {
            tally,
            stop,
            clients,
        }
    }

    /// Stop every client; what they saw.
    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("a client task");
        }
        self.tally
    }
}

/// One client of a [`Load`].
struct Client {
    id: usize,
    connections: Connections,
    pace: Option<Duration>,
}

async fn closed_loop(
    Client {
        id,
        connections,
        pace,
    }: Client,
    (first, fallback): (SocketAddr, Option<SocketAddr>),
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let client = super::client();
    let mut target = first;
    let mut sent = 0usize;
    let mut ticks = pace.map(|pace| {
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    while !stop.load(Ordering::Relaxed) {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        sent += 1;
        let key = format!("load-{id}-{}", sent % 500);
        let mut request = client
            .get(format!("http://{target}/v1/whoami"))
            .header(KEY_HEADER, &key);
        if connections == Connections::New {
            request = request.header("connection", "close");
        }
        let response = request.send().await;
        let response = match (response, fallback) {
            (Ok(response), _) => response,
            (Err(e), Some(fallback)) if e.is_connect() && target == first => {
                target = fallback;
                continue;
            }
            (Err(e), _) => {
                tally.fail(format!("{target}: {e:?}"));
                continue;
            }
        };
        let status = response.status();
        match response.bytes().await {
            Ok(_) if status.is_success() => {
                let served = if target == first {
                    &tally.by_first
                } else {
                    &tally.by_fallback
                };
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(body) => tally.fail(format!("{target}: {status} {body:?}")),
            Err(e) => tally.fail(format!("{target}: reading the body: {e:?}")),
        }
    }
}
