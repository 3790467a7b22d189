//! Verdicts and reports: which MUSTs and targets each run met, one
//! markdown table over every scenario run, and the details (fault steps,
//! failure codes, examples from the ledger) under it.
//!
//! MUSTs (the exit status depends on them): no acknowledged durable write
//! lost, no stale read, no overlapping owners — and the scenario ran as
//! planned, since checks of a run whose fault did not happen prove nothing.
//! No failed replay-safe request is a MUST too wherever issue 15 promises
//! a client latency, never an error: kill -9, SIGSTOP, a Postgres restart,
//! a rolling restart and a store blip. The cut adds two: the cut worker's
//! users served elsewhere within lease + detection, and nothing served from
//! the cut worker's pre-cut cache after the heal; the blip one: no failed
//! request at all from the cut worker's users.
//!
//! Targets are reported but do not fail the run: no failed replay-safe
//! request in a scale-out or a cut, nor for the cut worker's users while
//! they move; unavailability p99 within the issue's bound (kill -9, SIGSTOP,
//! Postgres restart, blip); the kill -9 window of the killed worker's
//! users; at most 1.05/N of the active entities moved by a scale-out and
//! only to the new worker; read-back = store.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::check::blip::Blip;
use crate::check::failover::Failover;
use crate::check::revalidation::Revalidation;
use crate::check::traffic::{DuringFault, Traffic};
use crate::check::{secs, Examples, Findings};
use crate::fault::FaultOutcome;
use crate::ledger::Event;
use crate::scenario::{Plan, Scenario};
use roost_testkit::fleet::LEASE_MS;

/// One requirement and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub holds: bool,
    pub detail: String,
}

pub fn verdict(name: &str, holds: bool, detail: String) -> Verdict {
    Verdict {
        name: name.into(),
        holds,
        detail,
    }
}

/// Everything about one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub short: bool,
    pub users: usize,
    pub devices: u8,
    pub load_s: f64,
    pub wall_s: f64,
    pub out_dir: String,
    pub events: Vec<Event>,
    pub drain_exits: Vec<(String, String)>,
    pub fault_problems: Vec<String>,
    pub findings: Findings,
    pub musts: Vec<Verdict>,
    pub targets: Vec<Verdict>,
}

/// What the report is made from.
pub struct RunFacts<'a> {
    pub scenario: Scenario,
    pub short: bool,
    pub plan: &'a Plan,
    pub load_us: u64,
    pub wall: Duration,
    pub out_dir: String,
    pub events: Vec<Event>,
    pub fault: FaultOutcome,
    pub findings: Findings,
}

impl ScenarioReport {
    pub fn new(facts: RunFacts<'_>) -> ScenarioReport {
        let mut musts = musts(&facts.findings, &facts.fault);
        let mut targets = targets(facts.scenario, &facts.findings, &facts.events);
        let replay_safe = replay_safe_verdict(&facts.findings.traffic);
        if replay_safe_is_a_must(facts.scenario) {
            musts.push(replay_safe);
        } else {
            targets.push(replay_safe);
        }
        ScenarioReport {
            scenario: facts.scenario.name().into(),
            short: facts.short,
            users: facts.plan.load.users,
            devices: facts.plan.load.devices,
            load_s: facts.load_us as f64 / 1e6,
            wall_s: facts.wall.as_secs_f64(),
            out_dir: facts.out_dir,
            events: facts.events,
            drain_exits: facts.fault.drain_exits,
            fault_problems: facts.fault.problems,
            findings: facts.findings,
            musts,
            targets,
        }
    }
}

impl RunReport for ScenarioReport {
    fn name(&self) -> &str {
        &self.scenario
    }

    fn musts(&self) -> &[Verdict] {
        &self.musts
    }
}

/// A report of one run: its name and its MUSTs.
pub trait RunReport {
    fn name(&self) -> &str;
    fn musts(&self) -> &[Verdict];

    fn musts_hold(&self) -> bool {
        self.musts().iter().all(|m| m.holds)
    }

