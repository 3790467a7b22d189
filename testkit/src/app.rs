//! An application's fleet for its tests: its own worker binary (a crate
//! that registers its entity types and calls `roost_worker::cli::main`)
//! three times on a throwaway Postgres cluster, the proxy in front, and a
//! client that speaks JSON to the proxy.
//!
//! ```no_run
//! # async fn example() {
//! use roost_testkit::app::AppFleet;
//! use serde_json::json;
//!
//! let app = AppFleet::start("roost-chat", "", "[{path: \"/v1/{kind}/{key}\"}]").await;
//! let joined = app.post("/v1/room/lobby/join", &json!({"member": "ann"})).await;
//! assert_eq!(joined.status, 200);
//! # }
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::Value;

use crate::bins::Binaries;
use crate::dir::TempDir;
use crate::fleet::{Fleet, FleetConfig};
use crate::postgres::Cluster;

/// How many workers an application fleet runs.
pub const WORKERS: usize = 3;

/// The fleet, the cluster it stores into, and the dir of its configs and
/// logs: stopped and removed together on drop.
pub struct AppFleet {
    pub fleet: Fleet,
    client: reqwest::Client,
    _cluster: Cluster,
    _dir: TempDir,
}

/// A reply: its status and JSON body (`Null` when it had none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The body's `error` code.
    pub fn error(&self) -> Option<&str> {
        self.body["error"].as_str()
    }
}

impl AppFleet {
    /// Start [`WORKERS`] workers of `worker_package`'s binary (built first)
    /// with `worker_yaml` beside the shared timing and the proxy's
    /// `hash_seed`, and the proxy with `key_sources`. Panics with the logs
    /// if the fleet does not come up.
    pub async fn start(worker_package: &'static str, worker_yaml: &str, key_sources: &str) -> Self {
        let binaries = Binaries::built(worker_package);
        let dir = TempDir::new(worker_package);
        let cluster = Cluster::start()
            .await
            .unwrap_or_else(|e| panic!("cannot start a throwaway postgres cluster: {e:#}"));
        let config = FleetConfig::new(worker_yaml, key_sources).seed_in_workers();
        let fleet = Fleet::start(&binaries, dir.path(), &cluster, &config, WORKERS, WORKERS)
            .await
            .unwrap_or_else(|e| panic!("the fleet of {worker_package} did not start: {e:#}"));
        let client = crate::http::client(Duration::from_secs(10));
        AppFleet {
            fleet,
            client,
            _cluster: cluster,
            _dir: dir,
        }
    }

    /// `GET path` through the proxy.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, &[]).await
    }

    /// `POST path` with a JSON body through the proxy.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// A request through the proxy; panics if no reply comes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.try_send(method.clone(), path, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    /// A request through the proxy; an error when no reply came.
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.fleet.proxy_url());
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.context("send")?;
        let status = response.status().as_u16();
        let text = response.text().await.context("read the body")?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("not JSON: {text:?}"))?
        };
        Ok(Answer { status, body })
    }

    /// Poll `GET path` every 50 ms until `done` holds for its answer, for
    /// at most `within`; the last answer either way, and an error if it
    /// never held.
    pub async fn wait_until(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Answer) -> bool,
    ) -> Result<Answer> {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.try_send(Method::GET, path, None, &[]).await;
            if let Ok(answer) = &answer {
                if done(answer) {
                    return Ok(answer.clone());
                }
            }
            if Instant::now() >= deadline {
                bail!("GET {path} did not turn as expected within {within:?}: {answer:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
