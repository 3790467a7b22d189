//! One scenario end to end: a throwaway store, the fleet, the load, the
//! fault in the middle, the load stopped, the final state read (through
//! the proxy and from the store), everything stopped, then the checks and
//! the files (ledger, summary, timeline) in the scenario's output dir.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::check::blip::Blip;
use crate::check::failover::{CutWindow, Failover, MoveBound, MOVE_MARGIN_MS};
use crate::check::movement::{Movement, ScaleWindow};
use crate::check::revalidation::Revalidation;
use crate::check::traffic::DuringFault;
use crate::check::Findings;
use crate::fault::{self, FaultOutcome, HrwView, Target, HRW_SAMPLE_KEYS};
use crate::ledger::{write_jsonl, Clock, Event, Ledger, Record};
use crate::load::{read_back, user_name, Load, SESSION_AND_CART};
use crate::report::{RunFacts, ScenarioReport};
use crate::scenario::{Plan, Scenario};
use crate::stored::{read_entities, StoredEntity};
use roost_testkit::bins::Binaries;
use roost_testkit::fleet::{Fleet, FleetConfig, LEASE_MS};
use roost_testkit::postgres::Cluster;

/// The pause between the end of the load and the final reads: many flush
/// intervals, so write-behind changes that survived are in the store.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What a run runs on: a throwaway Postgres cluster and a fleet on it.
/// Dropped, it stops the fleet, then the cluster.
pub struct Stage {
    pub fleet: Fleet,
    pub cluster: Cluster,
}

impl Stage {
    /// `out_dir` (created), the cluster, and a fleet of `listed` workers
    /// (`running` of them started) and the proxy on it.
    pub async fn start(
        binaries: &Binaries,
        out_dir: &Path,
        config: &FleetConfig,
        listed: usize,
        running: usize,
    ) -> Result<Stage> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("create {}", out_dir.display()))?;
        let cluster = Cluster::start()
            .await
            .context("start the throwaway Postgres cluster")?;
        let fleet = Fleet::start(binaries, out_dir, &cluster, config, listed, running)
            .await
            .context("start the fleet")?;
        Ok(Stage { fleet, cluster })
    }

    /// The final state, read from the store; then everything stopped.
    pub async fn read_store_and_stop(mut self) -> Result<HashMap<String, StoredEntity>> {
        let stored = read_entities(&self.cluster.url())
            .await
            .context("read the final state from the store")?;
        self.fleet.shutdown();
        self.cluster.stop();
        Ok(stored)
    }
}

/// `ledger.jsonl` and `timeline.svg` (titled `title`, up to `end_us`) of a
/// run in `out_dir`.
pub fn write_ledger(
    out_dir: &Path,
    title: &str,
    records: &[Record],
    events: &[Event],
    end_us: u64,
) -> Result<()> {
    write_jsonl(&out_dir.join("ledger.jsonl"), records)?;
    let svg = crate::timeline::svg(title, records, events, end_us);
    write(&out_dir.join("timeline.svg"), &svg)
}

