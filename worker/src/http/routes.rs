//! Which route a request is for: the worker's fixed routes, and the entity
//! routes of every registered kind, by the generic scheme and by each
//! kind's aliases.
//!
//! # The generic scheme
//!
//! | kind's scope | path | methods | action |
//! |---|---|---|---|
//! | per user | `/v1/{kind}` | `GET`, `PUT`, `PATCH`, `DELETE` | `get`, `put`, `patch`, `delete` (those the kind has) |
//! | per user | `/v1/{kind}/{action}` | `GET` for a read, `POST` otherwise | `{action}` |
//! | shared | `/v1/{kind}/{id}` | as `/v1/{kind}` | as `/v1/{kind}` |
//! | shared | `/v1/{kind}/{id}/{action}` | as `/v1/{kind}/{action}` | `{action}` |
//!
//! A per-user entity is the one of the user the proxy names in
//! `x-roost-key`; a shared one is named by `{id}`. An action only other
//! entities may ask for ([`Access::Calls`]) has no route. An alias
//! ([`crate::entity::Alias`]) adds a route to an action at a path of the
//! kind's choosing; its `{name}` segments become fields of the body.
//!
//! A path with routes but none for the method is 405 with `Allow`; a path
//! with none is 404.
//!
//! Everything a request's route needs is resolved once, when the routes are
//! built: each alias's kind and action, and each route's metrics. A
//! request only compares path segments: no hashing, no allocation, no
//! metric lookup by label.

use std::sync::Arc;

use hyper::Method;
use percent_encoding::percent_decode_str;

use crate::entity::action::Content;
use crate::entity::{check_name, Access, Reply, Scope};
use crate::kinds::{Catalog, Kind};
use crate::metrics::RouteMetrics;

/// The methods a route may have, in the order `Allow` lists them.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// More segments than any route has: such a path is not found.
const MAX_SEGMENTS: usize = 8;

