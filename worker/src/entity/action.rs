//! Requests from actions: how an action's name and its JSON body become a
//! value of an entity type's request enum, with serde, so a new type needs
//! no parsing code.
//!
//! A request type is an enum whose variants are the type's actions, in
//! serde's externally tagged form: the action name picks the variant (after
//! any `rename_all`), and the body is the variant's content:
//!
//! - a unit variant (`Checkout`) takes no body (empty, `{}` or `null`);
//! - a struct variant (`Add { sku: String, qty: u64 }`) takes a JSON object
//!   with its fields (`{}` when it has none that are required);
//! - a newtype variant (`Put(serde_json::Value)`) takes the whole body as
//!   its one value.
//!
//! The same enum serializes back into an action and a body, which is how a
//! handler addresses a call to another entity ([`super::Call::to`]).

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;

/// Why an action and its body are not a request of the type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The type has no action of that name; these are its actions.
    #[error("no action {action:?}")]
    Unknown {
        action: String,
        actions: &'static [&'static str],
    },
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not what the action takes; the message names
    /// the field.
    #[error("{0}")]
    Invalid(String),
}

impl de::Error for ActionError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        ActionError::Invalid(message.to_string())
    }
}

/// What an action's request is read from.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// A JSON body (empty for none).
    Json(&'a [u8]),
    /// An alias's path fields (decoded) as the body's object, when the
    /// request has no body besides: read as they are, with no JSON written
    /// and parsed again in between.
    Fields(&'a [(&'static str, String)]),
}

/// Parse `body` as the request for `action` of request type `R`.
pub fn parse<R: DeserializeOwned>(action: &str, body: &[u8]) -> Result<R, ActionError> {
    parse_content(action, Content::Json(body))
}

/// Parse `content` as the request for `action` of request type `R`. A
/// body of the wrong shape is parsed again with the path to the offending
/// field tracked, for the message (tracking costs an allocation per field,
/// so a good body does not pay for it).
pub fn parse_content<R: DeserializeOwned>(
    action: &str,
    content: Content<'_>,
) -> Result<R, ActionError> {
    let parsed = |tracked| {
        R::deserialize(Action {
            name: action,
            content,
            variants: &[],
            tracked,
        })
    };
    match parsed(false) {
        Err(ActionError::Invalid(_)) => parsed(true),
        answer => answer,
    }
}

/// The action names of request type `R` (its variants, as serde names
/// them); empty when `R` is not an enum. (Learnt by asking for an action
/// no enum can have.)
pub fn names<R: DeserializeOwned>() -> &'static [&'static str] {
    match parse::<R>("\0", b"") {
        Err(ActionError::Unknown { actions, .. }) => actions,
        _ => &[],
    }
}

/// Split a request into its action name and its JSON body (`None` for a
/// unit variant); `None` when it does not serialize to one action.
pub fn split<R: Serialize>(request: &R) -> Option<(String, Option<Box<RawValue>>)> {
    let raw = serde_json::value::to_raw_value(request).ok()?;
    if let Ok(action) = serde_json::from_str::<String>(raw.get()) {
        return Some((action, None));
    }
    // Raw values keep the body's fields in the order they were written.
    let tagged: std::collections::HashMap<String, Box<RawValue>> =
        serde_json::from_str(raw.get()).ok()?;
    if tagged.len() != 1 {
        return None;
    }
    let (action, body) = tagged.into_iter().next()?;
    Some((action, Some(body)))
}

/// The deserializer of one action: an enum whose variant is `name`.
struct Action<'de> {
    name: &'de str,
    content: Content<'de>,
    /// The enum's variants, once serde has said them.
    variants: &'static [&'static str],
    /// Whether to track the path to a field in error.
    tracked: bool,
}

impl<'de> de::Deserializer<'de> for Action<'de> {
    type Error = ActionError;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ActionError> {
        visitor.visit_enum(Action { variants, ..self })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ActionError> {
        Err(ActionError::Invalid(
            "an entity's request type must be an enum of its actions".into(),
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for Action<'de> {
    type Error = ActionError;
    type Variant = Body<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Body<'de>), ActionError> {
        let name: de::value::StrDeserializer<'_, de::value::Error> = self.name.into_deserializer();
        let variant = seed.deserialize(name).map_err(|_| ActionError::Unknown {
            action: self.name.to_owned(),
            actions: self.variants,
        })?;
        let body = Body {
            content: self.content,
            tracked: self.tracked,
        };
        Ok((variant, body))
    }
}

/// An action's body, as its variant's content.
struct Body<'de> {
    content: Content<'de>,
    tracked: bool,
}

impl<'de> Body<'de> {
    /// The JSON body, or (path fields) the reply to a variant that cannot
    /// take a map.
    fn json(&self) -> Result<&'de [u8], ActionError> {
        match self.content {
            Content::Json(bytes) => Ok(bytes),
            Content::Fields(_) => Err(ActionError::Invalid(
                "this action does not take its fields from the path".into(),
            )),
        }
    }
}

/// An alias's path fields as a map of strings.
fn fields_map<'de>(
    fields: &'de [(&'static str, String)],
) -> de::value::MapDeserializer<'de, impl Iterator<Item = (&'de str, &'de str)>, ActionError> {
    de::value::MapDeserializer::new(fields.iter().map(|(name, value)| (*name, value.as_str())))
}

