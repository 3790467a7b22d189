//! `session`: one JSON document per user, replaced with `PUT`, merged with
//! `PATCH` (RFC 7386 JSON merge patch), removed with `DELETE`, guarded by
//! `If-Match` on the entity version.
//!
//! The document is held as its compact JSON text, not as a tree of
//! `Value`s: a `GET` sends the text as it is, and a session in memory costs
//! about its size (a parsed object costs several times that: a B-tree node
//! of eleven slots, a heap string per key). Only a `PATCH` parses it.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use roost_worker::entity::{decode_json, encode_json, Context, Entity, Outcome, Reply};

/// The session entity type.
pub struct Session;

/// `GET`, `PUT` (the document), `PATCH` (a merge patch) and `DELETE` on
/// `/v1/session`: the generic scheme's method actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionRequest {
    Get,
    Put(Value),
    Patch(Value),
    Delete,
}

/// The document's compact JSON text (`None` until the first `PUT` or
/// `PATCH`).
pub type Document = Option<Box<RawValue>>;

impl Entity for Session {
    type State = Document;
    type Request = SessionRequest;
    const KIND: &'static str = "session";

    fn encode(&self, state: &Document) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Document, String> {
        decode_json(bytes)
    }

    /// `If-Match: *` matches a session that has a document.
    fn exists(&self, state: &Document) -> bool {
        state.is_some()
    }

    fn handle(&self, state: &mut Document, request: SessionRequest, _ctx: &Context) -> Outcome {
        match request {
            SessionRequest::Get => Outcome::read(match state {
                Some(document) => Reply::ok(document),
                None => Reply::error(404, "not_found", "this user has no session yet"),
            }),
            SessionRequest::Put(document) => replace(state, &document),
            SessionRequest::Patch(patch) => {
                let mut document = match state.as_deref() {
                    Some(text) => match serde_json::from_str(text.get()) {
                        Ok(document) => document,
                        Err(e) => return unreadable(&e),
                    },
                    None => Value::Null,
                };
                merge_patch(&mut document, patch);
                replace(state, &document)
            }
            SessionRequest::Delete => {
                let existed = state.take().is_some();
                Outcome::answer(Reply::no_content(), existed)
            }
        }
    }
}

/// Hold `document` as the session's text, and answer with it.
fn replace(state: &mut Document, document: &Value) -> Outcome {
    match serde_json::value::to_raw_value(document) {
        Ok(text) => {
            let reply = Reply::ok(&text);
            *state = Some(text);
            Outcome::changed(reply)
        }
        Err(e) => unreadable(&e),
    }
}

/// A document that cannot be turned into text, or the held text back into
/// a document: a bug, not the client's doing.
fn unreadable(error: &serde_json::Error) -> Outcome {
    Outcome::read(Reply::error(500, "unreadable_session", error.to_string()))
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(&key);
            } else {
                merge_patch(target.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, patch);
            assert_eq!(target, expected);
        }
    }
}
