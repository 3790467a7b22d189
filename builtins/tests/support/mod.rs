//! The fixture of the worker's integration tests: real `roost-worker`
//! processes on 127.0.0.1, against an SQLite file or Postgres.
//!
//! ```ignore
//! both_stores!(my_test);            // my_test::sqlite and my_test::postgres
//! async fn my_test(store: Store) {
//!     let mut worker = Worker::start("w1", &store, Some("flush_interval_ms: 50")).await;
//!     let reply = worker.api().add_item(&unique_key("u"), "mug", 1).send().await;
//!     worker.kill9();
//!     worker.restart().await;
//! }
//! ```
//!
//! - [`Worker`]: one process, with its public (`addr`) and admin
//!   (`admin`: metrics) listeners; SIGKILLed and reaped on drop, its temp dir
//!   (config, log) removed (set `ROOST_TEST_KEEP_DIR=1` to keep it). When a
//!   test panics the end of every live worker's log is printed.
//!   [`Worker::start`] waits for `/healthz` and retries a failed start;
//!   [`Worker::launch`] spawns and returns at once (several workers
//!   starting together), and [`Worker::wait_ready`] waits for `/readyz`.
//! - [`Store`]: an SQLite file in a fresh temp dir, or Postgres:
//!   `DATABASE_URL` when it is set and answers, otherwise a throwaway cluster
//!   started once per test binary (see [`postgres_url`]).
//! - [`Api`], [`Call`], [`Reply`]: HTTP to one worker, sending `x-roost-key`
//!   directly as the proxy would.
//! - [`Store::peek`] reads a `roost_entities` row directly;
//!   [`Store::lock_row`] holds a lock the worker's flush must wait for.
//! - User keys are unique per run ([`unique_key`]), so nothing depends on
//!   rows an earlier run left in a shared database.
//! - The tests of one binary run one at a time ([`run_on`]).

#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use roost_testkit::process::{log_tail, Process};
use serde_json::Value;

#[allow(unused_imports)] // each test binary uses a different part
pub use roost_testkit::metrics::metric_value;
pub use roost_testkit::poll::eventually;
pub use roost_testkit::{free_port, postgres_url, TempDir};

/// How long a worker may take to answer `/healthz` after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a single HTTP request from a test may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The header the proxy puts the verified user key in.
pub const KEY: &str = "x-roost-key";

// ---------------------------------------------------------------------------
// Running a body against both stores
// ---------------------------------------------------------------------------

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `both_stores!(name)` turns `async fn name(store: Store)` into two tests,
/// `name::sqlite` and `name::postgres`. Attributes before the name (e.g.
/// `#[ignore = "why"]`) go on both.
macro_rules! both_stores {
    ($(#[$meta:meta])* $name:ident) => {
        mod $name {
            #[test]
            $(#[$meta])*
            fn sqlite() {
                $crate::support::run_on($crate::support::StoreKind::Sqlite, super::$name);
            }

            #[test]
            $(#[$meta])*
            fn postgres() {
                $crate::support::run_on($crate::support::StoreKind::Postgres, super::$name);
            }
        }
    };
}

/// Run `body` against a fresh store of `kind`, on a two-thread tokio runtime.
///
/// Tests of one binary run one at a time: they start processes and put load
/// on a small machine, and the timing bounds some of them check (write-behind
/// loss) must not measure another test's load.
pub fn run_on<F, Fut>(kind: StoreKind, body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("store");
    let store = match kind {
        StoreKind::Sqlite => Store::Sqlite(dir.path().join("roost.db")),
        // Outside any tokio runtime: it may block on a connection check.
        StoreKind::Postgres => Store::Postgres(postgres_url().to_owned()),
    };
    eprintln!("store: {store}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the test's tokio runtime");
    runtime.block_on(body(store));
    drop(runtime);
    drop(dir);
}

/// Run `body` against SQLite, then against Postgres, in one test (for a
/// caller that wants one test rather than [`both_stores!`]'s two).
pub fn run_on_both<F, Fut>(body: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    for kind in [StoreKind::Sqlite, StoreKind::Postgres] {
        run_on(kind, &body);
    }
}

// ---------------------------------------------------------------------------
// Unique names, temp dirs, ports
// ---------------------------------------------------------------------------

/// Random per test-binary run, so keys never collide with an earlier run's
/// rows in a shared database.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("t{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff))
}

/// A user key no other test of any run uses.
pub fn unique_key(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{label}-{}",
        run_prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------

/// Where a worker keeps its entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// One row of `roost_entities`, read directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub epoch: i64,
    pub owner: String,
    pub version: i64,
    pub state: Option<Vec<u8>>,
}

impl StoredRow {
    /// The entity's own state (the envelope's JSON after the replies);
    /// `Value::Null` when nothing was ever flushed.
    pub fn entity_state(&self) -> Value {
        self.state
            .as_deref()
            .map_or(Value::Null, |bytes| decode_envelope(bytes).1)
    }

    /// The remembered idempotency replies of the envelope.
    pub fn replies(&self) -> Value {
        self.state
            .as_deref()
            .map_or(Value::Null, |bytes| decode_envelope(bytes).0)
    }
}

/// Stored state bytes from the runtime's meta JSON and the entity's state.
pub fn encode_envelope(meta: &Value, state: &Value) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("meta serializes");
    let length = u32::try_from(meta.len()).expect("meta under 4 GiB");
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&serde_json::to_vec(state).expect("state serializes"));
    bytes
}

