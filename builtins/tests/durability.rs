//! What survives a worker's death, each against SQLite and Postgres:
//!
//! - kill -9 under load in durable mode: no acknowledged write is lost;
//! - kill -9 under load in write-behind mode: only writes acknowledged
//!   within the last flush interval (+ the batch in flight) are lost, and
//!   the figure is printed;
//! - passivation: idle entities are flushed, then dropped, and read back;
//! - drain: SIGTERM under load finishes in-flight requests, flushes
//!   everything and exits 0; nothing acknowledged is lost;
//! - drain with a flush batch in flight: the drain waits for it;
//! - the state size cap: a change past `max_state_bytes` is refused and
//!   undone, and nothing acknowledged before it is lost, across a kill -9.
//! - pipelined batches: many entities' concurrent durable writes, two
//!   batches in flight, are each acknowledged only once committed, none is
//!   lost and each entity's are written in order; a batch stuck at the
//!   store holds up only its own entity (Postgres); a client whose durable
//!   writes follow one another never waits for the linger.
//!
//! The load: several writers per user, each adding items with SKUs nobody
//! else uses, qty 1. A cart at version V then holds exactly V items (one per
//! change), and the acknowledged adds it must hold are exactly those whose
//! reply's ETag is ≤ V: a flushed row is a whole prefix of the entity's
//! history, never a mix.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{cart_of, unique_key, Api, Store, Worker};
use tokio::task::JoinSet;

const USERS: usize = 4;
const WRITERS_PER_USER: usize = 2;
/// How long the writers run before the fault.
const LOAD: Duration = Duration::from_millis(600);
/// The flush interval of the write-behind run.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Allowance on top of the flush interval for the batch in flight: a write
/// acknowledged just after a round took its batch waits for that round to
/// end, the interval, and its own round.
const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(100);
/// Each write-behind writer's pause between writes: 8 writers then make
/// ~450 writes/s, which a debug build serves with CPU to spare on two cores.
/// (Saturating the CPU stretches the flusher's cycle, and with it the loss
/// window, well past interval + margin: see the report.)
const WRITE_BEHIND_PAUSE: Duration = Duration::from_millis(10);
/// Kill rounds per test.
const ROUNDS: usize = 2;

/// One acknowledged add.
#[derive(Debug, Clone)]
struct Ack {
    user: usize,
    sku: String,
    version: u64,
    at: Instant,
}

/// Everything the writers sent and had acknowledged.
#[derive(Debug, Default)]
struct Ledger {
    /// Per user: every SKU sent, acknowledged or not.
    sent: BTreeMap<usize, BTreeSet<String>>,
    acked: Vec<Ack>,
}

impl Ledger {
    fn add(&mut self, user: usize, sent: BTreeSet<String>, acked: Vec<Ack>) {
        self.sent.entry(user).or_default().extend(sent);
        self.acked.extend(acked);
    }
}

/// How a writer writes.
#[derive(Debug, Clone, Copy)]
struct Load {
    /// `roost-durability` to send, if any.
    durability: Option<&'static str>,
    /// Stop after this many requests.
    max: usize,
    /// Pause after each acknowledged write, so the load leaves the worker
    /// (and its flusher) CPU to spare on a small machine.
    pause: Duration,
}

impl Load {
    fn new(durability: Option<&'static str>) -> Self {
        Load {
            durability,
            max: usize::MAX,
            pause: Duration::ZERO,
        }
    }
}

/// One writer: adds `{name}n{n}` until a request fails (the worker died or
/// stopped listening) or `load.max` were sent. Every reply must be a 200.
async fn writer(
    api: Api,
    key: String,
    user: usize,
    name: String,
    load: Load,
) -> (usize, BTreeSet<String>, Vec<Ack>) {
    let mut sent = BTreeSet::new();
    let mut acked = Vec::new();
    for n in 0..load.max {
        let sku = format!("{name}n{n}");
        sent.insert(sku.clone());
        let mut call = api.add_item(&key, &sku, 1);
        if let Some(durability) = load.durability {
            call = call.durability(durability);
        }
        match call.try_send().await {
            Ok(reply) => {
                reply.expect_status(200, &format!("writer {name} add {sku}"));
                acked.push(Ack {
                    user,
                    sku,
                    version: reply.expect_version(),
                    at: Instant::now(),
                });
            }
            Err(_) => break,
        }
        if !load.pause.is_zero() {
            tokio::time::sleep(load.pause).await;
        }
    }
    (user, sent, acked)
}

/// Start `WRITERS_PER_USER` writers per user (each its own connection pool).
fn start_writers(
    worker: &Worker,
    keys: &[String],
    round: usize,
    load: Load,
) -> JoinSet<(usize, BTreeSet<String>, Vec<Ack>)> {
    let mut writers = JoinSet::new();
    for (user, key) in keys.iter().enumerate() {
        for w in 0..WRITERS_PER_USER {
            let name = format!("r{round}u{user}w{w}");
            let api = worker.api();
            writers.spawn(writer(api, key.clone(), user, name, load));
        }
    }
    writers
}

async fn collect(mut writers: JoinSet<(usize, BTreeSet<String>, Vec<Ack>)>) -> Ledger {
    let mut ledger = Ledger::default();
    while let Some(done) = writers.join_next().await {
        let (user, sent, acked) = done.expect("a writer panicked");
        ledger.add(user, sent, acked);
    }
    ledger
}

