//! Discovery: the workers the store lists as live join the roster, so
//! workers that start, drain or die are seen without editing the config.
//!
//! Each worker registers itself in the `roost_workers` table (see the
//! worker's `store` module): `status` turns `draining` on SIGTERM, and its
//! lease expires when it dies. Every `interval_ms` this reads the workers
//! that are `live` with an unexpired lease and hands them to
//! [`Fleet::discovered`], which rebuilds the roster only when the set
//! changed. On Postgres it also `LISTEN`s on the channel the workers
//! notify when one goes live or changes status, and reads at once then, so
//! a draining worker leaves the live set in milliseconds. A new worker starts down until its health checks pass. When the
//! store cannot be read, the roster stays as it was: routing does not
//! depend on the store being up.
//!
//! The store is read once before the proxy starts ([`Discovery::first_read`]):
//! a Postgres server whose TLS certificate fails verification (a wrong CA
//! or host name in `discovery.store`) stops the proxy there, since no
//! later read could succeed; a store that cannot be reached is only
//! logged, as at any later read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio_postgres::Client;

use roost_routing::postgres::{certificate_rejected, Endpoint};
use roost_routing::registry::{FLEET_CHANNEL, LIVE_POSTGRES, LIVE_SQLITE};
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use crate::config::DiscoveryConfig;
use crate::fleet::{Fleet, WorkerSpec};
use crate::metrics::PROXY;

/// How long the read before the start may take; past it the proxy starts
/// and the periodic reads go on trying.
const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the live workers are listed.
#[async_trait]
pub trait WorkerSource: Send + Sync {
    /// `(id, addr)` of every live worker.
    async fn live(&self) -> anyhow::Result<Vec<(String, String)>>;

    /// Woken when the store says the live set changed, where it can tell.
    fn changes(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// The background service that keeps the roster in step with the store.
pub struct Discovery {
    fleet: Arc<Fleet>,
    source: Box<dyn WorkerSource>,
    interval: Duration,
}

impl Discovery {
    pub fn new(fleet: Arc<Fleet>, config: &DiscoveryConfig) -> anyhow::Result<Self> {
        let store = &config.store.value;
        let source: Box<dyn WorkerSource> = match store.strip_prefix("sqlite://") {
            Some(path) => Box::new(SqliteSource::new(path.into())),
            None => Box::new(PostgresSource::new(store)?),
        };
        Ok(Discovery {
            fleet,
            source,
            interval: Duration::from_millis(config.interval_ms),
        })
    }

    /// Read the store once and update the roster.
    async fn read(&self) -> anyhow::Result<()> {
        let [ok, failed] = &PROXY.discovery_reads;
        match self.source.live().await {
            Ok(listed) => {
                ok.inc();
                self.fleet.discovered(&specs(listed));
                Ok(())
            }
            Err(e) => {
                failed.inc();
                Err(e)
            }
        }
    }

    /// [`Discovery::read`]; returns the error text of a failed read.
    async fn refresh(&self) -> Option<String> {
        self.read().await.err().map(|e| format!("{e:#}"))
    }

    /// The read before the proxy starts, on a runtime of its own: an error
    /// only when the store's certificate failed verification; a store that
    /// cannot be read now is logged and read again every interval.
    pub fn first_read(&self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let read =
            runtime.block_on(async { tokio::time::timeout(FIRST_READ_TIMEOUT, self.read()).await });
        match read {
            Ok(Ok(())) => {}
            Err(_) => tracing::warn!(
                timeout = ?FIRST_READ_TIMEOUT,
                "the live workers could not be read before the start; reading again every interval"
            ),
            Ok(Err(e)) if rejects_certificate(&e) => {
                return Err(anyhow!("discovery.store: {e:#}"));
            }
            Ok(Err(e)) => tracing::warn!(
                error = %format!("{e:#}"),
                "cannot read the live workers before the start; reading again every interval"
            ),
        }
        Ok(())
    }
}

/// Whether `error` comes from a Postgres server whose certificate failed
/// verification.
fn rejects_certificate(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .any(certificate_rejected)
}

/// Listed workers as roster entries (weight 1); unparsable addresses are
/// skipped with a warning.
fn specs(listed: Vec<(String, String)>) -> Vec<WorkerSpec> {
    listed
        .into_iter()
        .filter_map(|(id, addr)| match addr.parse::<SocketAddr>() {
            Ok(addr) => Some(WorkerSpec {
                id: id.into(),
                addr,
                weight: 1.0,
            }),
            Err(e) => {
                tracing::warn!(worker = %id, %addr, error = %e, "discovered worker has a bad address; skipped");
                None
            }
        })
        .collect()
}

#[async_trait]
impl BackgroundService for Discovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changes = self.source.changes().unwrap_or_default();
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = changes.notified() => {}
                _ = shutdown.changed() => return,
            }
            let error = self.refresh().await;
            if error != last_error {
                match &error {
                    Some(e) => {
                        tracing::warn!(error = %e, "cannot read the live workers; keeping the roster")
                    }
                    None if last_error.is_some() => {
                        tracing::info!("reading the live workers again")
                    }
                    None => {}
                }
                last_error = error;
            }
        }
    }
}