    /// `run: MUST (detail)` for each MUST that does not hold.
    fn broken_musts(&self) -> Vec<String> {
        self.musts()
            .iter()
            .filter(|m| !m.holds)
            .map(|m| format!("{}: {} ({})", self.name(), m.name, m.detail))
            .collect()
    }
}

fn musts(findings: &Findings, fault: &FaultOutcome) -> Vec<Verdict> {
    let lost = &findings.lost;
    let stale = &findings.stale;
    let overlap = &findings.overlap;
    let mut musts = vec![
        verdict(
            "ran as planned",
            fault.problems.is_empty(),
            if fault.problems.is_empty() {
                "every fault step done".into()
            } else {
                fault.problems.join("; ")
            },
        ),
        verdict(
            "durable lost = 0",
            lost.durable_lost == 0,
            format!("{} of {} acknowledged durable writes lost", lost.durable_lost, lost.durable_acked),
        ),
        verdict(
            "stale reads = 0",
            stale.violations == 0,
            format!(
                "{} violations ({} older than an earlier ack, {} of them explained by write-behind loss after a failover)",
                stale.violations, stale.strict, stale.explained_by_write_behind_loss
            ),
        ),
        verdict(
            "overlapping owners = 0",
            overlap.total() == 0,
            format!(
                "{} between different workers, {} under one worker id",
                overlap.different_workers, overlap.same_worker_id
            ),
        ),
    ];
    if let Some(failover) = &findings.failover {
        musts.push(failover_verdict(failover));
    }
    if let Some(revalidation) = &findings.revalidation {
        musts.push(revalidation_verdict(revalidation));
    }
    if let Some(blip) = &findings.blip {
        musts.push(blip_verdict(blip, findings.during_fault.as_ref()));
    }
    musts
}

/// Whether a failed replay-safe request breaks a MUST or only misses a
/// target. Issue 15 wants none in any fault, and its tests assert it for
/// kill -9, SIGSTOP, a Postgres restart, a rolling restart and (with every
/// other request of the cut worker's users) a store blip: there a fault
/// must cost a client latency, never an error. A scale-out and a cut keep
/// it as a target.
fn replay_safe_is_a_must(scenario: Scenario) -> bool {
    matches!(
        scenario,
        Scenario::Kill9
            | Scenario::Sigstop
            | Scenario::PgRestart
            | Scenario::Rolling
            | Scenario::Blip
    )
}

fn replay_safe_verdict(traffic: &Traffic) -> Verdict {
    verdict(
        "failed replay-safe = 0",
        traffic.failed_replay_safe == 0,
        format!(
            "{} of {} failed attempts were replay-safe{}",
            traffic.failed_replay_safe,
            traffic.failed,
            labels(&traffic.failures)
        ),
    )
}

/// The blip's own MUST; its detail is the blip's report line: the cut
/// worker's users, and every request in flight during the blip.
fn blip_verdict(b: &Blip, during: Option<&DuringFault>) -> Verdict {
    verdict(
        "no failed request from the cut worker's users",
        b.holds(),
        format!(
            "{} of {} attempts of {} users of {} answered from the cut on failed{}; in flight during the {:.0} ms blip: {}",
            b.failed,
            b.attempts,
            b.users,
            b.victim,
            labels(&b.failures),
            b.blip_ms,
            in_flight(during)
        ),
    )
}

/// `N requests (all users), M failed, p50 / p99 / max …`.
fn in_flight(during: Option<&DuringFault>) -> String {
    during.map_or_else(
        || "no request".into(),
        |d| {
            format!(
                "{} requests (all users), {} failed, latency p50 {:.0} / p99 {:.0} / max {:.0} ms",
                d.requests, d.failed, d.latency_ms.p50, d.latency_ms.p99, d.latency_ms.max
            )
        },
    )
}

fn failover_verdict(f: &Failover) -> Verdict {
    verdict(
        "cut worker's users moved within lease + detection",
        f.holds(),
        format!(
            "{} of {} users of {} served by another worker within {} ms of the cut (lease {} + health {} + margin {}); {} later, {} not before the heal; move time p50 {:.0}, p99 {:.0}, max {:.0} ms",
            f.moved_in_time,
            f.users,
            f.victim,
            f.bound_ms,
            f.bound.lease_ms,
            f.bound.detection_ms,
            f.bound.margin_ms,
            f.moved_late,
            f.unmoved,
            f.move_ms.p50,
            f.move_ms.p99,
            f.move_ms.max
        ),
    )
}

