//! The registry of entity types: which kinds a worker serves, each with its
//! scope, actions, routes, default durability and settings.
//!
//! An application builds a [`Kinds`] from its entity types and hands it to
//! [`crate::run::run`]; the HTTP API, calls between entities and the
//! config all take their kinds from it, so adding a type needs no edit to
//! the worker:
//!
//! ```
//! use roost_worker::entity::{decode_json, encode_json, Context, Entity, Outcome, Reply};
//! use roost_worker::kinds::Kinds;
//!
//! struct Note;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "snake_case")]
//! enum NoteRequest {
//!     Get,
//!     Put(String),
//! }
//!
//! impl Entity for Note {
//!     type State = String;
//!     type Request = NoteRequest;
//!     const KIND: &'static str = "note";
//!
//!     fn encode(&self, state: &String) -> Vec<u8> {
//!         encode_json(state)
//!     }
//!
//!     fn decode(&self, bytes: &[u8]) -> Result<String, String> {
//!         decode_json(bytes)
//!     }
//!
//!     fn handle(&self, note: &mut String, request: NoteRequest, _ctx: &Context) -> Outcome {
//!         match request {
//!             NoteRequest::Get => Outcome::read(Reply::ok(&*note)),
//!             NoteRequest::Put(text) => {
//!                 *note = text;
//!                 Outcome::changed(Reply::ok(&*note))
//!             }
//!         }
//!     }
//! }
//!
//! let kinds = Kinds::new().register(Note);
//! assert_eq!(kinds.names(), ["note"]);
//! ```
//!
//! A type with settings registers a constructor instead; its settings come
//! from the config file's `kinds.{KIND}.settings`, deserialized into the
//! constructor's argument ([`Kinds::register_with`]).
//!
//! At start, [`Kinds::configure`] checks the config's `kinds` sections
//! against what is registered (an unknown kind, or settings the type does
//! not take, is an error naming the file, line and field) and builds the
//! [`Catalog`] the worker serves with.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use roost_routing::config_file::{Location, Spanned};
use serde::de::DeserializeOwned;

use crate::calls::CallSender;
use crate::config::{KindConfig, WorkerConfig};
use crate::engine::Engine;
use crate::entity::action::{self, ActionError, Content};
use crate::entity::{Access, Alias, Durability, Entity, Reply, Scope};
use crate::runtime::{EntityReply, Options, RuntimeError};

/// Builds the type-erased kind from its config section.
type Build = Box<dyn FnOnce(&KindConfig) -> Result<Arc<dyn Kind>, String> + Send>;

/// The entity types a worker is to serve, before the config is applied.
#[derive(Default)]
pub struct Kinds {
    entries: Vec<(&'static str, Build)>,
}

impl Kinds {
    pub fn new() -> Self {
        Kinds::default()
    }

    /// Serve `entity`'s type; its config section may set `durability`
    /// only.
    #[must_use]
    pub fn register<E: Entity>(self, entity: E) -> Self {
        self.register_with(move |()| entity)
    }

    /// Serve the type `build` makes from its settings: the config's
    /// `kinds.{KIND}.settings`, or `S::default()` when there are none.
    #[must_use]
    pub fn register_with<E, S, F>(mut self, build: F) -> Self
    where
        E: Entity,
        S: DeserializeOwned + Default,
        F: FnOnce(S) -> E + Send + 'static,
    {
        let build: Build = Box::new(move |config: &KindConfig| {
            let settings = match &config.settings {
                None => S::default(),
                Some(value) => serde_path_to_error::deserialize(value).map_err(|e| {
                    let field = e.path().to_string();
                    if field == "." {
                        e.inner().to_string()
                    } else {
                        format!("{field}: {}", e.inner())
                    }
                })?,
            };
            let durability = config.durability.unwrap_or(E::DURABILITY);
            Ok(Arc::new(Registered {
                entity: build(settings),
                durability,
            }) as Arc<dyn Kind>)
        });
        self.entries.push((E::KIND, build));
        self
    }

    /// The registered kinds' names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(name, _)| *name).collect()
    }

    /// Apply `config`'s `kinds` sections and check the registry: every
    /// section names a registered kind and fits it, no kind is registered
    /// twice, and every name is usable in a path.
    pub fn configure(self, config: &WorkerConfig) -> Result<Catalog, KindsError> {
        let sections = &config.kinds;
        let error = |location, field: String, message: String| KindsError {
            file: config.source.clone(),
            location,
            field,
            message,
        };
        if let Some((name, section)) = sections
            .iter()
            .find(|(name, _)| !self.entries.iter().any(|(kind, _)| kind == name))
        {
            let message = format!(
                "unknown entity type {name:?}; this worker serves {}",
                self.names().join(", ")
            );
            return Err(error(section.referenced, format!("kinds.{name}"), message));
        }
        let mut kinds: HashMap<&'static str, Arc<dyn Kind>> = HashMap::new();
        for (name, build) in self.entries {
            if let Err(why) = check_kind_name(name) {
                return Err(error(Location::UNKNOWN, "kinds".into(), why));
            }
            let section = sections.get(name);
            let default = KindConfig::default();
            let kind_config = section.map_or(&default, |s| &s.value);
            let location = section.map_or(Location::UNKNOWN, |s| s.referenced);
            let kind = build(kind_config)
                .map_err(|why| error(location, format!("kinds.{name}.settings"), why))?;
            if kinds.insert(name, kind).is_some() {
                let message = format!("{name:?} is registered twice");
                return Err(error(Location::UNKNOWN, "kinds".into(), message));
            }
        }
        Ok(Catalog { kinds })
    }
}

