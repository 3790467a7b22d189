//! Chat rooms on Roost: one shared entity per room, written to by many
//! members at once.
//!
//! A room is a small business process, not a bag of data: people join
//! (up to a cap), post, and leave, and a room nobody posts in for a while
//! closes itself. Every request to one room runs one at a time on the
//! room's owner, so the cap holds however many join at once, and posts get
//! one order that every member sees.
//!
//! | request | action |
//! |---|---|
//! | `GET /v1/room/{id}` | the members, the last posts, whether it is closed |
//! | `POST /v1/room/{id}/join {"member"}` | join (409 `room_full` at the cap, 409 `room_closed`) |
//! | `POST /v1/room/{id}/post {"member", "text"}` | post (403 `not_a_member`) |
//! | `POST /v1/room/{id}/leave {"member"}` | leave |
//!
//! The proxy routes every room by its path (`{path: "/v1/{kind}/{key}",
//! kinds: [room]}` gives `room:{id}`). The example trusts the `member`
//! named in the body; an application would take it from a verified
//! identity.
//!
//! Each change moves the room's `idle` alarm to `idle_close_ms` from now;
//! when it fires, the room closes, recording the alarm that closed it
//! (`closed.by`), so a second firing of the same alarm (after a failover)
//! changes nothing.

use std::collections::{BTreeSet, VecDeque};

use roost_worker::entity::{
    check_name, decode_json, encode_json, Alarm, Context, Entity, ErrorBody, Outcome, Reply, Scope,
};
use roost_worker::kinds::Kinds;
use serde::{Deserialize, Serialize};

/// The kinds `roost-chat` serves: rooms.
pub fn kinds() -> Kinds {
    Kinds::new().register_with(|settings: RoomSettings| Room::from(settings))
}

/// The room entity type, with its settings.
#[derive(Debug, Clone)]
pub struct Room {
    max_members: usize,
    idle_close_ms: u64,
    history: usize,
}

/// `kinds.room.settings` in the worker's config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// Most members at once (default 50).
    pub max_members: Option<usize>,
    /// A room nobody changed for this long closes (default 10 minutes).
    pub idle_close_ms: Option<u64>,
    /// Posts kept (default 100).
    pub history: Option<usize>,
}

impl From<RoomSettings> for Room {
    fn from(settings: RoomSettings) -> Self {
        Room {
            max_members: settings.max_members.unwrap_or(50),
            idle_close_ms: settings.idle_close_ms.unwrap_or(600_000),
            history: settings.history.unwrap_or(100),
        }
    }
}

/// The alarm that closes an idle room.
const IDLE: &str = "idle";
/// Longest post, in bytes.
const MAX_TEXT_BYTES: usize = 2_000;

/// One room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoomState {
    pub members: BTreeSet<String>,
    /// The last posts, oldest first.
    pub posts: VecDeque<Post>,
    /// The number the next post gets (posts are numbered from 1).
    pub next_seq: u64,
    pub closed: Option<Closed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Post {
    pub seq: u64,
    pub member: String,
    pub text: String,
}

/// How a room closed: by which firing of its idle alarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Closed {
    /// `idle@{due ms}`: the alarm and the time it was set for.
    pub by: String,
    pub at_ms: u64,
}

/// A room's actions.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoomRequest {
    Get,
    Join { member: String },
    Post { member: String, text: String },
    Leave { member: String },
}

impl Entity for Room {
    type State = RoomState;
    type Request = RoomRequest;
    const KIND: &'static str = "room";
    const SCOPE: Scope = Scope::Shared;

    fn encode(&self, state: &RoomState) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<RoomState, String> {
        decode_json(bytes)
    }

    fn validate(&self, request: &RoomRequest) -> Result<(), Reply> {
        match request {
            RoomRequest::Get => Ok(()),
            RoomRequest::Join { member } | RoomRequest::Leave { member } => {
                check_name("member", member)
            }
            RoomRequest::Post { member, text } => {
                check_name("member", member)?;
                if text.is_empty() || text.len() > MAX_TEXT_BYTES {
                    let message = format!("text must be 1 to {MAX_TEXT_BYTES} bytes");
                    return Err(Reply::error(400, "invalid_text", message));
                }
                Ok(())
            }
        }
    }

    fn handle(&self, room: &mut RoomState, request: RoomRequest, ctx: &Context) -> Outcome {
        if room.closed.is_some() && !matches!(request, RoomRequest::Get) {
            return Outcome::read(Reply::error(409, "room_closed", "this room is closed"));
        }
        let outcome = match request {
            RoomRequest::Get => return Outcome::read(Reply::ok(&*room)),
            RoomRequest::Join { member } => self.join(room, member),
            RoomRequest::Post { member, text } => self.post(room, member, text),
            RoomRequest::Leave { member } => {
                let left = room.members.remove(&member);
                Outcome::answer(Reply::ok(&*room), left)
            }
        };
        if outcome.changed {
            outcome.set_alarm(IDLE, ctx.now_ms.saturating_add(self.idle_close_ms))
        } else {
            outcome
        }
    }

    /// Nobody changed the room for `idle_close_ms`: close it, once per
    /// firing of the alarm.
    fn on_alarm(&self, room: &mut RoomState, alarm: &Alarm, ctx: &Context) -> Outcome {
        if room.closed.is_none() {
            room.closed = Some(Closed {
                by: format!("{}@{}", alarm.id, alarm.at_ms),
                at_ms: ctx.now_ms,
            });
        }
        Outcome::changed(Reply::no_content())
    }
}

impl Room {
    fn join(&self, room: &mut RoomState, member: String) -> Outcome {
        if room.members.contains(&member) {
            return Outcome::read(Reply::ok(&*room));
        }
        if room.members.len() >= self.max_members {
            let body = ErrorBody {
                error: "room_full".into(),
                message: format!("the room has its {} members", self.max_members),
                extra: (),
            };
            return Outcome::read(Reply::with_status(409, body));
        }
        room.members.insert(member);
        Outcome::changed(Reply::ok(&*room))
    }

    fn post(&self, room: &mut RoomState, member: String, text: String) -> Outcome {
        if !room.members.contains(&member) {
            let message = format!("{member} has not joined this room");
            return Outcome::read(Reply::error(403, "not_a_member", message));
        }
        room.next_seq += 1;
        let seq = room.next_seq;
        room.posts.push_back(Post { seq, member, text });
        while room.posts.len() > self.history {
            room.posts.pop_front();
        }
        Outcome::changed(Reply::with_status(201, serde_json::json!({ "seq": seq })))
    }
}
