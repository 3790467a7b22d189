//! The sale's plan: how many buyers, how they arrive, and what the fleet is
//! told. Arrivals are paced so the sale itself lasts a few seconds and a
//! fault can land while tickets are still selling: the first
//! `2 × stock` users trickle in evenly over [`SalePlan::trickle`] (about
//! one ticket sold per arriving user, so 100 tickets take half of it), and
//! everyone else arrives at its end, as fast as the bounded concurrency
//! lets them — the crowd that finds the show sold out.

use std::time::Duration;

use super::TicketRun;
use roost_testkit::fleet::FleetConfig;

/// The show's SKU.
pub const SKU: &str = "show-1";
/// The proxy's routing key of the show's inventory (path source prefix
/// `inventory:` + SKU), for `/admin/route`.
pub const INVENTORY_KEY: &str = "inventory:show-1";
/// The path of the show's inventory.
pub const INVENTORY_PATH: &str = "/v1/inventory/show-1";

/// How many buyers, how fast they come, how patient they are.
#[derive(Debug, Clone)]
pub struct SalePlan {
    pub users: usize,
    pub devices: u8,
    /// Tickets on sale.
    pub stock: u64,
    /// The first `trickle_users` users arrive evenly over `trickle`.
    pub trickle_users: usize,
    pub trickle: Duration,
    /// Devices busy (a request in flight, or backing off to retry) at once.
    pub concurrency: usize,
    /// A device gives an operation up (unresolved) after this long.
    pub give_up: Duration,
}

impl SalePlan {
    /// 5,000 users × 2 devices for 100 tickets; `short`: 1,000 users.
    pub fn new(short: bool) -> SalePlan {
        let stock = 100;
        SalePlan {
            users: if short { 1_000 } else { 5_000 },
            devices: 2,
            stock,
            trickle_users: 2 * stock as usize,
            trickle: Duration::from_secs(5),
            concurrency: 256,
            give_up: Duration::from_secs(30),
        }
    }

    /// When user `n` arrives, after the load starts.
    pub fn arrival(&self, n: usize) -> Duration {
        if n >= self.trickle_users || self.trickle_users == 0 {
            return self.trickle;
        }
        // n < trickle_users, so the quotient is below `trickle`.
        let per_user = self.trickle.as_secs_f64() / self.trickle_users as f64;
        Duration::from_secs_f64(per_user * n as f64)
    }
}

/// The fleet of `run`: workers that know the proxy's `hash_seed` (they
/// route cart → inventory calls the same way; the fleet's internal token
/// authenticates those calls), the admin token that guards `PUT /v1/inventory`, the limit of
/// one per user, and durable carts and inventory in the kill -9 run. The
/// proxy takes the key from the inventory path first, then `x-user-id`.
pub fn fleet_config(run: TicketRun, admin_token: &str) -> FleetConfig {
    let limits = format!("settings: {{limits: {{{SKU}: 1}}}}");
    let kinds = match run {
        TicketRun::Kill9 => format!(
            "  cart: {{durability: durable, {limits}}}\n  inventory: {{durability: durable}}\n"
        ),
        TicketRun::Plain | TicketRun::Rolling => format!("  cart: {{{limits}}}\n"),
    };
    let workers = format!("admin_token: \"{admin_token}\"\nkinds:\n{kinds}");
    FleetConfig::new(
        &workers,
        "[{path: \"/v1/inventory/{key}\", prefix: \"inventory:\"}, {header: x-user-id}]",
    )
    .seed_in_workers()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_users_trickle_in_and_the_rest_come_at_once() {
        let plan = SalePlan::new(true);
        assert_eq!(plan.arrival(0), Duration::ZERO);
        assert_eq!(plan.arrival(100), plan.trickle / 2);
        assert!(plan.arrival(199) < plan.trickle);
        assert_eq!(plan.arrival(200), plan.trickle);
        assert_eq!(plan.arrival(999), plan.trickle);
    }

    #[test]
    fn only_the_kill9_run_is_durable_and_every_run_knows_the_seed() {
        let kill9 = fleet_config(TicketRun::Kill9, "t");
        assert!(kill9
            .worker_yaml
            .contains("inventory: {durability: durable}"));
        assert!(kill9.worker_yaml.contains(&kill9.hash_seed));
        assert!(kill9.worker_yaml.contains("limits: {show-1: 1}"));
        let plain = fleet_config(TicketRun::Plain, "t");
        assert!(!plain.worker_yaml.contains("durability"));
        assert!(plain.key_sources.starts_with("[{path:"));
    }
}
