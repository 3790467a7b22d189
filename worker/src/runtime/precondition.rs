//! `If-Match`: a client's condition on an entity's version (its `ETag`),
//! checked by the runtime before the handler runs, for every entity type.

use crate::entity::Reply;

/// A precondition on the entity version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any entity that exists ([`crate::entity::Entity::exists`]).
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

    /// `None` when the condition holds for an entity at `version` that
    /// `exists`; otherwise the 412 to answer.
    pub fn check(&self, version: u64, exists: bool) -> Option<Reply> {
        let holds = match self {
            IfMatch::Any => exists,
            IfMatch::Version(v) => *v == version,
            IfMatch::Unparsable => false,
        };
        (!holds).then(|| {
            Reply::error(
                412,
                "precondition_failed",
                format!("If-Match does not match the current version {version}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_etags_weak_or_strong_and_star() {
        assert_eq!(IfMatch::parse("\"7\""), IfMatch::Version(7));
        assert_eq!(IfMatch::parse("W/\"7\""), IfMatch::Version(7));
        assert_eq!(IfMatch::parse(" 7 "), IfMatch::Version(7));
        assert_eq!(IfMatch::parse("*"), IfMatch::Any);
        assert_eq!(IfMatch::parse("\"x\""), IfMatch::Unparsable);
        assert!(IfMatch::Version(7).check(7, true).is_none());
        assert_eq!(
            IfMatch::Version(6).check(7, true).map(|r| r.status),
            Some(412)
        );
        assert!(IfMatch::Any.check(3, false).is_some());
        assert!(IfMatch::Unparsable.check(0, true).is_some());
    }
}
