//! Sticky routing end to end: real workers, a real proxy, 127.0.0.1 only.
//!
//! - one key from two devices (header and cookie) always lands on one worker;
//! - an inventory path is routed by the item's key, not by the user asking;
//! - 10,000 keys spread evenly over three equal workers;
//! - `/admin/route` agrees with where requests go, before and after a kill;
//! - kill -9 under load moves only the dead worker's keys, to their second
//!   HRW candidate, fails no request sent after the kill, and the keys come
//!   back when the worker does.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    eventually, metric_value, FleetConfig, Served, Source, TestFleet, KEY_COOKIE, KEY_HEADER,
};

#[tokio::test(flavor = "multi_thread")]
async fn one_key_from_two_devices_always_reaches_one_worker() {
    // 1,000 requests for one key as fast as the clients go: far over the
    // default rate per key, which tests/limits.rs covers.
    let mut config = FleetConfig::new(3);
    config.extra_yaml = "limits: {rate: {per_s: 0}}\n".into();
    let fleet = TestFleet::start(config).await;
    let key = "user-8f14e45f";
    let owner = fleet
        .route(key)
        .await
        .owner
        .expect("a healthy fleet has an owner for every key");
    let started = Instant::now();

    // Two "devices": one sends the header, the other only the cookie (among
    // other cookies). Four concurrent clients, 250 requests each.
    let mut tasks = Vec::new();
    for task in 0..4 {
        let client = fleet.client();
        let url = format!("{}/v1/whoami", fleet.proxy_url());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(250);
            for i in 0..250 {
                let request = if (task + i) % 2 == 0 {
                    client.get(&url).header(KEY_HEADER, key)
                } else {
                    client
                        .get(&url)
                        .header("cookie", format!("theme=dark; {KEY_COOKIE}={key}; lang=en"))
                };
                let response = request.send().await.expect("request through the proxy");
                let served = Served::from_response(response).await;
                seen.push((served.status, served.worker));
            }
            seen
        }));
    }
    let mut workers: HashMap<Option<String>, usize> = HashMap::new();
    let mut total = 0;
    for task in tasks {
        for (status, worker) in task.await.expect("client task panicked") {
            assert_eq!(status, 200, "every request for {key} succeeds");
            *workers.entry(worker).or_default() += 1;
            total += 1;
        }
    }
    assert_eq!(total, 1000);
    assert_eq!(
        workers,
        HashMap::from([(Some(owner.clone()), 1000)]),
        "all 1,000 requests for {key} (header and cookie alternating) reach its owner {owner}"
    );
    eprintln!("1,000 requests for one key in {:?}", started.elapsed());
}