fn revalidation_verdict(r: &Revalidation) -> Verdict {
    verdict(
        "after the heal, nothing served from the pre-cut cache",
        r.holds(),
        format!(
            "{} probes of {} sessions and carts sent straight to {}: {} refused (503), {} re-claimed, {} under an epoch nobody moved, {} from a fenced cache, {} missing a durable write, {} without an epoch, {} other",
            r.probes,
            r.keys,
            r.victim,
            r.refused,
            r.reclaimed,
            r.kept,
            r.stale_cache,
            r.missing_durable,
            r.unjudged,
            r.other.values().sum::<usize>()
        ),
    )
}

fn targets(scenario: Scenario, findings: &Findings, events: &[Event]) -> Vec<Verdict> {
    let mut targets = vec![verdict(
        "read-back = store",
        findings.readback.mismatched == 0 && findings.readback.unanswered == 0,
        format!(
            "{} of {} read-backs differ from the store, {} unanswered",
            findings.readback.mismatched, findings.readback.compared, findings.readback.unanswered
        ),
    )];
    if let Some(crash) = &findings.crash {
        let window = &crash.window_ms;
        targets.push(verdict(
            "kill -9 window per user p99 ≤ 100 ms",
            crash.unserved == 0 && crash.failed == 0 && window.p99 <= 100.0,
            format!(
                "{} users of the killed worker, durable writes in a closed loop: p50 {:.0} / p99 {:.0} / max {:.0} ms from the kill to their next success; {} failed attempts, {} not served again",
                crash.users, window.p50, window.p99, window.max, crash.failed, crash.unserved
            ),
        ));
    }
    if let Some((bound_ms, why)) = unavailability_bound(scenario, events) {
        let p99 = findings.availability.window_ms.p99;
        targets.push(verdict(
            "unavailability p99 within bound",
            p99 <= bound_ms as f64,
            format!("p99 {p99:.0} ms; bound {bound_ms} ms ({why})"),
        ));
    }
    if let Some(failover) = &findings.failover {
        targets.push(verdict(
            "no failed request while moving",
            failover.failed_while_moving == 0,
            format!(
                "{} attempts of {}'s users failed between the cut and their move{}",
                failover.failed_while_moving,
                failover.victim,
                labels(&failover.failures)
            ),
        ));
    }
    if let Some(movement) = &findings.movement {
        targets.push(verdict(
            "moved ≤ 1.05/N",
            movement.within_bound(),
            format!(
                "{} of {} active entities ({} of them bystanders) moved to {} ({:.3}; bound {:.4}); its HRW share of {} sample keys: {:.4}",
                movement.moved_to_new,
                movement.active,
                movement.bystanders,
                movement.new_worker,
                movement.fraction_moved,
                movement.bound,
                movement.sample_keys,
                movement.sample_share
            ),
        ));
        targets.push(verdict(
            "moves only to the new worker, as HRW says",
            movement.moved_elsewhere == 0 && movement.disagree_with_hrw == 0,
            format!(
                "{} moved elsewhere, {} disagree with /admin/route",
                movement.moved_elsewhere, movement.disagree_with_hrw
            ),
        ));
    }
    targets
}

/// How long a fault may keep a user waiting (issue 15), as the
/// availability windows count it (from a failed or slow request to the
/// user's next success): a crash 100 ms; a frozen worker its lease plus
/// 500 ms; a store restart, or a blip of one worker's way to the store, as
/// long as it lasted, plus 300 ms.
fn unavailability_bound(scenario: Scenario, events: &[Event]) -> Option<(u64, String)> {
    let store_away = |lost: &str, back: &str, what: &str| {
        let ms = ms_between(events, lost, back)?;
        Some((ms + 300, format!("{what} {ms} + 300")))
    };
    match scenario {
        Scenario::Kill9 => Some((100, "a crash".into())),
        Scenario::Sigstop => Some((LEASE_MS + 500, format!("lease {LEASE_MS} + 500"))),
        Scenario::PgRestart => store_away("pg_ctl restart", "postgres accepts", "restart"),
        Scenario::Blip => store_away("cut ", "heal:", "blip"),
        _ => None,
    }
}

