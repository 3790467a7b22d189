//! The Roost processes under test: N `roost-worker`s on one store and a
//! `roost-proxy` in front of them, all on 127.0.0.1 with free ports, their
//! configs and logs in the scenario's output dir. The fault injector drives
//! them through this (signals, restarts, cutting a worker off the store)
//! and waits on what the proxy's admin API reports. What differs between
//! runs — the workers' config, the proxy's key sources and health checks,
//! the shared `hash_seed`, whether the workers reach the store through
//! relays — is a [`FleetConfig`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::bins::Binaries;
use crate::net::try_free_port;
use crate::postgres::Cluster;
use crate::process::{log_tail, Process};
use crate::relay::Relay;

/// How long a worker or the proxy may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the proxy may take to see a change of a worker's health.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
/// How many `/admin/route` questions [`Fleet::hrw_firsts`] keeps open.
const ROUTES_IN_FLIGHT: usize = 16;

/// The workers' `lease_ms`: how long another worker waits to claim the
/// entities of a worker that is alive but silent (frozen, cut off).
pub const LEASE_MS: u64 = 2_000;

/// The timing every run's workers share: flushes, leases, hand-overs.
fn worker_timing_yaml() -> String {
    format!(
        "flush_interval_ms: 50\n\
         lease_ms: {LEASE_MS}\n\
         heartbeat_ms: 500\n\
         handoff_timeout_ms: 3000\n"
    )
}

/// The proxy's health checks: how a run configures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHealth {
    /// A probe of `/readyz` every 100 ms (100 ms timeout); one failure
    /// takes a worker down and one pass brings it back.
    Fast,
    /// No `health:` in the config: the proxy's defaults
    /// ([`PROXY_DEFAULT_HEALTH`]).
    Default,
}

impl ProxyHealth {
    /// The proxy's `health:` line, if any.
    fn yaml(self) -> Option<String> {
        match self {
            ProxyHealth::Fast => Some(format!(
                "health: {{path: /readyz, interval_ms: {}, timeout_ms: 100, rise: 1, fall: {}}}\n",
                FAST_HEALTH.interval_ms, FAST_HEALTH.fall
            )),
            ProxyHealth::Default => None,
        }
    }

    /// How fast the proxy takes a failing worker down.
    pub fn timing(self) -> HealthTiming {
        match self {
            ProxyHealth::Fast => FAST_HEALTH,
            ProxyHealth::Default => PROXY_DEFAULT_HEALTH,
        }
    }
}

/// How often and how many times in a row the proxy's health check must
/// fail before it takes a worker down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTiming {
    pub interval_ms: u64,
    pub fall: u64,
}

impl HealthTiming {
    /// The longest a worker that stopped passing stays up in the proxy.
    pub fn detection_ms(self) -> u64 {
        self.interval_ms * self.fall
    }
}

const FAST_HEALTH: HealthTiming = HealthTiming {
    interval_ms: 100,
    fall: 1,
};

/// The proxy's default health checks (`HealthConfig::default()` in
/// `proxy/src/config.rs`: every 250 ms, down after 2 failures), which
/// [`ProxyHealth::Default`] gets by leaving `health:` out. Kept here by
/// hand: the suite does not link the proxy.
pub const PROXY_DEFAULT_HEALTH: HealthTiming = HealthTiming {
    interval_ms: 250,
    fall: 2,
};

/// The proxy's `limits.max_connections_per_address`: every simulated
/// client connects from 127.0.0.1, each device with its own connections
/// (and new ones after a timeout), so the per-address guard against one
/// client hogging the proxy would cap the whole load. Above what the
/// loopback's ephemeral ports allow, so it never applies.
const MAX_CONNECTIONS_PER_ADDRESS: u32 = 1_000_000;

/// The environment variable that carries the proxy's credential to the
/// workers (`proxy_token`) and to the proxy (`trusted_hop.token_env`).
pub const PROXY_TOKEN_ENV: &str = "ROOST_PROXY_TOKEN";
/// The environment variable of the workers' `internal_token`.
pub const INTERNAL_TOKEN_ENV: &str = "ROOST_INTERNAL_TOKEN";
/// The workers' admin token variable: removed from their environment, so
/// a value in the caller's shell cannot override a run's config.
const ADMIN_TOKEN_ENV: &str = "ROOST_ADMIN_TOKEN";

