//! `session`: one JSON document per user, replaced with `PUT`, merged with
//! `PATCH` (RFC 7386 JSON merge patch), removed with `DELETE`, guarded by
//! `If-Match` on the entity version.

use serde_json::Value;

use super::{decode_json, encode_json};
use crate::entity::{Context, Entity, Outcome, Reply};

/// The session entity type.
pub struct Session;

/// A precondition on the entity version (`If-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any existing document.
    Any,
    Version(u64),
    /// A value that names no version; it never matches.
    Unparsable,
}

impl IfMatch {
    /// Parse `*`, `"7"`, `W/"7"` or `7`.
    pub fn parse(value: &str) -> Self {
        let value = value.trim();
        if value == "*" {
            return IfMatch::Any;
        }
        let tag = value.strip_prefix("W/").unwrap_or(value).trim_matches('"');
        tag.parse().map_or(IfMatch::Unparsable, IfMatch::Version)
    }

    fn holds(&self, version: u64, exists: bool) -> bool {
        match self {
            IfMatch::Any => exists,
            IfMatch::Version(v) => *v == version,
            IfMatch::Unparsable => false,
        }
    }
}

#[derive(Debug, Clone)]
pub enum SessionRequest {
    Get,
    Put {
        document: Value,
        if_match: Option<IfMatch>,
    },
    Patch {
        patch: Value,
        if_match: Option<IfMatch>,
    },
    Delete {
        if_match: Option<IfMatch>,
    },
}

impl Entity for Session {
    /// `None` until the first `PUT` or `PATCH`.
    type State = Option<Value>;
    type Request = SessionRequest;
    const KIND: &'static str = "session";

    fn encode(&self, state: &Option<Value>) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Option<Value>, String> {
        decode_json(bytes)
    }

    fn handle(&self, state: &mut Option<Value>, request: SessionRequest, ctx: &Context) -> Outcome {
        let precondition = |if_match: &Option<IfMatch>| match if_match {
            Some(condition) if !condition.holds(ctx.version, state.is_some()) => {
                Some(Outcome::read(Reply::error(
                    412,
                    "precondition_failed",
                    format!(
                        "If-Match does not match the current version {}",
                        ctx.version
                    ),
                )))
            }
            _ => None,
        };
        match request {
            SessionRequest::Get => Outcome::read(match state {
                Some(document) => Reply::ok(document),
                None => Reply::error(404, "not_found", "this user has no session yet"),
            }),
            SessionRequest::Put { document, if_match } => {
                precondition(&if_match).unwrap_or_else(|| {
                    let reply = Reply::ok(&document);
                    *state = Some(document);
                    Outcome::changed(reply)
                })
            }
            SessionRequest::Patch { patch, if_match } => {
                precondition(&if_match).unwrap_or_else(|| {
                    let mut document = state.take().unwrap_or(Value::Null);
                    merge_patch(&mut document, patch);
                    let reply = Reply::ok(&document);
                    *state = Some(document);
                    Outcome::changed(reply)
                })
            }
            SessionRequest::Delete { if_match } => precondition(&if_match).unwrap_or_else(|| {
                let existed = state.take().is_some();
                Outcome::answer(Reply::no_content(), existed)
            }),
        }
    }
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

    #[test]
    fn if_match_parses_strong_weak_bare_and_star() {
        assert_eq!(IfMatch::parse("\"7\""), IfMatch::Version(7));
        assert_eq!(IfMatch::parse("W/\"7\""), IfMatch::Version(7));
        assert_eq!(IfMatch::parse("7"), IfMatch::Version(7));
        assert_eq!(IfMatch::parse("*"), IfMatch::Any);
        assert_eq!(IfMatch::parse("\"x\""), IfMatch::Unparsable);
    }
}