/// Milliseconds from the first event starting with `from` to the first
/// starting with `to`.
fn ms_between(events: &[Event], from: &str, to: &str) -> Option<u64> {
    let at = |what: &str| {
        events
            .iter()
            .find(|e| e.what.starts_with(what))
            .map(|e| e.t_us)
    };
    Some(at(to)?.saturating_sub(at(from)?) / 1000)
}

/// One run's outcome: a report, or the error that stopped it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome<R = ScenarioReport> {
    Ran(Box<R>),
    Failed { scenario: String, error: String },
}

impl<R: RunReport> Outcome<R> {
    pub fn musts_hold(&self) -> bool {
        matches!(self, Outcome::Ran(report) if report.musts_hold())
    }

    pub fn broken_musts(&self) -> Vec<String> {
        match self {
            Outcome::Ran(report) => report.broken_musts(),
            Outcome::Failed { scenario, error } => {
                vec![format!("{scenario}: did not run: {error}")]
            }
        }
    }
}

/// The summary table over every outcome.
pub fn table(outcomes: &[Outcome]) -> String {
    table_with(
        "| scenario | requests | failed (replay-safe) | during the fault p50 / p99 / max ms | unavailability p50 / p99 / max ms (users) | durable lost / acked | write-behind lost / acked | stale reads: violations (strict) | overlapping owners | targets | MUSTs |\n\
         |---|---:|---|---|---|---:|---:|---:|---:|---|---|\n",
        outcomes,
        row,
    )
}

/// A markdown table: `header` (with its `|---|` line), then a row per
/// outcome — `row` of a report, or the error of a run that did not run.
pub fn table_with<R>(header: &str, outcomes: &[Outcome<R>], row: impl Fn(&R) -> String) -> String {
    let columns = header.lines().next().unwrap_or("").matches('|').count();
    let mut out = header.to_owned();
    for outcome in outcomes {
        match outcome {
            Outcome::Ran(report) => out.push_str(&row(report)),
            Outcome::Failed { scenario, error } => {
                out.push_str(&failed_row(scenario, error, columns.saturating_sub(3)));
            }
        }
    }
    out
}

/// The table row of a run that did not run: its name, `blanks` empty
/// cells, and the error.
fn failed_row(name: &str, error: &str, blanks: usize) -> String {
    format!(
        "| {name} |{} **did not run**: {} |\n",
        " – |".repeat(blanks),
        one_line(error)
    )
}

/// ` (3× 503 lease_lost, 1× transport timeout)`, or nothing.
fn labels(counts: &std::collections::BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let codes: Vec<String> = counts
        .iter()
        .map(|(label, n)| format!("{n}× {label}"))
        .collect();
    format!(" ({})", codes.join(", "))
}

fn row(report: &ScenarioReport) -> String {
    let f = &report.findings;
    let failures = format!(
        "{} ({}){}",
        f.traffic.failed,
        f.traffic.failed_replay_safe,
        labels(&f.traffic.failures)
    );
    let window = &f.availability.window_ms;
    let during = f.during_fault.as_ref().map_or_else(
        || "-".into(),
        |d| {
            let l = &d.latency_ms;
            format!("{:.0} / {:.0} / {:.0}", l.p50, l.p99, l.max)
        },
    );
    format!(
        "| {} | {} | {} | {during} | {:.0} / {:.0} / {:.0} ({}) | {} / {} | {} / {} | {} ({}) | {} | {} | {} |\n",
        report.scenario,
        f.traffic.requests,
        failures,
        window.p50,
        window.p99,
        window.max,
        f.availability.affected_users,
        f.lost.durable_lost,
        f.lost.durable_acked,
        f.lost.write_behind_lost,
        f.lost.write_behind_acked,
        f.stale.violations,
        f.stale.strict,
        f.overlap.total(),
        verdicts_cell(&report.targets),
        verdicts_cell(&report.musts),
    )
}

