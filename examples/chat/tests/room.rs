//! The chat example through the proxy, on three `roost-chat` workers and
//! Postgres: a room's behaviour, its member cap under 200 concurrent
//! joins, two devices racing on one room, durable posts across a kill -9
//! of the room's owner (ledger check), and the idle alarm: firing for a
//! passivated room, once on the next owner after a kill -9, and across a
//! rolling restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use roost_testkit::app::{Answer, AppFleet};
use roost_testkit::fleet::LEASE_MS;
use serde_json::{json, Value};

/// The proxy routes every room by its path.
const KEYS: &str = "[{path: \"/v1/{kind}/{key}\", kinds: [room]}]";
/// A room closes after this long without a change.
const IDLE_CLOSE_MS: u64 = 3_000;

/// Durable rooms, passivated after 300 ms idle, alarms polled every 100 ms.
fn worker_yaml() -> String {
    format!(
        "kinds: {{room: {{durability: durable, settings: {{max_members: 50, \
         idle_close_ms: {IDLE_CLOSE_MS}, history: 1000}}}}}}\n\
         idle_ms: 300\nalarm_poll_ms: 100\ndrain_delay_ms: 200\n"
    )
}

async fn chat() -> AppFleet {
    AppFleet::start("roost-chat", &worker_yaml(), KEYS).await
}

fn member(name: &str) -> Value {
    json!({ "member": name })
}

