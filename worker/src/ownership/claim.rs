//! Claiming an entity from the store (invariant 1 of [`super`]): at once
//! when nobody alive owns it; from a live owner by asking it to hand the
//! entity over, then asking the store again, with backoff, until it has or
//! the hand-over timeout has passed.
//!
//! An owner is asked again when it still owns the entity
//! [`ASK_AGAIN_AFTER`] later: it may have handed the entity over and taken
//! it back for a request of its own before this claimer looked again (two
//! workers both sent the user's requests while the proxy's routing
//! changed), and a hand-over it already did is not done again unasked.

use std::time::{Duration, Instant};

use super::ClaimError;
use crate::metrics::METRICS;
use crate::store::{Claim, ClaimOutcome, Store};

/// How long a claimer waits before asking the store again, at first; it
/// doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(2);
const RETRY_MAX: Duration = Duration::from_millis(50);

/// How long after asking an owner to hand an entity over it is asked again
/// if it still owns it.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// Claim `key` for `owner`, waiting at most `handoff_timeout` for a live
/// owner to hand it over.
pub async fn claim(
    store: &dyn Store,
    key: &str,
    owner: &str,
    handoff_timeout: Duration,
) -> Result<Claim, ClaimError> {
    let deadline = Instant::now() + handoff_timeout;
    let mut asked: Option<(String, Instant)> = None;
    let mut retry = RETRY_MIN;
    loop {
        let current = match store.claim(key, owner).await? {
            ClaimOutcome::Claimed(claim) => return Ok(claim),
            ClaimOutcome::Owned { owner } => owner,
        };
        let ask = asked
            .as_ref()
            .is_none_or(|(who, when)| *who != current || when.elapsed() >= ASK_AGAIN_AFTER);
        if ask {
            store.ask_handover(&current, key).await?;
            METRICS.handovers_requested.inc();
            asked = Some((current.clone(), Instant::now()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClaimError::HandoffTimeout { owner: current });
        }
        tokio::time::sleep(retry.min(left)).await;
        retry = (retry * 2).min(RETRY_MAX);
    }
}