/// Run `scenario` to `plan`, with its output in `out_dir` (created).
pub async fn run_scenario(
    scenario: Scenario,
    plan: &Plan,
    short: bool,
    binaries: &Binaries,
    out_dir: &Path,
) -> Result<ScenarioReport> {
    let wall = Instant::now();
    eprintln!(
        "== {scenario}: {} users × {} devices, output in {}",
        plan.load.users,
        plan.load.devices,
        out_dir.display()
    );
    let config = scenario.fleet_config();
    let mut stage = Stage::start(
        binaries,
        out_dir,
        &config,
        scenario.listed_workers(),
        scenario.initial_workers(),
    )
    .await?;

    let ledger = Ledger::new(Clock::start());
    let fault =
        run_load_with_fault(scenario, plan, &mut stage.fleet, &stage.cluster, &ledger).await?;
    let load_us = ledger.clock().now_us();

    tokio::time::sleep(SETTLE).await;
    let users: Vec<String> = (0..plan.load.users).map(user_name).collect();
    read_back(&users, SESSION_AND_CART, &stage.fleet.proxy_url(), &ledger).await?;
    let stored = stage.read_store_and_stop().await?;

    let (records, events) = ledger.snapshot();
    let mut findings = Findings::examine(&records, &stored, load_us);
    findings.during_fault = fault_window(&events).map(|window| DuringFault::of(&records, window));
    findings.crash = fault.crash.clone();
    findings.movement = fault.scale.zip(fault.hrw.as_ref()).map(|(window, hrw)| {
        let mut movement = movement(&records, window, hrw, scenario);
        if let Some(served) = &fault.bystanders {
            movement.add_bystanders(&served.before, &served.after);
        }
        movement
    });
    if let Some(window) = &fault.cut {
        judge_cut(scenario, &config, window, &fault, &records, &mut findings);
    }
    let title = format!(
        "roost fault suite: {scenario}{}",
        if short { " (short)" } else { "" }
    );
    write_ledger(out_dir, &title, &records, &events, load_us)?;
    Ok(ScenarioReport::new(RunFacts {
        scenario,
        short,
        plan,
        load_us,
        wall: wall.elapsed(),
        out_dir: out_dir.display().to_string(),
        events,
        fault,
        findings,
    }))
}

/// The cut's and the blip's own checks of the window the fault left.
fn judge_cut(
    scenario: Scenario,
    config: &FleetConfig,
    window: &CutWindow,
    fault: &FaultOutcome,
    records: &[Record],
    findings: &mut Findings,
) {
    if scenario == Scenario::Blip {
        findings.blip = Some(Blip::of(records, window));
        return;
    }
    let bound = MoveBound {
        lease_ms: LEASE_MS,
        detection_ms: config.proxy_health.timing().detection_ms(),
        margin_ms: MOVE_MARGIN_MS,
    };
    findings.failover = Some(Failover::of(records, window, bound));
    findings.revalidation = Some(Revalidation::of(
        &window.victim,
        window.heal_us,
        &fault.probes,
        records,
    ));
}

/// From the fault's first step to its last: the events between the load's
/// start and its end.
fn fault_window(events: &[Event]) -> Option<(u64, u64)> {
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| !e.what.starts_with("load starts") && e.what != "load stops")
        .map(|e| e.t_us)
        .collect();
    Some((*steps.iter().min()?, *steps.iter().max()?))
}

/// Start the load, inject the fault at its time, and stop the load once
/// it has run its duration and a while past the fault's last step.
async fn run_load_with_fault(
    scenario: Scenario,
    plan: &Plan,
    fleet: &mut Fleet,
    cluster: &Cluster,
    ledger: &Ledger,
) -> Result<FaultOutcome> {
    let clock = ledger.clock();
    let load = Load::start(&plan.load, &fleet.proxy_url(), ledger)?;
    ledger.event(format!("load starts ({} users)", plan.load.users));
    tokio::time::sleep_until(clock.instant_at(plan.fault_at).into()).await;
    let target = Target {
        fleet,
        cluster,
        ledger,
        plan,
    };
    let fault = fault::inject(scenario, target).await;
    let end = clock
        .instant_at(plan.duration)
        .max(Instant::now() + plan.settle_after_fault);
    tokio::time::sleep_until(end.into()).await;
    ledger.event("load stops");
    load.stop();
    load.join().await?;
    Ok(fault)
}

fn movement(
    records: &[Record],
    window: ScaleWindow,
    hrw: &HrwView,
    scenario: Scenario,
) -> Movement {
    let new_worker = format!("w{}", scenario.listed_workers());
    let mut movement = Movement::of(
        records,
        window,
        &new_worker,
        scenario.listed_workers(),
        &hrw.users,
    );
    movement.sample_keys = HRW_SAMPLE_KEYS;
    movement.sample_share =
        hrw.sample.get(&new_worker).copied().unwrap_or(0) as f64 / HRW_SAMPLE_KEYS as f64;
    movement
}

pub fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}