/// Split stored state bytes: `u32` LE length, that many bytes of replies
/// JSON, then the entity's JSON state.
pub fn decode_envelope(bytes: &[u8]) -> (Value, Value) {
    let (length, rest) = bytes
        .split_first_chunk::<4>()
        .expect("stored state starts with a 4-byte length");
    let length = u32::from_le_bytes(*length) as usize;
    assert!(rest.len() >= length, "stored state shorter than its header");
    let (replies, state) = rest.split_at(length);
    let replies = serde_json::from_slice(replies).expect("stored replies are JSON");
    let state = serde_json::from_slice(state).expect("stored entity state is JSON");
    (replies, state)
}

impl Store {
    /// The `--store` URL.
    pub fn url(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("sqlite://{}", path.display()),
            Store::Postgres(url) => url.clone(),
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Sqlite(_) => StoreKind::Sqlite,
            Store::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// `roost_entities` row of `store_key` (`KIND/USERKEY`), read directly.
    pub async fn peek(&self, store_key: &str) -> Option<StoredRow> {
        const SELECT: &str = "SELECT epoch, owner, version, state FROM roost_entities WHERE key = ";
        match self {
            Store::Postgres(url) => {
                let (client, connection) = connect_postgres(url).await;
                let row = client
                    .query_opt(&format!("{SELECT}$1"), &[&store_key])
                    .await
                    .unwrap_or_else(|e| panic!("read {store_key} from postgres: {e}"));
                drop(client);
                let _ = connection.await;
                row.map(|row| StoredRow {
                    epoch: row.get(0),
                    owner: row.get(1),
                    version: row.get(2),
                    state: row.get(3),
                })
            }
            Store::Sqlite(path) => {
                let (path, key) = (path.clone(), store_key.to_owned());
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(&path).unwrap_or_else(|e| {
                        panic!("open {} to check the store: {e}", path.display())
                    });
                    connection
                        .busy_timeout(Duration::from_secs(10))
                        .expect("set a busy timeout");
                    let result = connection.query_row(
                        &format!("{SELECT}?1"),
                        rusqlite::params![key],
                        |row| {
                            Ok(StoredRow {
                                epoch: row.get(0)?,
                                owner: row.get(1)?,
                                version: row.get(2)?,
                                state: row.get(3)?,
                            })
                        },
                    );
                    match result {
                        Ok(row) => Some(row),
                        Err(rusqlite::Error::QueryReturnedNoRows) => None,
                        Err(e) => panic!("read {key} from {}: {e}", path.display()),
                    }
                })
                .await
                .expect("the sqlite check task")
            }
        }
    }

    /// Write a `roost_entities` row directly, as a worker that has since
    /// died would have left it (`owner` may be a worker that is gone).
    pub async fn put_row(
        &self,
        store_key: &str,
        epoch: i64,
        owner: &str,
        version: i64,
        state: &[u8],
    ) {
        let hex: String = state.iter().map(|b| format!("{b:02x}")).collect();
        let bytes = match self {
            Store::Postgres(_) => format!("decode('{hex}', 'hex')"),
            Store::Sqlite(_) => format!("X'{hex}'"),
        };
        self.execute_batch(&format!(
            "INSERT INTO roost_entities (key, epoch, owner, version, state) \
             VALUES ('{store_key}', {epoch}, '{owner}', {version}, {bytes})"
        ))
        .await;
    }

    /// Wait (bounded) until the stored row of `store_key` has `version`.
    pub async fn wait_version(&self, store_key: &str, version: i64) -> StoredRow {
        let what = format!("{store_key} to be flushed at version {version} to {self}");
        eventually(Duration::from_secs(5), &what, || async {
            self.peek(store_key)
                .await
                .filter(|row| row.version == version)
        })
        .await
    }
}

