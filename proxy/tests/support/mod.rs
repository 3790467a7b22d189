//! The one fixture of the integration tests: a [`TestFleet`] of real
//! `roost-worker` processes behind one real `roost-proxy`, on 127.0.0.1 only.
//!
//! ```ignore
//! let fleet = TestFleet::start(FleetConfig::new(3)).await;
//! let served = fleet.get_keyed("alice").await;
//! fleet.kill9("w2");
//! ```
//!
//! Every child is killed (SIGKILL) and reaped when the fleet is dropped, and
//! its temp dir (config, proxy and worker logs) is removed; set
//! `ROOST_TEST_KEEP_DIR=1` to keep it. When a test panics the end of the
//! proxy log is printed, so a failure shows what the proxy saw.
//!
//! Each worker has two listeners: `--listen` (the entity API and the
//! probes, what the proxy reaches) and `--admin-listen` (its `/metrics`).
//! [`raw`] speaks HTTP/1.1 on a bare socket, for tests whose bytes matter;
//! [`upstream`] is a fake worker that records what the proxy forwards.

#![allow(dead_code)] // each test binary uses a different part of the fixture

pub mod load;
pub mod raw;
pub mod upstream;

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use roost_proxy::identity::{CookieSigner, Secret};
use roost_testkit::process::{log_tail, Process};
use serde_json::Value;

#[allow(unused_imports)] // each test binary uses a different part
pub use roost_testkit::metrics::metric_value;
pub use roost_testkit::poll::eventually;
pub use roost_testkit::{accepts, free_port, TempDir};

/// How long a fleet may take to come up (all workers healthy).
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a single HTTP request from a test may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERMed worker may take to exit: longer than its default
/// drain (10 s), so only a worker that hangs fails the wait.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a one-shot `roost-proxy` run ([`run_proxy`]) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// The routing-key header every default fleet reads first.
pub const KEY_HEADER: &str = "x-user-id";
/// The routing-key cookie every default fleet reads second.
pub const KEY_COOKIE: &str = "uid";
/// The secret of [`signed_cookie_source`]s, and the proxy variable holding it.
pub const COOKIE_SECRET: &str = "the signed-cookie secret of this test fleet, 52 b";
pub const COOKIE_SECRET_ENV: &str = "ROOST_TEST_COOKIE_SECRET";
/// The proxy variable `trusted_hop.token_env` names.
pub const HOP_TOKEN_ENV: &str = "ROOST_TEST_HOP_TOKEN";

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// The proxy binary cargo built for this test run.
pub fn proxy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roost-proxy"))
}

/// The worker binary (another package): built once per test binary with the
/// same cargo and profile, beside the proxy binary.
pub fn worker_bin() -> &'static Path {
    static WORKER: OnceLock<PathBuf> = OnceLock::new();
    WORKER.get_or_init(|| roost_testkit::bins::built("roost-worker"))
}

// ---------------------------------------------------------------------------
// Temp dirs and ports
// ---------------------------------------------------------------------------

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// `key.missing` in the proxy config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Reject,
    Any,
    /// Needs a `signed_cookie` source.
    Mint,
}

/// One entry of `key.sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Header(String),
    Cookie(String),
    /// `{path: TEMPLATE, prefix: PREFIX}`.
    Path {
        template: String,
        prefix: String,
    },
    /// An entry written as is, e.g. `{signed_cookie: sid, secret_env: X}`.
    Raw(String),
}

impl Source {
    /// `{path: "/v1/inventory/{key}", prefix: "inventory:"}`: an inventory
    /// request is routed by its SKU, to the worker that owns the entity.
    pub fn inventory() -> Source {
        Source::Path {
            template: "/v1/inventory/{key}".into(),
            prefix: "inventory:".into(),
        }
    }
}

/// `{signed_cookie: NAME, secret_env: ...}` with [`COOKIE_SECRET`]; a fleet
/// using it needs `.proxy_env(COOKIE_SECRET_ENV, COOKIE_SECRET)` (see
/// [`FleetConfig::signed_cookie`]).
pub fn signed_cookie_source(name: &str) -> Source {
    Source::Raw(format!(
        "{{signed_cookie: {name}, secret_env: {COOKIE_SECRET_ENV}}}"
    ))
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Signs and verifies cookies as the proxy does with `secret`.
pub fn cookie_signer(secret: &str) -> CookieSigner {
    CookieSigner::new(Secret::new(secret.as_bytes(), "test").expect("32+ bytes"))
}

/// A secret of 32 random lowercase hex digits (visible ASCII, as tokens
/// must be), fresh for every call.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("OS randomness for a test token");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trusted hop between the proxy and the workers: two different
/// secrets. The workers take entity requests only with `proxy_token` (in
/// `x-roost-hop-token`, which the proxy sends) and calls between them only
/// with `internal_token` (in `x-roost-internal-token`, which no proxy
/// holds).
#[derive(Debug, Clone)]
pub struct TrustedHop {
    /// The workers' `ROOST_PROXY_TOKEN`.
    pub proxy_token: String,
    /// The workers' `ROOST_INTERNAL_TOKEN`.
    pub internal_token: String,
    /// What the proxy is given (in [`HOP_TOKEN_ENV`]): `proxy_token`
    /// unless a test gives it a wrong one.
    pub proxy_sends: String,
}

impl TrustedHop {
    /// Fresh random tokens; the proxy sends the right one.
    pub fn random() -> Self {
        let proxy_token = random_token();
        TrustedHop {
            proxy_sends: proxy_token.clone(),
            proxy_token,
            internal_token: random_token(),
        }
    }

    /// The headers a request straight to a worker needs to look as if it
    /// came through the proxy, keyed by `key`.
    pub fn as_proxy<'a>(&'a self, key: &'a str) -> [(&'static str, &'a str); 2] {
        [
            ("x-roost-hop-token", self.proxy_token.as_str()),
            ("x-roost-key", key),
        ]
    }
}