/// The room's `closed.by` alarm and when it closed, once it is closed.
fn closing(room: &Answer) -> Option<(u64, u64)> {
    let closed = &room.body["closed"];
    let due = closed["by"].as_str()?.strip_prefix("idle@")?.parse().ok()?;
    Some((due, closed["at_ms"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_serves_many_members_one_request_at_a_time() {
    let app = chat().await;
    behaviour(&app).await;
    the_cap_holds_under_200_joining_at_once(&app).await;
    two_devices_posting_at_once_get_one_order(&app).await;
    a_passivated_room_closes_by_its_alarm(&app).await;
}

/// Join, post, read, leave; refusals are JSON.
async fn behaviour(app: &AppFleet) {
    let joined = app.post("/v1/room/lobby/join", &member("ann")).await;
    assert_eq!(joined.status, 200, "{joined:?}");
    let posted = app
        .post(
            "/v1/room/lobby/post",
            &json!({"member": "ann", "text": "hi"}),
        )
        .await;
    assert_eq!((posted.status, posted.body["seq"].as_u64()), (201, Some(1)));
    let stranger = app
        .post(
            "/v1/room/lobby/post",
            &json!({"member": "bob", "text": "hey"}),
        )
        .await;
    assert_eq!(
        (stranger.status, stranger.error()),
        (403, Some("not_a_member"))
    );
    let room = app.get("/v1/room/lobby").await;
    assert_eq!(room.body["members"], json!(["ann"]));
    assert_eq!(room.body["posts"][0]["text"], "hi");
    let unknown = app.post("/v1/room/lobby/shout", &member("ann")).await;
    assert_eq!((unknown.status, unknown.error()), (404, Some("not_found")));
    let untyped = app.post("/v1/room/lobby/join", &json!({"member": 7})).await;
    assert_eq!(untyped.status, 400, "{untyped:?}");
    assert!(
        untyped.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("member: ")),
        "the 400 names the field: {untyped:?}"
    );
    let left = app.post("/v1/room/lobby/leave", &member("ann")).await;
    assert_eq!((left.status, &left.body["members"]), (200, &json!([])));
}

async fn the_cap_holds_under_200_joining_at_once(app: &AppFleet) {
    let bodies: Vec<Value> = (0..200).map(|i| member(&format!("m{i}"))).collect();
    let joins = bodies
        .iter()
        .map(|body| app.post("/v1/room/big/join", body));
    let answers = join_all(joins).await;
    let admitted = answers.iter().filter(|a| a.status == 200).count();
    let full = answers
        .iter()
        .filter(|a| a.status == 409 && a.error() == Some("room_full"))
        .count();
    assert_eq!((admitted, full), (50, 150));
    let big = app.get("/v1/room/big").await;
    assert_eq!(big.body["members"].as_array().map(Vec::len), Some(50));
}

/// Two devices of one member post at once: one order, nothing lost.
async fn two_devices_posting_at_once_get_one_order(app: &AppFleet) {
    app.post("/v1/room/race/join", &member("ann")).await;
    let device = |name: &'static str| async move {
        let mut seqs = Vec::new();
        for i in 0..50 {
            let text = format!("{name}-{i}");
            let body = json!({"member": "ann", "text": text});
            let answer = app.post("/v1/room/race/post", &body).await;
            assert_eq!(answer.status, 201, "{answer:?}");
            seqs.push(answer.body["seq"].as_u64().unwrap_or_default());
        }
        seqs
    };
    let (phone, laptop) = tokio::join!(device("phone"), device("laptop"));
    let mut all: Vec<u64> = phone.iter().chain(&laptop).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<_>>(), "one sequence, no gaps");
    assert!(
        phone.windows(2).all(|w| w[0] < w[1]),
        "a device's posts keep their order"
    );
    let race = app.get("/v1/room/race").await;
    let texts: Vec<&str> = race.body["posts"]
        .as_array()
        .map(|posts| posts.iter().filter_map(|p| p["text"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(texts.len(), 100);
}

/// A quiet room is passivated (idle_ms 300) long before its idle alarm is
/// due; the alarm still wakes it and closes it.
async fn a_passivated_room_closes_by_its_alarm(app: &AppFleet) {
    app.post("/v1/room/quiet/join", &member("ann")).await;
    tokio::time::sleep(Duration::from_millis(IDLE_CLOSE_MS + 1_000)).await;
    let quiet = app
        .wait_until("/v1/room/quiet", Duration::from_secs(5), |a| {
            closing(a).is_some()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (due, at) = closing(&quiet).unwrap_or_default();
    assert!(at >= due, "closed at {at}, due {due}");
    let late = app.post("/v1/room/quiet/join", &member("bob")).await;
    assert_eq!((late.status, late.error()), (409, Some("room_closed")));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loses_no_acknowledged_post_and_the_next_owner_fires_the_alarm_once() {
    let mut app = chat().await;
    an_alarm_fires_on_the_next_owner_after_kill_9(&mut app).await;
    durable_posts_survive_kill_9_of_the_owner(&app).await;
}

/// An alarm set just before its worker dies fires on the next owner, once,
/// within lease_ms + 1 s of its time.
async fn an_alarm_fires_on_the_next_owner_after_kill_9(app: &mut AppFleet) {
    app.post("/v1/room/timer/join", &member("ann")).await;
    let owner = app.fleet.route("room:timer").await.expect("route").owner;
    let owner = owner.expect("the room has an owner");
    app.fleet.kill9(&owner).expect("kill -9");
    let within = Duration::from_millis(IDLE_CLOSE_MS + LEASE_MS + 5_000);
    let timer = app
        .wait_until("/v1/room/timer", within, |a| closing(a).is_some())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (due, at) = closing(&timer).unwrap_or_default();
    assert!(
        at >= due && at - due <= LEASE_MS + 1_000,
        "fired {} ms after its time",
        at.saturating_sub(due)
    );
}

/// Durable posts from four members while the room's owner is killed:
/// every acknowledged post is there afterwards.
async fn durable_posts_survive_kill_9_of_the_owner(app: &AppFleet) {
    for name in ["a", "b", "c", "d"] {
        let joined = app.post("/v1/room/ledger/join", &member(name)).await;
        assert_eq!(joined.status, 200, "{joined:?}");
    }
    let started = Instant::now();
    let app_ref = app;
    let poster = |name: &'static str| async move {
        let mut acked = BTreeMap::new();
        for i in 0..40 {
            let text = format!("{name}-{i}");
            let key = format!("post-{name}-{i}");
            let body = json!({"member": name, "text": text});
            let answer = post_until_acked(app_ref, &body, &key).await;
            acked.insert(answer.body["seq"].as_u64().unwrap_or_default(), text);
        }
        acked
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let route = app_ref.fleet.route("room:ledger").await.expect("route");
        let victim = route.owner.expect("the room has an owner");
        app_ref.fleet.kill9_now(&victim).expect("kill -9");
    };
    let (a, b, c, d, ()) = tokio::join!(poster("a"), poster("b"), poster("c"), poster("d"), killer);
    assert!(started.elapsed() < Duration::from_secs(60));
    let ledger: BTreeMap<u64, String> = [a, b, c, d].into_iter().flatten().collect();
    assert_eq!(ledger.len(), 160, "every post has its own number");
    let room = app.get("/v1/room/ledger").await;
    let stored: BTreeMap<u64, String> = room.body["posts"]
        .as_array()
        .map(|posts| {
            posts
                .iter()
                .filter_map(|p| Some((p["seq"].as_u64()?, p["text"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    for (seq, text) in &ledger {
        assert_eq!(
            stored.get(seq),
            Some(text),
            "acknowledged post {seq} is kept"
        );
    }
}

/// POST a post until it is acknowledged (retrying with the same
/// `Idempotency-Key` while a worker dies and another takes the room over).
async fn post_until_acked(app: &AppFleet, body: &Value, key: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let headers = [("idempotency-key", key)];
        let sent = app
            .try_send(Method::POST, "/v1/room/ledger/post", Some(body), &headers)
            .await;
        match sent {
            Ok(answer) if answer.status == 201 => return answer,
            Ok(answer) if answer.status < 500 => panic!("{key} refused: {answer:?}"),
            _ if Instant::now() > deadline => panic!("{key} never acknowledged: {sent:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_survives_a_rolling_restart() {
    let mut app = chat().await;
    app.post("/v1/room/rolling/join", &member("ann")).await;
    for id in app.fleet.ids() {
        let status = app
            .fleet
            .terminate(&id, Duration::from_secs(15))
            .await
            .expect("drain");
        assert!(status.success(), "{id} drained: {status}");
        app.fleet.start_worker(&id).await.expect("restart");
        app.fleet.wait_proxy_sees(&id, true).await.expect("healthy");
    }
    let rolling = app
        .wait_until("/v1/room/rolling", Duration::from_secs(15), |a| {
            closing(a).is_some()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (due, at) = closing(&rolling).unwrap_or_default();
    assert!(at >= due, "closed at {at}, due {due}");
}