/// A lock a test holds on the store, so the worker's next flush of that
/// row waits: Postgres `SELECT … FOR UPDATE` on the row in an open
/// transaction; SQLite `BEGIN IMMEDIATE` (the file's write lock, as another
/// worker process sharing the file would hold it during a long flush).
pub enum StoreLock {
    Postgres {
        client: tokio_postgres::Client,
        connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    },
    Sqlite(rusqlite::Connection),
}

impl Store {
    /// Take a [`StoreLock`] covering `store_key`'s row (which must exist).
    pub async fn lock_row(&self, store_key: &str) -> StoreLock {
        match self {
            Store::Postgres(url) => {
                let (client, connection) = connect_postgres(url).await;
                client
                    .batch_execute("BEGIN")
                    .await
                    .expect("BEGIN to lock a row");
                let locked = client
                    .query(
                        "SELECT 1 FROM roost_entities WHERE key = $1 FOR UPDATE",
                        &[&store_key],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("lock {store_key}: {e}"));
                assert_eq!(locked.len(), 1, "{store_key} exists to be locked");
                StoreLock::Postgres { client, connection }
            }
            Store::Sqlite(path) => {
                let connection = rusqlite::Connection::open(path)
                    .unwrap_or_else(|e| panic!("open {} to lock it: {e}", path.display()));
                connection
                    .busy_timeout(Duration::from_secs(10))
                    .expect("set a busy timeout");
                connection
                    .execute_batch("BEGIN IMMEDIATE")
                    .expect("BEGIN IMMEDIATE takes the write lock");
                StoreLock::Sqlite(connection)
            }
        }
    }
}

impl StoreLock {
    /// Commit the (empty) transaction: the lock is free.
    pub async fn release(self) {
        match self {
            StoreLock::Postgres { client, connection } => {
                client.batch_execute("COMMIT").await.expect("COMMIT");
                drop(client);
                let _ = connection.await;
            }
            StoreLock::Sqlite(connection) => {
                connection.execute_batch("COMMIT").expect("COMMIT");
            }
        }
    }
}

/// A connection of the test's own, with its driver task.
pub async fn connect_postgres(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    (client, tokio::spawn(connection))
}

/// A fault the test puts in the store: every `UPDATE` of one key fails
/// (a trigger raising an error), as a store that refuses a write would.
pub struct StoreFault {
    store: Store,
    trigger: String,
}

