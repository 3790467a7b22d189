//! Properties of the HRW ring over 100,000 keys, and known-answer vectors that
//! pin exact owners so every build on every platform agrees.

use std::collections::HashMap;

use roost_routing::{Member, Ring, RingError, Seed};

const KEYS: usize = 100_000;

fn ring(seed: &str, workers: &[(&str, f64)]) -> Ring<()> {
    let members = workers.iter().map(|&(id, weight)| Member {
        id: id.into(),
        weight,
        value: (),
    });
    Ring::new(Seed::from_phrase(seed), members).expect("valid ring")
}

fn equal(ids: &[&'static str]) -> Vec<(&'static str, f64)> {
    ids.iter().map(|&id| (id, 1.0)).collect()
}

fn keys() -> impl Iterator<Item = String> {
    (0..KEYS).map(|i| format!("user-{i}"))
}

fn owner(ring: &Ring<()>, key: &str) -> String {
    ring.owner(key.as_bytes())
        .expect("non-empty ring")
        .id
        .to_string()
}

fn shares(ring: &Ring<()>) -> HashMap<String, f64> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for key in keys() {
        *counts.entry(owner(ring, &key)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(id, n)| (id, n as f64 / KEYS as f64))
        .collect()
}

fn assert_share_within(share: f64, expected: f64, relative: f64, what: &str) {
    let (low, high) = (expected * (1.0 - relative), expected * (1.0 + relative));
    assert!(
        (low..=high).contains(&share),
        "{what}: share {share:.4} outside [{low:.4}, {high:.4}]"
    );
}

/// Candidate orders for seed "change-me", workers w1..w3, equal weights and
/// weights 1:2:3. A change here moves users between workers in production:
/// it must be deliberate, never a dependency bump.
#[test]
fn known_answer_vectors() {
    let equal_ring = ring("change-me", &equal(&["w1", "w2", "w3"]));
    let weighted_ring = ring("change-me", &[("w1", 1.0), ("w2", 2.0), ("w3", 3.0)]);
    let vectors: [(&str, [&str; 3], [&str; 3]); 7] = [
        ("alice", ["w3", "w1", "w2"], ["w3", "w1", "w2"]),
        ("bob", ["w3", "w2", "w1"], ["w3", "w2", "w1"]),
        ("carol", ["w2", "w1", "w3"], ["w2", "w3", "w1"]),
        ("dave", ["w1", "w2", "w3"], ["w1", "w3", "w2"]),
        ("user-42", ["w3", "w1", "w2"], ["w3", "w2", "w1"]),
        ("\u{fc}ber", ["w3", "w1", "w2"], ["w3", "w1", "w2"]),
        ("0", ["w2", "w1", "w3"], ["w2", "w1", "w3"]),
    ];
    let order = |ring: &Ring<()>, key: &str| -> Vec<String> {
        ring.candidates(key.as_bytes())
            .map(|m| m.id.to_string())
            .collect()
    };
    for (key, equal_order, weighted_order) in vectors {
        assert_eq!(
            order(&equal_ring, key),
            equal_order,
            "equal weights, key {key:?}"
        );
        assert_eq!(
            order(&weighted_ring, key),
            weighted_order,
            "weights 1:2:3, key {key:?}"
        );
    }
}

#[test]
fn removing_a_worker_moves_only_its_keys_to_their_second_candidate() {
    let before = ring("s", &equal(&["w1", "w2", "w3", "w4", "w5"]));
    let after = ring("s", &equal(&["w1", "w2", "w4", "w5"]));
    let mut moved = 0;
    for key in keys() {
        let mut order = before.candidates(key.as_bytes()).map(|m| m.id.to_string());
        let first = order.next().expect("5 candidates");
        let second = order.next().expect("5 candidates");
        let now = owner(&after, &key);
        if first == "w3" {
            assert_eq!(
                now, second,
                "{key} should fail over to its second candidate"
            );
            moved += 1;
        } else {
            assert_eq!(now, first, "{key} moved though its owner stayed");
        }
    }
    assert!(moved > 0);
}

#[test]
fn adding_a_worker_moves_about_one_share_all_to_the_new_worker() {
    for n in [3usize, 5, 8] {
        let ids: Vec<String> = (1..=n + 1).map(|i| format!("w{i}")).collect();
        let members = |count: usize| {
            ids[..count]
                .iter()
                .map(|id| (id.as_str(), 1.0))
                .collect::<Vec<_>>()
        };
        let before = ring("s", &members(n));
        let after = ring("s", &members(n + 1));
        let new_id = &ids[n];
        let mut moved = 0usize;
        for key in keys() {
            let (old, new) = (owner(&before, &key), owner(&after, &key));
            if old != new {
                assert_eq!(&new, new_id, "{key} moved to an old worker");
                moved += 1;
            }
        }
        let fraction = moved as f64 / KEYS as f64;
        let fair = 1.0 / (n + 1) as f64;
        assert!(
            (0.9 * fair..=1.1 * fair).contains(&fraction),
            "N={n}: moved {fraction:.4}, expected within 10% of {fair:.4}"
        );
    }
}

#[test]
fn equal_weights_give_fair_shares() {
    let ids = ["a", "b", "c", "d"];
    let shares = shares(&ring("s", &equal(&ids)));
    for id in ids {
        assert_share_within(shares[id], 0.25, 0.05, id);
    }
}

#[test]
fn weights_one_two_three_give_proportional_shares() {
    let shares = shares(&ring("s", &[("x", 1.0), ("y", 2.0), ("z", 3.0)]));
    assert_share_within(shares["x"], 1.0 / 6.0, 0.05, "x");
    assert_share_within(shares["y"], 2.0 / 6.0, 0.05, "y");
    assert_share_within(shares["z"], 3.0 / 6.0, 0.05, "z");
}

#[test]
fn seed_changes_the_owners() {
    let a = ring("one", &equal(&["w1", "w2", "w3"]));
    let b = ring("two", &equal(&["w1", "w2", "w3"]));
    let differ = keys()
        .take(1000)
        .filter(|k| owner(&a, k) != owner(&b, k))
        .count();
    assert!(
        differ > 500,
        "only {differ} of 1000 owners changed with the seed"
    );
}

#[test]
fn bad_rings_are_rejected() {
    for weight in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let members = [Member {
            id: "w1".into(),
            weight,
            value: (),
        }];
        assert!(matches!(
            Ring::new(Seed::from_phrase("s"), members),
            Err(RingError::BadWeight { .. })
        ));
    }
    let twice = ["w1", "w1"].map(|id| Member {
        id: id.into(),
        weight: 1.0,
        value: (),
    });
    assert_eq!(
        Ring::new(Seed::from_phrase("s"), twice).err(),
        Some(RingError::DuplicateId("w1".into()))
    );
    let empty = [Member {
        id: "".into(),
        weight: 1.0,
        value: (),
    }];
    assert_eq!(
        Ring::new(Seed::from_phrase("s"), empty).err(),
        Some(RingError::EmptyId)
    );
}