/// A kind's name is a path segment and part of store keys: lower-case
/// ASCII letters, digits, `-` and `_`, starting with a letter.
fn check_kind_name(name: &str) -> Result<(), String> {
    let usable = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if usable && name != "whoami" {
        Ok(())
    } else {
        Err(format!(
            "entity type name {name:?} must be lower-case letters, digits, '-' and '_', \
             start with a letter, and not be \"whoami\""
        ))
    }
}

/// Why the registry and the config do not fit, and where.
#[derive(Debug, Clone, thiserror::Error)]
pub struct KindsError {
    /// The config file, when the config came from one.
    pub file: Option<PathBuf>,
    pub location: Location,
    pub field: String,
    pub message: String,
}

impl fmt::Display for KindsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(path) if self.location != Location::UNKNOWN => write!(
                f,
                "{}:{}:{}: ",
                path.display(),
                self.location.line(),
                self.location.column()
            )?,
            Some(path) => write!(f, "{}: ", path.display())?,
            None => {}
        }
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

/// The kinds a worker serves, configured: what the API and the receiver
/// of calls look kinds up in.
pub struct Catalog {
    kinds: HashMap<&'static str, Arc<dyn Kind>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Kind>> {
        self.kinds.get(name)
    }

    /// Every kind, by name (sorted, so routes are built in a stable order).
    pub fn all(&self) -> BTreeMap<&'static str, &Arc<dyn Kind>> {
        self.kinds
            .iter()
            .map(|(name, kind)| (*name, kind))
            .collect()
    }
}

/// Why a kind did not run an action.
#[derive(Debug)]
pub enum Refusal {
    /// The request is not one of the kind's (404 or 400).
    Invalid(Reply),
    /// The runtime could not serve it.
    Runtime(RuntimeError),
}

/// One entity type, with its type erased: what the API and the call
/// receiver need of it.
#[async_trait]
pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    fn scope(&self) -> Scope;
    /// The actions (the request enum's variants).
    fn actions(&self) -> &'static [&'static str];
    /// How `action` is asked for ([`Entity::access`]).
    fn access(&self, action: &str) -> Access;
    fn aliases(&self) -> Vec<Alias>;
    /// When neither the request nor the config says.
    fn durability(&self) -> Durability;
    /// What entity `id` is routed by ([`Entity::routing_key`]).
    fn routing_key(&self, id: &str) -> String;
    /// Run entity `id`'s due alarms; returns how many ran.
    async fn wake(
        &self,
        engine: &Engine,
        id: &str,
        calls: &dyn CallSender,
    ) -> Result<usize, RuntimeError>;
    /// Parse the invocation's body as its action's request, check it, and
    /// run it on `engine`; calls the handler makes go out through `calls`.
    async fn run(
        &self,
        engine: &Engine,
        invocation: Invocation<'_>,
        calls: &dyn CallSender,
    ) -> Result<EntityReply, Refusal>;
}

/// One action asked of one entity.
pub struct Invocation<'a> {
    /// The entity's id (the user's key for a per-user kind).
    pub id: &'a str,
    pub action: &'a str,
    /// What the action's request is read from: its JSON body, or an
    /// alias's path fields.
    pub content: Content<'a>,
    pub options: Options,
}

/// An entity type in the registry, with its configured durability.
struct Registered<E> {
    entity: E,
    durability: Durability,
}

#[async_trait]
impl<E: Entity> Kind for Registered<E> {
    fn name(&self) -> &'static str {
        E::KIND
    }

    fn scope(&self) -> Scope {
        E::SCOPE
    }

    fn actions(&self) -> &'static [&'static str] {
        action::names::<E::Request>()
    }

    fn access(&self, action: &str) -> Access {
        E::access(action)
    }

    fn aliases(&self) -> Vec<Alias> {
        E::aliases()
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn routing_key(&self, id: &str) -> String {
        E::routing_key(id)
    }

    async fn wake(
        &self,
        engine: &Engine,
        id: &str,
        calls: &dyn CallSender,
    ) -> Result<usize, RuntimeError> {
        engine.wake(&self.entity, id, calls).await
    }

    async fn run(
        &self,
        engine: &Engine,
        invocation: Invocation<'_>,
        calls: &dyn CallSender,
    ) -> Result<EntityReply, Refusal> {
        let Invocation {
            id,
            action,
            content,
            options,
        } = invocation;
        let request = action::parse_content::<E::Request>(action, content)
            .map_err(|e| Refusal::Invalid(refused::<E>(e)))?;
        self.entity.validate(&request).map_err(Refusal::Invalid)?;
        engine
            .execute(&self.entity, id, request, options, calls)
            .await
            .map_err(Refusal::Runtime)
    }
}

