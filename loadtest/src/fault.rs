//! Injecting each scenario's fault into the running fleet, every step noted
//! in the ledger's events (with its time) as it happens. The kill -9 and
//! rolling-restart steps are public: the ticket sale injects them too. A step that fails
//! (a worker that does not come back, a drain that does not end) does not
//! end the run: the load and the checks go on, and the problem is reported.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;

use crate::bystanders::{Bystanders, Served};
use crate::check::failover::CutWindow;
use crate::check::movement::ScaleWindow;
use crate::check::revalidation::Probed;
use crate::crash::{self, CrashProbe, CrashWindows};
use crate::ledger::Ledger;
use crate::load::user_name;
use crate::probe::{held_by, Prober};
use crate::scenario::{Plan, Scenario};
use roost_testkit::fleet::Fleet;
use roost_testkit::postgres::Cluster;

/// How long after SIGKILL the worker is started again.
const KILL9_DOWNTIME: Duration = Duration::from_secs(2);
/// How long the crash probe's users run before the kill.
const CRASH_PROBE_WARMUP: Duration = Duration::from_millis(500);
/// How long a worker stays SIGSTOPped.
pub(crate) const SIGSTOP_PAUSE: Duration = Duration::from_secs(5);
/// The longest a SIGTERMed worker may take to drain and exit.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// The window the busiest worker is picked over.
const BUSIEST_WINDOW_US: u64 = 1_000_000;
/// How long the cut keeps a worker off the store: past its lease (and past
/// the workers' `store_grace_ms`), so its users must move to other workers.
const CUT_FOR: Duration = Duration::from_secs(5);
/// How long the blip keeps a worker off the store: within its lease and the
/// workers' `store_grace_ms` (2 s by default), so it must hold its users'
/// requests and serve them after the blip.
const BLIP_FOR: Duration = Duration::from_secs(1);
/// After the heal, probe rounds of the cut worker this far apart…
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// …until the proxy sees it healthy again (then one round more); a problem
/// if that takes longer than this.
const PROBE_FOR: Duration = Duration::from_secs(10);

/// What the fault left for the checks.
#[derive(Debug, Default)]
pub struct FaultOutcome {
    /// Scale: when the new worker came and went.
    pub scale: Option<ScaleWindow>,
    /// Scale: the worker of each bystander before the new worker came, and
    /// while it served.
    pub bystanders: Option<Served>,
    /// Scale: the proxy's HRW order while the new worker served.
    pub hrw: Option<HrwView>,
    /// Cut and blip: when the cut came and went.
    pub cut: Option<CutWindow>,
    /// Kill -9: what the killed worker's users saw ([`crate::crash`]).
    pub crash: Option<CrashWindows>,
    /// Cut: what the cut worker answered from the heal on.
    pub probes: Vec<Probed>,
    /// Worker → exit status of each drain (SIGTERM).
    pub drain_exits: Vec<(String, String)>,
    /// Steps that did not go as planned.
    pub problems: Vec<String>,
}

/// Everything a fault acts on.
pub struct Target<'a> {
    pub fleet: &'a mut Fleet,
    pub cluster: &'a Cluster,
    pub ledger: &'a Ledger,
    pub plan: &'a Plan,
}

/// Run `scenario`'s fault to its end.
pub async fn inject(scenario: Scenario, target: Target<'_>) -> FaultOutcome {
    let mut outcome = FaultOutcome::default();
    let ledger = target.ledger.clone();
    let result = match scenario {
        Scenario::Kill9 => kill9(target, &mut outcome).await,
        Scenario::Sigstop => sigstop(target).await,
        Scenario::PgRestart => pg_restart(&target),
        Scenario::Rolling => rolling(target, &mut outcome).await,
        Scenario::Scale => scale(target, &mut outcome).await,
        Scenario::Cut => cut(target, &mut outcome).await,
        Scenario::Blip => blip(target, &mut outcome).await,
    };
    outcome.note(&ledger, result);
    outcome
}