/// `path`'s segments in `parts` (no allocation per request); `None` when
/// it does not start with `/` or has more than [`MAX_SEGMENTS`].
fn split<'p, 's>(path: &'p str, parts: &'s mut [&'p str; MAX_SEGMENTS]) -> Option<&'s [&'p str]> {
    let mut count = 0;
    for segment in path.strip_prefix('/')?.split('/') {
        *parts.get_mut(count)? = segment;
        count += 1;
    }
    Some(&parts[..count])
}

/// The action a method asks for on an entity's own path.
const METHOD_ACTIONS: [(Method, &str); 4] = [
    (Method::GET, "get"),
    (Method::PUT, "put"),
    (Method::PATCH, "patch"),
    (Method::DELETE, "delete"),
];

/// A request's route, with its path parameters.
pub enum Route<'a, 'p> {
    Healthz,
    Readyz,
    Metrics,
    WhoAmI,
    /// Anything under `/internal/`: the internal surface, behind the
    /// internal token whatever the path. `Some`: another worker's call,
    /// `POST /internal/v1/{kind}/{id}/{action}`; `None`: no such call (404,
    /// once the credential passed).
    Internal(Option<InternalCall<'p>>),
    Entity(EntityRoute<'a, 'p>),
}

/// A call's address on the internal route (still escaped).
pub struct InternalCall<'p> {
    pub kind: &'p str,
    pub id: &'p str,
    pub action: &'p str,
}

/// An action of an entity.
pub struct EntityRoute<'a, 'p> {
    pub kind: &'a dyn Kind,
    pub action: &'a ActionRoute,
    /// A shared entity's id, as in the path (still escaped).
    pub id: Option<&'p str>,
    /// An alias's path fields, as in the path (still escaped).
    pub fields: Vec<(&'static str, &'p str)>,
}

/// Why no route takes a request.
pub enum Miss {
    NotFound,
    /// The path has routes, for these methods.
    MethodNotAllowed(Vec<Method>),
}

/// One action of a kind, as routes see it.
pub struct ActionRoute {
    pub name: &'static str,
    pub access: Access,
    /// Its series, as route `{kind}_{action}`.
    metrics: RouteMetrics,
}

/// A kind and its routable actions.
struct KindRoutes {
    name: &'static str,
    kind: Arc<dyn Kind>,
    actions: Vec<ActionRoute>,
}

impl KindRoutes {
    fn action(&self, name: &str) -> Option<&ActionRoute> {
        self.actions.iter().find(|a| a.name == name)
    }

    fn action_index(&self, name: &str) -> Option<usize> {
        self.actions.iter().position(|a| a.name == name)
    }

    /// The actions a method asks for on the entity's own path: `GET` for
    /// a read `get`; `PUT`, `PATCH`, `DELETE` for changes of those names.
    fn method_actions(&self) -> impl Iterator<Item = (Method, &ActionRoute)> {
        METHOD_ACTIONS.into_iter().filter_map(|(method, name)| {
            let action = self.action(name)?;
            let fits = match action.access {
                Access::Read => method == Method::GET,
                Access::Write | Access::Admin => method != Method::GET,
                Access::Calls => false,
            };
            fits.then_some((method, action))
        })
    }
}

impl ActionRoute {
    /// The method a client asks for the action with on its own path:
    /// `GET` for a read, `POST` for a change, none for a call-only action.
    fn method(&self) -> Option<Method> {
        match self.access {
            Access::Read => Some(Method::GET),
            Access::Write | Access::Admin => Some(Method::POST),
            Access::Calls => None,
        }
    }
}

/// A segment of an alias's path.
enum Segment {
    Literal(&'static str),
    /// `{id}` of a shared kind.
    Id,
    /// `{name}`: a field of the body.
    Field(&'static str),
}

/// An alias, with its kind and action resolved.
struct AliasRoute {
    method: Method,
    segments: Vec<Segment>,
    /// Index into [`Routes::kinds`].
    kind: usize,
    /// Index into that kind's actions.
    action: usize,
}

/// The series of the worker's own routes, and of requests no route takes.
struct FixedMetrics {
    healthz: RouteMetrics,
    readyz: RouteMetrics,
    metrics: RouteMetrics,
    whoami: RouteMetrics,
    internal: RouteMetrics,
    unmatched: RouteMetrics,
}

/// Every route of a worker, built once from its kinds.
pub struct Routes {
    /// A handful of kinds: a scan of their names beats hashing the path's.
    kinds: Vec<KindRoutes>,
    aliases: Vec<AliasRoute>,
    fixed: FixedMetrics,
}

impl Routes {
    pub fn new(catalog: &Catalog) -> Self {
        let kinds: Vec<KindRoutes> = catalog
            .all()
            .into_iter()
            .map(|(name, kind)| KindRoutes {
                name,
                kind: Arc::clone(kind),
                actions: kind
                    .actions()
                    .iter()
                    .map(|&action| ActionRoute {
                        name: action,
                        access: kind.access(action),
                        metrics: RouteMetrics::for_route(&format!("{name}_{action}")),
                    })
                    .collect(),
            })
            .collect();
        // An alias to an action without a route (a call-only one, or none
        // of that name) routes nowhere.
        let aliases = kinds
            .iter()
            .enumerate()
            .flat_map(|(index, routes)| {
                routes.kind.aliases().into_iter().filter_map(move |alias| {
                    Some(AliasRoute {
                        method: alias.method,
                        segments: parse_template(alias.path),
                        kind: index,
                        action: routes.action_index(alias.action)?,
                    })
                })
            })
            .collect();
        let fixed = FixedMetrics {
            healthz: RouteMetrics::for_route("healthz"),
            readyz: RouteMetrics::for_route("readyz"),
            metrics: RouteMetrics::for_route("metrics"),
            whoami: RouteMetrics::for_route("whoami"),
            internal: RouteMetrics::for_route("internal"),
            unmatched: RouteMetrics::for_route("unmatched"),
        };
        Routes {
            kinds,
            aliases,
            fixed,
        }
    }

    /// The route of `method` on a normal `path`.
    pub fn find<'a, 'p>(&'a self, method: &Method, path: &'p str) -> Result<Route<'a, 'p>, Miss> {
        let mut parts = [""; MAX_SEGMENTS];
        let Some(segments) = split(path, &mut parts) else {
            return Err(Miss::NotFound);
        };
        if let Some((route, allowed)) = fixed(segments) {
            return if allowed.contains(method) {
                Ok(route)
            } else {
                Err(Miss::MethodNotAllowed(allowed.to_vec()))
            };
        }
        let mut found = None;
        self.each_entity_route(segments, &mut |route_method, route| {
            if found.is_none() && route_method == method {
                found = Some(route);
            }
        });
        if let Some(route) = found {
            return Ok(Route::Entity(route));
        }
        // A miss: what the path does allow, for 405's `Allow`.
        let mut allowed = Vec::new();
        self.each_entity_route(segments, &mut |route_method, _| {
            if !allowed.contains(route_method) {
                allowed.push(route_method.clone());
            }
        });
        if allowed.is_empty() {
            return Err(Miss::NotFound);
        }
        allowed.sort_by_key(|m| METHODS.iter().position(|known| known == m));
        Err(Miss::MethodNotAllowed(allowed))
    }

    /// The series of `route`.
    pub fn metrics<'a>(&'a self, route: &Route<'a, '_>) -> &'a RouteMetrics {
        match route {
            Route::Healthz => &self.fixed.healthz,
            Route::Readyz => &self.fixed.readyz,
            Route::Metrics => &self.fixed.metrics,
            Route::WhoAmI => &self.fixed.whoami,
            Route::Internal(_) => &self.fixed.internal,
            Route::Entity(entity) => &entity.action.metrics,
        }
    }

    /// The series of requests no route takes (404, 405, a path not in its
    /// normal form).
    pub fn unmatched(&self) -> &RouteMetrics {
        &self.fixed.unmatched
    }

    fn kind(&self, name: &str) -> Option<&KindRoutes> {
        self.kinds.iter().find(|routes| routes.name == name)
    }

    /// Every entity route `segments` matches, with its method: the
    /// kinds' aliases first, then the generic scheme.
    fn each_entity_route<'a, 'p>(
        &'a self,
        segments: &[&'p str],
        found: &mut impl FnMut(&Method, EntityRoute<'a, 'p>),
    ) {
        self.each_alias(segments, found);
        self.each_generic(segments, found);
    }

    /// The aliases `segments` match.
    fn each_alias<'a, 'p>(
        &'a self,
        segments: &[&'p str],
        found: &mut impl FnMut(&Method, EntityRoute<'a, 'p>),
    ) {
        for alias in &self.aliases {
            let Some((id, fields)) = alias.matches(segments) else {
                continue;
            };
            let routes = &self.kinds[alias.kind];
            let route = EntityRoute {
                kind: &*routes.kind,
                action: &routes.actions[alias.action],
                id,
                fields,
            };
            found(&alias.method, route);
        }
    }

    /// The generic scheme's routes `segments` match (the module doc).
    fn each_generic<'a, 'p>(
        &'a self,
        segments: &[&'p str],
        found: &mut impl FnMut(&Method, EntityRoute<'a, 'p>),
    ) {
        let ["v1", kind, rest @ ..] = segments else {
            return;
        };
        let Some(routes) = self.kind(kind) else {
            return;
        };
        let (id, rest) = match (routes.kind.scope(), rest) {
            (Scope::PerUser, rest) => (None, rest),
            (Scope::Shared, [id, rest @ ..]) if !id.is_empty() => (Some(*id), rest),
            (Scope::Shared, _) => return,
        };
        let route = |action: &'a ActionRoute| -> EntityRoute<'a, 'p> {
            EntityRoute {
                kind: &*routes.kind,
                action,
                id,
                fields: Vec::new(),
            }
        };
        match rest {
            [] => {
                for (method, action) in routes.method_actions() {
                    found(&method, route(action));
                }
            }
            [name] => {
                let action = routes.action(name);
                if let Some((action, method)) = action.and_then(|a| Some((a, a.method()?))) {
                    found(&method, route(action));
                }
            }
            _ => {}
        }
    }
}

impl AliasRoute {
    /// The id and fields of `segments` if they match this alias.
    #[allow(clippy::type_complexity)]
    fn matches<'p>(
        &self,
        segments: &[&'p str],
    ) -> Option<(Option<&'p str>, Vec<(&'static str, &'p str)>)> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut id = None;
        let mut fields = Vec::new();
        for (segment, value) in self.segments.iter().zip(segments) {
            match segment {
                Segment::Literal(literal) if literal == value => {}
                Segment::Literal(_) => return None,
                _ if value.is_empty() => return None,
                Segment::Id => id = Some(*value),
                Segment::Field(name) => fields.push((*name, *value)),
            }
        }
        Some((id, fields))
    }
}

/// An alias's path as segments: `/v1/cart/items/{sku}`.
fn parse_template(path: &'static str) -> Vec<Segment> {
    path.trim_start_matches('/')
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some("id") => Segment::Id,
                Some(field) => Segment::Field(field),
                None => Segment::Literal(segment),
            },
        )
        .collect()
}

/// The call a path under `/internal/` names, if it names one.
fn internal_call<'p>(rest: &[&'p str]) -> Option<InternalCall<'p>> {
    match rest {
        ["v1", kind, id, action] if [kind, id, action].iter().all(|s| !s.is_empty()) => {
            Some(InternalCall { kind, id, action })
        }
        _ => None,
    }
}

