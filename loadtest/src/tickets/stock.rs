//! The show's inventory, through the proxy (routed by the key the proxy
//! takes from the path): its stock set with the admin token — after
//! checking that a request without the token, or with a wrong one, is
//! refused — then watched while it sells (every sample must show no more
//! sold than there was; with the acknowledged orders it times the fault),
//! and read once more when the fleet is quiet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinHandle;

use super::plan::INVENTORY_PATH;
use super::plan::SKU;
use crate::client::{http_client, Client};
use crate::ledger::{Kind, Ledger, Phase, Record};
use crate::load::{read, READ_BACK_DEVICE};

/// How often the watcher asks.
const POLL: Duration = Duration::from_millis(50);
/// The device number of the watcher's requests in the ledger.
pub const WATCH_DEVICE: u8 = 254;
/// How long setting the stock may take (the fleet has just started).
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// `{"sku", "stock", "sold"}`: units left for sale, units sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub stock: Option<u64>,
    pub sold: u64,
}

impl Inventory {
    /// The inventory a reply (or a stored state) shows, if it is one.
    pub fn of(json: &serde_json::Value) -> Option<Inventory> {
        serde_json::from_value(json.clone()).ok()
    }
}

/// What `PUT /v1/inventory/{sku}` answered without the admin token and
/// with a wrong one (spec: 401 and 403).
#[derive(Debug, Clone, Serialize)]
pub struct AdminGuard {
    pub without_token: u16,
    pub wrong_token: u16,
}

impl AdminGuard {
    pub fn holds(&self) -> bool {
        self.without_token == 401 && self.wrong_token == 403
    }
}

/// Try the admin guard, then put `stock` tickets on sale through the
/// proxy at `base`; an error unless the reply shows them.
pub async fn put_stock(base: &str, admin_token: &str, stock: u64) -> Result<AdminGuard> {
    let http = http_client(1)?;
    let url = format!("{base}{INVENTORY_PATH}");
    let body = json!({ "stock": stock });
    let put = |token: Option<String>| {
        let mut request = http.put(&url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let guard = AdminGuard {
        without_token: put(None)
            .await
            .context("PUT the stock without a token")?
            .status()
            .as_u16(),
        wrong_token: put(Some(format!("not-{admin_token}")))
            .await
            .context("PUT the stock with a wrong token")?
            .status()
            .as_u16(),
    };
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let answer = put(Some(admin_token.to_owned())).await;
        let last = match answer {
            Ok(reply) if reply.status().is_server_error() => format!("{}", reply.status()),
            Ok(reply) => {
                let status = reply.status();
                let text = reply.text().await.context("read the PUT stock reply")?;
                let shown = serde_json::from_str(&text)
                    .ok()
                    .as_ref()
                    .and_then(Inventory::of);
                if status.as_u16() == 200
                    && shown
                        == Some(Inventory {
                            stock: Some(stock),
                            sold: 0,
                        })
                {
                    return Ok(guard);
                }
                bail!("PUT {INVENTORY_PATH} {{\"stock\": {stock}}} answered {status}: {text}");
            }
            Err(e) => format!("{e}"),
        };
        if Instant::now() >= deadline {
            bail!("PUT {INVENTORY_PATH} did not succeed within {SETUP_TIMEOUT:?}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One look at the inventory while it sells.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_us: u64,
    pub stock: Option<u64>,
    pub sold: u64,
}

/// How many tickets are known to be sold while the sale runs: the most
/// the inventory has shown, or the orders acknowledged so far if more (an
/// inventory read may be slow while checkouts go on). Times the fault.
#[derive(Debug, Clone, Default)]
pub struct SoldGauge {
    shown: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
}

impl SoldGauge {
    /// The inventory showed `sold` sold.
    pub fn shown(&self, sold: u64) {
        self.shown.fetch_max(sold, Ordering::Relaxed);
    }

    /// An order was acknowledged.
    pub fn acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn known(&self) -> u64 {
        let shown = self.shown.load(Ordering::Relaxed);
        shown.max(self.acked.load(Ordering::Relaxed))
    }

    /// Wait until at least `sold` are known sold: how many then, or
    /// `None` if not within `timeout`.
    pub async fn reaches(&self, sold: u64, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let known = self.known();
            if known >= sold {
                return Some(known);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The inventory, asked every [`POLL`] (once each: a failed look is
/// only a gap) until stopped; each answer is in the ledger too, and in
/// the gauge.
pub struct StockWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Sample>>,
}

impl StockWatch {
    pub fn start(base: &str, ledger: &Ledger, gauge: SoldGauge) -> Result<StockWatch> {
        let client = Client::with_http(
            http_client(1)?,
            base,
            SKU,
            WATCH_DEVICE,
            Phase::Load,
            ledger.clone(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(POLL);
            // After a slow answer, ask again at once rather than in a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let call = read(Kind::Inventory, INVENTORY_PATH, format!("watch-{n}"));
                let record = client.perform(&call, || false).await;
                if let Some(sample) = sample_of(&record) {
                    gauge.shown(sample.sold);
                    samples.push(sample);
                }
            }
            samples
        });
        Ok(StockWatch { stop, task })
    }

    /// Stop asking; every sample taken.
    pub async fn stop(mut self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.context("the stock watcher failed")
    }
}

impl Drop for StockWatch {
    /// A watcher dropped unstopped (a run that failed) stops at once.
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sample_of(record: &Record) -> Option<Sample> {
    if !record.is_2xx() {
        return None;
    }
    let shown = Inventory::of(record.body.as_ref()?)?;
    Some(Sample {
        t_us: record.t_done_us,
        stock: shown.stock,
        sold: shown.sold,
    })
}

/// The inventory through the proxy once the fleet is quiet (phase `Final`,
/// retried like the load does); `None` if it never answered.
pub async fn read_inventory(base: &str, ledger: &Ledger) -> Result<Option<Inventory>> {
    let client = Client::with_http(
        http_client(1)?,
        base,
        SKU,
        READ_BACK_DEVICE,
        Phase::Final,
        ledger.clone(),
    );
    let call = read(
        Kind::Inventory,
        INVENTORY_PATH,
        "read-back-inventory".into(),
    );
    let record = client.perform(&call, || true).await;
    Ok(record
        .is_2xx()
        .then_some(record.body.as_ref())
        .flatten()
        .and_then(Inventory::of))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gauge_knows_the_larger_of_shown_and_acknowledged() {
        let gauge = SoldGauge::default();
        gauge.shown(3);
        gauge.acked();
        assert_eq!(gauge.known(), 3);
        for _ in 0..4 {
            gauge.acked();
        }
        assert_eq!(gauge.reaches(5, Duration::ZERO).await, Some(5));
        assert_eq!(gauge.reaches(6, Duration::from_millis(20)).await, None);
    }

    #[test]
    fn an_inventory_reads_from_a_reply_or_a_state() {
        let reply = json!({"sku": "show-1", "stock": 37, "sold": 63});
        assert_eq!(
            Inventory::of(&reply),
            Some(Inventory {
                stock: Some(37),
                sold: 63
            })
        );
        let state = json!({"stock": null, "sold": 0, "reserved": {}});
        assert_eq!(
            Inventory::of(&state),
            Some(Inventory {
                stock: None,
                sold: 0
            })
        );
        assert_eq!(Inventory::of(&json!({"error": "x"})), None);
    }
}
