//! Reload under load (issue 14): with about 1,000 requests a second going
//! through the proxy for 20 s, ten reloads (by `POST /admin/reload` and by
//! SIGHUP) remove a worker, add it back, change a weight, rotate the
//! signed-cookie secret, replace the TLS certificate, change a limit,
//! and try three files that must change nothing or only part: a bad
//! weight, a new `hash_seed`, a new listen address. No request fails, and
//! each change shows in `/admin/workers` or on the wire right after its
//! reload.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::load::{Connections, Load};
use support::{
    cookie_signer, eventually, free_port, now_s, self_signed, FleetConfig, Missing, Source,
    TempDir, TestFleet, KEY_HEADER,
};

/// The load: 10 clients, one request each every 10 ms.
const CLIENTS: usize = 10;
const PACE: Duration = Duration::from_millis(10);
/// The reloads are spread over this.
const RUN: Duration = Duration::from_secs(20);

const OLD_SECRET: &str = "the cookie secret before the rotation, 44 bytes";
const NEW_SECRET: &str = "the cookie secret after the rotation, 43 bytes!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_fail_no_request_and_each_shows_at_once() {
    let files = TempDir::new("reload-files");
    let first = Tls::generate(&files, "first");
    let old_secret = files.write("cookie-secret-old", OLD_SECRET);
    let tls_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut config = FleetConfig::new(3).missing(Missing::Mint);
    config.sources = vec![
        Source::Header(KEY_HEADER.into()),
        cookie_source(&format!(
            "secret_file: {:?}",
            old_secret.display().to_string()
        )),
    ];
    config.extra_yaml = first.yaml(tls_addr);
    let mut fleet = TestFleet::start(config).await;

    let load = Load::start_paced(
        CLIENTS,
        Connections::KeptAlive,
        (fleet.proxy_addr, None),
        Some(PACE),
    );
    let second = Tls::generate(&files, "second");
    let side = SideClients::start(fleet.proxy_addr, tls_addr, &[&first.pem, &second.pem]);
    let started = Instant::now();
    let step = RUN / 10;
    let mut reloads = 0;

    // 1. A worker leaves the config.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.workers.retain(|(id, _)| id != "w3"));
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_eq!(worker_ids(&fleet).await, ["w1", "w2"], "w3 left the roster");

    // 2. It comes back: listed at once, serving once its checks pass.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.workers.push(("w3".into(), 1.0)));
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_eq!(worker_ids(&fleet).await, ["w1", "w2", "w3"], "w3 is back");
    fleet.wait_healthy("w3", true, Duration::from_secs(5)).await;

    // 3. A weight changes.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.workers[0].1 = 3.0);
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_eq!(weight_of(&fleet, "w1").await, 3.0, "w1's new weight");

    // 4. The cookie secret rotates; the old one still verifies.
    pause(step).await;
    let new_secret = files.write("cookie-secret-new", &format!("{NEW_SECRET}\n"));
    fleet.rewrite_proxy_config(|config| {
        config.sources[1] = cookie_source(&format!(
            "secret_file: {:?}, previous_secret_file: {:?}",
            new_secret.display().to_string(),
            old_secret.display().to_string(),
        ));
    });
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_old_cookie_served(&fleet).await;
    assert_minted_with_new_secret(&fleet).await;

    // 5. The TLS certificate is replaced for new handshakes.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.extra_yaml = second.yaml(tls_addr));
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_tls(tls_addr, &second.pem, true).await;
    assert_tls(tls_addr, &first.pem, false).await;

    // 6. A limit changes.
    pause(step).await;
    let limited = second.yaml(tls_addr) + "limits: {max_body_bytes: 64}\n";
    fleet.rewrite_proxy_config(|config| config.extra_yaml = limited);
    assert_reloaded(&fleet, &mut reloads, &[]).await;
    assert_eq!(post_body(&fleet).await, 413, "over the new body limit");

    // 7. SIGHUP reloads too.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.extra_yaml = second.yaml(tls_addr));
    fleet.signal_proxy(Signal::SIGHUP);
    reloads += 1;
    let expected = reloads;
    eventually(Duration::from_secs(5), "the SIGHUP reload", || async {
        (reload_count(&fleet, "success").await == expected).then_some(())
    })
    .await;
    assert_ne!(post_body(&fleet).await, 413, "the body limit is back");

    // 8. A bad file changes nothing, and says where it is wrong.
    pause(step).await;
    fleet.rewrite_proxy_config(|config| config.workers[1].1 = -1.0);
    let (status, body) = fleet.admin_post("/admin/reload").await;
    assert_refused(status, &body, "weight");
    assert_eq!(worker_ids(&fleet).await, ["w1", "w2", "w3"], "unchanged");
    assert_eq!(weight_of(&fleet, "w2").await, 1.0, "unchanged");
    let metrics = fleet.metrics().await;
    assert!(
        metrics.contains("roost_proxy_config_last_reload_successful 0"),
        "the refused reload shows in the metrics"
    );

    // 9. A new hash_seed is refused unless the file says it is meant.
    pause(step).await;
    let owner = fleet.route("reload-user").await.owner;
    let seed = fleet.config.hash_seed.clone();
    fleet.rewrite_proxy_config(|config| {
        config.workers[1].1 = 1.0;
        config.hash_seed = "another seed".into();
    });
    let (status, body) = fleet.admin_post("/admin/reload").await;
    assert_refused(status, &body, "hash_seed");
    assert_eq!(fleet.route("reload-user").await.owner, owner, "same owner");

    // 10. A field only a restart applies is reported, the rest applied.
    pause(step).await;
    let elsewhere: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    fleet.rewrite_proxy_config(|config| {
        config.hash_seed = seed;
        config.access_log = false;
    });
    let path = fleet.dir().join("proxy.yaml");
    let yaml = std::fs::read_to_string(&path).expect("the config");
    let (from, to) = (fleet.proxy_addr, elsewhere);
    let yaml = yaml.replace(&format!("listen: {from}"), &format!("listen: {to}"));
    std::fs::write(&path, yaml).expect("write the config");
    assert_reloaded(&fleet, &mut reloads, &["listen"]).await;

    tokio::time::sleep(RUN.saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed();
    let tally = load.stop().await;
    let mut failures = tally.failures();
    failures.extend(side.stop().await);
    assert!(
        failures.is_empty(),
        "{} failed requests across the reloads: {failures:#?}",
        failures.len()
    );
    let rate = tally.served() as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{} requests in {elapsed:?}: {rate:.0} req/s",
        tally.served()
    );
    assert!(
        rate > 500.0,
        "the load ran at {rate:.0} req/s, not about 1,000"
    );
    assert_eq!(reload_count(&fleet, "failure").await, 2, "two refused");
}