/// `all hold`, or the names of the verdicts that fail.
pub fn verdicts_cell(verdicts: &[Verdict]) -> String {
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.holds)
        .map(|v| v.name.as_str())
        .collect();
    if failed.is_empty() {
        "all hold".into()
    } else {
        format!("**FAIL**: {}", failed.join("; "))
    }
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").replace('|', "/")
}

/// The details under the table: per scenario, the fault's steps, the
/// verdicts, and examples for everything that is not zero.
pub fn details(outcomes: &[Outcome]) -> String {
    details_with(outcomes, report_details)
}

/// A section per outcome: `section` of a report, or the error of a run
/// that did not run.
pub fn details_with<R>(outcomes: &[Outcome<R>], section: impl Fn(&mut String, &R)) -> String {
    let mut out = String::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Ran(report) => section(&mut out, report),
            Outcome::Failed { scenario, error } => {
                let _ = writeln!(out, "\n## {scenario}: did not run\n\n```\n{error}\n```");
            }
        }
    }
    out
}

fn report_details(out: &mut String, r: &ScenarioReport) {
    let f = &r.findings;
    let what = format!(
        "{} users × {} devices, load {:.1} s",
        r.users, r.devices, r.load_s
    );
    run_heading(out, &r.scenario, r.short, &what, r.wall_s, &r.out_dir);
    fault_steps(out, &r.events);
    let _ = writeln!(
        out,
        "\nRequests {} ({} operations, {} given up), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
        f.traffic.requests,
        f.traffic.operations,
        f.traffic.operations_given_up,
        f.traffic.latency_ms.p50,
        f.traffic.latency_ms.p99,
        f.traffic.latency_ms.max
    );
    let _ = writeln!(
        out,
        "Unavailability: {} users affected ({} unrecovered), window p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms.\n",
        f.availability.affected_users,
        f.availability.unrecovered_users,
        f.availability.window_ms.p50,
        f.availability.window_ms.p99,
        f.availability.window_ms.max
    );
    verdict_lines(out, &r.musts, &r.targets);
    examples(out, "Durable writes lost", &f.lost.durable_examples);
    examples(
        out,
        "Write-behind writes lost",
        &f.lost.write_behind_examples,
    );
    examples(out, "Stale reads (violations)", &f.stale.violation_examples);
    examples(
        out,
        "Stale reads explained by write-behind loss",
        &f.stale.explained_examples,
    );
    examples(out, "Overlapping owners", &f.overlap.examples);
    examples(out, "Read-back ≠ store", &f.readback.examples);
    examples(
        out,
        "Longest unavailability windows",
        &f.availability.longest,
    );
    if let Some(movement) = &f.movement {
        examples(out, "Scale-out moves to check", &movement.examples);
    }
    if let Some(failover) = &f.failover {
        failover_details(out, failover);
    }
    if let Some(revalidation) = &f.revalidation {
        revalidation_details(out, revalidation);
    }
    if let Some(blip) = &f.blip {
        blip_details(out, blip, f.during_fault.as_ref());
    }
}

fn failover_details(out: &mut String, f: &Failover) {
    let ms = |t: Option<f64>| t.map_or("never".to_string(), |t| format!("{t:.0} ms"));
    let _ = writeln!(
        out,
        "\nCut of {}: the proxy saw it down {} after the cut; it last served a request {} after the cut. Its users moved in p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (bound {} ms); {} failed attempts while moving{}.",
        f.victim,
        ms(f.detected_ms),
        ms(f.victim_last_served_ms),
        f.move_ms.p50,
        f.move_ms.p99,
        f.move_ms.max,
        f.bound_ms,
        f.failed_while_moving,
        labels(&f.failures)
    );
    examples(out, "Users that did not move in time", &f.examples);
}

