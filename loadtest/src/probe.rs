//! Requests sent straight to one worker, around the proxy, for the
//! entities it held: what the cut scenario asks the cut-off worker from the
//! heal on ([`crate::check::revalidation`] judges the answers).
//!
//! Each probe carries what the proxy would set — the user key in
//! `x-roost-key` and the proxy's credential in `x-roost-hop-token` — so the
//! worker treats it like any request the proxy forwards, and each goes to
//! the ledger as [`Phase::Probe`]. Before every round the entities' epochs
//! are read from the store (directly, not through the worker's relay), so
//! each answer can be held against what the store said before it was asked.
//! A round does not wait for the one before it: a probe stuck behind the
//! worker's recovery must not hide what the next round would see.

use std::collections::HashMap;

use anyhow::{Context, Result};
use reqwest::header::{HeaderMap, HeaderValue};
use roost_routing::headers;
use tokio::task::JoinSet;

use crate::check::revalidation::Probed;
use crate::client::{http_client, Client};
use crate::ledger::{entity_key, Kind, Ledger, Phase};
use crate::load::{join_all, read, SESSION_AND_CART};
use roost_testkit::postgres::connect;

/// The device number of probes in the ledger.
pub const PROBE_DEVICE: u8 = 254;

/// An entity a worker answered for before a fault.
#[derive(Debug, Clone)]
pub struct HeldEntity {
    pub kind: Kind,
    pub user: String,
    /// The epoch of the worker's last answer for it.
    pub epoch_before: Option<i64>,
}

/// The sessions and carts `worker` answered for (with success) before
/// `until_us`, with the epoch of its last answer for each.
pub fn held_by(ledger: &Ledger, worker: &str, until_us: u64) -> Vec<HeldEntity> {
    let mut held: HashMap<(Kind, String), (u64, Option<i64>)> = HashMap::new();
    for record in ledger.recent(0) {
        let readable = SESSION_AND_CART
            .iter()
            .any(|(kind, _)| *kind == record.entity);
        if !readable
            || !record.is_success()
            || record.t_done_us >= until_us
            || record.worker.as_deref() != Some(worker)
        {
            continue;
        }
        let entry = held
            .entry((record.entity, record.user.clone()))
            .or_insert((record.t_done_us, record.epoch));
        if record.t_done_us >= entry.0 {
            *entry = (record.t_done_us, record.epoch);
        }
    }
    let mut held: Vec<HeldEntity> = held
        .into_iter()
        .map(|((kind, user), (_, epoch_before))| HeldEntity {
            kind,
            user,
            epoch_before,
        })
        .collect();
    held.sort_by(|a, b| (a.kind, &a.user).cmp(&(b.kind, &b.user)));
    held
}

/// Probes of one worker's held entities, round after round.
pub struct Prober {
    http: reqwest::Client,
    worker_url: String,
    proxy_token: HeaderValue,
    entities: Vec<HeldEntity>,
    /// A connection of its own to the store, for the epochs.
    store: tokio_postgres::Client,
    ledger: Ledger,
    rounds: usize,
    /// Every probe sent, answered or not; [`Prober::finish`] waits for them.
    probes: JoinSet<Probed>,
}

impl Prober {
    /// Probes of `entities` on the worker at `worker_url`, sent with
    /// `proxy_token`, the epochs read from `store_url`.
    pub async fn new(
        worker_url: &str,
        proxy_token: &str,
        entities: Vec<HeldEntity>,
        store_url: &str,
        ledger: &Ledger,
    ) -> Result<Prober> {
        let (store, connection) = connect(store_url).await?;
        // Ends when `store` is dropped.
        tokio::spawn(connection);
        Ok(Prober {
            http: http_client(entities.len().max(1))?,
            worker_url: worker_url.to_owned(),
            proxy_token: HeaderValue::from_str(proxy_token)
                .context("the proxy token as a header")?,
            entities,
            store,
            ledger: ledger.clone(),
            rounds: 0,
            probes: JoinSet::new(),
        })
    }

    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Read the epochs, then send a probe of every entity, all at once,
    /// without waiting for the answers.
    pub async fn send_round(&mut self) -> Result<()> {
        self.rounds += 1;
        let stored = self.stored_epochs().await?;
        for entity in &self.entities {
            let key = entity_key(entity.kind, &entity.user);
            let client = self.client(&entity.user)?;
            let path = SESSION_AND_CART
                .iter()
                .find(|(kind, _)| *kind == entity.kind)
                .map_or("/v1/session", |(_, path)| *path);
            let call = read(entity.kind, path, format!("probe-{}-{key}", self.rounds));
            let stored_epoch = stored.get(&key).copied();
            let epoch_before = entity.epoch_before;
            self.probes.spawn(async move {
                let record = client.perform(&call, || false).await;
                Probed {
                    record,
                    stored_epoch,
                    epoch_before,
                }
            });
        }
        Ok(())
    }

    /// Wait for every probe sent; all of them, in the order sent.
    pub async fn finish(self) -> Result<Vec<Probed>> {
        let mut probes = join_all(self.probes, "a probe").await?;
        probes.sort_by_key(|p| p.record.t_send_us);
        Ok(probes)
    }

    /// A one-shot client for `user`'s entities on the worker.
    fn client(&self, user: &str) -> Result<Client> {
        let mut extra = HeaderMap::new();
        extra.insert(
            headers::KEY,
            HeaderValue::from_str(user)
                .with_context(|| format!("user key {user:?} as a header"))?,
        );
        extra.insert(headers::HOP_TOKEN, self.proxy_token.clone());
        let client = Client::with_http(
            self.http.clone(),
            &self.worker_url,
            user,
            PROBE_DEVICE,
            Phase::Probe,
            self.ledger.clone(),
        );
        Ok(client.with_headers(extra))
    }

    /// Key → epoch of the probed entities in the store now.
    async fn stored_epochs(&self) -> Result<HashMap<String, i64>> {
        let keys: Vec<String> = self
            .entities
            .iter()
            .map(|e| entity_key(e.kind, &e.user))
            .collect();
        let rows = self
            .store
            .query(
                "SELECT key, epoch FROM roost_entities WHERE key = ANY($1)",
                &[&keys],
            )
            .await
            .context("read the probed entities' epochs")?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("decode the probed entities' epochs")
    }
}
