//! Bystanders: many users who each ask for their cart once before a
//! scale-out and once after it, so the fraction of active entities that
//! moved is measured over thousands of entities rather than the few hundred
//! the load keeps busy. With 20,000 bystanders (a full run) the fraction's
//! standard deviation around 1/4 is 0.003, so the 1.05 × 1/4 bound sits
//! about four deviations away; with 200 users it sits under one, and a
//! correct proxy would fail it by chance one run in four. Short runs use
//! 2,000 (1.3 deviations): there the bound is reported, not asserted.
//!
//! Their requests are not in the ledger: they only say which worker served
//! each bystander, before and after.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

/// Requests in flight at once.
const CONCURRENCY: usize = 32;

/// Which worker served each bystander (`None`: its request failed), before
/// the scale-out and while the new worker served.
#[derive(Debug, Default)]
pub struct Served {
    pub before: Vec<Option<String>>,
    pub after: Vec<Option<String>>,
}

/// The bystanders of one run.
pub struct Bystanders {
    keys: Arc<Vec<String>>,
}

impl Bystanders {
    pub fn new(count: usize) -> Self {
        Bystanders {
            keys: Arc::new((0..count).map(|n| format!("bystander-{n}")).collect()),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `GET /v1/cart` for every bystander through the proxy at `base`: the
    /// worker that answered each (`None` when the request failed).
    pub async fn touch(&self, base: &str) -> Result<Vec<Option<String>>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()
            .context("build the bystanders' HTTP client")?;
        let mut tasks = JoinSet::new();
        for part in 0..CONCURRENCY {
            let (http, keys, url) = (
                http.clone(),
                Arc::clone(&self.keys),
                format!("{base}/v1/cart"),
            );
            tasks.spawn(async move {
                let mut served = Vec::new();
                for index in (part..keys.len()).step_by(CONCURRENCY) {
                    served.push((index, serving_worker(&http, &url, &keys[index]).await));
                }
                served
            });
        }
        let mut workers = vec![None; self.keys.len()];
        while let Some(part) = tasks.join_next().await {
            for (index, worker) in part.context("a bystander task failed")? {
                workers[index] = worker;
            }
        }
        Ok(workers)
    }
}

async fn serving_worker(http: &reqwest::Client, url: &str, key: &str) -> Option<String> {
    let response = http.get(url).header("x-user-id", key).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response
        .headers()
        .get("x-roost-worker")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
