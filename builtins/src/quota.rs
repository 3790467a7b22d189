//! `quota`: per-user concurrency limits with expiring tokens ("at most N
//! uploads at once"). Acquiring returns a token, or 429 while `limit` tokens
//! are live; releasing frees one; a token past its `ttl_ms` frees itself,
//! at its expiry, by an alarm (so a user's quota holds no dead tokens
//! while nobody asks).

use std::collections::BTreeMap;

use roost_worker::entity::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use roost_worker::entity::{
    check_name, decode_json, encode_json, Alarm, Alias, Context, Entity, ErrorBody, Outcome, Reply,
};

/// The alarm that expires tokens.
const EXPIRE: &str = "expire";

/// The quota entity type.
pub struct Quota;

/// Live tokens per quota name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaState {
    pub quotas: BTreeMap<String, Vec<Token>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    /// Wall-clock expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// The quota's actions: `POST /v1/quota/acquire {"name", "limit",
/// "ttl_ms"}` and `POST /v1/quota/release {"name", "token"}`, also as
/// `POST /v1/quota/{name}/acquire` and `…/release` ([`Quota::aliases`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum QuotaRequest {
    /// `limit` and `ttl_ms` are ≥ 1.
    Acquire {
        name: String,
        limit: u64,
        ttl_ms: u64,
    },
    Release {
        name: String,
        token: String,
    },
}

impl Entity for Quota {
    type State = QuotaState;
    type Request = QuotaRequest;
    const KIND: &'static str = "quota";

