//! Request rate per routing key: a token bucket (`per_s` tokens a second,
//! at most `burst` saved up) kept in a fixed-size sketch, so a hot or
//! abusive key is contained and memory does not grow with the number of
//! keys.
//!
//! # Why a sketch, not a map of keys
//!
//! A map needs an eviction policy for when it is full, and every policy
//! can be gamed: an attacker who sprays fresh keys either evicts the
//! buckets of the keys being limited (resetting them) or, with a map that
//! refuses new entries, gets real users refused. The sketch has no such
//! moment: [`ROWS`] rows of [`CELLS_PER_ROW`] cells, each cell one
//! `AtomicU64`, 2 MiB in all, allocated once. A key hashes (xxh3, seeded
//! from the config's secret `hash_seed`, so clients cannot aim at another
//! key's cells) to one cell per row, like a count-min sketch:
//!
//! - every cell is a GCRA clock (the token bucket as one number: the
//!   "theoretical arrival time" of the next request; a bucket is full when
//!   that time is in the past);
//! - a request is allowed when at least one of its cells has room, and
//!   then advances all of them. A key's own traffic advances every one of
//!   its cells, so the least loaded cell never undercounts it: no key gets
//!   more than `per_s` (plus its burst). Other keys only add load, so a
//!   key can be limited early only when *every* one of its cells is shared
//!   with keys that drained it: with `h` keys over their limit at once the
//!   chance is about `(h / CELLS_PER_ROW)^ROWS` (under 10⁻⁶ for 100 of
//!   them).
//! - A refused request advances nothing: a client that keeps hammering is
//!   limited to the rate, not locked out.
//!
//! Cells are updated with plain atomics, no lock; two threads admitting
//! the same key at the same instant may both take its last token, so the
//! limit is exact up to one request per proxy thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Rows of the sketch: cells each key maps to.
pub const ROWS: usize = 2;
/// Cells in a row (a power of two, so a hash is masked to an index).
pub const CELLS_PER_ROW: usize = 1 << 17;
/// Bits of the key hash each row's index takes.
const INDEX_BITS: u32 = CELLS_PER_ROW.trailing_zeros();

