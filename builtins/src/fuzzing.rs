//! Entry points of the built-in kinds' fuzz targets (`builtins/fuzz/`)
//! and of their regression tests (`builtins/tests/fuzz_regressions.rs`):
//! each takes any bytes and must return, whatever they are — no panic, no
//! hang. They call exactly what the worker runs on client input, so a crash
//! found here is a crash a client could cause.

use std::collections::HashMap;

use roost_worker::entity::{action, Context, Entity, Next, Reply};
use roost_worker::runtime::envelope;
use roost_worker::runtime::precondition::IfMatch;

use crate::cart::Cart;
use crate::inventory::Inventory;
use crate::quota::Quota;
use crate::session::Session;

/// Actions of every built-in kind with their bodies: the first byte picks
/// the kind, the input up to the first newline is the action name, the rest
/// the body. A request that parses and passes the kind's checks is applied
/// to a fresh state (with the action name as an `If-Match` too), so the
/// handlers see fuzzed requests as well.
pub fn entity_request(data: &[u8]) {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let split = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    let (name, body) = input.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    match which % 4 {
        0 => drive(&Session, name, body),
        1 => drive(&cart(), name, body),
        2 => drive(&Quota, name, body),
        _ => drive(&Inventory::default(), name, body),
    }
}

/// Stored entity bytes, as a worker decodes them when it claims an entity:
/// the envelope (remembered replies, awaited calls) and every built-in
/// type's state.
pub fn stored_state(data: &[u8]) {
    let _ = envelope::decode_state(&Session, "session/fuzz", Some(data));
    let _ = envelope::decode_state(&cart(), "cart/fuzz", Some(data));
    let _ = envelope::decode_state(&Quota, "quota/fuzz", Some(data));
    let _ = envelope::decode_state(&Inventory::default(), "inventory/fuzz", Some(data));
}

/// A cart with a limit, so the limit path runs too.
fn cart() -> Cart {
    Cart::new(HashMap::from([("limited".to_owned(), 1)]))
}

/// Parse and check action `name`'s request; apply it to a fresh state;
/// answer its calls, if any, with successes, then with refusals, as a
/// receiver could.
fn drive<E: Entity>(entity: &E, name: &str, body: &[u8]) {
    let Ok(request) = action::parse::<E::Request>(name, body) else {
        return;
    };
    if entity.validate(&request).is_err() {
        return;
    }
    let ctx = Context {
        key: format!("{}/fuzz", E::KIND).into(),
        now_ms: 1_700_000_000_000,
        version: 1,
        random: 7,
    };
    let mut state = E::State::default();
    let if_match = IfMatch::parse(name);
    let outcome =
        roost_worker::runtime::handle_request(entity, &mut state, request, &ctx, Some(&if_match));
    let _ = entity.encode(&state);
    if let Next::Calls(calls) = outcome.next {
        for status in [200, 409] {
            let mut answered = state.clone();
            let replies = calls
                .iter()
                .map(|_| Reply::with_status(status, ()))
                .collect();
            let _ = entity.on_replies(&mut answered, replies, &ctx);
        }
    }
}