/// A request for a shared entity also carries its user's header (and
/// cookie): the path source, listed first, routes it by the entity's key,
/// `inventory:show-1`, to the worker HRW picks for that key. The key the
/// proxy extracted and forwards as `x-roost-key` is read back from the
/// access log (its hash, the proxy never logs a raw key) and compared with
/// `/admin/route`'s hash of `inventory:show-1`.
#[tokio::test(flavor = "multi_thread")]
async fn an_inventory_path_is_routed_by_the_items_key_not_the_users() {
    let config = FleetConfig::new(3).json_logs().sources(vec![
        Source::Path {
            template: "/v1/inventory/{key}".into(),
            prefix: "inventory:".into(),
        },
        Source::Header(KEY_HEADER.into()),
        Source::Cookie(KEY_COOKIE.into()),
    ]);
    let fleet = TestFleet::start(config).await;
    let item = fleet.route("inventory:show-1").await;
    let owner = item.owner.clone().expect("a healthy fleet owns every key");
    // A user whose own key lands elsewhere, so the test tells the two apart.
    let mut user = None;
    for candidate in ["alice", "bob", "carol", "dave", "erin"] {
        if fleet.route(candidate).await.owner.as_deref() != Some(owner.as_str()) {
            user = Some(candidate);
            break;
        }
    }
    let user = user.expect("one of five users is owned by another worker than the item");

    let cookie = format!("{KEY_COOKIE}={user}");
    let requests = [
        "/v1/inventory/show-1",
        "/v1/inventory/show-1/holds?from=cart",
    ];
    for path in requests {
        let served = fleet
            .get(path, &[(KEY_HEADER, user), ("cookie", &cookie)])
            .await;
        assert_eq!(
            served.worker.as_deref(),
            Some(owner.as_str()),
            "GET {path} as {user} reaches inventory:show-1's owner ({} {})",
            served.status,
            served.body
        );
    }

    let lines = fleet.access_log_lines(requests.len()).await;
    assert_eq!(
        lines.len(),
        requests.len(),
        "one access-log line per request"
    );
    for line in &lines {
        assert_eq!(
            line["key"],
            item.key_hash.as_str(),
            "the proxy routed and forwarded the key inventory:show-1: {line}"
        );
        assert_eq!(line["worker"], owner.as_str(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_keys_spread_evenly_over_three_equal_workers() {
    const KEYS: usize = 10_000;
    const CLIENTS: usize = 8;
    // No access log: 10,000 lines of it only slow the proxy down here.
    let config = FleetConfig {
        access_log: false,
        ..FleetConfig::new(3)
    };
    let fleet = TestFleet::start(config).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..CLIENTS {
        let client = fleet.client();
        let url = format!("{}/v1/whoami", fleet.proxy_url());
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for i in (task..KEYS).step_by(CLIENTS) {
                let key = format!("user-{i:05}");
                let response = client
                    .get(&url)
                    .header(KEY_HEADER, &key)
                    .send()
                    .await
                    .expect("request through the proxy");
                let served = Served::from_response(response).await;
                assert_eq!(served.status, 200, "request for {key}");
                let worker = served.worker.expect("a worker answered");
                *counts.entry(worker).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        for (worker, n) in task.await.expect("client task panicked") {
            *counts.entry(worker).or_default() += n;
        }
    }
    eprintln!("{KEYS} keys in {:?}: {counts:?}", started.elapsed());
    assert_eq!(counts.values().sum::<usize>(), KEYS);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        fleet.worker_ids(),
        "every worker gets keys"
    );
    let fair = KEYS as f64 / 3.0;
    for (worker, &n) in &counts {
        let off = (n as f64 - fair) / fair;
        assert!(
            off.abs() <= 0.10,
            "worker {worker} got {n} of {KEYS} keys, {:+.1}% off a third (limit ±10%): {counts:?}",
            off * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_route_agrees_with_where_requests_go_before_and_after_a_kill() {
    let mut fleet = TestFleet::start(FleetConfig::new(3)).await;
    let keys: Vec<String> = (0..150).map(|i| format!("sample-{i}")).collect();
    let victim = "w2";

    let mut before = HashMap::new();
    for key in &keys {
        let route = fleet.route(key).await;
        assert_eq!(route.candidates.len(), 3, "every worker is a candidate");
        assert!(route.candidates.iter().all(|(_, _, healthy)| *healthy));
        let owner = route.owner.clone().expect("owner while all are healthy");
        assert_eq!(owner, route.candidates[0].0, "owner is the first candidate");
        let served = fleet.get_keyed(key).await;
        assert_eq!(served.status, 200);
        assert_eq!(
            served.worker.as_deref(),
            Some(owner.as_str()),
            "/admin/route says {key} goes to {owner}"
        );
        before.insert(key.clone(), route);
    }
    let victim_keys = before
        .values()
        .filter(|r| r.owner.as_deref() == Some(victim))
        .count();
    assert!(victim_keys > 0, "{victim} owns some of the sample");

    fleet.kill9(victim);
    fleet
        .wait_healthy(victim, false, Duration::from_secs(10))
        .await;

    for key in &keys {
        let old = &before[key];
        let route = fleet.route(key).await;
        assert_eq!(
            route.order(),
            old.order(),
            "candidate order of {key} is stable"
        );
        assert_eq!(route.key_hash, old.key_hash, "key hash of {key} is stable");
        let expected = if old.owner.as_deref() == Some(victim) {
            old.candidates[1].0.clone()
        } else {
            old.owner.clone().expect("owner before the kill")
        };
        assert_eq!(
            route.owner.as_deref(),
            Some(expected.as_str()),
            "after {victim} died, {key} belongs to {expected} (candidates {:?})",
            old.order()
        );
        let served = fleet.get_keyed(key).await;
        assert_eq!(served.status, 200, "request for {key} after the kill");
        assert_eq!(
            served.worker.as_deref(),
            Some(expected.as_str()),
            "/admin/route says {key} goes to {expected} after the kill"
        );
    }
}

/// Start, pause and stop switches of the failover test's load.
#[derive(Default)]
struct LoadControl {
    stop: AtomicBool,
    paused: AtomicBool,
    in_flight: AtomicUsize,
}

impl LoadControl {
    /// Count a request as in flight unless the load is paused. (Counting
    /// first, then checking, means a pauser that sees zero in flight after
    /// setting `paused` cannot miss a request about to start.)
    fn begin(&self) -> bool {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.paused.load(Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }
}

/// One request of the load in the failover test.
#[derive(Debug, Clone)]
struct Record {
    key: usize,
    /// When the client started sending it, and when the answer was in.
    sent: Instant,
    done: Instant,
    /// Status and `x-roost-worker`, or the transport error.
    outcome: Result<(u16, Option<String>), String>,
}

impl Record {
    fn served_by(&self) -> Option<&str> {
        match &self.outcome {
            Ok((200, worker)) => worker.as_deref(),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_moves_only_the_dead_workers_keys_and_they_come_back() {
    const KEYS: usize = 300;
    const CLIENTS: usize = 4;
    let config = FleetConfig::new(3);
    let health = config.health;
    let mut fleet = TestFleet::start(config).await;
    let victim = "w2".to_owned();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("load-user-{i}")).collect();

    // Owners and second candidates, from the proxy itself, before the kill.
    let mut owner = Vec::with_capacity(KEYS);
    let mut second = Vec::with_capacity(KEYS);
    for key in &keys {
        let route = fleet.route(key).await;
        owner.push(route.owner.clone().expect("owner while all are healthy"));
        second.push(route.candidates[1].0.clone());
    }
    let victim_keys: HashSet<usize> = (0..KEYS).filter(|&k| owner[k] == victim).collect();
    assert!(!victim_keys.is_empty(), "{victim} owns some keys");

    // Steady load: each client walks the keys from its own offset.
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let load = Arc::new(LoadControl::default());
    let mut tasks = Vec::new();
    for task in 0..CLIENTS {
        let (client, url) = (fleet.client(), format!("{}/v1/whoami", fleet.proxy_url()));
        let (keys, records, load) = (keys.clone(), Arc::clone(&records), Arc::clone(&load));
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(2));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut k = task * KEYS / CLIENTS;
            while !load.stop.load(Ordering::SeqCst) {
                ticks.tick().await;
                if !load.begin() {
                    continue;
                }
                let sent = Instant::now();
                let outcome = match client.get(&url).header(KEY_HEADER, &keys[k]).send().await {
                    Ok(response) => {
                        let served = Served::from_response(response).await;
                        Ok((served.status, served.worker))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let done = Instant::now();
                records.lock().expect("records lock").push(Record {
                    key: k,
                    sent,
                    done,
                    outcome,
                });
                load.in_flight.fetch_sub(1, Ordering::SeqCst);
                k = (k + 1) % KEYS;
            }
        }));
    }
    // Has every key in `which` been served by the worker `by` (given the key)
    // in a request sent after `after`?
    let all_served = |which: &HashSet<usize>, after: Instant, by: &dyn Fn(usize) -> String| {
        let records = records.lock().expect("records lock");
        let mut done = HashSet::new();
        for r in records.iter().filter(|r| r.sent > after) {
            if r.served_by() == Some(by(r.key).as_str()) {
                done.insert(r.key);
            }
        }
        which.is_subset(&done)
    };
    let all_keys: HashSet<usize> = (0..KEYS).collect();

    // 1. Warm up: every key served by its owner.
    let load_started = Instant::now();
    eventually(Duration::from_secs(15), "every key served once", || async {
        all_served(&all_keys, load_started, &|k| owner[k].clone()).then_some(())
    })
    .await;

    // 2. kill -9 the victim; `killed` is when the process is reaped. The
    // load pauses for the few milliseconds of the kill, so that the first
    // requests to find the worker dead are sent after the kill returned and
    // must be saved by passive detection and the retry on the next candidate
    // (otherwise a request in flight during the kill would absorb that).
    load.paused.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "in-flight requests to finish",
        || async { (load.in_flight.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    let kill_started = Instant::now();
    fleet.kill9(&victim);
    let killed = Instant::now();
    load.paused.store(false, Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "every key of the dead worker served by its second candidate",
        || async { all_served(&victim_keys, killed, &|k| second[k].clone()).then_some(()) },
    )
    .await;
    let moved_in = killed.elapsed();
    // Keep the load on until the active checks have also seen it down.
    fleet
        .wait_healthy(&victim, false, Duration::from_secs(10))
        .await;

    // 3. Restart it: its keys come back within rise × interval plus slack.
    let restart_started = Instant::now();
    fleet.restart(&victim);
    let restarted = Instant::now();
    let back_limit =
        Duration::from_millis(u64::from(health.rise) * health.interval_ms) + Duration::from_secs(3);
    let victim_for = |_: usize| victim.clone();
    eventually(
        back_limit,
        "the restarted worker to serve its keys again",
        || async { all_served(&victim_keys, restarted, &victim_for).then_some(()) },
    )
    .await;
    let back = Instant::now();
    let back_in = back - restarted;
    tokio::time::sleep(Duration::from_millis(200)).await;
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client task panicked");
    }

    // 4. Check every request. A request is "before the kill" when its answer
    // was in before the kill started, "after" when it was sent after the kill
    // returned; in between it was in flight while the worker died.
    let records = std::mem::take(&mut *records.lock().expect("records lock"));
    let mut failures_in_kill_window = 0;
    for r in records.iter() {
        let k = r.key;
        let key = &keys[k];
        let ok = matches!(r.outcome, Ok((200, Some(_))));
        if r.sent > killed {
            assert!(
                ok,
                "request for {key} sent {:?} after the kill returned failed: {:?}",
                r.sent - killed,
                r.outcome
            );
        } else if r.done < kill_started {
            assert!(
                ok,
                "request for {key} before the kill failed: {:?}",
                r.outcome
            );
        } else if !ok {
            failures_in_kill_window += 1;
        }
        let Some(worker) = r.served_by() else {
            continue;
        };
        if !victim_keys.contains(&k) {
            assert_eq!(
                worker, owner[k],
                "{key} is not {victim}'s and must never change worker"
            );
        } else if r.done < kill_started || r.sent > back {
            assert_eq!(worker, victim, "{key} is served by its owner {victim}");
        } else if r.sent > killed && r.done < restart_started {
            assert_eq!(
                worker, second[k],
                "{key} is served by its second candidate while {victim} is dead"
            );
        } else {
            // In flight at the kill or around the restart: either is right.
            assert!(
                worker == victim || worker == second[k],
                "{key} served by {worker} around the kill/restart; expected {victim} or {}",
                second[k]
            );
        }
    }
    // For the record: how the proxy found out (a retry means a request met
    // the refused connection and was moved to the next candidate).
    let metrics = fleet.metrics().await;
    let retried = metric_value(
        &metrics,
        "roost_proxy_retries_total",
        &[("worker", &victim)],
    );
    eprintln!(
        "{} requests over {:?}; {} keys of {victim} moved within {moved_in:?} of the kill \
         ({failures_in_kill_window} failures in flight during the kill, {retried:?} \
         connection retries); back within {back_in:?} of the restart (limit {back_limit:?})",
        records.len(),
        load_started.elapsed(),
        victim_keys.len(),
    );
}