/// A per-key token bucket over a fixed-size sketch (see the module doc).
pub struct RateLimiter {
    /// `per_s` and `burst` as configured.
    settings: (u32, u32),
    /// Nanoseconds one token is worth: `1 s / per_s`.
    interval_ns: u64,
    /// How far ahead of now a cell's clock may run: `burst` tokens' worth.
    tolerance_ns: u64,
    seed: u64,
    /// `ROWS × CELLS_PER_ROW` clocks, in nanoseconds since `epoch`; 0 (the
    /// epoch) is a full bucket.
    cells: Box<[AtomicU64]>,
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_s` requests a second per key with bursts of
    /// up to `burst`; `None` when `per_s` is 0 (limiting off). `secret`
    /// seeds the key hash (the config's `hash_seed`).
    pub fn new(per_s: u32, burst: u32, secret: &str) -> Option<Self> {
        if per_s == 0 {
            return None;
        }
        let interval_ns = 1_000_000_000 / u64::from(per_s);
        Some(RateLimiter {
            settings: (per_s, burst),
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1)),
            seed: sketch_seed(secret),
            cells: (0..ROWS * CELLS_PER_ROW)
                .map(|_| AtomicU64::new(0))
                .collect(),
            epoch: Instant::now(),
        })
    }

    /// Whether this is the limiter `new(per_s, burst, secret)` would build
    /// (so a reload keeps it, and its buckets).
    pub fn is(&self, per_s: u32, burst: u32, secret: &str) -> bool {
        self.settings == (per_s, burst) && self.seed == sketch_seed(secret)
    }

    /// Take a token for `key`: `Ok` when allowed, else how long until the
    /// key would be allowed again.
    pub fn check(&self, key: &[u8]) -> Result<(), Duration> {
        self.check_at(key, self.now_ns())
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// [`Self::check`] at `now` nanoseconds since the epoch.
    fn check_at(&self, key: &[u8], now: u64) -> Result<(), Duration> {
        let cells = self.cells_of(key);
        let wait = cells
            .iter()
            .map(|cell| {
                let next = cell.load(Ordering::Relaxed).max(now) + self.interval_ns;
                (next - now).saturating_sub(self.tolerance_ns)
            })
            .min()
            .unwrap_or(0);
        if wait > 0 {
            return Err(Duration::from_nanos(wait));
        }
        for cell in cells {
            let advance = |clock: u64| Some(clock.max(now) + self.interval_ns);
            // The closure always returns Some, so this never fails.
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, advance);
        }
        Ok(())
    }

    /// The key's cell in each row.
    fn cells_of(&self, key: &[u8]) -> [&AtomicU64; ROWS] {
        self.indices(key).map(|index| &self.cells[index])
    }

    /// Where the key's cells are in `cells`: row `r` takes its own
    /// `INDEX_BITS` of one hash.
    fn indices(&self, key: &[u8]) -> [usize; ROWS] {
        let hash = xxh3_64_with_seed(key, self.seed);
        std::array::from_fn(|row| {
            let column = (hash >> (row as u32 * INDEX_BITS)) as usize & (CELLS_PER_ROW - 1);
            row * CELLS_PER_ROW + column
        })
    }
}

/// The sketch's hash seed, from the config's `hash_seed`.
fn sketch_seed(secret: &str) -> u64 {
    xxh3_64_with_seed(b"roost rate limit", xxh3_64(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn limiter(per_s: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(per_s, burst, "test seed").expect("per_s > 0 limits")
    }

    /// How many of `n` requests at `now` are allowed.
    fn allowed(limiter: &RateLimiter, key: &[u8], n: usize, now: u64) -> usize {
        (0..n)
            .filter(|_| limiter.check_at(key, now).is_ok())
            .count()
    }

    #[test]
    fn zero_per_second_turns_limiting_off() {
        assert!(RateLimiter::new(0, 10, "s").is_none());
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = limiter(10, 20);
        assert_eq!(allowed(&limiter, b"alice", 25, SECOND), 20);
        // 0.5 s later, 5 tokens have come back.
        assert_eq!(allowed(&limiter, b"alice", 25, SECOND + SECOND / 2), 5);
        // A long pause refills the bucket, never beyond the burst.
        assert_eq!(allowed(&limiter, b"alice", 25, 100 * SECOND), 20);
    }

    #[test]
    fn a_refused_request_says_when_to_come_back_and_costs_nothing() {
        let limiter = limiter(2, 1);
        assert!(limiter.check_at(b"k", SECOND).is_ok());
        let wait = limiter.check_at(b"k", SECOND).expect_err("over the burst");
        assert_eq!(wait, Duration::from_millis(500));
        // Hammering while limited does not push the key further back.
        for _ in 0..100 {
            assert!(limiter.check_at(b"k", SECOND + SECOND / 4).is_err());
        }
        assert!(limiter.check_at(b"k", SECOND + SECOND / 2).is_ok());
    }

    #[test]
    fn keys_do_not_share_a_bucket() {
        let limiter = limiter(1, 3);
        assert_eq!(allowed(&limiter, b"hot", 100, SECOND), 3);
        let others = (0..1000).filter(|i| {
            let key = format!("user-{i}");
            limiter.check_at(key.as_bytes(), SECOND).is_ok()
        });
        assert_eq!(others.count(), 1000, "a hot key leaves the others alone");
    }

    #[test]
    fn many_hot_keys_rarely_limit_a_cold_one() {
        // A cold key takes one of two tokens, so cold keys sharing a cell
        // do not drain it between them; hot keys drain theirs.
        let limiter = limiter(1, 2);
        for i in 0..2000 {
            let key = format!("hot-{i}");
            allowed(&limiter, key.as_bytes(), 5, SECOND);
        }
        let limited = (0..10_000)
            .filter(|i| {
                let key = format!("cold-{i}");
                limiter.check_at(key.as_bytes(), SECOND).is_err()
            })
            .count();
        // Expected ~ (2000 / 131072)^2 × 10000 ≈ 2.3; allow generous slack.
        assert!(limited <= 20, "{limited} cold keys limited");
    }

    #[test]
    fn the_seed_changes_which_cells_a_key_uses() {
        let a = RateLimiter::new(1, 1, "one").expect("limits");
        let b = RateLimiter::new(1, 1, "two").expect("limits");
        assert_ne!(a.indices(b"alice"), b.indices(b"alice"));
        assert_eq!(a.indices(b"alice"), a.indices(b"alice"));
    }
}
