//! Ownership between live workers, each against SQLite and Postgres: the
//! lease, claim and hand-over protocol of DESIGN.md ("Ownership").
//!
//! - a live owner hands an entity over on request: it flushes what it has
//!   not written yet, forgets the entity and releases it;
//! - a crashed (kill -9) owner's entities are claimed at once, without
//!   waiting for its lease, because its liveness lock is free;
//! - a drained (SIGTERM) owner releases everything, so the next worker
//!   claims at once too;
//! - a frozen owner keeps its lock: past `handoff_timeout_ms` a claim gives
//!   up with 503 `handoff_timeout` and Retry-After.
//!
//! - workers started at the same moment on a new SQLite file all join
//!   (SQLite only: the file's setup is what they race on); one that cannot
//!   open its store says why and exits non-zero.
//!
//! The frozen owner whose lease runs out (and its fenced write) is in
//! `races.rs` (`fencing`).

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::{cart_of, unique_key, Store, StoreKind, Worker};

const ACTIVE: &str = "roost_worker_active_entities";
const HANDOVERS: &str = "roost_worker_handovers_total";

/// A long lease, so a claim that waited for it would stand out, and a flush
/// interval long enough that A's write-behind change is still unwritten
/// when B asks for the entity.
const SLOW_FLUSH_LONG_LEASE: &str =
    "flush_interval_ms: 5000\nlease_ms: 10000\nheartbeat_ms: 1000\nhandoff_timeout_ms: 12000\n";

/// Far under the lease: a claim that took this long did not wait for it.
const NO_LEASE_WAIT: Duration = Duration::from_millis(2000);

/// Two workers on `store`; A holds a fresh user's cart with one durable
/// line and one write-behind line it has not flushed yet.
async fn a_holds_an_unflushed_cart(store: &Store, label: &str) -> (Worker, Worker, String) {
    let a = Worker::start("wa", store, Some(SLOW_FLUSH_LONG_LEASE)).await;
    let b = Worker::start("wb", store, Some(SLOW_FLUSH_LONG_LEASE)).await;
    let key = unique_key(label);
    let api = a.api();
    api.add_item(&key, "durable", 1)
        .durability("durable")
        .send()
        .await
        .expect_status(200, "A's durable add");
    api.add_item(&key, "unflushed", 1)
        .durability("write-behind")
        .send()
        .await
        .expect_status(200, "A's write-behind add");
    (a, b, key)
}

/// B's first read of `key` sees both of A's lines, comes from B under a
/// newer epoch, and did not wait for A's lease.
async fn b_takes_over(b: &Worker, key: &str, what: &str) {
    let asked = Instant::now();
    let read = b.api().get_cart(key).send().await;
    let waited = asked.elapsed();
    read.expect_status(200, what);
    assert_eq!(read.worker(), Some("wb"));
    let (items, _) = cart_of(&read.json());
    assert_eq!(
        items.keys().map(String::as_str).collect::<Vec<_>>(),
        ["durable", "unflushed"],
        "{what}: B sees every change A acknowledged"
    );
    assert!(
        waited < NO_LEASE_WAIT,
        "{what}: B waited {waited:?}, as if for A's lease"
    );
    eprintln!("{what}: B served the user after {waited:?}");
}

async fn live_owner_hands_over(store: Store) {
    let (a, b, key) = a_holds_an_unflushed_cart(&store, "handover").await;
    b_takes_over(&b, &key, "hand-over from a live owner").await;
    assert_eq!(a.metric(HANDOVERS).await, 1.0, "A handed one entity over");
    assert_eq!(a.metric(ACTIVE).await, 0.0, "A forgot it");
    let row = store
        .peek(&format!("cart/{key}"))
        .await
        .expect("the cart is stored");
    assert_eq!(row.owner, "wb", "B owns it now");
}

both_stores!(live_owner_hands_over);

