//! Alarms: wake-ups an entity sets for itself.
//!
//! A handler sets one with [`super::Outcome::set_alarm`] (an id and a
//! wall-clock time; setting an id again moves it) and cancels one with
//! [`super::Outcome::cancel_alarm`]. The alarms are stored with the state
//! (the earliest also in the store's index), so they survive passivation,
//! failover and restarts: whichever worker owns the entity when one is due
//! wakes it, whether or not anything else touches it, and runs
//! [`super::Entity::on_alarm`]. An alarm fires at least once: a worker that
//! dies after running the handler but before its change was written leaves
//! the alarm pending, and the next owner fires it again, so the handler
//! must be idempotent for its id (record what it did under the id).
//!
//! ```
//! use roost_worker::entity::{Alarm, AlarmChange, Outcome, Reply};
//!
//! // In a handler: answer, and wake this entity in a minute.
//! # let now_ms = 0;
//! let outcome = Outcome::changed(Reply::no_content()).set_alarm("remind", now_ms + 60_000);
//! assert_eq!(
//!     outcome.alarms,
//!     [AlarmChange::Set(Alarm { id: "remind".into(), at_ms: 60_000 })]
//! );
//! ```

use serde::{Deserialize, Serialize};

/// A wake-up at `at_ms` (milliseconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The entity's own name for it; one alarm per id.
    pub id: String,
    pub at_ms: u64,
}

/// What a handler did to its entity's alarms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmChange {
    /// Set (or move) an alarm.
    Set(Alarm),
    /// Cancel the alarm with this id, if it is pending.
    Cancel(String),
}

/// An entity's pending alarms, earliest first, one per id, at most
/// [`Alarms::MAX`] (setting more drops the latest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Alarms(Vec<Alarm>);

impl Alarms {
    /// The most alarms one entity keeps.
    pub const MAX: usize = 1024;

    pub fn apply(&mut self, change: AlarmChange) {
        match change {
            AlarmChange::Set(alarm) => {
                self.remove(&alarm.id);
                let at = self.0.partition_point(|a| a.at_ms <= alarm.at_ms);
                self.0.insert(at, alarm);
                self.0.truncate(Self::MAX);
            }
            AlarmChange::Cancel(id) => {
                self.remove(&id);
            }
        }
    }

    /// Take the alarm `id` out (it fired, or was cancelled).
    pub fn remove(&mut self, id: &str) -> Option<Alarm> {
        let at = self.0.iter().position(|a| a.id == id)?;
        Some(self.0.remove(at))
    }

    /// The earliest alarm.
    pub fn next(&self) -> Option<&Alarm> {
        self.0.first()
    }

    /// The earliest alarm due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Option<&Alarm> {
        self.next().filter(|alarm| alarm.at_ms <= now_ms)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Alarm> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(id: &str, at_ms: u64) -> AlarmChange {
        AlarmChange::Set(Alarm {
            id: id.into(),
            at_ms,
        })
    }

    #[test]
    fn alarms_keep_the_earliest_first_and_one_per_id() {
        let mut alarms = Alarms::default();
        alarms.apply(set("b", 20));
        alarms.apply(set("a", 10));
        alarms.apply(set("c", 30));
        assert_eq!(alarms.next().map(|a| a.id.as_str()), Some("a"));
        alarms.apply(set("a", 40));
        let order: Vec<&str> = alarms.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(alarms.due(19), None);
        assert_eq!(alarms.due(20).map(|a| a.id.as_str()), Some("b"));
        alarms.apply(AlarmChange::Cancel("b".into()));
        assert_eq!(alarms.remove("c").map(|a| a.at_ms), Some(30));
        assert_eq!(alarms.iter().count(), 1);
    }
}