impl Store {
    /// Make every write of `store_key`'s row fail until
    /// [`StoreFault::clear`]. The key is quoted as an SQL literal.
    pub async fn fail_updates_of(&self, store_key: &str) -> StoreFault {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let trigger = format!(
            "roost_test_fault_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let key = store_key.replace('\'', "''");
        let sql = match self {
            Store::Postgres(_) => format!(
                "CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.key = '{key}' THEN RAISE EXCEPTION 'injected fault for {key}'; END IF; \
                 RETURN NEW; END $$; \
                 CREATE TRIGGER {trigger} BEFORE UPDATE ON roost_entities \
                 FOR EACH ROW EXECUTE FUNCTION {trigger}();"
            ),
            Store::Sqlite(_) => format!(
                "CREATE TRIGGER {trigger} BEFORE UPDATE ON roost_entities \
                 WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END;"
            ),
        };
        self.execute_batch(&sql).await;
        StoreFault {
            store: self.clone(),
            trigger,
        }
    }

    /// Run `sql` on a connection of the test's own.
    async fn execute_batch(&self, sql: &str) {
        match self {
            Store::Postgres(url) => {
                let (client, connection) = connect_postgres(url).await;
                client
                    .batch_execute(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                drop(client);
                let _ = connection.await;
            }
            Store::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_owned());
                tokio::task::spawn_blocking(move || {
                    let connection = rusqlite::Connection::open(&path)
                        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                    connection
                        .busy_timeout(Duration::from_secs(10))
                        .expect("set a busy timeout");
                    connection
                        .execute_batch(&sql)
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                })
                .await
                .expect("the sqlite task");
            }
        }
    }
}

impl StoreFault {
    /// Writes of the key succeed again.
    pub async fn clear(self) {
        let trigger = &self.trigger;
        let sql = match self.store {
            Store::Postgres(_) => {
                format!("DROP TRIGGER {trigger} ON roost_entities; DROP FUNCTION {trigger}();")
            }
            Store::Sqlite(_) => format!("DROP TRIGGER {trigger};"),
        };
        self.store.execute_batch(&sql).await;
    }
}

// ---------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

/// One `roost-worker` process (restartable on the same port, store and
/// config).
pub struct Worker {
    pub id: String,
    /// `--listen`: the entity API, the internal routes, the probes.
    pub addr: SocketAddr,
    /// `--admin-listen`: `/metrics` and the probes.
    pub admin: SocketAddr,
    pub store: Store,
    config: Option<PathBuf>,
    /// Variables it is started with (besides `RUST_LOG`).
    env: Vec<(String, String)>,
    /// While it runs; SIGKILLed and reaped when dropped.
    process: Option<Process>,
    client: reqwest::Client,
    // Dropped last, after the process is reaped: it writes its log here.
    dir: TempDir,
}