/// What a run configures in the fleet it starts.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The proxy's `hash_seed` phrase (random per run, so no run depends
    /// on where a key happens to land).
    pub hash_seed: String,
    /// The whole worker config file (no secrets: those go in the
    /// environment).
    pub worker_yaml: String,
    /// The proxy's `key.sources`, as a YAML flow sequence.
    pub key_sources: String,
    /// The proxy's health checks.
    pub proxy_health: ProxyHealth,
    /// The credential the proxy presents (random per run): the workers take
    /// entity requests only with it (`ROOST_PROXY_TOKEN`), and the proxy
    /// sends it as its trusted hop (`trusted_hop.token_env`), as a
    /// production fleet should run.
    pub proxy_token: String,
    /// The workers' own credential for calls between them (random per run,
    /// never equal to `proxy_token`): `ROOST_INTERNAL_TOKEN`.
    pub internal_token: String,
    /// Each worker reaches the store through its own [`Relay`], which a
    /// fault can cut; the proxy's discovery always reads it directly.
    pub store_relays: bool,
}

impl FleetConfig {
    /// A random `hash_seed` and two distinct random tokens, the shared
    /// timing plus `worker_extra` (YAML lines) for the workers, and
    /// `key_sources` and fast health checks for the proxy.
    pub fn new(worker_extra: &str, key_sources: &str) -> FleetConfig {
        let proxy_token = random_token();
        let internal_token = loop {
            let token = random_token();
            if token != proxy_token {
                break token;
            }
        };
        FleetConfig {
            hash_seed: format!("roost-loadtest-{:016x}", rand::random::<u64>()),
            worker_yaml: format!("{}{worker_extra}", worker_timing_yaml()),
            key_sources: key_sources.to_owned(),
            proxy_health: ProxyHealth::Fast,
            proxy_token,
            internal_token,
            store_relays: false,
        }
    }

    /// The same `hash_seed` in the workers' config too (workers that route
    /// calls between entities rank workers as the proxy does).
    pub fn seed_in_workers(mut self) -> FleetConfig {
        self.worker_yaml
            .push_str(&format!("hash_seed: \"{}\"\n", self.hash_seed));
        self
    }

    /// The proxy with its default health checks (no `health:` at all).
    pub fn default_health(mut self) -> FleetConfig {
        self.proxy_health = ProxyHealth::Default;
        self
    }

    /// Each worker reaches the store through a relay of its own.
    pub fn store_relays(mut self) -> FleetConfig {
        self.store_relays = true;
        self
    }

    /// The fault suite's: sessions write-behind, carts and quotas durable,
    /// users keyed by `x-user-id`.
    pub fn faults() -> FleetConfig {
        FleetConfig::new(
            "kinds: {session: {durability: write-behind}, cart: {durability: durable}, \
             quota: {durability: durable}}\n",
            "[{header: x-user-id}]",
        )
    }
}

/// 32 hex digits.
fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One worker the proxy lists, running or not.
struct Slot {
    id: String,
    addr: SocketAddr,
    /// Its `--store`: the store's URL, or its relay's.
    store_url: String,
    /// The relay between it and the store ([`FleetConfig::store_relays`]).
    relay: Option<Relay>,
    process: Option<Process>,
}

/// One entry of the proxy's `GET /admin/workers`.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminWorker {
    pub id: String,
    pub healthy: bool,
}

/// The proxy's `GET /admin/route?key=K`.
#[derive(Debug, Deserialize)]
pub struct AdminRoute {
    /// The live worker a request for the key reaches now.
    pub owner: Option<String>,
    /// Every listed worker in the key's HRW order.
    pub candidates: Vec<AdminWorker>,
}

/// The running fleet.
pub struct Fleet {
    binaries: Binaries,
    dir: PathBuf,
    /// The store's own URL (the proxy's discovery reads it directly).
    store_url: String,
    config: FleetConfig,
    worker_config: PathBuf,
    slots: Vec<Slot>,
    proxy: Option<Process>,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    http: reqwest::Client,
}