/// After a restart: what each user's cart says about one round.
struct RoundCheck {
    /// Acknowledged writes missing from the store.
    lost: Vec<Ack>,
    /// Per user, the cart items now.
    items: Vec<BTreeSet<String>>,
    acked: usize,
}

/// Read every user's cart through the restarted worker and check it against
/// the round's ledger: the cart holds the items of before the round, plus
/// exactly the round's acknowledged adds with version ≤ the cart's version,
/// plus possibly adds that were sent but never acknowledged; one item per
/// version. Returns the acknowledged adds that are missing.
async fn check_round(
    worker: &Worker,
    store: &Store,
    keys: &[String],
    before: &[BTreeSet<String>],
    ledger: &Ledger,
) -> RoundCheck {
    let api = worker.api();
    let mut lost = Vec::new();
    let mut now = Vec::new();
    for (user, key) in keys.iter().enumerate() {
        let reply = api.get_cart(key).send().await;
        reply.expect_status(200, "read back after the restart");
        let version = reply.expect_version();
        let (items, orders) = cart_of(&reply.json());
        assert!(orders.is_empty(), "no checkouts were made");
        assert!(
            items.values().all(|qty| *qty == 1),
            "every SKU was added once: {items:?}"
        );
        let items: BTreeSet<String> = items.into_keys().collect();
        assert_eq!(
            items.len() as u64,
            version,
            "user {user}: one item per version (a whole prefix of the history)"
        );
        assert!(
            items.is_superset(&before[user]),
            "user {user}: items confirmed before this round are still there"
        );
        let sent = ledger.sent.get(&user).cloned().unwrap_or_default();
        for sku in items.difference(&before[user]) {
            assert!(sent.contains(sku), "user {user}: {sku} was never sent");
        }
        for ack in ledger.acked.iter().filter(|a| a.user == user) {
            let present = items.contains(&ack.sku);
            if ack.version <= version {
                assert!(
                    present,
                    "user {user}: {} (version {}) is missing though the cart is at version \
                     {version}: the stored row is not a prefix of the history",
                    ack.sku, ack.version
                );
            } else {
                assert!(
                    !present,
                    "user {user}: {} has version {} > the cart's {version} yet is present",
                    ack.sku, ack.version
                );
                lost.push(ack.clone());
            }
        }
        // The restarted worker serves what the store holds.
        let row = store
            .peek(&format!("cart/{key}"))
            .await
            .expect("the cart is stored");
        assert_eq!(row.version, i64::try_from(version).expect("fits"));
        assert_eq!(row.epoch, reply.expect_epoch(), "the new claim's epoch");
        now.push(items);
    }
    RoundCheck {
        lost,
        items: now,
        acked: ledger.acked.len(),
    }
}

// ---------------------------------------------------------------------------
// 3a. kill -9, durable
// ---------------------------------------------------------------------------

async fn kill9_durable(store: Store) {
    // Carts are durable by config; the session writer asks for it by header.
    let mut worker = Worker::start(
        "w1",
        &store,
        Some("flush_interval_ms: 50\nkinds: {cart: {durability: durable}}\n"),
    )
    .await;
    let keys: Vec<String> = (0..USERS)
        .map(|u| unique_key(&format!("durable-u{u}")))
        .collect();
    let session_key = unique_key("durable-session");

    // An idempotent add before the first kill, replayed after the restarts.
    let first = worker
        .api()
        .add_item(&keys[0], "idem-sku", 1)
        .idempotency_key("idem-1")
        .send()
        .await;
    first.expect_status(200, "idempotent add");
    let mut items: Vec<BTreeSet<String>> = vec![BTreeSet::new(); USERS];
    items[0].insert("idem-sku".into());

    let mut session_acked = 0_u64;
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let writers = start_writers(&worker, &keys, round, Load::new(None));
        // A session writer with `roost-durability: durable` (the session
        // default is write-behind).
        let session_api = worker.api();
        let session_key_w = session_key.clone();
        let session_writer = tokio::spawn(async move {
            let mut last = None;
            for n in 0_u64.. {
                let put = session_api
                    .put_session(&session_key_w, &json!({"round": round, "n": n}))
                    .durability("durable")
                    .try_send()
                    .await;
                match put {
                    Ok(reply) => {
                        reply.expect_status(200, "durable session PUT");
                        last = Some((n, reply.expect_version()));
                    }
                    Err(_) => break,
                }
            }
            last
        });
        tokio::time::sleep(LOAD + Duration::from_millis(rand::random::<u64>() % 50)).await;
        worker.kill9();
        let ledger = collect(writers).await;
        let session_last = session_writer.await.expect("the session writer panicked");
        worker.restart().await;

        let check = check_round(&worker, &store, &keys, &items, &ledger).await;
        assert!(
            check.acked >= 50,
            "round {round}: the writers got work done ({} acknowledged)",
            check.acked
        );
        assert!(
            check.lost.is_empty(),
            "round {round}: {} acknowledged durable writes were lost: {:?}",
            check.lost.len(),
            check.lost
        );
        items = check.items;
        total_acked += check.acked;

        let (n, version) = session_last.expect("at least one durable session PUT");
        let read = worker.api().get_session(&session_key).send().await;
        let document = read.json();
        assert!(
            document["round"] == round && document["n"].as_u64() >= Some(n),
            "round {round}: the session holds the last acknowledged durable PUT (n ≥ {n}): {document}"
        );
        assert!(read.expect_version() >= version, "session version");
        session_acked += n + 1;
        eprintln!(
            "durable kill -9 round {round} ({}): {} acknowledged adds, 0 lost; \
             session at n={} (last acknowledged n={n})",
            store.url(),
            check.acked,
            document["n"]
        );
    }

    // The idempotent add, replayed after two kills: the first reply again,
    // nothing changed.
    let before = worker.api().get_cart(&keys[0]).send().await;
    let replay = worker
        .api()
        .add_item(&keys[0], "idem-sku", 1)
        .idempotency_key("idem-1")
        .send()
        .await;
    assert_eq!(
        (replay.status, replay.json()),
        (first.status, first.json()),
        "a repeated Idempotency-Key gets the first reply, across restarts"
    );
    assert_eq!(
        replay.version(),
        first.version(),
        "the replay carries the version its first reply produced"
    );
    let after = worker.api().get_cart(&keys[0]).send().await;
    assert_eq!(after.version(), before.version());
    assert_eq!(after.json(), before.json());
    eprintln!(
        "durable kill -9 total ({}): {total_acked} acknowledged adds and {session_acked} \
         session PUTs over {ROUNDS} kills, 0 lost",
        store.url()
    );
}