impl Worker {
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_roost-worker")
    }

    /// Spawn a worker with `config` YAML (if any) and wait until `/healthz`
    /// answers. A start that fails (e.g. the port was taken meanwhile) is
    /// retried on another port.
    pub async fn start(id: &str, store: &Store, config: Option<&str>) -> Worker {
        Worker::start_with_env(id, store, config, &[]).await
    }

    /// [`Worker::start`] with `env` in the process's environment (kept
    /// for restarts).
    pub async fn start_with_env(
        id: &str,
        store: &Store,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Worker {
        let mut worker = Worker::new(id, store, config);
        worker.env = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let mut last_error = String::new();
        for attempt in 1..=3 {
            match worker.spawn_and_wait().await {
                Ok(()) => return worker,
                Err(e) => {
                    eprintln!("worker {id} start attempt {attempt} failed: {e}");
                    last_error = e;
                    worker.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    worker.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
                }
            }
        }
        panic!("could not start worker {id} in 3 attempts; last error:\n{last_error}")
    }

    /// Spawn a worker and return at once, without retrying a failed start,
    /// so several can start at the same moment (as a fleet's first start
    /// does); [`Worker::wait_ready`] then says whether it came up.
    pub fn launch(id: &str, store: &Store, config: Option<&str>) -> Worker {
        let mut worker = Worker::new(id, store, config);
        worker
            .spawn()
            .unwrap_or_else(|e| panic!("cannot launch worker {id}: {e}"));
        worker
    }

    /// A worker not yet spawned, with its temp dir and config file.
    fn new(id: &str, store: &Store, config: Option<&str>) -> Worker {
        let dir = TempDir::new(&format!("worker-{id}"));
        let config = config.map(|yaml| dir.write("worker.yaml", yaml));
        Worker {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            store: store.clone(),
            config,
            env: Vec::new(),
            process: None,
            client: client(),
            dir,
        }
    }

    /// Wait (bounded by [`START_TIMEOUT`]) until `/readyz` answers 200;
    /// panics with the log tail if the process exits first or never does.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "worker {} exited before it was ready ({status}); log tail:\n{}",
                    self.id,
                    self.log_tail(20)
                );
            }
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker {} was not ready within {START_TIMEOUT:?}; log tail:\n{}",
                self.id,
                self.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Start the worker again (same id, port, store, config) after it was
    /// killed or exited, and wait until `/healthz` answers.
    pub async fn restart(&mut self) {
        assert!(
            self.process.is_none(),
            "worker {} is still running; kill9 it or wait for its exit first",
            self.id
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                // Most likely the port is briefly unavailable: try again.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart of worker {} failed ({e}); retrying", self.id);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("could not restart worker {}: {e}", self.id),
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Err(format!(
                    "worker {} exited early ({status}); log tail:\n{}",
                    self.id,
                    self.log_tail(20)
                ));
            }
            if let Ok(response) = self.client.get(self.url("/healthz")).send().await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!(
                    "worker {} did not answer /healthz within {START_TIMEOUT:?}; log tail:\n{}",
                    self.id,
                    self.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Spawn the process (its stderr appended to the log).
    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(Self::bin());
        command
            .args(["--id", &self.id, "--listen", &self.addr.to_string()])
            .args(["--admin-listen", &self.admin.to_string()])
            .args(["--store", &self.store.url()]);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .env("RUST_LOG", "info")
            .envs(self.env.iter().cloned());
        let name = format!("worker {}", self.id);
        let process = Process::spawn_stderr_only(&name, command, &self.log_path())
            .map_err(|e| format!("{e:#}"))?;
        self.process = Some(process);
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A client for this worker with its own connection pool (one "device").
    pub fn api(&self) -> Api {
        Api::new(&format!("http://{}", self.addr))
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn process(&self) -> &Process {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("worker {} is not running", self.id))
    }

    fn signal(&self, signal: Signal) {
        self.process()
            .signal(signal)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// The running process, which from now on is not running.
    fn take_process(&mut self) -> Process {
        self.process
            .take()
            .unwrap_or_else(|| panic!("worker {} is not running", self.id))
    }

    /// `kill -9` and reap: when this returns, the process is gone.
    pub fn kill9(&mut self) {
        self.take_process().kill_now();
    }

    /// SIGTERM: the worker drains and exits (see [`Worker::wait_exit`]).
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// SIGSTOP: the process freezes, keeping its sockets and connections.
    pub fn sigstop(&self) {
        self.signal(Signal::SIGSTOP);
    }

    pub fn sigcont(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// The exit status if the process has exited (it is then reaped).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        self.try_exit_status()
    }

    /// The exit status if the process has exited; it is then no longer
    /// running (and can be restarted).
    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let process = self.process.as_mut()?;
        let status = process.exited().unwrap_or_else(|e| panic!("{e:#}"))?;
        self.process = None;
        Some(status)
    }

    /// Wait (bounded) for the process to exit on its own; reaps it. A
    /// worker that does not exit in time is killed as the panic drops it.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut process = self.take_process();
        match process.wait_exit(limit).await {
            Ok(status) => status,
            Err(e) => panic!("{e:#}; log tail:\n{}", self.log_tail(20)),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("worker.log")
    }

    /// Everything the worker wrote to stderr so far (all its starts).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }

    /// `/metrics` text, from the admin listener.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics of worker {}: {e}", self.id));
        assert_eq!(response.status(), 200, "/metrics of worker {}", self.id);
        response
            .text()
            .await
            .unwrap_or_else(|e| panic!("read /metrics of worker {}: {e}", self.id))
    }

    /// One unlabelled sample of `/metrics`, e.g.
    /// `roost_worker_fenced_writes_total`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(&text, name, &[])
            .unwrap_or_else(|| panic!("worker {} exports no {name}:\n{text}", self.id))
    }

    /// Wait (bounded) until `metric` satisfies `check`; returns its value.
    pub async fn wait_metric(&self, name: &str, what: &str, check: impl Fn(f64) -> bool) -> f64 {
        let what = format!("{name} of worker {} {what}", self.id);
        eventually(Duration::from_secs(5), &what, || async {
            let value = self.metric(name).await;
            check(value).then_some(value)
        })
        .await
    }
}