impl Fleet {
    /// Slots for `listed` workers (`w1`…, each with its relay to
    /// `cluster` if the config asks for relays), start the first `running`
    /// one after another (the first creates the schema), then the proxy,
    /// and wait until it sees the running ones healthy.
    pub async fn start(
        binaries: &Binaries,
        dir: &Path,
        cluster: &Cluster,
        config: &FleetConfig,
        listed: usize,
        running: usize,
    ) -> Result<Fleet> {
        let worker_config = dir.join("worker.yaml");
        std::fs::write(&worker_config, &config.worker_yaml)
            .with_context(|| format!("write {}", worker_config.display()))?;
        let mut slots = Vec::with_capacity(listed);
        for n in 1..=listed {
            let relay = match config.store_relays {
                true => Some(Relay::start(cluster.addr()).await?),
                false => None,
            };
            slots.push(Slot {
                id: format!("w{n}"),
                addr: local(try_free_port().context("find a free 127.0.0.1 port")?),
                store_url: relay
                    .as_ref()
                    .map_or_else(|| cluster.url(), |r| cluster.url_via(r.addr())),
                relay,
                process: None,
            });
        }
        let mut fleet = Fleet {
            binaries: binaries.clone(),
            dir: dir.to_path_buf(),
            store_url: cluster.url(),
            config: config.clone(),
            worker_config,
            slots,
            proxy: None,
            proxy_addr: local(try_free_port().context("find a free 127.0.0.1 port")?),
            admin_addr: local(try_free_port().context("find a free 127.0.0.1 port")?),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .context("build the fleet's HTTP client")?,
        };
        let first: Vec<String> = fleet.ids().into_iter().take(running).collect();
        for id in &first {
            fleet.start_worker(id).await?;
        }
        fleet.start_proxy().await?;
        for id in &first {
            fleet.wait_proxy_sees(id, true).await?;
        }
        Ok(fleet)
    }