/// The worker's own routes, with their methods.
fn fixed<'a, 'p>(segments: &[&'p str]) -> Option<(Route<'a, 'p>, &'static [Method])> {
    const GET: &[Method] = &[Method::GET];
    const POST: &[Method] = &[Method::POST];
    Some(match segments {
        ["healthz"] => (Route::Healthz, GET),
        ["readyz"] => (Route::Readyz, GET),
        ["metrics"] => (Route::Metrics, GET),
        ["v1", "whoami"] => (Route::WhoAmI, &METHODS),
        ["internal", rest @ ..] => (Route::Internal(internal_call(rest)), POST),
        _ => return None,
    })
}

/// A percent-decoded path segment, checked like any name.
pub fn decode_segment(segment: &str) -> Result<String, Reply> {
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| Reply::error(400, "invalid_path", "a path segment is not UTF-8"))?;
    check_name("path segment", &decoded)?;
    Ok(decoded.into_owned())
}

/// An alias request's body with its path fields (decoded): the fields
/// alone when the body is empty (the common case, `DELETE
/// /v1/cart/items/{sku}`), else the body's JSON object with them added.
/// The body must then be an object, and must not set a field the path
/// sets.
pub enum AliasBody {
    Fields(Vec<(&'static str, String)>),
    Merged(Vec<u8>),
}

impl AliasBody {
    pub fn new(body: &[u8], fields: &[(&'static str, &str)]) -> Result<Self, Reply> {
        let decoded = fields
            .iter()
            .map(|(name, raw)| Ok((*name, decode_segment(raw)?)))
            .collect::<Result<Vec<_>, Reply>>()?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return match repeated_field(&decoded) {
                Some(name) => Err(given_twice(name)),
                None => Ok(AliasBody::Fields(decoded)),
            };
        }
        let mut object = match serde_json::from_slice(body) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => {
                let message = "the body must be a JSON object";
                return Err(Reply::error(400, "invalid_request", message));
            }
            Err(e) => {
                let message = format!("the body is not JSON: {e}");
                return Err(Reply::error(400, "invalid_json", message));
            }
        };
        for (name, value) in decoded {
            if object.insert(name.to_owned(), value.into()).is_some() {
                return Err(given_twice(name));
            }
        }
        let merged = serde_json::to_vec(&object).map_err(unserializable)?;
        Ok(AliasBody::Merged(merged))
    }

    /// What the action's request is read from.
    pub fn content(&self) -> Content<'_> {
        match self {
            AliasBody::Fields(fields) => Content::Fields(fields),
            AliasBody::Merged(json) => Content::Json(json),
        }
    }
}

/// A field the path gives more than once, if any.
fn repeated_field<'f>(fields: &[(&'f str, String)]) -> Option<&'f str> {
    fields
        .iter()
        .enumerate()
        .find(|(i, (name, _))| fields[..*i].iter().any(|(seen, _)| seen == name))
        .map(|(_, (name, _))| *name)
}

