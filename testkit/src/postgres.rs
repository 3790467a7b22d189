//! A throwaway Postgres cluster, so tests and load runs need no database
//! service and leave nothing behind: `initdb` into a fresh temp dir, a
//! server on a free 127.0.0.1 port (socket in the same dir, fsync on, trust
//! auth), a `roost` database; on drop `pg_ctl stop -m immediate` and the
//! dir removed. The fault suite restarts it as a fault; the worker's tests
//! keep one for the whole test binary ([`postgres_url`]). A cluster that
//! speaks TLS is in [`crate::postgres_tls`].
//!
//! As root the binaries run as the `postgres` user (`runuser`), since the
//! server refuses root, and the dir is chowned to it. A detached watchdog
//! shell does the same cleanup if this process dies without dropping the
//! cluster (SIGKILL, Ctrl-C, or a cluster kept in a static, which is never
//! dropped).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::net::try_free_port;
use crate::process::run_checked;

/// The database the workers use.
const DATABASE: &str = "roost";

/// One running throwaway cluster.
pub struct Cluster {
    bin: PathBuf,
    as_root: bool,
    dir: PathBuf,
    port: u16,
    /// Started with `ssl = on` (its certificate and key in the data dir).
    ssl: bool,
    stopped: bool,
}

impl Cluster {
    /// initdb, start, create the `roost` database.
    pub async fn start() -> Result<Cluster> {
        let mut cluster = Cluster::initialized(false)?;
        cluster.start_server()?;
        cluster.create_database().await?;
        Ok(cluster)
    }

    /// A new cluster's dir (watched) and data dir (initdb), not started;
    /// with `ssl`, it starts with `ssl = on`.
    pub(crate) fn initialized(ssl: bool) -> Result<Cluster> {
        let bin = postgres_bin_dir()?;
        let as_root = running_as_root();
        let dir = make_dir(as_root)?;
        start_watchdog(&bin, as_root, &dir)?;
        let cluster = Cluster {
            bin,
            as_root,
            dir,
            port: 0,
            ssl,
            stopped: false,
        };
        cluster.initdb()?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT/roost`
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Where the server listens (for a [`crate::relay::Relay`] in front of it).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// [`Cluster::url`], reached at `addr` instead (a relay's address).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{DATABASE}")
    }

    /// The cluster's dir: its data dir, log and socket are in it.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Write `contents` to `name` in the data dir, owned by the server's
    /// user with `mode` (the server refuses a key others may read).
    pub(crate) fn write_data_file(&self, name: &str, contents: &str, mode: u32) -> Result<()> {
        let path = self.data().join(name);
        fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        if self.as_root {
            let owner = fs::metadata(self.data())?;
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
                .with_context(|| format!("chown {} to the server's user", path.display()))?;
        }
        Ok(())
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `program` from the cluster's bin dir, as the `postgres` user when root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn initdb(&self) -> Result<()> {
        let mut initdb = self.command("initdb");
        initdb
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .arg("-D")
            .arg(self.data());
        run_checked(initdb, "initdb")
    }

    fn server_options(&self) -> String {
        let ssl = if self.ssl { " -c ssl=on" } else { "" };
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
             -c fsync=on -c max_connections=200{ssl}",
            self.port,
            self.dir.display()
        )
    }

    /// `pg_ctl start` on a free port (another on a clash, up to 3 times).
    pub(crate) fn start_server(&mut self) -> Result<()> {
        let mut last_error = None;
        for _ in 0..3 {
            self.port = try_free_port().context("find a port for the cluster")?;
            match self.pg_ctl("start") {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .with_context(|| format!("cannot start the throwaway cluster; its log:\n{log}"))
    }

    /// `pg_ctl ACTION -w` with this cluster's options (`start`, `restart`).
    fn pg_ctl(&self, action: &str) -> Result<()> {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-m", "fast", "-o", &self.server_options()])
            .arg(action);
        run_checked(command, &format!("pg_ctl {action}"))
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server is
    /// back when this returns.
    pub fn restart(&self) -> Result<()> {
        self.pg_ctl("restart")
    }

    pub(crate) async fn create_database(&self) -> Result<()> {
        self.execute(&format!("CREATE DATABASE {DATABASE}")).await
    }

    /// Run `sql` as the superuser, connected to the `postgres` database.
    pub(crate) async fn execute(&self, sql: &str) -> Result<()> {
        let (client, connection) = connect(&self.url_of("postgres")).await?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("run {sql:?} on the throwaway cluster"))?;
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// Stop the server at once and remove the dir (idempotent).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"]);
        if let Err(e) = run_checked(stop, "pg_ctl stop") {
            eprintln!("{e:#}");
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connect with a 5 s limit; the caller spawns the connection future.
pub async fn connect(
    url: &str,
) -> Result<(
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .with_context(|| format!("connect to {url}: no answer within 5 s"))?
    .with_context(|| format!("connect to {url}"))
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`, else the
/// directory of `initdb` on `PATH`.
fn postgres_bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .context(
            "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH \
             (Debian: apt-get install postgresql)",
        )
}

/// Whether this process runs as root (`/proc/self` belongs to our euid).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn make_dir(as_root: bool) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("roost-test-pg-{}-{nanos:09}", std::process::id()));
    fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    if as_root {
        let mut chown = Command::new("chown");
        chown.args(["-R", "postgres:postgres"]).arg(&dir);
        run_checked(chown, "chown the cluster dir to postgres")?;
    }
    Ok(dir)
}

