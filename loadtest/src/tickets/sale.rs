//! One run of the sale end to end: a throwaway store and the fleet, the
//! stock put on sale, the buyers let in, the fault (if any) at its moment,
//! the buyers done, then — the fleet quiet — every user's orders and the
//! inventory read back through the proxy (which also finishes any
//! checkout a crash interrupted) and the rows read from the store;
//! everything stopped; the checks, the ledger and the timeline written.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::buyers::Buyers;
use super::check::{SaleFacts, SaleFindings};
use super::plan::{fleet_config, SalePlan, INVENTORY_KEY};
use super::report::{FaultStart, TicketFacts, TicketReport};
use super::stock::{put_stock, read_inventory, Sample, SoldGauge, StockWatch};
use super::TicketRun;
use crate::fault::{kill9_and_restart, rolling_restart, FaultOutcome};
use crate::ledger::{Clock, Kind, Ledger};
use crate::load::{read_back, user_name};
use crate::run::{write_ledger, Stage, SETTLE};
use roost_testkit::bins::Binaries;
use roost_testkit::fleet::Fleet;

/// What the read-back asks of every user.
const ORDERS: &[(Kind, &str)] = &[(Kind::Cart, "/v1/orders")];
/// How long past the trickle the sale may take to reach a fault's moment.
const FAULT_WAIT_SLACK: Duration = Duration::from_secs(30);

/// Run `run` to `plan`, with its output in `out_dir` (created).
pub async fn run_sale(
    run: TicketRun,
    plan: &SalePlan,
    short: bool,
    binaries: &Binaries,
    out_dir: &Path,
) -> Result<TicketReport> {
    let wall = Instant::now();
    eprintln!(
        "== tickets {run}: {} users × {} devices for {} tickets, output in {}",
        plan.users,
        plan.devices,
        plan.stock,
        out_dir.display()
    );
    let admin_token = format!("{:032x}", rand::random::<u128>());
    let config = fleet_config(run, &admin_token);
    let mut stage = Stage::start(binaries, out_dir, &config, 3, 3).await?;
    let base = stage.fleet.proxy_url();
    let admin_guard = put_stock(&base, &admin_token, plan.stock)
        .await
        .context("put the tickets on sale")?;

    let ledger = Ledger::new(Clock::start());
    ledger.event(format!("{} tickets on sale; buyers arrive", plan.stock));
    let crowd_from_us = ledger.clock().now_us() + micros(plan.trickle);
    let sold = sell(run, plan, &mut stage.fleet, &ledger).await?;
    let load_us = ledger.clock().now_us();

    tokio::time::sleep(SETTLE).await;
    let users: Vec<String> = (0..plan.users).map(user_name).collect();
    read_back(&users, ORDERS, &base, &ledger).await?;
    let inventory_read = read_inventory(&base, &ledger).await?;
    // The read-back may have finished interrupted checkouts: let them flush.
    tokio::time::sleep(SETTLE).await;
    let stored = stage.read_store_and_stop().await?;

    let (records, events) = ledger.snapshot();
    let findings = SaleFindings::examine(&SaleFacts {
        plan,
        records: &records,
        stored: &stored,
        inventory_read,
        samples: &sold.samples,
        crowd_from_us,
    });
    let title = format!(
        "roost ticket sale: {run}{}",
        if short { " (short)" } else { "" }
    );
    write_ledger(out_dir, &title, &records, &events, load_us)?;
    Ok(TicketReport::new(TicketFacts {
        run,
        short,
        users: plan.users,
        devices: plan.devices,
        wall_s: wall.elapsed().as_secs_f64(),
        out_dir: out_dir.display().to_string(),
        admin_guard,
        fault_start: sold.fault_start,
        events,
        drain_exits: sold.fault.drain_exits,
        fault_problems: sold.fault.problems,
        findings,
    }))
}

/// How the selling went.
struct Sold {
    fault: FaultOutcome,
    fault_start: Option<FaultStart>,
    samples: Vec<Sample>,
}

/// Let the buyers in, inject `run`'s fault when its moment comes, and
/// wait for every buyer (and the fault's last step).
async fn sell(run: TicketRun, plan: &SalePlan, fleet: &mut Fleet, ledger: &Ledger) -> Result<Sold> {
    let base = fleet.proxy_url();
    let gauge = SoldGauge::default();
    let watch = StockWatch::start(&base, ledger, gauge.clone())?;
    let buyers = Buyers::start(plan, &base, ledger, &gauge)?;
    let mut fault = FaultOutcome::default();
    // kill -9 at about half sold; the rolling restart from the first sale.
    let moment = match run {
        TicketRun::Plain => None,
        TicketRun::Kill9 => Some(plan.stock.div_ceil(2)),
        TicketRun::Rolling => Some(1),
    };
    let mut fault_start = None;
    if let Some(sold) = moment {
        let wait = plan.trickle + FAULT_WAIT_SLACK;
        let result = match begin(fleet, ledger, &gauge, sold, wait).await {
            Err(e) => Err(e),
            Ok(start) => {
                let owner = start.inventory_owner.clone();
                fault_start = Some(start);
                if run == TicketRun::Kill9 {
                    kill9_and_restart(fleet, ledger, &owner).await
                } else {
                    let order = owner_first(&fleet.ids(), &owner);
                    rolling_restart(fleet, ledger, &order, &mut fault).await
                }
            }
        };
        fault.note(ledger, result);
    }
    buyers.join().await?;
    ledger.event("every buyer is done");
    let samples = watch.stop().await?;
    Ok(Sold {
        fault,
        fault_start,
        samples,
    })
}

/// Wait until `sold` tickets are known sold, then name the worker that
/// owns the inventory now.
async fn begin(
    fleet: &Fleet,
    ledger: &Ledger,
    gauge: &SoldGauge,
    sold: u64,
    wait: Duration,
) -> Result<FaultStart> {
    let known = gauge
        .reaches(sold, wait)
        .await
        .with_context(|| format!("the sale did not reach {sold} sold within {wait:?}"))?;
    let at_us = ledger.clock().now_us();
    let owner = fleet
        .route(INVENTORY_KEY)
        .await?
        .owner
        .with_context(|| format!("/admin/route names no live owner of {INVENTORY_KEY}"))?;
    ledger.event(format!("{known} sold; {owner} owns {INVENTORY_KEY}"));
    Ok(FaultStart {
        at_s: at_us as f64 / 1e6,
        sold_then: known,
        inventory_owner: owner,
    })
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `ids` with `first` moved to the front.
fn owner_first(ids: &[String], first: &str) -> Vec<String> {
    let mut order = vec![first.to_owned()];
    order.extend(ids.iter().filter(|id| *id != first).cloned());
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_owner_restarts_first() {
        let ids = ["w1", "w2", "w3"].map(String::from);
        assert_eq!(owner_first(&ids, "w2"), ["w2", "w1", "w3"]);
    }
}