    pub fn ids(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.id.clone()).collect()
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// `http://127.0.0.1:PORT` of worker `id` itself, for requests that go
    /// around the proxy (they need [`Fleet::proxy_token`]).
    pub fn worker_url(&self, id: &str) -> Result<String> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.id == id)
            .with_context(|| format!("no worker {id} in the fleet"))?;
        Ok(format!("http://{}", slot.addr))
    }

    /// The credential the proxy presents to the workers.
    pub fn proxy_token(&self) -> &str {
        &self.config.proxy_token
    }

    /// Cut worker `id` off the store: its relay stops forwarding, and every
    /// socket stays open.
    pub fn cut_store(&mut self, id: &str) -> Result<()> {
        self.relay(id)?.cut();
        Ok(())
    }

    /// Let worker `id` reach the store again.
    pub fn heal_store(&mut self, id: &str) -> Result<()> {
        self.relay(id)?.heal();
        Ok(())
    }

    fn relay(&mut self, id: &str) -> Result<&Relay> {
        self.slot(id)?
            .relay
            .as_ref()
            .with_context(|| format!("worker {id} reaches the store without a relay"))
    }

    fn slot(&mut self, id: &str) -> Result<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .with_context(|| format!("no worker {id} in the fleet"))
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Start worker `id` (again: same port, store and config) and wait
    /// until its `/healthz` answers.
    pub async fn start_worker(&mut self, id: &str) -> Result<()> {
        let log = self.log_of(&format!("worker-{id}"));
        let mut command = Command::new(&self.binaries.worker);
        let slot = self.slot(id)?;
        let (addr, store_url) = (slot.addr, slot.store_url.clone());
        command
            .args(["--id", id, "--listen", &addr.to_string()])
            .args(["--store", &store_url])
            .arg("--config")
            .arg(&self.worker_config)
            .env(PROXY_TOKEN_ENV, &self.config.proxy_token)
            .env(INTERNAL_TOKEN_ENV, &self.config.internal_token)
            .env_remove(ADMIN_TOKEN_ENV);
        let process = Process::spawn(&format!("worker {id}"), command, &log)?;
        self.slot(id)?.process = Some(process);
        let url = format!("http://{addr}/healthz");
        self.wait_for_200(id, &url, &log).await
    }

    /// Poll `url` until it answers 200, failing early if the process of
    /// `id` (a worker id, or "proxy") exits.
    async fn wait_for_200(&mut self, id: &str, url: &str, log: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status(id)? {
                bail!(
                    "{id} exited ({status}) while starting; its log:\n{}",
                    log_tail(log, 30)
                );
            }
            let answer = self.http.get(url).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{url} did not answer 200 within {START_TIMEOUT:?}; the log of {id}:\n{}",
                    log_tail(log, 30)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn exit_status(&mut self, id: &str) -> Result<Option<ExitStatus>> {
        let process = if id == "proxy" {
            self.proxy.as_mut()
        } else {
            self.slot(id)?.process.as_mut()
        };
        match process {
            Some(process) => process.exited(),
            None => Ok(None),
        }
    }

    async fn start_proxy(&mut self) -> Result<()> {
        let config = self.dir.join("proxy.yaml");
        std::fs::write(&config, self.proxy_yaml())
            .with_context(|| format!("write {}", config.display()))?;
        let log = self.log_of("proxy");
        let mut command = Command::new(&self.binaries.proxy);
        command
            .arg("--config")
            .arg(&config)
            .env(PROXY_TOKEN_ENV, &self.config.proxy_token);
        self.proxy = Some(Process::spawn("proxy", command, &log)?);
        let url = format!("http://{}/admin/workers", self.admin_addr);
        self.wait_for_200("proxy", &url, &log).await
    }

    /// The proxy finds the workers in the store (`discovery`): none is
    /// listed, so a worker that starts, drains or scales in is seen without
    /// a config edit, as in production. Its credential comes from the
    /// environment ([`PROXY_TOKEN_ENV`]), not the file. Its limits are the
    /// defaults but for [`MAX_CONNECTIONS_PER_ADDRESS`].
    fn proxy_yaml(&self) -> String {
        let health = self.config.proxy_health.yaml().unwrap_or_default();
        format!(
            "listen: \"{listen}\"\n\
             admin_listen: \"{admin}\"\n\
             hash_seed: \"{seed}\"\n\
             key:\n  sources: {sources}\n  missing: reject\n\
             discovery: {{store: \"{store}\", interval_ms: 100}}\n\
             {health}\
             limits: {{max_connections_per_address: {MAX_CONNECTIONS_PER_ADDRESS}}}\n\
             trusted_hop: {{token_env: {PROXY_TOKEN_ENV}}}\n\
             access_log: false\n",
            listen = self.proxy_addr,
            admin = self.admin_addr,
            seed = self.config.hash_seed,
            sources = self.config.key_sources,
            store = self.store_url,
        )
    }

    /// The proxy's view of the fleet.
    pub async fn admin_workers(&self) -> Result<Vec<AdminWorker>> {
        let url = format!("http://{}/admin/workers", self.admin_addr);
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .context("GET /admin/workers")?;
        reply.json().await.context("parse /admin/workers")
    }

    /// Wait until the proxy reports worker `id` as `healthy`, or (for
    /// `false`) as down or no longer in its live set.
    pub async fn wait_proxy_sees(&self, id: &str, healthy: bool) -> Result<()> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            let workers = self.admin_workers().await.unwrap_or_default();
            let listed = workers.iter().find(|w| w.id == id);
            if listed.map_or(!healthy, |w| w.healthy == healthy) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the proxy did not see {id} healthy={healthy} within {HEALTH_TIMEOUT:?}: {workers:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The proxy's routing of `key`.
    pub async fn route(&self, key: &str) -> Result<AdminRoute> {
        route_at(&self.http, self.admin_addr, key).await
    }

    /// The first worker of `key`'s HRW order over every listed worker,
    /// healthy or not (`/admin/route`'s first candidate).
    pub async fn hrw_first(&self, key: &str) -> Result<String> {
        hrw_first_at(self.http.clone(), self.admin_addr, key.to_owned())
            .await
            .map(|(_, first)| first)
    }

    /// [`Fleet::hrw_first`] of every key, [`ROUTES_IN_FLIGHT`] questions
    /// at a time: under load one answer can take 100 ms, and thousands of
    /// keys asked one by one would stretch the scenario being measured.
    pub async fn hrw_firsts(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, String>> {
        let mut asked = JoinSet::new();
        let mut firsts = HashMap::new();
        for key in keys {
            if asked.len() >= ROUTES_IN_FLIGHT {
                firsts.extend(next_answer(&mut asked).await?);
            }
            asked.spawn(hrw_first_at(self.http.clone(), self.admin_addr, key));
        }
        while let Some((key, first)) = next_answer(&mut asked).await? {
            firsts.insert(key, first);
        }
        Ok(firsts)
    }

    /// Send `signal` to worker `id`.
    pub fn signal(&mut self, id: &str, signal: Signal) -> Result<()> {
        let slot = self.slot(id)?;
        let process = slot
            .process
            .as_ref()
            .with_context(|| format!("worker {id} is not running"))?;
        process.signal(signal)
    }

    /// SIGKILL worker `id` without waiting for it (the fleet reaps it
    /// later): for a test that kills while other tasks hold the fleet.
    pub fn kill9_now(&self, id: &str) -> Result<()> {
        self.slots
            .iter()
            .find(|s| s.id == id)
            .and_then(|slot| slot.process.as_ref())
            .with_context(|| format!("worker {id} is not running"))?
            .signal(Signal::SIGKILL)
    }

    /// SIGKILL worker `id` and reap it.
    pub fn kill9(&mut self, id: &str) -> Result<()> {
        self.take_process(id)?.kill_now();
        Ok(())
    }

    /// SIGTERM worker `id` and wait until it has drained and exited.
    pub async fn terminate(&mut self, id: &str, timeout: Duration) -> Result<ExitStatus> {
        let mut process = self.take_process(id)?;
        process.signal(Signal::SIGTERM)?;
        process.wait_exit(timeout).await
    }

    /// The process of running worker `id`, which from now on is not running.
    fn take_process(&mut self, id: &str) -> Result<Process> {
        self.slot(id)?
            .process
            .take()
            .with_context(|| format!("worker {id} is not running"))
    }

    /// Stop everything now (workers first, so they do not outlive the proxy
    /// by much; the store is the caller's).
    pub fn shutdown(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut process) = slot.process.take() {
                process.kill_now();
            }
        }
        if let Some(mut proxy) = self.proxy.take() {
            proxy.kill_now();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET /admin/route?key=K` on the proxy's admin listener at `admin`.
async fn route_at(http: &reqwest::Client, admin: SocketAddr, key: &str) -> Result<AdminRoute> {
    let url = format!("http://{admin}/admin/route");
    let reply = http
        .get(&url)
        .query(&[("key", key)])
        .send()
        .await
        .with_context(|| format!("GET /admin/route?key={key}"))?;
    reply.json().await.context("parse /admin/route")
}

/// `(key, first candidate)`. A roster that is empty for a moment (every
/// worker's store lease looked expired at one discovery read) is asked
/// again until [`HEALTH_TIMEOUT`]: the HRW order is what is wanted here,
/// and the requests refused meanwhile are in the run's ledger.
async fn hrw_first_at(
    http: reqwest::Client,
    admin: SocketAddr,
    key: String,
) -> Result<(String, String)> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let route = route_at(&http, admin, &key).await?;
        if let Some(first) = route.candidates.into_iter().next() {
            return Ok((key, first.id));
        }
        if Instant::now() >= deadline {
            bail!("/admin/route listed no candidate for {key} within {HEALTH_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The next answer of [`Fleet::hrw_firsts`]' open questions, `None` when
/// none is open.
async fn next_answer(
    asked: &mut JoinSet<Result<(String, String)>>,
) -> Result<Option<(String, String)>> {
    match asked.join_next().await {
        Some(joined) => joined.context("an /admin/route question failed")?.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_tokens_differ_and_stay_out_of_the_worker_file() {
        let config = FleetConfig::faults();
        assert_ne!(config.proxy_token, config.internal_token);
        assert!(!config.worker_yaml.contains(&config.proxy_token));
        assert!(!config.worker_yaml.contains(&config.internal_token));
        assert!(config
            .worker_yaml
            .contains(&format!("lease_ms: {LEASE_MS}")));
    }

    #[test]
    fn default_health_leaves_the_proxy_s_health_section_out() {
        let config = FleetConfig::faults().default_health();
        assert_eq!(config.proxy_health.yaml(), None);
        assert_eq!(config.proxy_health.timing().detection_ms(), 500);
        let fast = FleetConfig::faults().proxy_health;
        assert!(fast.yaml().is_some_and(|y| y.contains("fall: 1")));
    }
}