/// `health:` in the proxy config.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

impl Default for Health {
    /// Fast checks for tests. The timeout is generous on purpose: a killed
    /// worker refuses at once, and a long timeout keeps a slow, shared CI
    /// machine from taking a live worker down.
    fn default() -> Self {
        Health {
            interval_ms: 50,
            timeout_ms: 1000,
            rise: 2,
            fall: 2,
        }
    }
}

/// What fleet to start: the proxy config minus the addresses, which the
/// fixture picks.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `(id, weight)` per worker.
    pub workers: Vec<(String, f64)>,
    pub missing: Missing,
    pub sources: Vec<Source>,
    pub health: Health,
    pub hash_seed: String,
    pub threads: Option<usize>,
    pub access_log: bool,
    /// Start the proxy with `--log-format json`.
    pub json_logs: bool,
    /// Extra top-level YAML lines appended verbatim.
    pub extra_yaml: String,
    /// Environment variables the proxy is started with (secrets).
    pub proxy_env: Vec<(String, String)>,
    /// Environment variables every worker is started with (secrets).
    pub worker_env: Vec<(String, String)>,
    /// No static worker list: the proxy discovers the workers from the
    /// fleet's store.
    pub discovered: bool,
    /// The workers' store, which the proxy discovers them in (default: an
    /// SQLite file in the fleet's temp dir).
    pub store: Option<String>,
    /// The trusted hop, when on: `trusted_hop` in the proxy config and both
    /// tokens in the workers' environment.
    pub hop: Option<TrustedHop>,
    /// The workers' `ROOST_ADMIN_TOKEN`, when set.
    pub admin_token: Option<String>,
    /// Extra YAML lines of every worker's config file (which always holds
    /// the proxy's `hash_seed`, so calls between workers are routed as the
    /// proxy routes clients).
    pub worker_yaml: String,
    /// Workers of `workers` that are fakes already listening here
    /// ([`upstream::Recorder`]): listed to the proxy, never spawned.
    pub fakes: Vec<(String, SocketAddr)>,
}

impl FleetConfig {
    /// `n` workers `w1..wn` of weight 1, keys from the `x-user-id` header
    /// then the `uid` cookie, keyless requests rejected, fast health checks.
    pub fn new(n: usize) -> Self {
        FleetConfig {
            workers: (1..=n).map(|i| (format!("w{i}"), 1.0)).collect(),
            missing: Missing::Reject,
            sources: vec![
                Source::Header(KEY_HEADER.into()),
                Source::Cookie(KEY_COOKIE.into()),
            ],
            health: Health::default(),
            hash_seed: "roost integration tests".into(),
            threads: None,
            access_log: true,
            json_logs: false,
            extra_yaml: String::new(),
            proxy_env: Vec::new(),
            worker_env: Vec::new(),
            discovered: false,
            store: None,
            hop: None,
            admin_token: None,
            worker_yaml: String::new(),
            fakes: Vec::new(),
        }
    }

    /// Add `fake` to the workers (weight 1): the proxy routes to it like
    /// to any worker; the fixture does not start or stop it.
    pub fn with_fake_worker(mut self, fake: &upstream::Recorder) -> Self {
        self.workers.push((fake.id.clone(), 1.0));
        self.fakes.push((fake.id.clone(), fake.addr));
        self
    }

    fn fake_addr(&self, id: &str) -> Option<SocketAddr> {
        self.fakes
            .iter()
            .find(|(fake, _)| fake == id)
            .map(|(_, addr)| *addr)
    }

    /// Turn the trusted hop on with fresh random tokens.
    pub fn trusted_hop(self) -> Self {
        self.with_hop(TrustedHop::random())
    }

    /// Turn the trusted hop on with these tokens.
    pub fn with_hop(mut self, hop: TrustedHop) -> Self {
        self.hop = Some(hop);
        self
    }