/// The workers table in Postgres, on one connection kept between reads
/// that also listens for the workers' announcements.
struct PostgresSource {
    endpoint: Endpoint,
    client: tokio::sync::Mutex<Option<Client>>,
    changed: Arc<Notify>,
}

impl PostgresSource {
    fn new(url: &str) -> anyhow::Result<Self> {
        Ok(PostgresSource {
            // One message: the proxy prints only the outermost.
            endpoint: Endpoint::from_url(url).map_err(|e| anyhow!("discovery.store: {e}"))?,
            client: tokio::sync::Mutex::new(None),
            changed: Arc::new(Notify::new()),
        })
    }

    /// A new connection whose driver wakes `changed` on each announcement,
    /// listening for them.
    async fn connect(&self) -> anyhow::Result<Client> {
        let (client, mut connection) = self
            .endpoint
            .connect()
            .await
            .context("cannot connect to the discovery store")?;
        let changed = Arc::clone(&self.changed);
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => changed.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {FLEET_CHANNEL}"))
            .await
            .context("cannot listen for the workers' announcements")?;
        Ok(client)
    }
}

#[async_trait]
impl WorkerSource for PostgresSource {
    async fn live(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut client = self.client.lock().await;
        if client.as_ref().is_none_or(Client::is_closed) {
            *client = Some(self.connect().await?);
        }
        let Some(connected) = client.as_ref() else {
            anyhow::bail!("no discovery connection");
        };
        let rows = match connected.query(LIVE_POSTGRES, &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                *client = None;
                return Err(e).context("cannot read roost_workers");
            }
        };
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.changed))
    }
}

/// The workers table in an SQLite file shared with local workers.
struct SqliteSource {
    path: PathBuf,
    connection: Arc<Mutex<Option<rusqlite::Connection>>>,
}

impl SqliteSource {
    fn new(path: PathBuf) -> Self {
        SqliteSource {
            path,
            connection: Arc::new(Mutex::new(None)),
        }
    }
}

#[async_trait]
impl WorkerSource for SqliteSource {
    async fn live(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (path, connection) = (self.path.clone(), Arc::clone(&self.connection));
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|p| p.into_inner());
            if connection.is_none() {
                let opened = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .with_context(|| format!("cannot open {}", path.display()))?;
                opened.busy_timeout(Duration::from_secs(1))?;
                *connection = Some(opened);
            }
            let Some(opened) = connection.as_ref() else {
                anyhow::bail!("no discovery connection");
            };
            let mut statement = opened
                .prepare_cached(LIVE_SQLITE)
                .context("cannot read roost_workers")?;
            let rows =
                statement.query_map([wall_clock_ms()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .context("the discovery task failed")?
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
