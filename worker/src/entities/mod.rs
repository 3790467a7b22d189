//! The built-in entity types. They are written against the same
//! [`crate::entity::Entity`] trait as any user's type, and registered the
//! same way ([`builtins`]).

pub mod cart;
pub mod inventory;
pub mod quota;
pub mod session;

use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// JSON encoding shared by the built-ins (their state is small and JSON keeps
/// the store readable with `psql`).
pub(crate) fn encode_json<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).unwrap_or_default()
}

pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}