fn given_twice(name: &str) -> Reply {
    let message = format!("{name} is given by the path, not the body");
    Reply::error(400, "invalid_request", message)
}

fn unserializable(e: serde_json::Error) -> Reply {
    Reply::error(500, "unserializable_request", e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::entity::action::{parse_content, ActionError};
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Request {
        Remove { sku: String },
        Add { sku: String, qty: u64 },
        Put(serde_json::Value),
        Checkout,
    }

    fn request(
        body: &[u8],
        fields: &[(&'static str, &str)],
        action: &str,
    ) -> Result<Request, ActionError> {
        let alias = AliasBody::new(body, fields).expect("a usable alias body");
        parse_content(action, alias.content())
    }

    #[test]
    fn path_fields_become_the_body_or_join_it() {
        let fields = [("sku", "tee%20shirt")];
        let remove = Request::Remove {
            sku: "tee shirt".into(),
        };
        assert_eq!(request(b" ", &fields, "remove"), Ok(remove));
        let add = Request::Add {
            sku: "tee shirt".into(),
            qty: 2,
        };
        assert_eq!(request(br#"{"qty": 2}"#, &fields, "add"), Ok(add));
        let put = Request::Put(serde_json::json!({"sku": "tee shirt"}));
        assert_eq!(request(b"", &fields, "put"), Ok(put));
    }

    #[test]
    fn path_fields_alone_are_checked_as_a_body_is() {
        let fields = [("sku", "tee")];
        let missing = request(b"", &fields, "add").expect_err("qty is required");
        assert_eq!(missing, ActionError::Invalid("missing field `qty`".into()));
        let unknown = request(b"", &[("colour", "red")], "remove").expect_err("unknown field");
        assert!(matches!(unknown, ActionError::Invalid(m) if m.contains("unknown field `colour`")));
        let unit = request(b"", &fields, "checkout").expect_err("takes no fields");
        assert!(matches!(unit, ActionError::Invalid(_)));
    }

    #[test]
    fn a_field_is_set_once_by_the_path_alone() {
        let fields = [("sku", "tee")];
        let clash = AliasBody::new(br#"{"sku": "cap"}"#, &fields)
            .err()
            .expect("the body sets it too");
        assert_eq!(clash.status, 400);
        let twice = AliasBody::new(b"", &[("sku", "tee"), ("sku", "cap")])
            .err()
            .expect("twice");
        assert_eq!(twice.status, 400);
        let not_object = AliasBody::new(b"[1]", &fields)
            .err()
            .expect("not an object");
        assert_eq!(not_object.status, 400);
    }
}