both_stores!(kill9_durable);

// ---------------------------------------------------------------------------
// 3b. kill -9, write-behind
// ---------------------------------------------------------------------------

async fn kill9_write_behind(store: Store) {
    let config = format!("flush_interval_ms: {}\n", FLUSH_INTERVAL.as_millis());
    let mut worker = Worker::start("w1", &store, Some(&config)).await;
    let keys: Vec<String> = (0..USERS)
        .map(|u| unique_key(&format!("wb-u{u}")))
        .collect();
    let bound = FLUSH_INTERVAL + IN_FLIGHT_MARGIN;
    let mut items: Vec<BTreeSet<String>> = vec![BTreeSet::new(); USERS];
    let mut figures = Vec::new();
    for round in 0..ROUNDS {
        let load = Load {
            pause: WRITE_BEHIND_PAUSE,
            ..Load::new(Some("write-behind"))
        };
        let writers = start_writers(&worker, &keys, round, load);
        tokio::time::sleep(LOAD + Duration::from_millis(rand::random::<u64>() % 50)).await;
        let killed_at = Instant::now();
        worker.kill9();
        let ledger = collect(writers).await;
        worker.restart().await;

        let check = check_round(&worker, &store, &keys, &items, &ledger).await;
        assert!(
            check.acked >= 50,
            "round {round}: the writers got work done"
        );
        // Each lost write was acknowledged (client-side, so after the worker
        // acknowledged it) at most `bound` before the kill.
        let ages: Vec<Duration> = check
            .lost
            .iter()
            .map(|a| killed_at.saturating_duration_since(a.at))
            .collect();
        let oldest = ages.iter().max().copied().unwrap_or_default();
        let in_window = ledger
            .acked
            .iter()
            .filter(|a| killed_at.saturating_duration_since(a.at) <= bound)
            .count();
        eprintln!(
            "write-behind kill -9 round {round} ({}): {} acknowledged, {} lost \
             (oldest lost acknowledged {oldest:?} before the kill; bound {bound:?}; \
             {in_window} acknowledged within the bound)",
            store.url(),
            check.acked,
            check.lost.len(),
        );
        assert!(
            oldest <= bound,
            "round {round}: a write acknowledged {oldest:?} before the kill was lost \
             (bound: flush interval {FLUSH_INTERVAL:?} + {IN_FLIGHT_MARGIN:?}): {:?}",
            check.lost
        );
        figures.push(check.lost.len());
        items = check.items;
    }
    eprintln!("write-behind loss per kill ({}): {figures:?}", store.url());
}

both_stores!(kill9_write_behind);

// ---------------------------------------------------------------------------
// 4a. Passivation
// ---------------------------------------------------------------------------

const PASSIVATIONS: &str = "roost_worker_passivations_total";
const ACTIVE: &str = "roost_worker_active_entities";
const CLAIMS: &str = "roost_worker_claims_total";
const IDLE: Duration = Duration::from_millis(300);

