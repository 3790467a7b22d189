//! CI hook: the short ticket sale (`roost-tickets all --short`: 1,000
//! users × 2 devices for 100 tickets, plain, kill -9 of the inventory's
//! worker mid-sale, rolling restart) against the `roost-proxy` and
//! `roost-worker` of this test's own profile (built first if missing),
//! asserting every MUST: exactly min(100, demand) sold and never more, no
//! user holding two, every acknowledged order present, sold = orders
//! through the proxy and in the store, each fault landed mid-sale. Needs
//! PostgreSQL's `initdb`/`pg_ctl`.
//!
//! The output goes to a temp dir, removed when the sale passes and kept
//! (its path printed) when it does not.

mod common;

use roost_loadtest::tickets::{self, TicketOptions, TicketRun};

#[test]
fn the_short_ticket_sale_keeps_every_must() {
    common::assert_musts_hold("tickets", |common| async move {
        let options = TicketOptions {
            runs: TicketRun::ALL.to_vec(),
            common,
            concurrency: None,
        };
        tickets::run(&options).await
    });
}
