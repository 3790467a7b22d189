//! `roost-orders`: a Roost worker serving order fulfilments and the
//! inventories they reserve from. The same command line as `roost-worker`;
//! settings are `kinds.order.settings` and `kinds.inventory.settings`.

fn main() -> std::process::ExitCode {
    roost_worker::cli::main(roost_orders::kinds())
}
