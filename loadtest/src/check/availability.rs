//! How long the fault kept users waiting: for every user who saw a failed
//! or slow (over 1 s) request, the time from sending their first such
//! request to their next success (the first successful reply to a request
//! sent at or after it, on either device). A user never served again by
//! the end of the load counts up to the end, as `unrecovered`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::traffic::LatencySummary;
use super::{describe, secs, Examples};
use crate::ledger::{Phase, Record};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Availability {
    /// Users that saw at least one failed or slow request.
    pub affected_users: usize,
    pub unrecovered_users: usize,
    /// Window lengths over the affected users.
    pub window_ms: LatencySummary,
    /// The longest windows.
    pub longest: Examples,
}

impl Availability {
    pub fn of(records: &[Record], run_end_us: u64) -> Availability {
        let mut per_user: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for record in records.iter().filter(|r| r.phase == Phase::Load) {
            per_user.entry(&record.user).or_default().push(record);
        }
        let mut windows: Vec<(u64, &Record, bool)> = per_user
            .values()
            .filter_map(|records| user_window(records, run_end_us))
            .collect();
        windows.sort_by_key(|(length, ..)| std::cmp::Reverse(*length));
        let mut availability = Availability {
            affected_users: windows.len(),
            unrecovered_users: windows.iter().filter(|(.., recovered)| !recovered).count(),
            window_ms: LatencySummary::of(windows.iter().map(|(length, ..)| *length)),
            longest: Examples::default(),
        };
        for (length, first, recovered) in &windows {
            availability.longest.note(|| {
                let end = if *recovered { "" } else { " (unrecovered)" };
                format!("{}{end} from {}", secs(*length), describe(first))
            });
        }
        availability
    }
}

/// The user's window in µs, the request that opened it, and whether a
/// success closed it.
fn user_window<'r>(records: &[&'r Record], run_end_us: u64) -> Option<(u64, &'r Record, bool)> {
    let first_bad = records
        .iter()
        .copied()
        .filter(|r| !r.is_success() || r.is_slow())
        .min_by_key(|r| r.t_send_us)?;
    let next_success = records
        .iter()
        .filter(|r| r.is_success() && r.t_send_us >= first_bad.t_send_us)
        .map(|r| r.t_done_us)
        .min();
    let end = next_success.unwrap_or(run_end_us);
    Some((
        end.saturating_sub(first_bad.t_send_us),
        first_bad,
        next_success.is_some(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Kind, Op};

    fn answered(status: u16, sent_ms: u64, done_ms: u64) -> Record {
        let mut record = Record::sample(Kind::Cart, Op::Get, sent_ms * 1000, done_ms * 1000);
        record.status = Some(status);
        record
    }

    #[test]
    fn the_window_runs_from_the_first_failure_to_the_next_success() {
        let records = [
            answered(200, 0, 1),
            answered(502, 100, 110),
            answered(503, 200, 210),
            answered(200, 300, 305),
        ];
        let availability = Availability::of(&records, 1_000_000);
        assert_eq!(availability.affected_users, 1);
        // HdrHistogram keeps 3 significant digits.
        assert!((availability.window_ms.max - 205.0).abs() < 1.0);
    }

    #[test]
    fn a_slow_success_is_its_own_window_and_no_failure_leaves_none() {
        let slow = [answered(200, 0, 1500)];
        assert!((Availability::of(&slow, 2_000_000).window_ms.max - 1500.0).abs() < 2.0);
        let fine = [answered(200, 0, 5)];
        assert_eq!(Availability::of(&fine, 2_000_000).affected_users, 0);
    }
}