impl FaultOutcome {
    /// Keep a fault step's failure as a problem (and an event).
    pub fn note(&mut self, ledger: &Ledger, result: Result<()>) {
        if let Err(e) = result {
            ledger.event(format!("fault step failed: {e:#}"));
            self.problems.push(format!("{e:#}"));
        }
    }
}

async fn kill9(target: Target<'_>, outcome: &mut FaultOutcome) -> Result<()> {
    let Target { fleet, ledger, .. } = target;
    let victim = busiest_worker(ledger, &fleet.ids());
    let probe = CrashProbe::start(fleet, &victim, ledger.clock()).await?;
    ledger.event(format!(
        "{} users of {victim} send durable writes in a closed loop",
        crash::USERS
    ));
    tokio::time::sleep(CRASH_PROBE_WARMUP).await;
    let kill_us = ledger.clock().now_us();
    let result = kill9_and_restart(fleet, ledger, &victim).await;
    outcome.crash = Some(probe.stop(kill_us).await?);
    result
}

/// SIGKILL worker `victim`, start it again [`KILL9_DOWNTIME`] later, and
/// wait until the proxy sees it healthy.
pub async fn kill9_and_restart(fleet: &mut Fleet, ledger: &Ledger, victim: &str) -> Result<()> {
    ledger.event(format!("kill -9 {victim}"));
    fleet.kill9(victim)?;
    tokio::time::sleep(KILL9_DOWNTIME).await;
    ledger.event(format!("start {victim} again"));
    fleet.start_worker(victim).await?;
    ledger.event(format!("{victim} answers /healthz"));
    fleet.wait_proxy_sees(victim, true).await?;
    ledger.event(format!("proxy sees {victim} healthy"));
    Ok(())
}

async fn sigstop(target: Target<'_>) -> Result<()> {
    let Target { fleet, ledger, .. } = target;
    let victim = busiest_worker(ledger, &fleet.ids());
    ledger.event(format!("SIGSTOP {victim}"));
    fleet.signal(&victim, Signal::SIGSTOP)?;
    tokio::time::sleep(SIGSTOP_PAUSE).await;
    ledger.event(format!("SIGCONT {victim}"));
    fleet.signal(&victim, Signal::SIGCONT)?;
    fleet.wait_proxy_sees(&victim, true).await?;
    ledger.event(format!("proxy sees {victim} healthy"));
    Ok(())
}

fn pg_restart(target: &Target<'_>) -> Result<()> {
    target.ledger.event("pg_ctl restart -m fast");
    // pg_ctl blocks about a second; let the runtime move the load's tasks.
    tokio::task::block_in_place(|| target.cluster.restart())?;
    target.ledger.event("postgres accepts connections again");
    Ok(())
}

async fn rolling(target: Target<'_>, outcome: &mut FaultOutcome) -> Result<()> {
    let Target { fleet, ledger, .. } = target;
    let order = fleet.ids();
    rolling_restart(fleet, ledger, &order, outcome).await
}

/// Drain (SIGTERM) and start again each worker of `order` in turn, each
/// once the proxy sees the one before it healthy again.
pub async fn rolling_restart(
    fleet: &mut Fleet,
    ledger: &Ledger,
    order: &[String],
    outcome: &mut FaultOutcome,
) -> Result<()> {
    for id in order {
        drain(fleet, ledger, id, outcome).await?;
        fleet.start_worker(id).await?;
        ledger.event(format!("{id} started again"));
        fleet.wait_proxy_sees(id, true).await?;
        ledger.event(format!("proxy sees {id} healthy"));
    }
    Ok(())
}

/// SIGTERM worker `id` and wait for it to drain and exit.
async fn drain(
    fleet: &mut Fleet,
    ledger: &Ledger,
    id: &str,
    outcome: &mut FaultOutcome,
) -> Result<()> {
    ledger.event(format!("SIGTERM {id}"));
    let status = fleet.terminate(id, DRAIN_TIMEOUT).await?;
    ledger.event(format!("{id} exited: {status}"));
    outcome
        .drain_exits
        .push((id.to_owned(), status.to_string()));
    if !status.success() {
        outcome
            .problems
            .push(format!("{id} did not drain cleanly: {status}"));
    }
    Ok(())
}