async fn passivation(store: Store) {
    // Flushes are rarer than the idle time: an idle entity is still dirty
    // when it first counts as idle, and must be flushed before it goes.
    let config = format!("idle_ms: {}\nflush_interval_ms: 1000\n", IDLE.as_millis());
    let worker = Worker::start("w1", &store, Some(&config)).await;
    let api = worker.api();
    let carts: Vec<String> = (0..3)
        .map(|i| unique_key(&format!("idle-cart{i}")))
        .collect();
    let session = unique_key("idle-session");
    let hot = unique_key("hot");

    let hot_epoch = api
        .add_item(&hot, "kept-warm", 1)
        .send()
        .await
        .expect_epoch();
    let mut written = Vec::new();
    for (i, key) in carts.iter().enumerate() {
        api.add_item(key, "a", 1)
            .send()
            .await
            .expect_status(200, "add");
        let reply = api.add_item(key, &format!("b{i}"), 2).send().await;
        reply.expect_status(200, "add");
        written.push((format!("cart/{key}"), reply));
    }
    let reply = api
        .put_session(&session, &json!({"theme": "dark", "n": 1}))
        .send()
        .await;
    reply.expect_status(200, "PUT session");
    written.push((format!("session/{session}"), reply));
    let last_write = Instant::now();
    assert_eq!(worker.metric(PASSIVATIONS).await, 0.0);
    let claims_before = worker.metric(CLAIMS).await;

    // Keep one entity in use (reads every 50 ms) while the others idle,
    // until the end of the test.
    let (hot_api, hot_key) = (api.clone(), hot.clone());
    let (stop_warm, mut warm_stopped) = tokio::sync::oneshot::channel::<()>();
    let keep_warm = tokio::spawn(async move {
        let mut epochs = BTreeSet::new();
        loop {
            epochs.insert(hot_api.get_cart(&hot_key).send().await.expect_epoch());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut warm_stopped => return epochs,
            }
        }
    });

    // The idle ones are flushed and dropped.
    let passivated = worker
        .wait_metric(PASSIVATIONS, "to count the 4 idle entities", |v| v >= 4.0)
        .await;
    let seen_after = last_write.elapsed();
    assert_eq!(passivated, 4.0, "only the idle entities are passivated");
    assert!(
        seen_after >= IDLE - Duration::from_millis(50),
        "passivated {seen_after:?} after the last use; idle_ms is {IDLE:?}"
    );
    // Flushed before dropped: the store has each one's last version.
    for (store_key, reply) in &written {
        let row = store.peek(store_key).await.expect("the entity is stored");
        assert_eq!(
            row.version,
            i64::try_from(reply.expect_version()).expect("fits"),
            "{store_key} was flushed before it was dropped"
        );
        assert_eq!(row.epoch, reply.expect_epoch());
    }
    worker
        .wait_metric(ACTIVE, "to fall to the one entity in use", |v| v == 1.0)
        .await;

    // A later read claims afresh and shows the same state and version.
    for (store_key, reply) in &written {
        let read = if store_key.starts_with("cart/") {
            api.get_cart(store_key.trim_start_matches("cart/"))
                .send()
                .await
        } else {
            api.get_session(&session).send().await
        };
        read.expect_status(200, "read after passivation");
        assert_eq!(read.json(), reply.json(), "{store_key}: same state");
        assert_eq!(read.version(), reply.version(), "{store_key}: same version");
        assert_eq!(
            read.expect_epoch(),
            reply.expect_epoch() + 1,
            "{store_key}: re-activated by a new claim"
        );
    }
    assert_eq!(worker.metric(CLAIMS).await, claims_before + 4.0);
    assert_eq!(worker.metric(ACTIVE).await, 5.0);

    let _ = stop_warm.send(());
    let hot_epochs = keep_warm.await.expect("the keep-warm reader panicked");
    assert_eq!(
        hot_epochs,
        BTreeSet::from([hot_epoch]),
        "an entity in use is never passivated (its epoch never moved)"
    );
}

both_stores!(passivation);

// ---------------------------------------------------------------------------
// 4b. Drain on SIGTERM
// ---------------------------------------------------------------------------

/// Headers and the first half of a POST /v1/cart/items body, sent on a raw
/// connection; the rest is sent later with [`finish_request`].
fn start_request(worker: &Worker, key: &str, sku: &str) -> (TcpStream, Vec<u8>) {
    let body = json!({"sku": sku, "qty": 1}).to_string().into_bytes();
    let mut stream = TcpStream::connect(worker.addr).expect("connect to the worker");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let head = format!(
        "POST /v1/cart/items HTTP/1.1\r\nhost: {}\r\nx-roost-key: {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        worker.addr,
        body.len()
    );
    let half = body.len() / 2;
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body[..half]))
        .expect("send the start of the request");
    (stream, body[half..].to_vec())
}

/// Send the rest of the body and read the whole response.
fn finish_request(mut stream: TcpStream, rest: &[u8]) -> String {
    stream.write_all(rest).expect("send the rest of the body");
    let mut response = Vec::new();
    // The worker closes the connection after answering (it is draining).
    stream
        .read_to_end(&mut response)
        .expect("read the response to the in-flight request");
    String::from_utf8(response).expect("the response is UTF-8")
}