impl Drop for Worker {
    /// The process is a [`Process`], SIGKILLed (a stopped one too) and
    /// reaped here, first, so the log tail shown for a failed test is final.
    fn drop(&mut self) {
        drop(self.process.take());
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of worker {}'s log ({}) ---\n{}",
                self.id,
                self.log_path().display(),
                self.log_tail(30)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// An HTTP client for tests: keep-alive, no system proxy, bounded requests.
pub fn client() -> reqwest::Client {
    roost_testkit::http::client(REQUEST_TIMEOUT)
}

/// Requests to one worker, with their own connection pool.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    /// Sent with every request (e.g. the proxy's trusted-hop token).
    headers: Vec<(String, String)>,
}

/// One request being built; [`Call::send`] panics on a transport error,
/// [`Call::try_send`] returns it.
pub struct Call {
    builder: reqwest::RequestBuilder,
    what: String,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            client: client(),
            base: base.trim_end_matches('/').to_owned(),
            headers: Vec::new(),
        }
    }

    /// This API, sending `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Api {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `method path` with no key yet.
    pub fn call(&self, method: reqwest::Method, path: &str) -> Call {
        let mut builder = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        Call {
            what: format!("{method} {path}"),
            builder,
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(reqwest::Method::GET, path)
    }

    pub fn get_cart(&self, key: &str) -> Call {
        self.get("/v1/cart").key(key)
    }

    pub fn add_item(&self, key: &str, sku: &str, qty: u64) -> Call {
        self.call(reqwest::Method::POST, "/v1/cart/items")
            .key(key)
            .json(&serde_json::json!({"sku": sku, "qty": qty}))
    }

    /// `sku` is put in the path as is (no percent-encoding).
    pub fn remove_item(&self, key: &str, sku: &str) -> Call {
        self.call(reqwest::Method::DELETE, &format!("/v1/cart/items/{sku}"))
            .key(key)
    }

    pub fn clear_cart(&self, key: &str) -> Call {
        self.call(reqwest::Method::DELETE, "/v1/cart").key(key)
    }

    pub fn checkout(&self, key: &str) -> Call {
        self.call(reqwest::Method::POST, "/v1/cart/checkout")
            .key(key)
    }

    pub fn get_session(&self, key: &str) -> Call {
        self.get("/v1/session").key(key)
    }

    pub fn put_session(&self, key: &str, document: &Value) -> Call {
        self.call(reqwest::Method::PUT, "/v1/session")
            .key(key)
            .json(document)
    }

    pub fn patch_session(&self, key: &str, patch: &Value) -> Call {
        self.call(reqwest::Method::PATCH, "/v1/session")
            .key(key)
            .json(patch)
    }
}

impl Call {
    pub fn key(self, key: &str) -> Call {
        self.header(KEY, key)
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.builder = self.builder.header(name, value);
        self
    }

