//! Entry points of the fuzz targets (`worker/fuzz/`) and of their
//! regression tests (`worker/tests/fuzz_regressions.rs`): each takes any
//! bytes and must return, whatever they are — no panic, no hang. They call
//! exactly what the worker runs on client input, so a crash found here is a
//! crash a client could cause.

use std::collections::HashMap;
use std::path::Path;

use roost_routing::config_file;

use crate::config::WorkerConfig;
use crate::entities::cart::Cart;
use crate::entities::inventory::Inventory;
use crate::entities::quota::Quota;
use crate::entities::session::{IfMatch, Session};
use crate::entity::{Context, Entity, Next, Reply};
use crate::http::requests;
use crate::runtime::envelope;

/// Request bodies and path segments of every entity route. The first byte
/// picks the parser, the rest is its input (for routes with a path segment
/// and a body, the input splits at the first newline). A request that
/// parses is applied to a fresh state, and to the state the stored bytes
/// decode to, so the handlers see fuzzed requests too.
pub fn entity_request(data: &[u8]) {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(input);
    let (segment, body) = text.split_once('\n').unwrap_or((&text, ""));
    let if_match = Some(IfMatch::parse(segment));
    match which % 8 {
        0 => drive(&Session, requests::session_put(input, if_match)),
        1 => drive(&Session, requests::session_patch(input, if_match)),
        2 => drive(&cart(), requests::add_item(input)),
        3 => drive(&cart(), requests::remove_item(&text)),
        4 => drive(&Quota, requests::acquire(segment, body.as_bytes())),
        5 => drive(&Quota, requests::release(segment, body.as_bytes())),
        6 => drive(&Inventory, requests::set_stock(input)),
        _ => drive(&Inventory, requests::inventory_call(input)),
    }
}

/// The worker's config file parser and validation on any text.
pub fn worker_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config_file::parse::<WorkerConfig>(Path::new("fuzz.yaml"), text);
    }
}

/// Stored entity bytes, as a worker decodes them when it claims an entity:
/// the envelope (remembered replies, awaited calls) and every built-in
/// type's state.
pub fn stored_state(data: &[u8]) {
    let _ = envelope::decode_state(&Session, "session/fuzz", Some(data));
    let _ = envelope::decode_state(&cart(), "cart/fuzz", Some(data));
    let _ = envelope::decode_state(&Quota, "quota/fuzz", Some(data));
    let _ = envelope::decode_state(&Inventory, "inventory/fuzz", Some(data));
}

/// A cart with a limit, so the limit path runs too.
fn cart() -> Cart {
    Cart::new(HashMap::from([("limited".to_owned(), 1)]))
}

/// Apply a parsed request to a fresh state; answer its calls, if any, with
/// successes, then with refusals, as a receiver could.
fn drive<E: Entity>(entity: &E, parsed: Result<E::Request, Reply>) {
    let Ok(request) = parsed else {
        return;
    };
    let ctx = Context {
        key: format!("{}/fuzz", E::KIND).into(),
        now_ms: 1_700_000_000_000,
        version: 1,
        random: 7,
    };
    let mut state = E::State::default();
    let outcome = entity.handle(&mut state, request, &ctx);
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