    fn encode(&self, state: &QuotaState) -> Vec<u8> {
        encode_json(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<QuotaState, String> {
        decode_json(bytes)
    }

    fn validate(&self, request: &QuotaRequest) -> Result<(), Reply> {
        match request {
            QuotaRequest::Acquire { limit, ttl_ms, .. } if *limit == 0 || *ttl_ms == 0 => {
                Err(Reply::error(
                    400,
                    "invalid_request",
                    "limit and ttl_ms must be at least 1",
                ))
            }
            QuotaRequest::Acquire { name, .. } | QuotaRequest::Release { name, .. } => {
                check_name("quota name", name)
            }
        }
    }

    /// The quota's routes from before the generic scheme.
    fn aliases() -> Vec<Alias> {
        vec![
            Alias::new(Method::POST, "/v1/quota/{name}/acquire", "acquire"),
            Alias::new(Method::POST, "/v1/quota/{name}/release", "release"),
        ]
    }

    fn handle(&self, state: &mut QuotaState, request: QuotaRequest, ctx: &Context) -> Outcome {
        let expired = state.expire(ctx.now_ms);
        let mut outcome = match request {
            QuotaRequest::Acquire {
                name,
                limit,
                ttl_ms,
            } => acquire(state, name, limit, ttl_ms, ctx),
            QuotaRequest::Release { name, token } => release(state, &name, &token),
        };
        outcome.changed |= expired;
        with_expiry_alarm(state, outcome)
    }

    /// Tokens expire at their time.
    fn on_alarm(&self, state: &mut QuotaState, _alarm: &Alarm, ctx: &Context) -> Outcome {
        state.expire(ctx.now_ms);
        with_expiry_alarm(state, Outcome::changed(Reply::no_content()))
    }
}

/// `outcome`, with the expiry alarm moved to the next token's expiry (or
/// cancelled) when it changed the state.
fn with_expiry_alarm(state: &QuotaState, outcome: Outcome) -> Outcome {
    if !outcome.changed {
        return outcome;
    }
    let next = state
        .quotas
        .values()
        .flatten()
        .map(|token| token.expires_at_ms)
        .min();
    match next {
        Some(at_ms) => outcome.set_alarm(EXPIRE, at_ms),
        None => outcome.cancel_alarm(EXPIRE),
    }
}

impl QuotaState {
    /// Drop expired tokens (and empty quotas); returns whether any went.
    fn expire(&mut self, now_ms: u64) -> bool {
        let before: usize = self.quotas.values().map(Vec::len).sum();
        for tokens in self.quotas.values_mut() {
            tokens.retain(|t| t.expires_at_ms > now_ms);
        }
        self.quotas.retain(|_, tokens| !tokens.is_empty());
        before != self.quotas.values().map(Vec::len).sum::<usize>()
    }
}

fn acquire(
    state: &mut QuotaState,
    name: String,
    limit: u64,
    ttl_ms: u64,
    ctx: &Context,
) -> Outcome {
    let tokens = state.quotas.entry(name.clone()).or_default();
    if tokens.len() as u64 >= limit {
        let retry_in_ms = tokens
            .iter()
            .map(|t| t.expires_at_ms)
            .min()
            .map_or(0, |expiry| expiry.saturating_sub(ctx.now_ms));
        let body = ErrorBody {
            error: "quota_exhausted".into(),
            message: format!("{limit} tokens of {name} are in use"),
            extra: json!({ "retry_in_ms": retry_in_ms }),
        };
        return Outcome::read(Reply::with_status(429, body));
    }
    let token = Token {
        id: format!("{:016x}", ctx.random),
        expires_at_ms: ctx.now_ms.saturating_add(ttl_ms),
    };
    let reply = Reply::ok(
        json!({"token": token.id, "expires_at_ms": token.expires_at_ms, "live": tokens.len() + 1, "limit": limit}),
    );
    tokens.push(token);
    Outcome::changed(reply)
}

fn release(state: &mut QuotaState, name: &str, token: &str) -> Outcome {
    let Some(tokens) = state.quotas.get_mut(name) else {
        return Outcome::read(unknown(name));
    };
    let Some(position) = tokens.iter().position(|t| t.id == token) else {
        return Outcome::read(unknown(name));
    };
    tokens.remove(position);
    let live = tokens.len();
    if live == 0 {
        state.quotas.remove(name);
    }
    Outcome::changed(Reply::ok(json!({"released": true, "live": live})))
}

fn unknown(name: &str) -> Reply {
    Reply::error(
        404,
        "unknown_token",
        format!("no live token with that id in {name}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(now_ms: u64, random: u64) -> Context {
        Context {
            key: "quota/u".into(),
            now_ms,
            version: 0,
            random,
        }
    }

    fn acquire_at(state: &mut QuotaState, now_ms: u64, random: u64) -> Outcome {
        let request = QuotaRequest::Acquire {
            name: "uploads".into(),
            limit: 2,
            ttl_ms: 1000,
        };
        Quota.handle(state, request, &ctx(now_ms, random))
    }

    #[test]
    fn limit_holds_until_release_or_expiry() {
        let mut state = QuotaState::default();
        assert_eq!(acquire_at(&mut state, 0, 1).status(), Some(200));
        assert_eq!(acquire_at(&mut state, 0, 2).status(), Some(200));
        assert_eq!(acquire_at(&mut state, 10, 3).status(), Some(429));
        let release = QuotaRequest::Release {
            name: "uploads".into(),
            token: format!("{:016x}", 1),
        };
        assert_eq!(
            Quota.handle(&mut state, release, &ctx(20, 0)).status(),
            Some(200)
        );
        assert_eq!(acquire_at(&mut state, 30, 4).status(), Some(200));
        assert_eq!(acquire_at(&mut state, 999, 5).status(), Some(429));
        // Token 2 expires at 1000, so a slot is free at 1000.
        assert_eq!(acquire_at(&mut state, 1000, 6).status(), Some(200));
    }

    #[test]
    fn tokens_expire_by_alarm_and_the_alarm_follows_the_next_expiry() {
        let mut state = QuotaState::default();
        let first = acquire_at(&mut state, 0, 1);
        assert!(first
            .alarms
            .contains(&roost_worker::entity::AlarmChange::Set(Alarm {
                id: EXPIRE.into(),
                at_ms: 1000
            })));
        acquire_at(&mut state, 500, 2);
        let alarm = Alarm {
            id: EXPIRE.into(),
            at_ms: 1000,
        };
        let woken = Quota.on_alarm(&mut state, &alarm, &ctx(1000, 0));
        assert_eq!(state.quotas["uploads"].len(), 1, "the first token went");
        assert!(woken
            .alarms
            .contains(&roost_worker::entity::AlarmChange::Set(Alarm {
                id: EXPIRE.into(),
                at_ms: 1500
            })));
        let last = Quota.on_alarm(&mut state, &alarm, &ctx(1500, 0));
        assert!(state.quotas.is_empty());
        assert!(last
            .alarms
            .contains(&roost_worker::entity::AlarmChange::Cancel(EXPIRE.into())));
    }
}