async fn scale(target: Target<'_>, outcome: &mut FaultOutcome) -> Result<()> {
    let Target {
        fleet,
        ledger,
        plan,
        ..
    } = target;
    let Some(new) = fleet.ids().last().cloned() else {
        anyhow::bail!("the fleet lists no worker");
    };
    let bystanders = Bystanders::new(plan.bystanders);
    ledger.event(format!(
        "{} bystanders ask for their carts",
        bystanders.len()
    ));
    let before = bystanders.touch(&fleet.proxy_url()).await?;
    let started_us = ledger.clock().now_us();
    ledger.event(format!("start {new} (scale out)"));
    fleet.start_worker(&new).await?;
    fleet.wait_proxy_sees(&new, true).await?;
    let ready_us = ledger.clock().now_us();
    ledger.event(format!("proxy sees {new} healthy"));
    let hold = tokio::time::sleep(plan.scale_hold);
    let after = bystanders.touch(&fleet.proxy_url()).await?;
    ledger.event("the bystanders asked again");
    outcome.bystanders = Some(Served { before, after });
    let users: Vec<String> = (0..plan.load.users).map(user_name).collect();
    outcome.hrw = Some(hrw_view(fleet, &users).await?);
    hold.await;
    let leaving_us = ledger.clock().now_us();
    outcome.scale = Some(ScaleWindow {
        started_us,
        ready_us,
        leaving_us,
    });
    drain(fleet, ledger, &new, outcome).await?;
    fleet.wait_proxy_sees(&new, false).await?;
    ledger.event(format!("proxy sees {new} down (scale in done)"));
    Ok(())
}

/// Cut the busiest worker off the store for [`CUT_FOR`], heal it, then
/// probe it straight until the proxy sees it healthy again.
async fn cut(target: Target<'_>, outcome: &mut FaultOutcome) -> Result<()> {
    let Target {
        fleet,
        cluster,
        ledger,
        ..
    } = target;
    let victim = busiest_worker(ledger, &fleet.ids());
    let held = held_by(ledger, &victim, ledger.clock().now_us());
    let note = format!("it held {} sessions and carts", held.len());
    let window = cut_off(fleet, ledger, &victim, CUT_FOR, &note).await?;
    outcome.cut = Some(window);
    let worker_url = fleet.worker_url(&victim)?;
    let mut prober = Prober::new(
        &worker_url,
        fleet.proxy_token(),
        held,
        &cluster.url(),
        ledger,
    )
    .await?;
    let back_us = probe_until_back(fleet, ledger, &victim, &mut prober).await;
    let rounds = prober.rounds();
    outcome.probes = prober.finish().await?;
    ledger.event(format!(
        "{rounds} probe rounds of {victim} answered ({} probes)",
        outcome.probes.len()
    ));
    if let Some(window) = outcome.cut.as_mut() {
        window.back_us = back_us?;
    }
    Ok(())
}

/// Cut the busiest worker off the store for [`BLIP_FOR`], heal it, and let
/// the load run on: what it did with its users' requests meanwhile is in
/// the ledger.
async fn blip(target: Target<'_>, outcome: &mut FaultOutcome) -> Result<()> {
    let Target { fleet, ledger, .. } = target;
    let victim = busiest_worker(ledger, &fleet.ids());
    outcome.cut = Some(
        cut_off(
            fleet,
            ledger,
            &victim,
            BLIP_FOR,
            "a blip, shorter than its lease",
        )
        .await?,
    );
    Ok(())
}

