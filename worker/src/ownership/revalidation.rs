//! Revalidation after a lease lapse (invariant 5 of [`super`]): which of
//! the entities a worker holds another worker claimed meanwhile, by their
//! stored epochs. Whatever holds them drops those
//! ([`super::lease::Revalidate`]).

use crate::store::{Store, StoreError};

/// The positions in `held` (key, epoch claimed under) of the entities
/// whose stored epoch is no longer theirs.
pub async fn stale(store: &dyn Store, held: &[(String, i64)]) -> Result<Vec<usize>, StoreError> {
    let keys: Vec<String> = held.iter().map(|(key, _)| key.clone()).collect();
    let stored = store.epochs(&keys).await?;
    Ok(held
        .iter()
        .enumerate()
        .filter(|(_, (key, epoch))| stored.get(key) != Some(epoch))
        .map(|(position, _)| position)
        .collect())
}