async fn pause(step: Duration) {
    tokio::time::sleep(step).await;
}

/// `POST /admin/reload` is applied, reporting `restart_needed`.
async fn assert_reloaded(fleet: &TestFleet, reloads: &mut u64, restart_needed: &[&str]) {
    let (status, body) = fleet.admin_post("/admin/reload").await;
    assert_eq!(status, 200, "reload {}: {body}", *reloads + 1);
    let body: Value = serde_json::from_str(&body).expect("a JSON reply");
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["restart_needed"], serde_json::json!(restart_needed));
    *reloads += 1;
    assert_eq!(reload_count(fleet, "success").await, *reloads);
}

/// A refused reload: 400 `invalid_config` naming the file and `field`.
fn assert_refused(status: u16, body: &str, field: &str) {
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(body["error"], "invalid_config", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("proxy.yaml:"), "names the file: {message}");
    assert!(
        message.contains(&format!("field `{field}`")),
        "names {field}: {message}"
    );
}

async fn reload_count(fleet: &TestFleet, result: &str) -> u64 {
    let series = format!("roost_proxy_reloads_total{{result=\"{result}\"}} ");
    let metrics = fleet.metrics().await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

async fn worker_ids(fleet: &TestFleet) -> Vec<String> {
    let mut ids: Vec<String> = (fleet.admin_workers().await.iter())
        .filter_map(|w| w["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn weight_of(fleet: &TestFleet, id: &str) -> f64 {
    let workers = fleet.admin_workers().await;
    let worker = workers.iter().find(|w| w["id"] == id);
    worker
        .and_then(|w| w["weight"].as_f64())
        .unwrap_or(f64::NAN)
}

fn cookie_source(secret: &str) -> Source {
    Source::Raw(format!("{{signed_cookie: sid, {secret}, ttl_s: 3600}}"))
}

/// A self-signed certificate for the TLS listener.
struct Tls {
    cert: String,
    key: String,
    pem: String,
}

impl Tls {
    fn generate(dir: &TempDir, name: &str) -> Tls {
        let (cert, key, pem) = self_signed(dir, name);
        let display = |path: &Path| path.display().to_string();
        Tls {
            cert: display(&cert),
            key: display(&key),
            pem,
        }
    }

    /// The `tls:` section serving it on `addr`.
    fn yaml(&self, addr: SocketAddr) -> String {
        format!(
            "tls: {{listen: {addr}, cert: {:?}, key: {:?}}}\n",
            self.cert, self.key
        )
    }
}

/// A request carrying a cookie the old secret signed is routed by its id.
async fn assert_old_cookie_served(fleet: &TestFleet) {
    let value = cookie_signer(OLD_SECRET).sign("old-cookie-user", now_s() + 600);
    let served = fleet
        .get("/v1/whoami", &[("cookie", &format!("sid={value}"))])
        .await;
    assert_eq!(
        served.status, 200,
        "the old secret still verifies: {}",
        served.body
    );
    assert_eq!(served.json()["key"], "old-cookie-user");
}

/// A keyless request is given a cookie signed with the new secret.
async fn assert_minted_with_new_secret(fleet: &TestFleet) {
    let served = fleet.get("/v1/whoami", &[]).await;
    assert_eq!(served.status, 200, "{}", served.body);
    let set_cookie = served
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a minted cookie");
    let value = set_cookie
        .strip_prefix("sid=")
        .and_then(|rest| rest.split(';').next())
        .expect("sid=VALUE; ...");
    let now = now_s();
    assert!(cookie_signer(NEW_SECRET)
        .verify(value.as_bytes(), now)
        .is_ok());
    assert!(cookie_signer(OLD_SECRET)
        .verify(value.as_bytes(), now)
        .is_err());
}

/// Whether a new TLS connection trusting only `pem` gets through.
async fn assert_tls(addr: SocketAddr, pem: &str, expected: bool) {
    let url = format!("https://localhost:{}/v1/whoami", addr.port());
    let response = support::https_client(pem, addr)
        .get(&url)
        .header(KEY_HEADER, "tls-user")
        .send()
        .await;
    assert_eq!(response.is_ok(), expected, "{response:?}");
}

/// The status of a `POST` with a 100-byte body.
async fn post_body(fleet: &TestFleet) -> u16 {
    let body = Value::String("x".repeat(98));
    let headers = [(KEY_HEADER, "body-user")];
    let served = (fleet.send(reqwest::Method::POST, "/v1/whoami", &headers, Some(&body))).await;
    served.status
}

/// Clients beside the load, each sending one request every 20 ms and
/// keeping its connection: one with a cookie the old secret signed, one
/// over TLS trusting both certificates.
struct SideClients {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SideClients {
    fn start(proxy: SocketAddr, tls: SocketAddr, pems: &[&str]) -> SideClients {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let cookie = cookie_signer(OLD_SECRET).sign("side-cookie-user", now_s() + 3600);
        let plain = support::client()
            .get(format!("http://{proxy}/v1/whoami"))
            .header("cookie", format!("sid={cookie}"));
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .resolve("localhost", tls);
        for pem in pems {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a test CA");
            builder = builder.add_root_certificate(ca);
        }
        let https = builder.build().expect("an HTTPS client");
        let secure = https
            .get(format!("https://localhost:{}/v1/whoami", tls.port()))
            .header(KEY_HEADER, "side-tls-user");
        let tasks = [plain, secure]
            .into_iter()
            .map(|request| {
                let (stop, failures) = (Arc::clone(&stop), Arc::clone(&failures));
                tokio::spawn(repeat(request, stop, failures))
            })
            .collect();
        SideClients {
            stop,
            failures,
            tasks,
        }
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a side client");
        }
        let failures = self.failures.lock().expect("failures");
        failures.clone()
    }
}

/// Send `request` every 20 ms until `stop`, noting each one not answered 200.
async fn repeat(
    request: reqwest::RequestBuilder,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let Some(request) = request.try_clone() else {
            return;
        };
        let failure = match request.send().await {
            Ok(response) if response.status() == 200 => continue,
            Ok(response) => format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(e) => format!("{e:?}"),
        };
        failures.lock().expect("failures").push(failure);
    }
}