    /// A header value given as raw bytes (which need not be UTF-8).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Call {
        let value = reqwest::header::HeaderValue::from_bytes(value)
            .unwrap_or_else(|e| panic!("{value:?} is not a valid header value: {e}"));
        self.builder = self.builder.header(name, value);
        self
    }

    /// `roost-durability: durable | write-behind | …`.
    pub fn durability(self, value: &str) -> Call {
        self.header("roost-durability", value)
    }

    pub fn idempotency_key(self, value: &str) -> Call {
        self.header("idempotency-key", value)
    }

    pub fn if_match(self, value: &str) -> Call {
        self.header("if-match", value)
    }

    /// A JSON body (sets `content-type`).
    pub fn json(mut self, value: &Value) -> Call {
        self.builder = self.builder.json(value);
        self
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Call {
        self.builder = self.builder.body(body);
        self
    }

    pub async fn try_send(self) -> Result<Reply, reqwest::Error> {
        let response = self.builder.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn send(self) -> Reply {
        let what = self.what.clone();
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
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

    /// The entity version from `ETag: "N"`.
    pub fn version(&self) -> Option<u64> {
        let tag = self.header("etag")?;
        tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
    }

    /// `version()`, or a panic naming the reply.
    pub fn expect_version(&self) -> u64 {
        self.version()
            .unwrap_or_else(|| panic!("no ETag version on {} {}", self.status, self.body))
    }

    /// `x-roost-epoch`.
    pub fn epoch(&self) -> Option<i64> {
        self.header("x-roost-epoch")?.parse().ok()
    }

    pub fn expect_epoch(&self) -> i64 {
        self.epoch()
            .unwrap_or_else(|| panic!("no x-roost-epoch on {} {}", self.status, self.body))
    }

    /// `x-roost-worker`.
    pub fn worker(&self) -> Option<&str> {
        self.header("x-roost-worker")
    }

    /// Panic unless the status is `status`.
    pub fn expect_status(&self, status: u16, context: &str) -> &Self {
        assert_eq!(
            self.status, status,
            "{context}: status; body {:?}",
            self.body
        );
        self
    }

    /// Panic unless this is the JSON error `{"error": code, "message": …}`
    /// (exactly those two fields, a non-empty message) with `status`.
    pub fn expect_error(&self, status: u16, code: &str, context: &str) {
        self.expect_status(status, context);
        let value = self.json();
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{context}: the body is not a JSON object: {}", self.body));
        let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["error", "message"],
            "{context}: error body fields: {}",
            self.body
        );
        assert_eq!(value["error"], code, "{context}: error code: {}", self.body);
        assert!(
            value["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{context}: a non-empty message: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{context}: content type"
        );
    }
}

// ---------------------------------------------------------------------------
// Cart bodies
// ---------------------------------------------------------------------------

/// SKU → quantity.
pub type Items = BTreeMap<String, u64>;
/// Order id and items, in order.
pub type Orders = Vec<(String, Items)>;

/// `[{"sku", "qty"}]` as a map.
pub fn items_of(items: &Value) -> Items {
    items
        .as_array()
        .unwrap_or_else(|| panic!("items must be an array: {items}"))
        .iter()
        .map(|item| {
            let sku = item["sku"]
                .as_str()
                .unwrap_or_else(|| panic!("sku must be a string: {item}"));
            let qty = item["qty"]
                .as_u64()
                .unwrap_or_else(|| panic!("qty must be a number: {item}"));
            (sku.to_owned(), qty)
        })
        .collect()
}

/// A cart reply `{"items", "orders"}`: the items, and each order's id and
/// items.
pub fn cart_of(body: &Value) -> (Items, Orders) {
    let orders = body["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("orders must be an array: {body}"))
        .iter()
        .map(|order| {
            let id = order["id"]
                .as_str()
                .unwrap_or_else(|| panic!("order id must be a string: {order}"));
            (id.to_owned(), items_of(&order["items"]))
        })
        .collect();
    (items_of(&body["items"]), orders)
}

// ---------------------------------------------------------------------------
// Polling and metrics
// ---------------------------------------------------------------------------
