//! The crash window as a user of the killed worker sees it (issue 15): 30
//! users whose keys the worker about to be killed owns, each sending
//! durable `PATCH /v1/session`s with an `Idempotency-Key` in a closed loop
//! (the next as soon as the last is answered, a retry with the same key
//! after a failure). A user's *window* is from the kill to the end of its
//! first successful request after it: with a request always in flight,
//! that is what the crash cost the user, whether the proxy replayed the
//! request in flight or the user had to retry.
//!
//! These users are apart from the load (their own keys, not in the
//! ledger): they measure, the load checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::check::traffic::LatencySummary;
use crate::client::{http_client, USER_HEADER};
use crate::ledger::{Clock, Durability};
use roost_testkit::fleet::Fleet;

/// Users of the worker to be killed.
pub const USERS: usize = 30;
/// Keys tried to find them.
const KEYS_TRIED: usize = 2_000;

/// What the probe's users saw of the crash.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrashWindows {
    pub users: usize,
    /// Users not served again before the probe stopped.
    pub unserved: usize,
    /// Failed attempts (each retried with its key).
    pub failed: usize,
    pub window_ms: LatencySummary,
}

/// One attempt: when it was answered, and whether it succeeded.
struct Attempt {
    done_us: u64,
    ok: bool,
}

/// The running users.
pub struct CrashProbe {
    stop: Arc<AtomicBool>,
    users: JoinSet<Vec<Attempt>>,
}

impl CrashProbe {
    /// Find [`USERS`] keys `victim` owns and start their closed loops.
    pub async fn start(fleet: &Fleet, victim: &str, clock: Clock) -> Result<CrashProbe> {
        let mut keys = Vec::with_capacity(USERS);
        for i in 0..KEYS_TRIED {
            let key = format!("crash-probe-{i}");
            if fleet.hrw_first(&key).await? == victim {
                keys.push(key);
                if keys.len() == USERS {
                    break;
                }
            }
        }
        anyhow::ensure!(
            keys.len() == USERS,
            "only {} of {KEYS_TRIED} keys belong to {victim}",
            keys.len()
        );
        let http = http_client(USERS)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut users = JoinSet::new();
        for key in keys {
            let request = http
                .patch(format!("{}/v1/session", fleet.proxy_url()))
                .header(USER_HEADER, &key)
                .header("roost-durability", Durability::Durable.header_value());
            users.spawn(closed_loop(request, Arc::clone(&stop), clock));
        }
        Ok(CrashProbe { stop, users })
    }

    /// Stop the users; their windows, counted from `kill_us`.
    pub async fn stop(mut self, kill_us: u64) -> Result<CrashWindows> {
        self.stop.store(true, Ordering::Relaxed);
        let mut windows = CrashWindows::default();
        let mut lengths = Vec::with_capacity(USERS);
        while let Some(attempts) = self.users.join_next().await {
            let attempts = attempts.context("a crash probe user")?;
            windows.users += 1;
            let after = attempts.iter().filter(|a| a.done_us >= kill_us);
            windows.failed += after.clone().filter(|a| !a.ok).count();
            match after.clone().find(|a| a.ok) {
                Some(served) => lengths.push(served.done_us - kill_us),
                None => windows.unserved += 1,
            }
        }
        windows.window_ms = LatencySummary::of(lengths);
        Ok(windows)
    }
}

/// Send `request` with a new `Idempotency-Key` after each success, the
/// same one after a failure, until `stop`.
async fn closed_loop(
    request: reqwest::RequestBuilder,
    stop: Arc<AtomicBool>,
    clock: Clock,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(request) = request.try_clone() else {
            break;
        };
        let sent = request
            .header("idempotency-key", format!("crash-op-{seq}"))
            .json(&json!({ "seq": seq }))
            .send()
            .await;
        let ok = matches!(&sent, Ok(response) if response.status().is_success());
        if let Ok(response) = sent {
            let _ = response.bytes().await;
        }
        attempts.push(Attempt {
            done_us: clock.now_us(),
            ok,
        });
        seq += u64::from(ok);
    }
    attempts
}