/// Cut `victim` off the store for `cut_for` (its relay stops forwarding;
/// every socket stays open), noting when the proxy stopped routing to it
/// if it did meanwhile, then heal it. `note` goes into the cut's event.
async fn cut_off(
    fleet: &mut Fleet,
    ledger: &Ledger,
    victim: &str,
    cut_for: Duration,
    note: &str,
) -> Result<CutWindow> {
    let cut_us = ledger.clock().now_us();
    fleet.cut_store(victim)?;
    let heal_at = Instant::now() + cut_for;
    ledger.event(format!(
        "cut {victim} off the store for {cut_for:?} (sockets stay open; {note})"
    ));
    let detected_us = wait_routed_away(fleet, ledger, victim, heal_at).await;
    tokio::time::sleep_until(heal_at.into()).await;
    fleet.heal_store(victim)?;
    let heal_us = ledger.clock().now_us();
    ledger.event(format!("heal: {victim} reaches the store again"));
    Ok(CutWindow {
        victim: victim.to_owned(),
        cut_us,
        detected_us,
        heal_us,
        back_us: None,
    })
}

/// Wait until the proxy no longer routes to `victim` (down, or out of its
/// live set), at most until `until`; when it happened.
async fn wait_routed_away(
    fleet: &Fleet,
    ledger: &Ledger,
    victim: &str,
    until: Instant,
) -> Option<u64> {
    match tokio::time::timeout_at(until.into(), fleet.wait_proxy_sees(victim, false)).await {
        Ok(Ok(())) => {
            ledger.event(format!("proxy sees {victim} down"));
            Some(ledger.clock().now_us())
        }
        Ok(Err(e)) => {
            ledger.event(format!("{e:#}"));
            None
        }
        Err(_) => {
            ledger.event(format!("proxy still routes to {victim} at the heal"));
            None
        }
    }
}

/// Probe rounds of `victim`, [`PROBE_EVERY`] apart, until the proxy sees it
/// healthy, then one more; when the proxy saw it healthy.
async fn probe_until_back(
    fleet: &Fleet,
    ledger: &Ledger,
    victim: &str,
    prober: &mut Prober,
) -> Result<Option<u64>> {
    let deadline = Instant::now() + PROBE_FOR;
    let mut back_us = None;
    loop {
        prober.send_round().await?;
        if back_us.is_some() {
            return Ok(back_us);
        }
        let workers = fleet.admin_workers().await.unwrap_or_default();
        if workers.iter().any(|w| w.id == victim && w.healthy) {
            ledger.event(format!("proxy sees {victim} healthy"));
            back_us = Some(ledger.clock().now_us());
        } else if Instant::now() >= deadline {
            bail!("the proxy did not see {victim} healthy within {PROBE_FOR:?} of the heal");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The worker that answered the most distinct users in the last second
/// (`w1` when nothing was answered).
fn busiest_worker(ledger: &Ledger, ids: &[String]) -> String {
    let now = ledger.clock().now_us();
    let mut users: HashMap<String, HashSet<String>> = HashMap::new();
    for record in ledger.recent(now.saturating_sub(BUSIEST_WINDOW_US)) {
        if let Some(worker) = record.worker {
            users.entry(worker).or_default().insert(record.user);
        }
    }
    ids.iter()
        .max_by_key(|id| {
            (
                users.get(*id).map_or(0, HashSet::len),
                std::cmp::Reverse(*id),
            )
        })
        .cloned()
        .unwrap_or_else(|| "w1".into())
}

/// Made-up keys the new worker's HRW share is measured over.
pub const HRW_SAMPLE_KEYS: usize = 2_000;

/// What the proxy's HRW order says about the grown fleet, read while the
/// new worker is in its live set.
#[derive(Debug)]
pub struct HrwView {
    /// User → first worker of its HRW order.
    pub users: HashMap<String, String>,
    /// How many of [`HRW_SAMPLE_KEYS`] keys each worker is first for.
    pub sample: HashMap<String, usize>,
}

async fn hrw_view(fleet: &Fleet, users: &[String]) -> Result<HrwView> {
    let samples = (0..HRW_SAMPLE_KEYS).map(|n| format!("sample-{n}"));
    let mut view = HrwView {
        users: fleet.hrw_firsts(users.iter().cloned()).await?,
        sample: HashMap::new(),
    };
    for first in fleet.hrw_firsts(samples).await?.into_values() {
        *view.sample.entry(first).or_default() += 1;
    }
    Ok(view)
}
