//! The ticket sale (issue 5): 100 tickets for one show, a few thousand
//! users with two devices each racing to buy one (limit one per user), run
//! plain, with the inventory's worker killed (kill -9) mid-sale in durable
//! mode, and with a rolling restart of every worker. Afterwards, with the
//! fleet quiet: exactly `min(stock, demand)` tickets sold and never more,
//! no user holding two, every order acknowledged to a client present, and
//! the inventory's sold count equal to the orders — through the proxy and
//! in the store.
//!
//! It runs on the fault suite's machinery (throwaway Postgres, the fleet,
//! the kill -9 and rolling-restart steps, the ledger and its clients, the
//! summary writer); what is its own is here:
//!
//! | module | concept |
//! |---|---|
//! | this one | the three runs, their options, the suite over them |
//! | [`plan`] | how many buyers, how they arrive, each run's worker config |
//! | [`sale`] | one run end to end |
//! | [`buyers`] | the devices: add to cart, check out, retry until decided |
//! | [`stock`] | the inventory: setting the stock, watching it sell |
//! | [`check`] | the figures and the MUSTs, from the ledger and the store |
//! | [`report`] | the table and the per-run details |

pub mod buyers;
pub mod check;
pub mod plan;
pub mod report;
pub mod sale;
pub mod stock;

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use serde::Serialize;

use crate::report::Outcome;
use crate::suite::{run_all, RunKind, RunOptions, SuiteResult};
use plan::SalePlan;
use report::TicketReport;

/// One run of the sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketRun {
    /// No fault; default durability.
    Plain,
    /// The worker that owns the inventory is killed (-9) when about half
    /// the tickets are sold, and started again; carts and the inventory
    /// are durable.
    Kill9,
    /// Every worker drained (SIGTERM) and started again in turn, the
    /// inventory's owner first, from the first ticket sold.
    Rolling,
}

impl TicketRun {
    pub const ALL: [TicketRun; 3] = [TicketRun::Plain, TicketRun::Kill9, TicketRun::Rolling];

    pub fn name(self) -> &'static str {
        match self {
            TicketRun::Plain => "plain",
            TicketRun::Kill9 => "kill9",
            TicketRun::Rolling => "rolling",
        }
    }
}

impl fmt::Display for TicketRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TicketRun {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        TicketRun::named(text)
    }
}

impl RunKind for TicketRun {
    type Report = TicketReport;
    const ALL: &'static [TicketRun] = &TicketRun::ALL;
    const TITLE: &'static str = "Roost ticket sale";
    const PREFIX: &'static str = "tickets";

    fn name(self) -> &'static str {
        TicketRun::name(self)
    }

    fn table(outcomes: &[Outcome<TicketReport>]) -> String {
        report::table(outcomes)
    }

    fn details(outcomes: &[Outcome<TicketReport>]) -> String {
        report::details(outcomes)
    }
}

/// The runs of the sale, and how.
#[derive(Debug, Clone)]
pub struct TicketOptions {
    pub runs: Vec<TicketRun>,
    /// `short`: 1,000 users instead of 5,000 (still 100 tickets).
    pub common: RunOptions,
    /// Replace the plan's number of devices busy at once.
    pub concurrency: Option<usize>,
}

impl TicketOptions {
    pub fn plan(&self) -> SalePlan {
        let mut plan = SalePlan::new(self.common.short);
        if let Some(users) = self.common.users {
            plan.users = users;
        }
        if let Some(concurrency) = self.concurrency {
            plan.concurrency = concurrency;
        }
        plan
    }
}

/// Every run of `options`, one after another, and the combined summary.
pub async fn run(options: &TicketOptions) -> Result<SuiteResult<TicketReport>> {
    let plan = &options.plan();
    let common = &options.common;
    run_all(&options.runs, common, |run, dir| async move {
        sale::run_sale(run, plan, common.short, &common.binaries, &dir).await
    })
    .await
}