async fn drain(store: Store) {
    // Rare flushes: at SIGTERM most changes are unflushed, and only the
    // drain can save them.
    let config = "flush_interval_ms: 1000\ndrain_timeout_ms: 10000\n";
    let mut worker = Worker::start("w1", &store, Some(config)).await;
    let keys: Vec<String> = (0..USERS)
        .map(|u| unique_key(&format!("drain-u{u}")))
        .collect();
    let inflight_key = unique_key("drain-inflight");
    let durable_key = unique_key("drain-durable");

    // A few durable writes first: each one wakes the flusher, which then
    // writes everything queued, so they must be over well before SIGTERM.
    let load = Load {
        max: 20,
        ..Load::new(Some("durable"))
    };
    let (_, durable_sent, durable_acked) = writer(
        worker.api(),
        durable_key.clone(),
        USERS,
        "durable".into(),
        load,
    )
    .await;
    assert_eq!(durable_acked.len(), 20, "durable writes before the drain");
    let writers = start_writers(&worker, &keys, 0, Load::new(Some("write-behind")));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A request in flight: its headers are in, its body is not.
    let (stream, rest) = start_request(&worker, &inflight_key, "in-flight");
    // Nothing observable says the worker has parsed those headers; give it
    // a moment (it needs well under a millisecond).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let dirty_before = worker.metric("roost_worker_dirty_entities").await;
    assert!(
        dirty_before >= 1.0,
        "changes wait for the drain's flush at SIGTERM"
    );
    worker.sigterm();
    let signalled = Instant::now();

    // Not ready any more: /readyz answers 503, or the listener is closed.
    let probe = worker.api();
    let not_ready = support::eventually(Duration::from_secs(3), "/readyz to fail", || async {
        match probe.get("/readyz").try_send().await {
            Ok(reply) if reply.status == 200 => None,
            Ok(reply) => {
                reply.expect_error(503, "draining", "/readyz while draining");
                Some("503 draining".to_string())
            }
            Err(e) if e.is_connect() => Some("connection refused".to_string()),
            Err(e) => Some(format!("error: {e}")),
        }
    })
    .await;
    assert_eq!(
        worker.poll_exit(),
        None,
        "the worker waits for the request in flight"
    );

    // Writers stop at their first refused request.
    let ledger = collect(writers).await;

    // The request in flight completes.
    let response = finish_request(stream, &rest);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the in-flight request completes: {response}"
    );
    assert!(response.contains("\"in-flight\""), "{response}");

    let status = worker.wait_exit(Duration::from_secs(10)).await;
    let drained_in = signalled.elapsed();
    assert!(
        status.success(),
        "a drain that flushed everything exits 0: {status}; log:\n{}",
        worker.log_tail(20)
    );
    let log = worker.log();
    assert!(log.contains("roost-worker stopped"), "log:\n{log}");
    assert!(!log.contains("drain timed out"), "log:\n{log}");

    // Everything acknowledged is in the store.
    worker.restart().await;
    let empty = vec![BTreeSet::new(); USERS];
    let check = check_round(&worker, &store, &keys, &empty, &ledger).await;
    assert!(check.acked >= 50, "the writers got work done");
    assert!(
        check.lost.is_empty(),
        "a drain loses nothing acknowledged, write-behind included; lost: {:?}",
        check.lost
    );
    let api = worker.api();
    let (items, _) = cart_of(&api.get_cart(&inflight_key).send().await.json());
    assert_eq!(items, BTreeMap::from([("in-flight".into(), 1)]));
    let durable_read = api.get_cart(&durable_key).send().await;
    let (items, _) = cart_of(&durable_read.json());
    let items: BTreeSet<String> = items.into_keys().collect();
    for ack in &durable_acked {
        assert!(
            items.contains(&ack.sku),
            "durable {} survived the drain",
            ack.sku
        );
    }
    assert!(items.is_subset(&durable_sent));
    eprintln!(
        "drain ({}): {} write-behind + {} durable acknowledged, 0 lost; {dirty_before} dirty \
         entities at SIGTERM; not ready: {not_ready}; exited 0 {drained_in:?} after SIGTERM",
        store.url(),
        check.acked,
        durable_acked.len(),
    );
}

both_stores!(drain);

// ---------------------------------------------------------------------------
// 4c. Drain with a batch in flight
// ---------------------------------------------------------------------------