/// A detached shell that waits for this process to go, then stops the
/// cluster and removes its dir. Started before `initdb`, so nothing that
/// follows can leak the cluster; in its own process group, so a Ctrl-C to
/// the suite does not kill it before it has cleaned up.
fn start_watchdog(bin: &Path, as_root: bool, dir: &Path) -> Result<()> {
    let pg_ctl = bin.join("pg_ctl");
    let pg_ctl = if as_root {
        format!("runuser -u postgres -- '{}'", pg_ctl.display())
    } else {
        format!("'{}'", pg_ctl.display())
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         if [ -d '{dir}' ]; then {pg_ctl} -D '{dir}/data' stop -m immediate; rm -rf '{dir}'; fi",
        pid = std::process::id(),
        dir = dir.display(),
    );
    let status = Command::new("sh")
        .args(["-c", &format!("( {script} ) </dev/null >/dev/null 2>&1 &")])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("start the cluster's watchdog")?;
    if !status.success() {
        bail!("starting the cluster's watchdog: {status}");
    }
    Ok(())
}

/// The Postgres every store test of this test binary uses: `DATABASE_URL`
/// when it is set and answers, otherwise a throwaway [`Cluster`] started
/// once and kept until the process exits (its watchdog then stops it).
///
/// Must be called outside a tokio runtime (it blocks on one of its own).
pub fn postgres_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    URL.get_or_init(|| {
        let runtime = own_runtime();
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            match runtime.block_on(answers(&url)) {
                Ok(()) => return url,
                Err(e) => eprintln!(
                    "DATABASE_URL is set but does not answer ({e:#}); starting a throwaway cluster"
                ),
            }
        }
        let cluster = runtime
            .block_on(Cluster::start())
            .unwrap_or_else(|e| panic!("cannot start a throwaway postgres cluster: {e:#}"));
        let url = cluster.url();
        eprintln!(
            "throwaway postgres cluster at {url} in {}",
            cluster.dir.display()
        );
        let _ = CLUSTER.set(cluster);
        url
    })
}

/// A runtime of the fixture's own, for a caller outside any runtime.
pub(crate) fn own_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to reach Postgres with")
}

/// Connect to `url` and run `SELECT 1`.
async fn answers(url: &str) -> Result<()> {
    let (client, connection) = connect(url).await?;
    tokio::spawn(connection);
    client
        .simple_query("SELECT 1")
        .await
        .with_context(|| format!("SELECT 1 on {url}"))?;
    Ok(())
}