/// The reply to a request that is not one of `E`'s.
fn refused<E: Entity>(error: ActionError) -> Reply {
    match error {
        ActionError::Unknown { action, actions } => Reply::error(
            404,
            "not_found",
            format!(
                "{} has no action {action:?}; its actions: {}",
                E::KIND,
                actions.join(", ")
            ),
        ),
        ActionError::NotJson(why) => {
            Reply::error(400, "invalid_json", format!("the body is not JSON: {why}"))
        }
        ActionError::Invalid(why) => Reply::error(400, "invalid_request", why),
    }
}

impl fmt::Debug for dyn Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind").field("name", &self.name()).finish()
    }
}

/// `kinds:` in the config file: a section per kind.
pub type KindSections = BTreeMap<String, Spanned<KindConfig>>;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use roost_routing::config_file;
    use serde::Deserialize;

    use super::*;
    use crate::entity::{Context, Outcome};

    /// A type with settings, for the checks.
    struct Shelf {
        capacity: u64,
    }

    #[derive(Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ShelfSettings {
        capacity: Option<std::num::NonZeroU64>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum ShelfRequest {
        Get,
    }

    impl Entity for Shelf {
        type State = u64;
        type Request = ShelfRequest;
        const KIND: &'static str = "shelf";

        fn encode(&self, state: &u64) -> Vec<u8> {
            state.to_le_bytes().to_vec()
        }

        fn decode(&self, _bytes: &[u8]) -> Result<u64, String> {
            Ok(self.capacity)
        }

        fn handle(&self, _state: &mut u64, _request: ShelfRequest, _ctx: &Context) -> Outcome {
            Outcome::read(Reply::no_content())
        }
    }

    fn shelves() -> Kinds {
        Kinds::new().register_with(|settings: ShelfSettings| Shelf {
            capacity: settings.capacity.map_or(10, std::num::NonZeroU64::get),
        })
    }

    /// The error configuring `shelves()` with `text` as worker.yaml.
    fn refused(text: &str) -> String {
        let mut config: WorkerConfig =
            config_file::parse(Path::new("worker.yaml"), text).expect("the file parses");
        config.source = Some("worker.yaml".into());
        shelves()
            .configure(&config)
            .map(|_| ())
            .expect_err("the kinds do not fit")
            .to_string()
    }

    #[test]
    fn sections_name_registered_kinds_and_fit_their_settings() {
        let unknown = refused("flush_interval_ms: 50\nkinds:\n  ledger: {durability: durable}\n");
        assert!(
            unknown.starts_with("worker.yaml:3:") && unknown.contains("`kinds.ledger`"),
            "{unknown}"
        );
        assert!(unknown.contains("this worker serves shelf"), "{unknown}");
        let zero = refused("kinds:\n  shelf:\n    settings: {capacity: 0}\n");
        assert!(
            zero.starts_with("worker.yaml:3:") && zero.contains("`kinds.shelf.settings`"),
            "{zero}"
        );
        assert!(zero.contains("capacity: "), "names the setting: {zero}");
        let stray = refused("kinds:\n  shelf: {settings: {colour: red}}\n");
        assert!(stray.contains("colour"), "{stray}");
        let config: WorkerConfig = config_file::parse(
            Path::new("worker.yaml"),
            "kinds: {shelf: {durability: durable, settings: {capacity: 3}}}\n",
        )
        .expect("the file parses");
        let catalog = shelves().configure(&config).expect("the kinds fit");
        let shelf = catalog.get("shelf").expect("registered");
        assert_eq!(shelf.durability(), Durability::Durable);
        assert_eq!(shelf.actions(), ["get"]);
        assert_eq!(shelf.routing_key("s1"), "s1");
    }

    #[test]
    fn a_kind_registered_twice_or_with_an_unusable_name_is_refused() {
        let twice = shelves().register(Shelf { capacity: 1 });
        let error = twice
            .configure(&WorkerConfig::default())
            .map(|_| ())
            .expect_err("two shelves");
        assert!(error.to_string().contains("registered twice"), "{error}");
        assert!(check_kind_name("Shelf").is_err());
        assert!(check_kind_name("whoami").is_err());
        assert!(check_kind_name("order-line_2").is_ok());
    }
}