/// The drain must not report success while a batch the flusher task already
/// took is still being written. Here the batch waits for a lock the test
/// holds on the store (as another worker sharing an SQLite file holds its
/// write lock during a long flush); the drain timeout is longer than the
/// hold, so the worker must stay until the batch commits and then exit 0
/// with the write stored (or, if it gives up, exit non-zero).
async fn drain_waits_for_the_batch_in_flight(store: Store) {
    let config = "flush_interval_ms: 50\ndrain_timeout_ms: 8000\n";
    let mut worker = Worker::start("w1", &store, Some(config)).await;
    let api = worker.api();
    let key = unique_key("drain-in-flight-batch");
    let store_key = format!("cart/{key}");
    api.add_item(&key, "stored", 1)
        .durability("durable")
        .send()
        .await
        .expect_status(200, "a first durable add");

    let lock = store.lock_row(&store_key).await;
    let late = api.add_item(&key, "acknowledged", 1).send().await;
    late.expect_status(200, "a write-behind add, acknowledged");
    // The flusher takes it within one interval, and its batch then waits
    // for the lock.
    worker
        .wait_metric(
            "roost_worker_dirty_entities",
            "to be taken by a batch",
            |v| v == 0.0,
        )
        .await;
    tokio::time::sleep(FLUSH_INTERVAL * 2).await;

    worker.sigterm();
    let hold = Duration::from_secs(3);
    let signalled = Instant::now();
    let mut early = None;
    while signalled.elapsed() < hold {
        if !worker.is_running() {
            break;
        }
        if let Some(status) = worker.poll_exit() {
            early = Some((status, signalled.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored_at_exit = store.peek(&store_key).await.map(|row| row.version);
    lock.release().await;
    if let Some((status, after)) = early {
        assert!(
            !status.success(),
            "the worker exited 0 {after:?} after SIGTERM while its batch holding an \
             acknowledged write was still waiting for the store (stored version at exit: \
             {stored_at_exit:?}, acknowledged: {:?}); log:\n{}",
            late.version(),
            worker.log_tail(10)
        );
    }
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    if status.success() {
        worker.restart().await;
        let (items, _) = cart_of(&worker.api().get_cart(&key).send().await.json());
        assert!(
            items.contains_key("acknowledged"),
            "the drain exited 0, so the acknowledged write is stored"
        );
    }
}

both_stores!(drain_waits_for_the_batch_in_flight);

// ---------------------------------------------------------------------------
// 5. The output gate
// ---------------------------------------------------------------------------

/// How long a held reply is watched to make sure it stays held.
const HELD: Duration = Duration::from_millis(400);

/// A worker (of `config`), and a fresh user whose cart has one durably
/// stored line (`first`, version 1). Returns the worker, the user key and
/// the store key.
async fn worker_with_a_stored_cart(
    store: &Store,
    label: &str,
    config: Option<&str>,
) -> (Worker, String, String) {
    let worker = Worker::start("w1", store, config).await;
    let key = unique_key(label);
    worker
        .api()
        .add_item(&key, "first", 1)
        .durability("durable")
        .send()
        .await
        .expect_status(200, "a first durable add");
    let store_key = format!("cart/{key}");
    (worker, key, store_key)
}

/// Requests sent while a durable change waits at the store.
struct Held {
    durable: tokio::task::JoinHandle<support::Reply>,
    behind: tokio::task::JoinHandle<support::Reply>,
    read: tokio::task::JoinHandle<support::Reply>,
}

impl Held {
    /// A durable add (its flush then waits for the lock the caller holds on
    /// the row), then a write-behind add from a second device and a read
    /// from a third; returns after watching them for [`HELD`].
    async fn send(api: &Api, key: &str) -> Held {
        let durable = tokio::spawn(api.add_item(key, "durable", 1).durability("durable").send());
        tokio::time::sleep(FLUSH_INTERVAL).await;
        let behind = tokio::spawn(
            api.add_item(key, "behind", 1)
                .durability("write-behind")
                .send(),
        );
        let read = tokio::spawn(api.get_cart(key).send());
        tokio::time::sleep(HELD).await;
        Held {
            durable,
            behind,
            read,
        }
    }

    async fn replies(self) -> [support::Reply; 3] {
        [
            self.durable.await.expect("durable add task"),
            self.behind.await.expect("write-behind add task"),
            self.read.await.expect("read task"),
        ]
    }
}

/// A durable change waits at the store (the test holds the row's lock);
/// meanwhile a second device's write-behind change and a third device's
/// read are applied after it but must not be answered before it commits,
/// since both would reveal it. Once the lock goes, all three answer 200, in
/// version order.
async fn gate_holds_replies_that_depend_on_a_durable_change(store: Store) {
    let (worker, key, store_key) = worker_with_a_stored_cart(&store, "gate-holds", None).await;
    let lock = store.lock_row(&store_key).await;
    let held = Held::send(&worker.api(), &key).await;
    for (what, task) in [
        ("durable add", &held.durable),
        ("write-behind add", &held.behind),
        ("read", &held.read),
    ] {
        assert!(
            !task.is_finished(),
            "the {what} was answered while the durable change it follows had not committed"
        );
    }
    lock.release().await;

    let [durable, behind, read] = held.replies().await;
    durable.expect_status(200, "the durable add, once committed");
    behind.expect_status(200, "the write-behind add behind it");
    read.expect_status(200, "the read behind it");
    assert_eq!(durable.expect_version(), 2, "the durable add is version 2");
    assert_eq!(
        behind.expect_version(),
        3,
        "the write-behind add follows it"
    );
    let (items, _) = cart_of(&read.json());
    assert!(
        items.contains_key("durable"),
        "the held read saw the durable add: {items:?}"
    );
    store.wait_version(&store_key, 3).await;
}

both_stores!(gate_holds_replies_that_depend_on_a_durable_change);

/// A durable change whose flush fails: its reply is 503, and so is every
/// reply that depended on it (a second device's change applied on top, a
/// read). The entity goes back to its state before the failed change, which
/// keeps a write-behind change acknowledged before it, and that state is
/// what the store ends up with.
async fn failed_durable_write_is_undone_with_what_depended_on_it(store: Store) {
    let (worker, key, store_key) = worker_with_a_stored_cart(&store, "gate-fails", None).await;
    let api = worker.api();
    let fault = store.fail_updates_of(&store_key).await;
    api.add_item(&key, "acknowledged", 1)
        .durability("write-behind")
        .send()
        .await
        .expect_status(200, "a write-behind add, acknowledged at once");
    let lock = store.lock_row(&store_key).await;
    let held = Held::send(&api, &key).await;
    lock.release().await;

    let [durable, behind, read] = held.replies().await;
    durable.expect_error(
        503,
        "store_unavailable",
        "the durable add whose flush failed",
    );
    behind.expect_error(503, "store_unavailable", "a change applied on top of it");
    read.expect_error(503, "store_unavailable", "a read that saw it");

    let (items, _) = cart_of(&api.get_cart(&key).send().await.json());
    let expected: BTreeMap<String, u64> =
        [("acknowledged".to_string(), 1), ("first".to_string(), 1)]
            .into_iter()
            .collect();
    assert_eq!(items, expected, "the cart after the failure, in memory");
    fault.clear().await;
    let stored = store.wait_version(&store_key, 2).await;
    assert_eq!(
        stored.entity_state()["items"],
        json!({"acknowledged": 1, "first": 1}),
        "the store holds the state before the failed change"
    );
    let after = api
        .add_item(&key, "after", 1)
        .durability("durable")
        .send()
        .await;
    after.expect_status(200, "a durable add once the store works again");
    assert_eq!(
        after.expect_version(),
        3,
        "versions go on from the kept state"
    );
    assert!(worker.metric("roost_worker_flush_failures_total").await >= 1.0);
}

both_stores!(failed_durable_write_is_undone_with_what_depended_on_it);

// ---------------------------------------------------------------------------
// 6. The state size cap
// ---------------------------------------------------------------------------

/// Small, so a few PATCHes reach it.
const MAX_STATE: usize = 2048;

/// A session grown by durable PATCHes stops at `max_state_bytes`: the PATCH
/// that would pass it gets 413 and is applied neither in memory nor in the
/// store, everything acknowledged before it stays (across a kill -9), and
/// a PATCH that shrinks the session still goes through.
async fn a_session_stops_growing_at_the_cap(store: Store) {
    let config = format!("max_state_bytes: {MAX_STATE}\nflush_interval_ms: 50\n");
    let mut worker = Worker::start("w1", &store, Some(&config)).await;
    let api = worker.api();
    let key = unique_key("cap");
    let mut document = serde_json::Map::new();
    let mut accepted = 0;
    for note in 0.. {
        assert!(note < 100, "the session never reached the cap");
        let (field, text) = (format!("note-{note}"), "x".repeat(100));
        let reply = api
            .patch_session(&key, &json!({ field.as_str(): text }))
            .durability("durable")
            .send()
            .await;
        if reply.status == 413 {
            reply.expect_error(413, "state_too_large", "the PATCH past the cap");
            assert_eq!(reply.expect_version(), accepted, "no version for it");
            break;
        }
        reply.expect_status(200, &format!("PATCH {note}"));
        document.insert(field, json!(text));
        accepted = reply.expect_version();
    }
    let document = Value::Object(document);
    eprintln!("{accepted} PATCHes accepted before the cap");
    let read = api.get_session(&key).send().await;
    assert_eq!(
        (read.json(), read.expect_version()),
        (document.clone(), accepted),
        "GET: the last accepted document"
    );
    // Long enough for a flush of the refused change, had there been one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill9();
    let row = store
        .peek(&format!("session/{key}"))
        .await
        .expect("the session is stored");
    assert_eq!(
        (row.entity_state(), row.version),
        (document.clone(), i64::try_from(accepted).expect("fits")),
        "the store: the last acknowledged state"
    );
    worker.restart().await;
    let api = worker.api();
    let read = api.get_session(&key).send().await;
    assert_eq!(
        (read.json(), read.expect_version()),
        (document, accepted),
        "after kill -9: the last acknowledged state"
    );
    let shrunk = api
        .patch_session(&key, &json!({"note-0": null}))
        .send()
        .await;
    shrunk.expect_status(200, "a PATCH that shrinks the session");
    assert_eq!(shrunk.expect_version(), accepted + 1);
}

both_stores!(a_session_stops_growing_at_the_cap);

// ---------------------------------------------------------------------------
// 7. Pipelined flush batches
// ---------------------------------------------------------------------------

/// Two batches in flight at once, lingering when busy: the settings this
/// section tests (also the defaults).
const PIPELINED: &str = "flush_interval_ms: 50\nflush_pipeline: 2\nflush_linger_us: 2000\n";
const PIPELINED_USERS: usize = 12;
const PIPELINED_WRITERS: usize = 2;
const PIPELINED_WRITES: usize = 8;

/// One writer's durable adds (`{name}n{n}`), each checked in the store as
/// soon as it is acknowledged: the stored version must already be at least
/// the reply's. Returns `(user, sku, version)` per acknowledged add.
async fn committed_writer(
    api: Api,
    store: Store,
    user: usize,
    key: String,
    name: String,
) -> Vec<(usize, String, u64)> {
    let mut acked = Vec::new();
    for n in 0..PIPELINED_WRITES {
        let sku = format!("{name}n{n}");
        let reply = api
            .add_item(&key, &sku, 1)
            .durability("durable")
            .send()
            .await;
        reply.expect_status(200, &format!("durable add {sku}"));
        let version = reply.expect_version();
        let stored = store
            .peek(&format!("cart/{key}"))
            .await
            .map_or(0, |row| row.version);
        assert!(
            stored >= i64::try_from(version).expect("fits"),
            "{sku} was acknowledged at version {version} while the store held version {stored}"
        );
        acked.push((user, sku, version));
    }
    acked
}

/// Many entities' durable writes at once, two writers per entity, with two
/// batches in flight: each reply comes only once its change is in the
/// store, no acknowledged change is lost, and each entity's successive
/// changes are written in order (the stored row is the last acknowledged
/// version and holds exactly the acknowledged adds).
async fn pipelined_durable_writes_are_committed_before_their_replies(store: Store) {
    let worker = Worker::start("w1", &store, Some(PIPELINED)).await;
    let keys: Vec<String> = (0..PIPELINED_USERS)
        .map(|u| unique_key(&format!("pipelined-u{u}")))
        .collect();
    let mut writers = JoinSet::new();
    for (user, key) in keys.iter().enumerate() {
        for w in 0..PIPELINED_WRITERS {
            let name = format!("u{user}w{w}");
            let writer = committed_writer(worker.api(), store.clone(), user, key.clone(), name);
            writers.spawn(writer);
        }
    }
    let mut acked = Vec::new();
    while let Some(done) = writers.join_next().await {
        acked.extend(done.expect("a writer panicked"));
    }
    assert_eq!(
        acked.len(),
        PIPELINED_USERS * PIPELINED_WRITERS * PIPELINED_WRITES
    );

    for (user, key) in keys.iter().enumerate() {
        let mine: Vec<&(usize, String, u64)> = acked.iter().filter(|a| a.0 == user).collect();
        let last = mine.iter().map(|a| a.2).max().expect("acknowledged adds");
        let row = store
            .peek(&format!("cart/{key}"))
            .await
            .expect("the cart is stored");
        assert_eq!(
            row.version,
            i64::try_from(last).expect("fits"),
            "user {user}: the stored version is the last acknowledged one"
        );
        let state = row.entity_state();
        let stored: BTreeSet<String> = state["items"]
            .as_object()
            .unwrap_or_else(|| panic!("user {user}: stored items: {state}"))
            .keys()
            .cloned()
            .collect();
        let expected: BTreeSet<String> = mine.iter().map(|a| a.1.clone()).collect();
        assert_eq!(
            stored, expected,
            "user {user}: every acknowledged add, nothing else"
        );
    }
    let batches = worker.metric("roost_worker_flush_batch_rows_count").await;
    let rows = worker.metric("roost_worker_flush_batch_rows_sum").await;
    eprintln!(
        "{} durable adds in {batches} batches ({:.1} rows each)",
        acked.len(),
        rows / batches
    );
}

both_stores!(pipelined_durable_writes_are_committed_before_their_replies);

/// A batch stuck at the store (the test holds its row's lock) holds up only
/// its own entity: with two batches in flight allowed, other entities'
/// durable writes are acknowledged meanwhile, one by one, in batches of
/// their own; a second durable write to the stuck entity stays out of
/// them (an entity is never in two batches in flight) and is acknowledged
/// after the first, in order. Postgres only: SQLite's lock is the whole
/// file's.
async fn a_stuck_batch_holds_up_only_its_own_entity(store: Store) {
    let (worker, key, store_key) =
        worker_with_a_stored_cart(&store, "stuck", Some(PIPELINED)).await;
    let api = worker.api();
    let in_flight = "roost_worker_flush_batches_in_flight";
    let others: Vec<String> = (0..4).map(|u| unique_key(&format!("free-u{u}"))).collect();
    for other in &others {
        api.get_cart(other).send().await.expect_status(200, "claim");
    }

    let lock = store.lock_row(&store_key).await;
    let stuck = tokio::spawn(api.add_item(&key, "stuck", 1).durability("durable").send());
    worker.wait_metric(in_flight, "to be 1", |v| v == 1.0).await;
    let behind = tokio::spawn(api.add_item(&key, "behind", 1).durability("durable").send());
    tokio::time::sleep(FLUSH_INTERVAL * 2).await;
    for (n, other) in others.iter().enumerate() {
        let reply = api
            .add_item(other, "free", 1)
            .durability("durable")
            .send()
            .await;
        reply.expect_status(
            200,
            &format!("entity {n}'s durable add, beside the stuck batch"),
        );
        store.wait_version(&format!("cart/{other}"), 1).await;
    }
    assert_eq!(
        worker.metric(in_flight).await,
        1.0,
        "only the stuck batch is in flight: the second write to its entity is in none"
    );
    assert!(
        !stuck.is_finished() && !behind.is_finished(),
        "the stuck entity's durable adds were answered before their batch committed"
    );
    lock.release().await;

    let stuck = stuck.await.expect("the stuck add");
    let behind = behind.await.expect("the add behind it");
    stuck.expect_status(200, "the stuck add, once committed");
    behind.expect_status(200, "the add behind it, once committed");
    assert_eq!((stuck.expect_version(), behind.expect_version()), (2, 3));
    let row = store.wait_version(&store_key, 3).await;
    assert_eq!(
        row.entity_state()["items"],
        json!({"first": 1, "stuck": 1, "behind": 1}),
        "the stored row is the last acknowledged state"
    );
}

#[test]
fn a_stuck_batch_holds_up_only_its_own_entity_postgres() {
    support::run_on(
        support::StoreKind::Postgres,
        a_stuck_batch_holds_up_only_its_own_entity,
    );
}

/// A linger far longer than a commit, to tell one from the other.
const LONG_LINGER: Duration = Duration::from_millis(40);

/// A client whose durable writes follow one another always finds the
/// flusher idle: none of its writes waits for the linger, however long.
async fn durable_writes_one_after_another_do_not_linger(store: Store) {
    let config = format!(
        "flush_interval_ms: 50\nflush_linger_us: {}\n",
        LONG_LINGER.as_micros()
    );
    let worker = Worker::start("w1", &store, Some(&config)).await;
    let api = worker.api();
    let key = unique_key("one-after-another");
    api.get_cart(&key).send().await.expect_status(200, "claim");
    let mut took = Vec::new();
    for n in 0..5 {
        let sent = Instant::now();
        let reply = api
            .add_item(&key, &format!("s{n}"), 1)
            .durability("durable")
            .send()
            .await;
        reply.expect_status(200, &format!("durable add {n}"));
        took.push(sent.elapsed());
    }
    took.sort();
    assert!(
        took[took.len() / 2] < LONG_LINGER,
        "durable writes on an idle flusher waited for the linger: {took:?}"
    );
}

both_stores!(durable_writes_one_after_another_do_not_linger);
