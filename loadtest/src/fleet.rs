//! The Roost processes under test: N `roost-worker`s on one store and a
//! `roost-proxy` in front of them, all on 127.0.0.1 with free ports, their
//! configs and logs in the scenario's output dir. The fault injector drives
//! them through this (signals, restarts) and waits on what the proxy's
//! admin API reports. What differs between the fault suite and the ticket
//! sale — the workers' config, the proxy's key sources, the shared
//! `hash_seed` — is a [`FleetConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::binaries::Binaries;
use crate::process::{free_port, log_tail, Process};

/// How long a worker or the proxy may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the proxy may take to see a change of a worker's health.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);

/// The timing every run's workers share: flushes, leases, hand-overs.
const WORKER_TIMING_YAML: &str = "\
flush_interval_ms: 50
lease_ms: 2000
heartbeat_ms: 500
handoff_timeout_ms: 3000
";

/// What a run configures in the fleet it starts.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The proxy's `hash_seed` phrase (random per run, so no run depends
    /// on where a key happens to land).
    pub hash_seed: String,
    /// The whole worker config file.
    pub worker_yaml: String,
    /// The proxy's `key.sources`, as a YAML flow sequence.
    pub key_sources: String,
    /// The fleet's internal token (random per run): the workers take
    /// requests only with it (`internal_token`), and the proxy sends it
    /// (`trusted_hop`), as a production fleet should run.
    pub internal_token: String,
}

impl FleetConfig {
    /// A random `hash_seed` and internal token, the shared timing plus
    /// `worker_extra` (YAML lines) for the workers, and `key_sources` for
    /// the proxy.
    pub fn new(worker_extra: &str, key_sources: &str) -> FleetConfig {
        let internal_token = format!("{:032x}", rand::random::<u128>());
        FleetConfig {
            hash_seed: format!("roost-loadtest-{:016x}", rand::random::<u64>()),
            worker_yaml: format!(
                "{WORKER_TIMING_YAML}internal_token: \"{internal_token}\"\n{worker_extra}"
            ),
            key_sources: key_sources.to_owned(),
            internal_token,
        }
    }

    /// The same `hash_seed` in the workers' config too (workers that route
    /// calls between entities rank workers as the proxy does).
    pub fn seed_in_workers(mut self) -> FleetConfig {
        self.worker_yaml
            .push_str(&format!("hash_seed: \"{}\"\n", self.hash_seed));
        self
    }

    /// The fault suite's: sessions write-behind, carts and quotas durable,
    /// users keyed by `x-user-id`.
    pub fn faults() -> FleetConfig {
        FleetConfig::new(
            "durability: {session: write-behind, cart: durable, quota: durable}\n",
            "[{header: x-user-id}]",
        )
    }
}

/// One worker the proxy lists, running or not.
struct Slot {
    id: String,
    addr: SocketAddr,
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
    /// Slots for `listed` workers (`w1`…), start the first
    /// `running` one after another (the first creates the schema), then
    /// the proxy, and wait until it sees the running ones healthy.
    pub async fn start(
        binaries: &Binaries,
        dir: &Path,
        store_url: &str,
        config: &FleetConfig,
        listed: usize,
        running: usize,
    ) -> Result<Fleet> {
        let worker_config = dir.join("worker.yaml");
        std::fs::write(&worker_config, &config.worker_yaml)
            .with_context(|| format!("write {}", worker_config.display()))?;
        let slots = (1..=listed)
            .map(|n| -> Result<Slot> {
                Ok(Slot {
                    id: format!("w{n}"),
                    addr: local(free_port()?),
                    process: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut fleet = Fleet {
            binaries: binaries.clone(),
            dir: dir.to_path_buf(),
            store_url: store_url.to_owned(),
            config: config.clone(),
            worker_config,
            slots,
            proxy: None,
            proxy_addr: local(free_port()?),
            admin_addr: local(free_port()?),
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
        let addr = self.slot(id)?.addr;
        command
            .args(["--id", id, "--listen", &addr.to_string()])
            .args(["--store", &self.store_url])
            .arg("--config")
            .arg(&self.worker_config);
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
        command.arg("--config").arg(&config);
        self.proxy = Some(Process::spawn("proxy", command, &log)?);
        let url = format!("http://{}/admin/workers", self.admin_addr);
        self.wait_for_200("proxy", &url, &log).await
    }

    /// The proxy finds the workers in the store (`discovery`): none is
    /// listed, so a worker that starts, drains or scales in is seen without
    /// a config edit, as in production.
    fn proxy_yaml(&self) -> String {
        format!(
            "listen: \"{listen}\"\n\
             admin_listen: \"{admin}\"\n\
             hash_seed: \"{seed}\"\n\
             key:\n  sources: {sources}\n  missing: reject\n\
             discovery: {{store: \"{store}\", interval_ms: 100}}\n\
             health: {{path: /readyz, interval_ms: 100, timeout_ms: 100, rise: 1, fall: 1}}\n\
             trusted_hop: {{token: \"{token}\"}}\n\
             access_log: false\n",
            listen = self.proxy_addr,
            admin = self.admin_addr,
            seed = self.config.hash_seed,
            sources = self.config.key_sources,
            store = self.store_url,
            token = self.config.internal_token,
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
        let url = format!("http://{}/admin/route", self.admin_addr);
        let reply = self
            .http
            .get(&url)
            .query(&[("key", key)])
            .send()
            .await
            .with_context(|| format!("GET /admin/route?key={key}"))?;
        reply.json().await.context("parse /admin/route")
    }

    /// The first worker of `key`'s HRW order over every listed worker,
    /// healthy or not (`/admin/route`'s first candidate).
    pub async fn hrw_first(&self, key: &str) -> Result<String> {
        self.route(key)
            .await?
            .candidates
            .into_iter()
            .next()
            .map(|c| c.id)
            .context("/admin/route listed no candidate")
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