/// `$deserialize`, an expression of `$de`, run over `$body`'s bytes as JSON
/// (with the path to a field in error tracked when the body asks), then a
/// check that nothing follows the value. A macro rather than a function:
/// the plain and the tracking deserializers are different types, and the
/// seed or visitor `$deserialize` consumes is used in one branch only.
macro_rules! over_json {
    ($body:expr, |$de:ident| $deserialize:expr) => {{
        let body: Body<'_> = $body;
        let mut json = serde_json::Deserializer::from_slice(body.json()?);
        let value = if body.tracked {
            let mut track = serde_path_to_error::Track::new();
            let $de = serde_path_to_error::Deserializer::new(&mut json, &mut track);
            $deserialize.map_err(|e| body_error(&e, Some(track.path())))
        } else {
            let $de = &mut json;
            $deserialize.map_err(|e| body_error(&e, None))
        }?;
        json.end()
            .map_err(|e| ActionError::NotJson(e.to_string()))?;
        Ok(value)
    }};
}

impl<'de> de::VariantAccess<'de> for Body<'de> {
    type Error = ActionError;

    fn unit_variant(self) -> Result<(), ActionError> {
        let text = std::str::from_utf8(self.json()?).unwrap_or("?").trim();
        if matches!(text, "" | "{}" | "null") {
            Ok(())
        } else {
            Err(ActionError::Invalid("this action takes no body".into()))
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, ActionError> {
        if let Content::Fields(fields) = self.content {
            return seed.deserialize(fields_map(fields));
        }
        over_json!(self, |de| seed.deserialize(de))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ActionError> {
        over_json!(self, |de| de::Deserializer::deserialize_tuple(
            de, len, visitor
        ))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ActionError> {
        if let Content::Fields(fields) = self.content {
            return de::Deserializer::deserialize_map(fields_map(fields), visitor);
        }
        if self.json()?.trim_ascii_start().starts_with(b"[") {
            return Err(ActionError::Invalid(
                "the body must be a JSON object, not an array".into(),
            ));
        }
        over_json!(self, |de| de::Deserializer::deserialize_struct(
            de, "", fields, visitor
        ))
    }
}

/// A body error as the client should read it: syntax apart from content,
/// and the content's error prefixed with the field it is about.
fn body_error(error: &serde_json::Error, path: Option<serde_path_to_error::Path>) -> ActionError {
    if error.is_syntax() || error.is_eof() {
        return ActionError::NotJson(error.to_string());
    }
    let field = path.map(|path| path.to_string()).unwrap_or_default();
    if field.is_empty() || field == "." {
        ActionError::Invalid(error.to_string())
    } else {
        ActionError::Invalid(format!("{field}: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Request {
        Get,
        Add { sku: String, qty: u64 },
        Put(serde_json::Value),
    }

    #[test]
    fn an_action_and_its_body_make_a_request() {
        assert_eq!(parse::<Request>("get", b""), Ok(Request::Get));
        assert_eq!(parse::<Request>("get", b" {} "), Ok(Request::Get));
        assert_eq!(
            parse::<Request>("add", br#"{"sku": "tee", "qty": 2}"#),
            Ok(Request::Add {
                sku: "tee".into(),
                qty: 2
            })
        );
        assert_eq!(
            parse::<Request>("put", br#"[1, 2]"#),
            Ok(Request::Put(serde_json::json!([1, 2])))
        );
    }

    #[test]
    fn errors_say_what_is_wrong_and_name_the_field() {
        assert_eq!(
            parse::<Request>("nope", b""),
            Err(ActionError::Unknown {
                action: "nope".into(),
                actions: &["get", "add", "put"]
            })
        );
        assert!(matches!(
            parse::<Request>("add", b"{"),
            Err(ActionError::NotJson(_))
        ));
        let Err(ActionError::Invalid(wrong_type)) =
            parse::<Request>("add", br#"{"sku": "tee", "qty": "two"}"#)
        else {
            panic!("a wrong type is refused");
        };
        assert!(wrong_type.starts_with("qty: invalid type"), "{wrong_type}");
        assert!(matches!(
            parse::<Request>("add", b""),
            Err(ActionError::NotJson(_))
        ));
        assert!(matches!(
            parse::<Request>("add", br#"["tee", 1]"#),
            Err(ActionError::Invalid(_))
        ));
        let Err(ActionError::Invalid(missing)) = parse::<Request>("add", b"{}") else {
            panic!("a missing field is refused");
        };
        assert!(missing.contains("`sku`"), "{missing}");
        let Err(ActionError::Invalid(unknown)) =
            parse::<Request>("add", br#"{"sku": "t", "qty": 1, "colour": 1}"#)
        else {
            panic!("an unknown field is refused");
        };
        assert!(unknown.contains("colour"), "{unknown}");
        assert!(parse::<Request>("get", b"[1]").is_err());
        assert!(parse::<Request>("add", br#"{"sku": "t", "qty": 1} x"#).is_err());
    }

    #[test]
    fn the_actions_are_the_variants_and_a_request_splits_back() {
        assert_eq!(names::<Request>(), ["get", "add", "put"]);
        assert!(names::<u64>().is_empty());
        let (action, body) = split(&Request::Get).expect("one action");
        assert_eq!((action.as_str(), body.is_none()), ("get", true));
        let (action, body) = split(&Request::Add {
            sku: "tee".into(),
            qty: 1,
        })
        .expect("one action");
        assert_eq!(action, "add");
        assert_eq!(body.expect("a body").get(), r#"{"sku":"tee","qty":1}"#);
    }
}
