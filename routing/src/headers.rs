//! Header names the proxy and the workers agree on.
//!
//! The proxy strips every client-sent header that starts with
//! [`RESERVED_PREFIX`], so a worker can trust any `x-roost-*` header it sees
//! as set by the proxy.

/// Prefix of every header the proxy owns; clients may not send these.
pub const RESERVED_PREFIX: &str = "x-roost-";

/// The routing key the proxy extracted (and, later, verified) for a request.
pub const KEY: &str = "x-roost-key";

/// Set by a worker on every response: the id of the worker that answered.
pub const WORKER: &str = "x-roost-worker";

/// Worker-to-worker calls carry the fleet's internal token in this header
/// (the proxy strips it from clients like every `x-roost-*` header). Only
/// this credential opens the fleet's internal routes.
pub const INTERNAL_TOKEN: &str = "x-roost-internal-token";

/// A proxy carries its trusted-hop credential in this header on every
/// request it forwards. It opens the entity API, never the internal routes,
/// and is a different secret from [`INTERNAL_TOKEN`]'s.
pub const HOP_TOKEN: &str = "x-roost-hop-token";

/// Set by a worker on a 503 that is about the worker, not the request: it
/// cannot serve this key now (its lease is in doubt, it is draining, or a
/// hand-over timed out). The value is the error code. A proxy counts such
/// a reply as a failed health check and sends a replay-safe request to the
/// key's next candidate at once.
pub const UNAVAILABLE: &str = "x-roost-unavailable";

/// The most header fields a worker parses (hyper's default, kept for its
/// speed: more puts every request's header table on the heap). A proxy
/// forwards no more, the fields it adds included.
pub const WORKER_MAX_HEADERS: usize = 100;

/// The path prefix of the fleet's internal routes (calls between workers'
/// entities). A proxy never forwards a request under it.
pub const INTERNAL_PREFIX: &str = "/internal/";

/// Whether `name` is one of the proxy-owned headers (case-insensitive).
pub fn is_reserved(name: &str) -> bool {
    name.len() >= RESERVED_PREFIX.len()
        && name.as_bytes()[..RESERVED_PREFIX.len()].eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_prefix_matches_any_case() {
        assert!(is_reserved("x-roost-key"));
        assert!(is_reserved("X-Roost-Anything"));
        assert!(!is_reserved("x-roos"));
        assert!(!is_reserved("x-user-id"));
    }
}