    /// Give the workers a random admin token (`PUT /v1/inventory/{sku}`).
    pub fn admin_token(mut self) -> Self {
        self.admin_token = Some(random_token());
        self
    }

    /// Append top-level YAML lines to the proxy config.
    pub fn yaml(mut self, lines: &str) -> Self {
        self.extra_yaml += lines;
        self
    }

    /// Use the signed cookie `name` (secret [`COOKIE_SECRET`]) as the only
    /// key source.
    pub fn signed_cookie(self, name: &str) -> Self {
        self.sources(vec![signed_cookie_source(name)])
            .proxy_env(COOKIE_SECRET_ENV, COOKIE_SECRET)
    }

    /// Every variable the proxy is started with.
    fn all_proxy_env(&self) -> Vec<(String, String)> {
        let mut env = self.proxy_env.clone();
        if let Some(hop) = &self.hop {
            env.push((HOP_TOKEN_ENV.into(), hop.proxy_sends.clone()));
        }
        env
    }

    /// Every variable a worker is started with.
    fn all_worker_env(&self) -> Vec<(String, String)> {
        let mut env = self.worker_env.clone();
        if let Some(hop) = &self.hop {
            env.push(("ROOST_PROXY_TOKEN".into(), hop.proxy_token.clone()));
            env.push(("ROOST_INTERNAL_TOKEN".into(), hop.internal_token.clone()));
        }
        if let Some(admin) = &self.admin_token {
            env.push(("ROOST_ADMIN_TOKEN".into(), admin.clone()));
        }
        env
    }

    /// Every worker's config file.
    pub fn worker_config(&self) -> String {
        let quote = |s: &str| Value::from(s).to_string();
        format!(
            "hash_seed: {}\n{}",
            quote(&self.hash_seed),
            self.worker_yaml
        )
    }

    /// Let the proxy find the workers in the store instead of a list.
    pub fn discovered(mut self) -> Self {
        self.discovered = true;
        self
    }

    /// Keep the workers in the store at `url` (`--store`, and the proxy's
    /// `discovery.store`).
    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(url.to_owned());
        self
    }

    pub fn missing(mut self, missing: Missing) -> Self {
        self.missing = missing;
        self
    }

    /// One weight per worker, in order.
    pub fn weights(mut self, weights: &[f64]) -> Self {
        assert_eq!(
            weights.len(),
            self.workers.len(),
            "one weight per worker, please"
        );
        for ((_, weight), w) in self.workers.iter_mut().zip(weights) {
            *weight = *w;
        }
        self
    }

    pub fn sources(mut self, sources: Vec<Source>) -> Self {
        self.sources = sources;
        self
    }

    pub fn health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Start the proxy with `name=value` in its environment.
    pub fn proxy_env(mut self, name: &str, value: &str) -> Self {
        self.proxy_env.push((name.into(), value.into()));
        self
    }

    /// Start every worker with `name=value` in its environment.
    pub fn worker_env(mut self, name: &str, value: &str) -> Self {
        self.worker_env.push((name.into(), value.into()));
        self
    }

    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// The YAML the proxy is started with; `store` is the workers' store
    /// URL (read only when `discovered`).
    pub fn to_yaml(
        &self,
        listen: SocketAddr,
        admin: SocketAddr,
        addrs: &[SocketAddr],
        store: &str,
    ) -> String {
        let quote = |s: &str| Value::from(s).to_string();
        let sources: Vec<String> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::Header(name) => format!("{{header: {}}}", quote(name)),
                Source::Cookie(name) => format!("{{cookie: {}}}", quote(name)),
                Source::Path { template, prefix } => {
                    format!("{{path: {}, prefix: {}}}", quote(template), quote(prefix))
                }
                Source::Raw(entry) => entry.clone(),
            })
            .collect();
        let mut yaml = format!(
            "listen: {listen}\nadmin_listen: {admin}\nhash_seed: {}\naccess_log: {}\n",
            quote(&self.hash_seed),
            self.access_log,
        );
        if let Some(threads) = self.threads {
            yaml += &format!("threads: {threads}\n");
        }
        let missing = match self.missing {
            Missing::Reject => "reject",
            Missing::Any => "any",
            Missing::Mint => "mint",
        };
        yaml += &format!(
            "key:\n  sources: [{}]\n  missing: {missing}\n",
            sources.join(", ")
        );
        if self.discovered {
            yaml += &format!("discovery: {{store: {}, interval_ms: 100}}\n", quote(store));
        } else {
            yaml += "workers:\n";
        }
        let listed = if self.discovered { &[][..] } else { addrs };
        for ((id, weight), addr) in self.workers.iter().zip(listed) {
            yaml += &format!(
                "  - {{id: {}, addr: {addr}, weight: {weight:?}}}\n",
                quote(id)
            );
        }
        // The default path: the workers' readiness.
        let h = &self.health;
        yaml += &format!(
            "health: {{interval_ms: {}, timeout_ms: {}, rise: {}, fall: {}}}\n",
            h.interval_ms, h.timeout_ms, h.rise, h.fall
        );
        if self.hop.is_some() {
            yaml += &format!("trusted_hop: {{token_env: {HOP_TOKEN_ENV}}}\n");
        }
        yaml += &self.extra_yaml;
        yaml
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// What a request through the proxy came back with.
#[derive(Debug, Clone)]
pub struct Served {
    pub status: u16,
    /// `x-roost-worker`, when a worker answered.
    pub worker: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Served {
    pub async fn from_response(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let worker = headers
            .get("x-roost-worker")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .expect("read the body of a proxied response");
        Served {
            status,
            worker,
            headers,
            body,
        }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body (status {}), got {:?}: {e}",
                self.status, self.body
            )
        })
    }
}

