//! The read-back after the load (session and cart of every user, through
//! the proxy) against the rows in the store: a second opinion on the final
//! state. With the load stopped and a flush interval long past, what a
//! user is shown and what is stored should be the same document at the
//! same version.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::{describe, Examples};
use crate::ledger::{Kind, Phase, Record};
use crate::stored::StoredEntity;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadBack {
    pub compared: usize,
    /// Read-backs that got no successful answer.
    pub unanswered: usize,
    pub mismatched: usize,
    pub examples: Examples,
}

impl ReadBack {
    pub fn of(records: &[Record], stored: &HashMap<String, StoredEntity>) -> ReadBack {
        let mut readback = ReadBack::default();
        for read in records.iter().filter(|r| r.phase == Phase::Final) {
            readback.compare(read, stored.get(&read.entity_key()));
        }
        // Retries of one read-back are separate records: count operations.
        readback.unanswered = unanswered_ops(records);
        readback
    }

    fn compare(&mut self, read: &Record, row: Option<&StoredEntity>) {
        if !read.is_success() {
            return;
        }
        self.compared += 1;
        let shown = shown_state(read);
        let (stored, version) = row.map_or((Value::Null, 0), |r| {
            (stored_view(read.entity, &r.state), r.version)
        });
        let same_version = read.version.is_none_or(|v| i64::try_from(v) == Ok(version));
        if shown != stored || !same_version {
            self.mismatched += 1;
            self.examples.note(|| {
                format!(
                    "{}: shown {shown}, stored {stored} at version {version}",
                    describe(read)
                )
            });
        }
    }
}

fn unanswered_ops(records: &[Record]) -> usize {
    let mut answered: BTreeMap<&str, bool> = BTreeMap::new();
    for record in records.iter().filter(|r| r.phase == Phase::Final) {
        *answered.entry(&record.op_id).or_default() |= record.is_success();
    }
    answered.values().filter(|ok| !**ok).count()
}

/// What a read returned, in the stored state's shape.
pub(super) fn shown_state(read: &Record) -> Value {
    let body = read.body.clone().unwrap_or(Value::Null);
    match read.entity {
        // A 404 is "no session": the stored `null`.
        Kind::Session if read.status == Some(404) => Value::Null,
        Kind::Cart => cart_view(&body),
        _ => body,
    }
}

/// The comparable part of a stored state (carts: items and orders).
fn stored_view(kind: Kind, state: &Value) -> Value {
    match kind {
        Kind::Cart if state.is_null() => cart_view(&serde_json::json!({"items": []})),
        Kind::Cart => serde_json::json!({
            "items": state["items"],
            "orders": state["orders"].as_array().map_or(0, Vec::len),
        }),
        _ => state.clone(),
    }
}

/// A cart reply (`{"items": [{"sku", "qty"}], "orders": [...]}`) as
/// `{"items": {sku: qty}, "orders": N}`.
fn cart_view(body: &Value) -> Value {
    let items: serde_json::Map<String, Value> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| Some((item["sku"].as_str()?.to_owned(), item["qty"].clone())))
        .collect();
    serde_json::json!({
        "items": items,
        "orders": body["orders"].as_array().map_or(0, Vec::len),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cart_reply_and_its_stored_state_compare_equal() {
        let reply = json!({"items": [{"sku": "a", "qty": 1}], "orders": []});
        let state = json!({"items": {"a": 1}, "orders": []});
        assert_eq!(cart_view(&reply), stored_view(Kind::Cart, &state));
    }

    #[test]
    fn an_empty_cart_equals_no_row() {
        let reply = json!({"items": [], "orders": []});
        assert_eq!(cart_view(&reply), stored_view(Kind::Cart, &Value::Null));
    }
}
