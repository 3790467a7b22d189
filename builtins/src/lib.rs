//! `roost-builtins`: the entity types the `roost-worker` binary serves —
//! `session`, `cart`, `quota` and `inventory` — written only against
//! `roost_worker`'s public API, as any application's types are (see
//! `examples/`), and registered the same way ([`builtins`]).
//!
//! The binary (`src/main.rs`) is `roost_worker::cli::main(builtins())`.

pub mod cart;
pub mod inventory;
pub mod quota;
pub mod session;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

use roost_worker::kinds::Kinds;

/// The four built-in types, as `roost-worker` serves them: `session`,
/// `cart` (with `kinds.cart.settings`: `limits`, `abandon_after_ms`),
/// `quota` and `inventory` (with `kinds.inventory.settings.forget_after_ms`).
pub fn builtins() -> Kinds {
    Kinds::new()
        .register(session::Session)
        .register_with(|settings: cart::CartSettings| cart::Cart::from(settings))
        .register(quota::Quota)
        .register_with(|settings: inventory::InventorySettings| {
            inventory::Inventory::from(settings)
        })
}