/// `/admin/route?key=K`.
#[derive(Debug, Clone)]
pub struct Route {
    pub owner: Option<String>,
    pub key_hash: String,
    /// `(id, addr, healthy)`, best first.
    pub candidates: Vec<(String, String, bool)>,
}

impl Route {
    pub fn from_json(body: &Value) -> Self {
        let owner = match &body["owner"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => panic!("/admin/route owner must be a string or null, got {other}"),
        };
        let key_hash = body["key_hash"]
            .as_str()
            .unwrap_or_else(|| panic!("/admin/route key_hash must be a string: {body}"))
            .to_owned();
        let candidates = body["candidates"]
            .as_array()
            .unwrap_or_else(|| panic!("/admin/route candidates must be an array: {body}"))
            .iter()
            .map(|c| {
                let id = c["id"].as_str();
                let addr = c["addr"].as_str();
                let healthy = c["healthy"].as_bool();
                match (id, addr, healthy) {
                    (Some(id), Some(addr), Some(healthy)) => {
                        (id.to_owned(), addr.to_owned(), healthy)
                    }
                    _ => panic!("bad /admin/route candidate {c} in {body}"),
                }
            })
            .collect();
        Route {
            owner,
            key_hash,
            candidates,
        }
    }

    /// The candidate ids in order.
    pub fn order(&self) -> Vec<&str> {
        self.candidates
            .iter()
            .map(|(id, _, _)| id.as_str())
            .collect()
    }
}

/// An HTTP client for tests: keep-alive, no system proxy, bounded requests.
pub fn client() -> reqwest::Client {
    roost_testkit::http::client(REQUEST_TIMEOUT)
}

// ---------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------

/// One worker process of the fleet.
pub struct Worker {
    pub id: String,
    /// The entity API and the probes.
    pub addr: SocketAddr,
    /// `--admin-listen`: the worker's `/metrics`.
    pub admin_addr: SocketAddr,
    pub weight: f64,
    /// SIGKILLed and reaped when dropped, like every child of the fleet.
    process: Option<Process>,
}

/// The fleet's workers share one SQLite file in the fleet's temp dir.
fn store_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("roost.db").display())
}

/// The fleet's workers' store: the configured one, or [`store_url`].
fn fleet_store(config: &FleetConfig, dir: &TempDir) -> String {
    config.store.clone().unwrap_or_else(|| store_url(dir))
}

/// Another proxy in front of a [`TestFleet`]'s workers; killed when dropped.
pub struct SecondProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    _process: Process,
}

/// N workers and one proxy, all real processes on 127.0.0.1.
pub struct TestFleet {
    pub config: FleetConfig,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub workers: Vec<Worker>,
    proxy: Option<Process>,
    client: reqwest::Client,
    // Dropped last, after the workers and the proxy are reaped: the
    // children hold files in it.
    dir: TempDir,
}

impl TestFleet {
    /// Start the fleet and wait until the proxy reports every worker healthy.
    /// A start that fails because a port was taken in the meantime is retried
    /// with new ports.
    pub async fn start(config: FleetConfig) -> TestFleet {
        let worker_bin = worker_bin();
        let mut last_error = String::new();
        for attempt in 1..=3 {
            match Self::try_start(config.clone(), worker_bin).await {
                Ok(fleet) => return fleet,
                Err(e) => {
                    eprintln!("fleet start attempt {attempt} failed: {e}");
                    last_error = e;
                }
            }
        }
        panic!("could not start the test fleet in 3 attempts; last error:\n{last_error}")
    }