fn revalidation_details(out: &mut String, r: &Revalidation) {
    let first = r
        .first_served_ms
        .map_or("never".to_string(), |t| format!("{t:.0} ms"));
    let others = if r.other.is_empty() {
        String::new()
    } else {
        format!("; other probe outcomes:{}", labels(&r.other))
    };
    let _ = writeln!(
        out,
        "\nAfter the heal, {} first served a probe {first} after it{others}.",
        r.victim
    );
    examples(out, "Probes served from the pre-cut cache", &r.examples);
}

fn blip_details(out: &mut String, b: &Blip, during: Option<&DuringFault>) {
    let detected = b.detected_ms.map_or_else(
        || "kept routing to it".to_string(),
        |t| format!("saw it down {t:.0} ms after the cut"),
    );
    let _ = writeln!(
        out,
        "\nBlip of {} for {:.0} ms: in flight during it, {}. The proxy {detected}; {} of its {} users were served by another worker from the cut on; {} of their {} attempts failed{}.",
        b.victim,
        b.blip_ms,
        in_flight(during),
        b.moved,
        b.users,
        b.failed,
        b.attempts,
        labels(&b.failures)
    );
    examples(
        out,
        "Failed attempts of the cut worker's users",
        &b.examples,
    );
}

/// A run's section heading, and a line: `what`, wall time, output dir.
pub fn run_heading(out: &mut String, name: &str, short: bool, what: &str, wall_s: f64, dir: &str) {
    let short = if short { " (short)" } else { "" };
    let _ = writeln!(
        out,
        "\n## {name}{short}\n\n{what}, wall {wall_s:.1} s, output `{dir}`\n"
    );
}

/// `Fault steps:` and a line per event with its time.
pub fn fault_steps(out: &mut String, events: &[Event]) {
    let _ = writeln!(out, "Fault steps:\n");
    for event in events {
        let _ = writeln!(out, "- {}: {}", secs(event.t_us), event.what);
    }
}

/// A line per MUST and per target: holds or fails, and why.
pub fn verdict_lines(out: &mut String, musts: &[Verdict], targets: &[Verdict]) {
    let all = musts
        .iter()
        .map(|v| ("MUST", v))
        .chain(targets.iter().map(|v| ("target", v)));
    for (kind, v) in all {
        let mark = if v.holds { "holds" } else { "**FAILS**" };
        let _ = writeln!(out, "- {kind} {}: {mark} — {}", v.name, v.detail);
    }
}

/// `title:` and the examples as a list (nothing when there are none).
pub fn examples(out: &mut String, title: &str, examples: &Examples) {
    let mut lines = examples.iter().peekable();
    if lines.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "\n{title}:\n");
    for line in lines {
        let _ = writeln!(out, "- `{line}`");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(t_ms: u64, what: &str) -> Event {
        Event {
            t_us: t_ms * 1000,
            what: what.into(),
        }
    }

    #[test]
    fn a_blip_may_keep_users_waiting_its_length_plus_300_ms() {
        let events = [
            event(0, "load starts (60 users)"),
            event(
                3_000,
                "cut w2 off the store for 1s (sockets stay open; a blip)",
            ),
            event(4_001, "heal: w2 reaches the store again"),
        ];
        let bound = unavailability_bound(Scenario::Blip, &events).map(|(ms, _)| ms);
        assert_eq!(bound, Some(1_301));
        assert_eq!(unavailability_bound(Scenario::Cut, &events), None);
    }

    #[test]
    fn failed_replay_safe_requests_break_a_must_where_issue_15_promises_none() {
        let musts: Vec<&str> = Scenario::ALL
            .into_iter()
            .filter(|s| replay_safe_is_a_must(*s))
            .map(Scenario::name)
            .collect();
        assert_eq!(musts, ["kill9", "sigstop", "pg-restart", "rolling", "blip"]);
    }

    #[test]
    fn a_run_that_did_not_run_fills_every_column() {
        let failed: Outcome = Outcome::Failed {
            scenario: "kill9".into(),
            error: "no initdb\nmore".into(),
        };
        let table = table(&[failed]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[2].matches('|').count(), lines[0].matches('|').count());
        assert!(lines[2].starts_with("| kill9 |") && lines[2].contains("no initdb |"));
    }
}
