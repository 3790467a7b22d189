//! A sale's report: its MUSTs (the exit status depends on them) and
//! targets, a row of the summary table, and the details under it.
//!
//! MUSTs: the run went as planned (the fault landed while tickets were
//! still selling); `min(stock, demand)` sold and never more; no user holds
//! two; every acknowledged order exists; the inventory's sold count equals
//! the orders, and what the proxy shows equals what is stored. Targets:
//! the admin token guards the stock; nothing left undecided; in a rolling
//! restart, no failed request.

use std::fmt::Write as _;

use serde::Serialize;

use super::check::SaleFindings;
use super::stock::{AdminGuard, Inventory};
use super::TicketRun;
use crate::ledger::Event;
use crate::report::{
    details_with, examples, fault_steps, run_heading, table_with, verdict, verdict_lines,
    verdicts_cell, Outcome, RunReport, Verdict,
};

/// When the fault began, and how far the sale was then.
#[derive(Debug, Clone, Serialize)]
pub struct FaultStart {
    pub at_s: f64,
    /// Known sold then: the most the inventory had shown, or the orders
    /// acknowledged so far if more.
    pub sold_then: u64,
    /// The worker that owned the inventory then.
    pub inventory_owner: String,
}

/// Everything about one run of the sale.
#[derive(Debug, Clone, Serialize)]
pub struct TicketReport {
    #[serde(flatten)]
    pub facts: TicketFacts,
    pub musts: Vec<Verdict>,
    pub targets: Vec<Verdict>,
}

/// What the report is made from.
#[derive(Debug, Clone, Serialize)]
pub struct TicketFacts {
    pub run: TicketRun,
    pub short: bool,
    pub users: usize,
    pub devices: u8,
    pub wall_s: f64,
    pub out_dir: String,
    pub admin_guard: AdminGuard,
    pub fault_start: Option<FaultStart>,
    pub events: Vec<Event>,
    pub drain_exits: Vec<(String, String)>,
    pub fault_problems: Vec<String>,
    pub findings: SaleFindings,
}

impl TicketReport {
    pub fn new(facts: TicketFacts) -> TicketReport {
        TicketReport {
            musts: musts(&facts),
            targets: targets(&facts),
            facts,
        }
    }
}

impl RunReport for TicketReport {
    fn name(&self) -> &str {
        self.facts.run.name()
    }

    fn musts(&self) -> &[Verdict] {
        &self.musts
    }
}

fn musts(facts: &TicketFacts) -> Vec<Verdict> {
    let f = &facts.findings;
    let (read, stored) = (f.inventory_read, f.inventory_stored);
    let sold = |i: Option<Inventory>| i.map(|i| i.sold);
    // What is left plus what is sold is what was put on sale.
    let conserved = |i: Option<Inventory>| {
        i.is_some_and(|i| i.stock.is_none_or(|left| left + i.sold == f.stock))
    };
    vec![
        ran_as_planned(facts),
        verdict(
            "sold = min(stock, demand), never more",
            sold(read) == Some(f.expected_sold)
                && sold(stored) == Some(f.expected_sold)
                && f.max_sold_seen <= f.stock
                && conserved(read)
                && conserved(stored),
            format!(
                "sold {} read back, {} stored, expected {} (stock {}, demand {}); most seen while selling {}; left + sold = stock: read back {}, stored {}",
                shown(sold(read)),
                shown(sold(stored)),
                f.expected_sold,
                f.stock,
                f.demand,
                f.max_sold_seen,
                conserved(read),
                conserved(stored),
            ),
        ),
        verdict(
            "no user holds two",
            f.read.users_with_two == 0 && f.stored.users_with_two == 0,
            format!(
                "users with more than one: {} read back, {} stored",
                f.read.users_with_two, f.stored.users_with_two
            ),
        ),
        verdict(
            "every acknowledged order exists",
            f.read.missing_acked == 0 && f.stored.missing_acked == 0,
            format!(
                "of {} acknowledged orders, {} missing from the read-back, {} from the store",
                f.acked_orders, f.read.missing_acked, f.stored.missing_acked
            ),
        ),
        verdict(
            "sold = orders; read-back = store",
            sold(read) == Some(f.read.tickets)
                && sold(stored) == Some(f.stored.tickets)
                && f.readback_differs == 0
                && f.readback_unanswered == 0,
            format!(
                "sold {} / tickets in orders {} read back; sold {} / tickets in orders {} stored; {} users' orders differ, {} read-backs unanswered",
                shown(sold(read)),
                f.read.tickets,
                shown(sold(stored)),
                f.stored.tickets,
                f.readback_differs,
                f.readback_unanswered
            ),
        ),
    ]
}

/// Every fault step done, and the fault began while tickets were still
/// selling (a fault after the sell-out would prove nothing).
fn ran_as_planned(facts: &TicketFacts) -> Verdict {
    let f = &facts.findings;
    let mut problems = facts.fault_problems.clone();
    match (&facts.fault_start, facts.run) {
        (_, TicketRun::Plain) => {}
        (None, _) => problems.push("the fault never began".into()),
        (Some(start), _) if start.sold_then >= f.expected_sold => problems.push(format!(
            "the fault began after the sell-out ({} sold)",
            start.sold_then
        )),
        (Some(_), _) => {}
    }
    let detail = match (&facts.fault_start, problems.is_empty()) {
        (_, false) => problems.join("; "),
        (Some(start), true) => format!(
            "every fault step done; it began at {:.3} s with {} of {} sold ({} owned the inventory)",
            start.at_s, start.sold_then, f.stock, start.inventory_owner
        ),
        (None, true) => "no fault in this run".into(),
    };
    verdict("ran as planned", problems.is_empty(), detail)
}