    async fn try_start(config: FleetConfig, worker_bin: &Path) -> Result<TestFleet, String> {
        let dir = TempDir::new("fleet");
        let proxy_addr = local(free_port());
        let admin_addr = local(free_port());
        let workers: Vec<Worker> = config
            .workers
            .iter()
            .map(|(id, weight)| Worker {
                id: id.clone(),
                addr: config.fake_addr(id).unwrap_or_else(|| local(free_port())),
                admin_addr: local(free_port()),
                weight: *weight,
                process: None,
            })
            .collect();
        let addrs: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
        let config_path = dir.write(
            "proxy.yaml",
            &config.to_yaml(proxy_addr, admin_addr, &addrs, &fleet_store(&config, &dir)),
        );
        dir.write("worker.yaml", &config.worker_config());
        let mut fleet = TestFleet {
            config,
            proxy_addr,
            admin_addr,
            workers,
            proxy: None,
            client: client(),
            dir,
        };
        for i in 0..fleet.workers.len() {
            if fleet.config.fake_addr(&fleet.workers[i].id).is_some() {
                continue;
            }
            let process = fleet.spawn_worker(i, worker_bin)?;
            fleet.workers[i].process = Some(process);
        }
        fleet.proxy = Some(fleet.spawn_proxy(&config_path)?);
        fleet.wait_started().await?;
        Ok(fleet)
    }

    /// `roost-proxy --config CONFIG` with this fleet's log format and
    /// environment.
    fn proxy_command(&self, config: &Path) -> Command {
        let mut command = Command::new(proxy_bin());
        command.arg("--config").arg(config);
        if self.config.json_logs {
            command.args(["--log-format", "json"]);
        }
        command
            .env("RUST_LOG", "info")
            .envs(self.config.all_proxy_env());
        command
    }

    /// The proxy on `config`, its stderr in [`TestFleet::proxy_log_path`].
    fn spawn_proxy(&self, config: &Path) -> Result<Process, String> {
        let command = self.proxy_command(config);
        Process::spawn_stderr_only("roost-proxy", command, &self.proxy_log_path())
            .map_err(|e| format!("{e:#}"))
    }

    fn spawn_worker(&self, index: usize, bin: &Path) -> Result<Process, String> {
        let worker = &self.workers[index];
        let log = self.dir.path().join(format!("worker-{}.log", worker.id));
        let store = fleet_store(&self.config, &self.dir);
        let config = self.dir.path().join("worker.yaml");
        let mut command = Command::new(bin);
        command
            .args(["--id", &worker.id, "--listen", &worker.addr.to_string()])
            .args(["--admin-listen", &worker.admin_addr.to_string()])
            .args(["--store", &store])
            .arg("--config")
            .arg(&config)
            .envs(self.config.all_worker_env())
            .env("RUST_LOG", "warn");
        let name = format!("roost-worker {}", worker.id);
        Process::spawn_stderr_only(&name, command, &log).map_err(|e| format!("{e:#}"))
    }

