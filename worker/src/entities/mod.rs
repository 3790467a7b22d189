//! The built-in entity types. They are written against the same
//! [`crate::entity::Entity`] trait as any user's type, and registered the
//! same way ([`builtins`]).

pub mod cart;
pub mod inventory;
pub mod quota;
pub mod session;

use crate::kinds::Kinds;

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
