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
/// (the proxy strips it from clients like every `x-roost-*` header).
pub const INTERNAL_TOKEN: &str = "x-roost-internal-token";

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