    /// Every worker accepting, the proxy listening, and `/admin/workers`
    /// reporting all of them healthy.
    async fn wait_started(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_children_alive()?;
            if accepts(self.proxy_addr) {
                if let Ok(workers) = self.try_admin_workers().await {
                    let healthy = workers
                        .iter()
                        .filter(|w| w["healthy"].as_bool() == Some(true))
                        .count();
                    if healthy == self.workers.len() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the fleet was not healthy after {START_TIMEOUT:?}; proxy log:\n{}",
                    self.proxy_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_children_alive(&mut self) -> Result<(), String> {
        if let Some(proxy) = &mut self.proxy {
            if let Ok(Some(status)) = proxy.exited() {
                return Err(format!(
                    "roost-proxy exited early ({status}); its log:\n{}",
                    fs::read_to_string(self.proxy_log_path()).unwrap_or_default()
                ));
            }
        }
        for worker in &mut self.workers {
            if let Some(process) = &mut worker.process {
                if let Ok(Some(status)) = process.exited() {
                    return Err(format!(
                        "roost-worker {} exited early ({status})",
                        worker.id
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn worker_ids(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.id.clone()).collect()
    }

    pub fn worker(&self, id: &str) -> &Worker {
        self.workers
            .iter()
            .find(|w| w.id == id)
            .unwrap_or_else(|| panic!("no worker {id:?} in this fleet"))
    }

    fn worker_mut(&mut self, id: &str) -> &mut Worker {
        self.workers
            .iter_mut()
            .find(|w| w.id == id)
            .unwrap_or_else(|| panic!("no worker {id:?} in this fleet"))
    }

    pub fn worker_addr(&self, id: &str) -> SocketAddr {
        self.worker(id).addr
    }

    /// The worker's admin listener (its `/metrics`).
    pub fn worker_admin_addr(&self, id: &str) -> SocketAddr {
        self.worker(id).admin_addr
    }

    /// The trusted hop's tokens; panics if the fleet has none.
    pub fn hop(&self) -> &TrustedHop {
        self.config
            .hop
            .as_ref()
            .expect("a fleet started with FleetConfig::trusted_hop")
    }

    /// `Bearer <the workers' admin token>`; panics if the fleet has none.
    pub fn admin_bearer(&self) -> String {
        let token = self
            .config
            .admin_token
            .as_ref()
            .expect("a fleet started with FleetConfig::admin_token");
        format!("Bearer {token}")
    }

    /// The worker's pid while it runs.
    pub fn worker_pid(&self, id: &str) -> Option<u32> {
        self.worker(id).process.as_ref().map(Process::id)
    }

    /// A keep-alive client shared by the fixture's helpers (clone it freely).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// SIGTERM the worker (it drains) and wait (bounded by
    /// [`EXIT_TIMEOUT`]) for it to exit.
    pub fn sigterm(&mut self, id: &str) {
        let mut process = self.take_process(id);
        process
            .signal(Signal::SIGTERM)
            .unwrap_or_else(|e| panic!("{e:#}"));
        process
            .wait_exit_blocking(EXIT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// `kill -9` the worker and reap it: when this returns, the process is
    /// gone and its port refuses connections.
    pub fn kill9(&mut self, id: &str) {
        self.take_process(id).kill_now();
    }

    /// The running worker's process, which from now on is not running.
    fn take_process(&mut self, id: &str) -> Process {
        self.worker_mut(id)
            .process
            .take()
            .unwrap_or_else(|| panic!("worker {id} is not running"))
    }

    /// Start the worker again with the same id and port, and wait (bounded)
    /// until it accepts connections. The proxy notices by its health checks.
    pub fn restart(&mut self, id: &str) {
        let index = self
            .workers
            .iter()
            .position(|w| w.id == id)
            .unwrap_or_else(|| panic!("no worker {id:?} in this fleet"));
        assert!(
            self.workers[index].process.is_none(),
            "worker {id} is still running; kill9 it first"
        );
        let addr = self.workers[index].addr;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut process = self
                .spawn_worker(index, worker_bin())
                .unwrap_or_else(|e| panic!("restart worker {id}: {e}"));
            loop {
                if accepts(addr) {
                    self.workers[index].process = Some(process);
                    return;
                }
                if let Ok(Some(status)) = process.exited() {
                    // Most likely the port is briefly unavailable: try again.
                    eprintln!("restarted worker {id} exited ({status}); retrying");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "restarted worker {id} did not accept on {addr} within {START_TIMEOUT:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                Instant::now() < deadline,
                "could not restart worker {id} on {addr} within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // --- the proxy's own life ------------------------------------------------

    /// Send `signal` to the proxy.
    pub fn signal_proxy(&self, signal: Signal) {
        self.proxy
            .as_ref()
            .expect("the proxy runs")
            .signal(signal)
            .expect("signal the proxy");
    }

    /// Wait up to `limit` for the proxy to exit; its exit status.
    pub async fn wait_proxy_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let proxy = self.proxy.as_mut().expect("the proxy runs");
        proxy
            .wait_exit(limit)
            .await
            .unwrap_or_else(|e| panic!("roost-proxy did not exit within {limit:?}: {e:#}"))
    }

    /// A second proxy with this fleet's config in front of the same
    /// workers, on its own ports (what a load balancer would fail over
    /// to); waits until it reports every worker healthy.
    pub async fn second_proxy(&self) -> SecondProxy {
        let addrs: Vec<SocketAddr> = self.workers.iter().map(|w| w.addr).collect();
        let (addr, admin_addr) = (local(free_port()), local(free_port()));
        let yaml = self.config.to_yaml(
            addr,
            admin_addr,
            &addrs,
            &fleet_store(&self.config, &self.dir),
        );
        let config = self.dir.write("proxy-2.yaml", &yaml);
        let command = self.proxy_command(&config);
        let log = self.dir.path().join("proxy-2.log");
        let process = Process::spawn_stderr_only("roost-proxy 2", command, &log)
            .unwrap_or_else(|e| panic!("cannot start a second proxy: {e:#}"));
        let admin = format!("http://{admin_addr}/admin/workers");
        let workers = self.workers.len();
        eventually(
            START_TIMEOUT,
            "the second proxy sees every worker up",
            || {
                let admin = admin.clone();
                async move {
                    let listed: Vec<Value> =
                        client().get(&admin).send().await.ok()?.json().await.ok()?;
                    let up = listed.iter().filter(|w| w["healthy"] == true).count();
                    (up == workers).then_some(())
                }
            },
        )
        .await;
        SecondProxy {
            addr,
            admin_addr,
            _process: process,
        }
    }

    /// A zero-downtime upgrade of the proxy: a new one started with
    /// `--upgrade` on the same config, and, once it waits on `upgrade_sock`,
    /// the running one sent SIGQUIT (it hands its listening sockets over,
    /// then drains). The fleet's proxy is the new one from then on (its
    /// log: `proxy-upgraded.log`); returns the old one.
    /// Write the proxy's config file again from this fleet's config as
    /// `edit` changes it (workers are listed at their addresses; a worker
    /// the edit leaves out keeps running). The proxy reads it on a reload.
    pub fn rewrite_proxy_config(&mut self, edit: impl FnOnce(&mut FleetConfig)) {
        edit(&mut self.config);
        let addrs: Vec<SocketAddr> = (self.config.workers.iter())
            .map(|(id, _)| self.worker(id).addr)
            .collect();
        let store = store_url(&self.dir);
        let yaml = (self.config).to_yaml(self.proxy_addr, self.admin_addr, &addrs, &store);
        self.dir.write("proxy.yaml", &yaml);
    }

    /// `POST` to the admin listener: (status, body).
    pub async fn admin_post(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.admin_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} on the admin listener failed: {e}"));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        (status, body)
    }

    pub async fn upgrade_proxy(&mut self, upgrade_sock: &Path) -> Process {
        let mut command = self.proxy_command(&self.dir.path().join("proxy.yaml"));
        command.arg("--upgrade");
        let log = self.dir.path().join("proxy-upgraded.log");
        let upgraded = Process::spawn_stderr_only("roost-proxy (upgraded)", command, &log)
            .unwrap_or_else(|e| panic!("cannot start the upgraded proxy: {e:#}"));
        eventually(
            START_TIMEOUT,
            "the upgraded proxy's upgrade socket",
            || async { upgrade_sock.exists().then_some(()) },
        )
        .await;
        let old = self.proxy.replace(upgraded).expect("the proxy runs");
        old.signal(Signal::SIGQUIT)
            .expect("SIGQUIT the running proxy");
        old
    }

    // --- logs ---------------------------------------------------------------

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn proxy_log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn proxy_log(&self) -> String {
        let path = self.proxy_log_path();
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the proxy log {}: {e}", path.display()))
    }

    /// The access-log lines (target `roost::access`) of a fleet started
    /// with `json_logs`, as JSON, once there are at least `count` (bounded
    /// wait: a line is written in the logging phase, just after its
    /// response).
    pub async fn access_log_lines(&self, count: usize) -> Vec<Value> {
        let what = format!("{count} access-log lines");
        eventually(Duration::from_secs(5), &what, || async {
            let lines: Vec<Value> = self
                .proxy_log()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| line["target"] == "roost::access")
                .collect();
            (lines.len() >= count).then_some(lines)
        })
        .await
    }

    // --- requests -----------------------------------------------------------

    /// `GET path` through the proxy with these headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Served {
        let mut request = self.client.get(format!("{}{path}", self.proxy_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the proxy failed: {e}"));
        Served::from_response(response).await
    }

    /// `METHOD path` through the proxy with these headers and, if given, a
    /// JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Served {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.proxy_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} through the proxy failed: {e}"));
        Served::from_response(response).await
    }

    /// `GET /v1/whoami` (the worker route that touches no state) with the
    /// key in the `x-user-id` header.
    pub async fn get_keyed(&self, key: &str) -> Served {
        self.get("/v1/whoami", &[(KEY_HEADER, key)]).await
    }

    /// `GET path` on the admin listener: status and body text.
    pub async fn admin_get(&self, path_and_query: &str) -> (u16, Option<String>, String) {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.admin_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query} on the admin listener failed: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("read the body of admin {path_and_query}: {e}"));
        (status, content_type, body)
    }

    async fn try_admin_workers(&self) -> Result<Vec<Value>, String> {
        let response = self
            .client
            .get(format!("{}/admin/workers", self.admin_url()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        body.as_array()
            .cloned()
            .ok_or_else(|| format!("/admin/workers is not an array: {body}"))
    }

    /// `/admin/workers` as JSON values.
    pub async fn admin_workers(&self) -> Vec<Value> {
        self.try_admin_workers()
            .await
            .unwrap_or_else(|e| panic!("GET /admin/workers: {e}"))
    }

    /// Whether `/admin/workers` reports the worker healthy.
    pub async fn is_healthy(&self, id: &str) -> bool {
        self.admin_workers()
            .await
            .iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("/admin/workers does not list {id}"))["healthy"]
            .as_bool()
            .unwrap_or_else(|| panic!("/admin/workers: healthy of {id} is not a bool"))
    }

    /// Wait (bounded) until `/admin/workers` reports the worker `healthy`.
    pub async fn wait_healthy(&self, id: &str, healthy: bool, limit: Duration) {
        let what = format!("worker {id} to be reported healthy={healthy}");
        eventually(limit, &what, || async {
            (self.is_healthy(id).await == healthy).then_some(())
        })
        .await;
    }

    /// `/admin/route?key=K`.
    pub async fn route(&self, key: &str) -> Route {
        let response = self
            .client
            .get(format!("{}/admin/route", self.admin_url()))
            .query(&[("key", key)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /admin/route?key={key}: {e}"));
        assert_eq!(
            response.status().as_u16(),
            200,
            "/admin/route?key={key} status"
        );
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("/admin/route?key={key} is not JSON: {e}"));
        Route::from_json(&body)
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, _, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "/metrics status");
        body
    }

    /// `roost_proxy_limit_rejections_total{limit}` (0 when not exported).
    pub async fn limit_rejections(&self, limit: &str) -> f64 {
        let metrics = self.metrics().await;
        metric_value(
            &metrics,
            "roost_proxy_limit_rejections_total",
            &[("limit", limit)],
        )
        .unwrap_or(0.0)
    }

    /// The worker's own `/metrics` text, from its admin listener.
    pub async fn worker_metrics(&self, id: &str) -> String {
        let url = format!("http://{}/metrics", self.worker_admin_addr(id));
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {url} status");
        response
            .text()
            .await
            .unwrap_or_else(|e| panic!("read the body of {url}: {e}"))
    }

    /// How many requests for `route` (the worker's route label, e.g.
    /// `whoami`) the running workers have answered, by their own metrics.
    pub async fn worker_requests(&self, route: &str) -> u64 {
        let mut total = 0.0;
        for worker in self.workers.iter().filter(|w| w.process.is_some()) {
            let text = self.worker_metrics(&worker.id).await;
            let labels = [("route", route)];
            total +=
                metric_value(&text, "roost_worker_request_seconds_count", &labels).unwrap_or(0.0);
        }
        total as u64
    }
}

impl Drop for TestFleet {
    /// Every child is a [`Process`], SIGKILLed and reaped as it drops: the
    /// proxy here, first, so the log tail shown for a failed test is final;
    /// the workers and then the temp dir as the fields drop.
    fn drop(&mut self) {
        drop(self.proxy.take());
        if std::thread::panicking() {
            let path = self.proxy_log_path();
            let tail = log_tail(&path, 40);
            eprintln!(
                "--- last {} lines of the proxy log ({}) ---\n{tail}",
                tail.lines().count(),
                path.display(),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Assertions and one-shot runs shared by the test files
// ---------------------------------------------------------------------------

/// A JSON error body: `{"error": CODE, "message": TEXT}` and nothing else.
pub fn assert_json_error(body: &str, code: &str, context: &str) {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{context}: the body is not JSON ({e}): {body:?}"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{context}: the body is not a JSON object: {body}"));
    assert_eq!(
        object.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["error", "message"]),
        "{context}: error body fields: {body}"
    );
    assert_eq!(value["error"], code, "{context}: error code: {body}");
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: a non-empty message: {body}"
    );
}

/// Run `roost-proxy ARGS` to completion (bounded by [`RUN_TIMEOUT`]; one
/// that hangs is killed and reaped as the panic drops it): exit code and
/// stderr (stdout, e.g. `--check-config`'s verdict, is discarded).
pub fn run_proxy(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let log_dir = TempDir::new("run");
    let stderr_path = log_dir.path().join("stderr");
    let mut command = Command::new(proxy_bin());
    command.args(args);
    let name = format!("roost-proxy {args:?}");
    let mut process = Process::spawn_stderr_only(&name, command, &stderr_path)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let status = process
        .wait_exit_blocking(RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let stderr = fs::read_to_string(&stderr_path)
        .unwrap_or_else(|e| panic!("read roost-proxy's stderr {}: {e}", stderr_path.display()));
    (status.code(), stderr)
}

/// Assert `stderr` is `PATH:LINE:COL: field `FIELD`: ...`.
pub fn assert_located(stderr: &str, path: &Path, line: u32, field: &str, context: &str) {
    let prefix = format!("{}:{line}:", path.display());
    assert!(
        stderr.starts_with(&prefix),
        "{context}: the error starts with {prefix:?}; got {stderr:?}"
    );
    let column = stderr[prefix.len()..].split(':').next().unwrap_or_default();
    assert!(
        column.parse::<u32>().is_ok_and(|c| c >= 1),
        "{context}: a column follows the line: {stderr:?}"
    );
    assert!(
        stderr.contains(&format!("field `{field}`")),
        "{context}: the error names field `{field}`: {stderr:?}"
    );
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A self-signed certificate for `localhost`, generated now and written as
/// PEM into `dir`: (cert path, key path, cert PEM). Never commit one.
pub fn self_signed(dir: &TempDir, name: &str) -> (PathBuf, PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a self-signed certificate");
    let cert_pem = certified.cert.pem();
    let cert = dir.write(&format!("{name}.crt"), &cert_pem);
    let key = dir.write(&format!("{name}.key"), &certified.key_pair.serialize_pem());
    (cert, key, cert_pem)
}

/// An HTTPS client that trusts only `cert_pem` and reaches `localhost` at
/// `addr` (the proxy's TLS listener).
pub fn https_client(cert_pem: &str, addr: SocketAddr) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("the test CA parses");
    reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("localhost", addr)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("build an HTTPS client")
}