fn targets(facts: &TicketFacts) -> Vec<Verdict> {
    let f = &facts.findings;
    let guard = &facts.admin_guard;
    let mut targets = vec![
        verdict(
            "admin token guards the stock",
            guard.holds(),
            format!(
                "PUT without a token: {}, with a wrong one: {} (want 401, 403)",
                guard.without_token, guard.wrong_token
            ),
        ),
        verdict(
            "unresolved = 0",
            f.unresolved_adds + f.unresolved_checkouts == 0,
            format!(
                "{} adds and {} checkouts given up undecided",
                f.unresolved_adds, f.unresolved_checkouts
            ),
        ),
    ];
    if facts.run == TicketRun::Rolling {
        targets.push(verdict(
            "failed requests = 0",
            f.errors.count == 0,
            format!("{} failed", f.errors.count),
        ));
    }
    targets
}

fn shown(value: Option<u64>) -> String {
    value.map_or("–".into(), |v| v.to_string())
}

/// The summary table over every run.
pub fn table(outcomes: &[Outcome<TicketReport>]) -> String {
    table_with(
        "| run | users × devices | sold: read / stored (expected) | tickets in orders: read / stored | acked orders | users with 2 | missing acked | unresolved add / checkout | requests (req/s; crowd) | checkouts decided/s (crowd) | checkout p50 / p99 ms | sale: first → sold out s | fault at s (sold then) | errors (window ms) | wall s | MUSTs |\n\
         |---|---|---|---|---:|---:|---:|---:|---|---:|---|---|---|---|---:|---|\n",
        outcomes,
        row,
    )
}

fn row(report: &TicketReport) -> String {
    let r = &report.facts;
    let f = &r.findings;
    let t = &f.throughput;
    let seconds = |s: Option<f64>| s.map_or("–".into(), |s| format!("{s:.2}"));
    let fault = r.fault_start.as_ref().map_or("–".into(), |start| {
        format!("{:.2} ({})", start.at_s, start.sold_then)
    });
    format!(
        "| {} | {} × {} | {} / {} ({}) | {} / {} | {} | {} | {} | {} / {} | {} ({:.0}; {:.0}) | {:.0} ({:.0}) | {:.1} / {:.1} | {} → {} | {} | {} ({:.0}) | {:.1} | {} |\n",
        r.run,
        r.users,
        r.devices,
        shown(f.inventory_read.map(|i| i.sold)),
        shown(f.inventory_stored.map(|i| i.sold)),
        f.expected_sold,
        f.read.tickets,
        f.stored.tickets,
        f.acked_orders,
        f.read.users_with_two.max(f.stored.users_with_two),
        f.read.missing_acked.max(f.stored.missing_acked),
        f.unresolved_adds,
        f.unresolved_checkouts,
        t.requests,
        t.requests_per_s,
        t.crowd_requests_per_s,
        t.checkouts_decided_per_s,
        t.crowd_checkouts_decided_per_s,
        f.checkout_ms.p50,
        f.checkout_ms.p99,
        seconds(f.first_sale_s),
        seconds(f.sold_out_s),
        fault,
        f.errors.count,
        f.errors.span_ms(),
        r.wall_s,
        verdicts_cell(&report.musts),
    )
}

/// A section per run: fault steps, figures, status counts, verdicts and
/// examples.
pub fn details(outcomes: &[Outcome<TicketReport>]) -> String {
    details_with(outcomes, run_details)
}

fn run_details(out: &mut String, report: &TicketReport) {
    let r = &report.facts;
    let f = &r.findings;
    let t = &f.throughput;
    let what = format!(
        "{} users × {} devices for {} tickets",
        r.users, r.devices, f.stock
    );
    run_heading(out, r.run.name(), r.short, &what, r.wall_s, &r.out_dir);
    fault_steps(out, &r.events);
    let _ = writeln!(
        out,
        "\nLoad {:.1} s: {} requests ({:.0}/s), {} checkouts decided ({:.0}/s); the crowd's last {:.1} s: {:.0} requests/s, {:.0} checkouts decided/s. Checkout p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
        t.load_s,
        t.requests,
        t.requests_per_s,
        t.checkouts_decided,
        t.checkouts_decided_per_s,
        t.crowd_s,
        t.crowd_requests_per_s,
        t.crowd_checkouts_decided_per_s,
        f.checkout_ms.p50,
        f.checkout_ms.p99,
        f.checkout_ms.max
    );
    let _ = writeln!(
        out,
        "Demand {} users; {} orders acknowledged; orders with the show: {} read back, {} stored; {} inventory samples during the load.",
        f.demand, f.acked_orders, f.read.orders, f.stored.orders, f.samples
    );
    let _ = writeln!(
        out,
        "Errors: {} failed requests, from {} s to {} s; {} users affected, their wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} unrecovered).\n",
        f.errors.count,
        f.errors.first_s.map_or("–".into(), |s| format!("{s:.3}")),
        f.errors.last_s.map_or("–".into(), |s| format!("{s:.3}")),
        f.availability.affected_users,
        f.availability.window_ms.p50,
        f.availability.window_ms.p99,
        f.availability.window_ms.max,
        f.availability.unrecovered_users
    );
    let _ = writeln!(out, "| request outcome | attempts |\n|---|---:|");
    for (label, count) in &f.statuses {
        let _ = writeln!(out, "| {label} | {count} |");
    }
    out.push('\n');
    verdict_lines(out, &report.musts, &report.targets);
    examples(out, "Found", &f.examples);
    examples(out, "Longest waits", &f.availability.longest);
}
