//! Acknowledged writes against the final stored state: an acknowledged
//! (2xx) mutation whose trace is missing from the row is lost. Durable
//! losses break guarantee G1 and must be zero; write-behind losses are the
//! window the design allows (G4) and are counted.
//!
//! A quota token whose release was sent (acknowledged or not) cannot be
//! checked for presence, so it is left out of the counts.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{describe, Examples};
use crate::ledger::{entity_key, Durability, Effect, Kind, Phase, Record};
use crate::stored::StoredEntity;

/// Acknowledged writes and how many of each durability the store lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LostWrites {
    pub durable_acked: usize,
    pub durable_lost: usize,
    pub write_behind_acked: usize,
    pub write_behind_lost: usize,
    /// Acquires whose token was released later (not checkable).
    pub released_tokens_skipped: usize,
    pub durable_examples: Examples,
    pub write_behind_examples: Examples,
}

impl LostWrites {
    pub fn of(records: &[Record], stored: &HashMap<String, StoredEntity>) -> LostWrites {
        let released = released_tokens(records);
        let mut lost = LostWrites::default();
        for record in records
            .iter()
            .filter(|r| r.phase == Phase::Load && r.is_acknowledged_write())
        {
            let state = stored.get(&record.entity_key()).map(|e| &e.state);
            let Some(survived) = survived(record, state, &released) else {
                lost.released_tokens_skipped += 1;
                continue;
            };
            lost.count(record, survived, stored);
        }
        lost
    }

    fn count(&mut self, record: &Record, survived: bool, stored: &HashMap<String, StoredEntity>) {
        let durable = record.durability == Some(Durability::Durable);
        let (acked, lost, examples) = if durable {
            (
                &mut self.durable_acked,
                &mut self.durable_lost,
                &mut self.durable_examples,
            )
        } else {
            (
                &mut self.write_behind_acked,
                &mut self.write_behind_lost,
                &mut self.write_behind_examples,
            )
        };
        *acked += 1;
        if !survived {
            *lost += 1;
            examples.note(|| {
                let row = stored.get(&record.entity_key()).map_or_else(
                    || "no row".to_string(),
                    |e| {
                        format!(
                            "row: version {}, epoch {}, owner {:?}",
                            e.version, e.epoch, e.owner
                        )
                    },
                );
                let effect = record
                    .effect
                    .as_ref()
                    .map_or_else(|| "the change".to_string(), ToString::to_string);
                format!("{effect} missing; {}; {row}", describe(record))
            });
        }
    }
}

/// Tokens some release was sent for.
fn released_tokens(records: &[Record]) -> HashSet<(String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.effect {
            Some(Effect::QuotaRelease { token, .. }) => {
                Some((entity_key(Kind::Quota, &r.user), token.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Whether the trace of acknowledged `record` is in `state`; `None` when
/// it cannot be told (a token released later).
pub(super) fn survived(
    record: &Record,
    state: Option<&Value>,
    released: &HashSet<(String, String)>,
) -> Option<bool> {
    let null = Value::Null;
    let state = state.unwrap_or(&null);
    match record.effect.as_ref()? {
        Effect::SessionField { field, value } => {
            Some(state.get(field) == Some(&Value::from(*value)))
        }
        Effect::CartItem { sku } => Some(cart_holds(state, sku)),
        Effect::QuotaToken { name, token } => {
            // A 2xx acquire without a token is itself wrong: count it lost.
            let Some(token) = token else {
                return Some(false);
            };
            if released.contains(&(record.entity_key(), token.clone())) {
                return None;
            }
            Some(quota_holds(state, name, token))
        }
        Effect::QuotaRelease { name, token } => Some(!quota_holds(state, name, token)),
    }
}

/// `sku` is in the cart, or in one of its orders.
fn cart_holds(state: &Value, sku: &str) -> bool {
    let in_items = |items: &Value| items.get(sku).and_then(Value::as_u64).unwrap_or(0) >= 1;
    in_items(&state["items"])
        || state["orders"]
            .as_array()
            .is_some_and(|orders| orders.iter().any(|o| in_items(&o["items"])))
}

fn quota_holds(state: &Value, name: &str, token: &str) -> bool {
    state["quotas"][name]
        .as_array()
        .is_some_and(|tokens| tokens.iter().any(|t| t["id"] == token))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn acked_add(sku: &str, durability: Durability) -> Record {
        let mut record = Record::sample(Kind::Cart, crate::ledger::Op::Add, 0, 10);
        record.durability = Some(durability);
        record.effect = Some(Effect::CartItem { sku: sku.into() });
        record
    }

    fn stored_cart(state: Value) -> HashMap<String, StoredEntity> {
        let row = StoredEntity {
            epoch: 2,
            owner: "w2".into(),
            version: 1,
            state,
        };
        HashMap::from([("cart/u1".to_string(), row)])
    }

    #[test]
    fn an_acknowledged_item_missing_from_the_store_is_lost() {
        let records = [
            acked_add("a", Durability::Durable),
            acked_add("b", Durability::Durable),
            acked_add("c", Durability::WriteBehind),
        ];
        let lost = LostWrites::of(&records, &stored_cart(json!({"items": {"a": 1}})));
        assert_eq!((lost.durable_acked, lost.durable_lost), (2, 1));
        assert_eq!((lost.write_behind_acked, lost.write_behind_lost), (1, 1));
    }

    #[test]
    fn unacknowledged_writes_are_not_checked() {
        let mut failed = acked_add("a", Durability::Durable);
        failed.status = Some(503);
        let lost = LostWrites::of(&[failed], &HashMap::new());
        assert_eq!(lost.durable_acked, 0);
    }

    #[test]
    fn carts_hold_items_in_the_cart_or_in_orders() {
        let state = json!({"items": {"a": 1}, "orders": [{"id": "o1", "items": {"b": 2}}]});
        assert!(cart_holds(&state, "a"));
        assert!(cart_holds(&state, "b"));
        assert!(!cart_holds(&state, "c"));
        assert!(!cart_holds(&Value::Null, "a"));
    }

    #[test]
    fn quotas_hold_tokens_by_id() {
        let state = json!({"quotas": {"uploads": [{"id": "t1", "expires_at_ms": 9}]}});
        assert!(quota_holds(&state, "uploads", "t1"));
        assert!(!quota_holds(&state, "uploads", "t2"));
        assert!(!quota_holds(&state, "other", "t1"));
    }
}