async fn crashed_owner_is_claimed_at_once(store: Store) {
    let (mut a, b, key) = a_holds_an_unflushed_cart(&store, "crash").await;
    a.kill9();
    let asked = Instant::now();
    let read = b.api().get_cart(&key).send().await;
    let waited = asked.elapsed();
    read.expect_status(200, "B after A's kill -9");
    // The write-behind line died with A: B starts from A's last flush.
    let (items, _) = cart_of(&read.json());
    assert_eq!(
        items.keys().map(String::as_str).collect::<Vec<_>>(),
        ["durable"],
        "B starts from A's last flush"
    );
    assert!(
        waited < NO_LEASE_WAIT,
        "B waited {waited:?} for a crashed owner (lease 10 s)"
    );
    eprintln!("crash: B served the user after {waited:?}");
}

both_stores!(crashed_owner_is_claimed_at_once);

async fn drained_owner_releases_everything(store: Store) {
    let (mut a, b, key) = a_holds_an_unflushed_cart(&store, "drain").await;
    a.sigterm();
    assert!(
        a.wait_exit(Duration::from_secs(10)).await.success(),
        "A drains and exits 0"
    );
    let row = store
        .peek(&format!("cart/{key}"))
        .await
        .expect("the cart is stored");
    assert_eq!(row.owner, "", "A released the cart on its way out");
    b_takes_over(&b, &key, "claim after A's drain").await;
}

both_stores!(drained_owner_releases_everything);

async fn frozen_owner_makes_claims_time_out(store: Store) {
    let config =
        "lease_ms: 10000\nheartbeat_ms: 1000\nhandoff_timeout_ms: 300\ncall_timeout_ms: 200\n";
    let a = Worker::start("wa", &store, Some(config)).await;
    let b = Worker::start("wb", &store, Some(config)).await;
    let key = unique_key("frozen");
    a.api()
        .add_item(&key, "held", 1)
        .durability("durable")
        .send()
        .await
        .expect_status(200, "A's add");
    a.sigstop();
    let asked = Instant::now();
    let refused = b.api().get_cart(&key).send().await;
    let waited = asked.elapsed();
    a.sigcont();
    refused.expect_error(503, "handoff_timeout", "B while A is frozen");
    assert_eq!(refused.header("retry-after"), Some("1"), "Retry-After");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "B gave up after {waited:?} (handoff_timeout_ms 300)"
    );
    // Awake again, A answers the hand-over B asks for.
    let read = b.api().get_cart(&key).send().await;
    read.expect_status(200, "B once A is awake");
    assert_eq!(cart_of(&read.json()).0.len(), 1);
}

both_stores!(frozen_owner_makes_claims_time_out);

/// Rounds of [`workers_starting_together_on_a_new_sqlite_file_all_join`],
/// and workers per round.
const START_ROUNDS: usize = 10;
const STARTING_TOGETHER: usize = 5;

/// Five workers started at the same moment on a new SQLite file, ten times:
/// every one becomes ready. They race to create the file, switch it to WAL
/// and create the schema; none may give up on `database is locked`.
#[test]
fn workers_starting_together_on_a_new_sqlite_file_all_join() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let Store::Sqlite(first) = &store else {
            unreachable!("run_on(Sqlite) gives an SQLite store");
        };
        for round in 0..START_ROUNDS {
            let fresh = Store::Sqlite(first.with_file_name(format!("round-{round}.db")));
            let mut workers: Vec<Worker> = (0..STARTING_TOGETHER)
                .map(|i| Worker::launch(&format!("w{i}"), &fresh, None))
                .collect();
            for worker in &mut workers {
                worker.wait_ready().await;
            }
            eprintln!("round {round}: {STARTING_TOGETHER} workers ready");
        }
    });
}

/// A worker that cannot open its store says why and exits non-zero, at
/// once: a file that is not a database is no reason to retry.
#[test]
fn a_worker_that_cannot_open_its_store_says_why() {
    support::run_on(StoreKind::Sqlite, |store| async move {
        let Store::Sqlite(path) = &store else {
            unreachable!("run_on(Sqlite) gives an SQLite store");
        };
        std::fs::write(path, [0x5a; 4096]).expect("write a file that is not a database");
        let mut worker = Worker::launch("w1", &store, None);
        let status = worker.wait_exit(Duration::from_secs(5)).await;
        assert!(!status.success(), "the worker exits non-zero: {status}");
        let log = worker.log();
        assert!(
            log.contains("cannot open the store") && log.contains("not a database"),
            "the worker says why: {log}"
        );
    });
}
