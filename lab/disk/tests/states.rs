//! Crash-state planning against a brute-force enumerator of the rules.

use std::collections::HashSet;
use std::time::Duration;

use lab_core::powercut::StateLimits;
use lab_disk::{AtomicRules, Cut, Mark, Planner, Recipe, Record};
use proptest::prelude::*;

mod common;
use common::{data_write, reachable, LBA};

const DISK_LBAS: u64 = 8;

/// A write for the tests: (first LBA, LBAs, durable at the cut).
type Spec = (u64, u32, bool);

fn record(specs: &[Spec], marks: &[u64]) -> Record {
    let ms = Duration::from_millis;
    let writes = specs
        .iter()
        .enumerate()
        .map(|(i, &(first, n, durable))| {
            let at = ms(i as u64);
            data_write(i as u64, first, n, true, at, durable.then_some(at))
        })
        .collect::<Vec<_>>();
    Record {
        lba: LBA,
        size: DISK_LBAS * u64::from(LBA),
        marks: marks
            .iter()
            .map(|&m| Mark {
                name: format!("m{m}"),
                at: ms(m),
                writes_before: m,
            })
            .collect(),
        cut: Some(Cut {
            reason: "test".into(),
            at: ms(1000),
            writes_before: writes.len() as u64,
        }),
        writes,
        flushes: vec![],
        armed: None,
    }
}

fn rules(unit: u32) -> AtomicRules {
    AtomicRules {
        lba: LBA,
        unit_lbas: unit,
        boundary_lbas: None,
    }
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec((0u64..6, 1u32..=3, any::<bool>()), 1..=5).prop_map(|v| {
        v.into_iter()
            .map(|(f, n, d)| (f.min(DISK_LBAS - u64::from(n)), n, d))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every planned state is reachable under the rules, and its delta over
    /// the final store rebuilds exactly the replayed image.
    #[test]
    fn every_state_is_reachable(specs in specs(), unit in 1u32..=2, mark in 0u64..5) {
        let mark = mark.min(specs.len() as u64);
        let r = record(&specs, &[mark]);
        let p = Planner::new(&r, rules(unit));
        let plan = p.plan(&StateLimits::default());
        let at_cut = reachable(&r, rules(unit), specs.len() as u64, &|w| w.acked.is_some());
        let at_mark = reachable(&r, rules(unit), mark, &|_| true);
        let last = p.image(None);
        for s in &plan.states {
            let img = p.image(Some(&s.recipe));
            let reach = if s.recipe.point == "cut" { &at_cut } else { &at_mark };
            prop_assert!(reach.contains(&img), "unreachable: {}", s.recipe);
            // Delta over the final store == replay.
            let mut via_delta = last.clone();
            for (l, src) in &s.delta {
                let at = (*l * u64::from(LBA)) as usize;
                match p.bytes(*src) {
                    Some(b) => via_delta[at..at + LBA as usize].copy_from_slice(b),
                    None => via_delta[at..at + LBA as usize].fill(0),
                }
            }
            prop_assert_eq!(&via_delta, &img, "delta of {} differs from replay", s.recipe);
            // The printed recipe rebuilds the same bytes.
            let again: Recipe = s.recipe.to_string().parse().unwrap();
            prop_assert_eq!(&again, &s.recipe);
            prop_assert_eq!(p.image(Some(&again)), img);
        }
        // No two states have the same bytes.
        let imgs: HashSet<Vec<u8>> = plan.states.iter().map(|s| p.image(Some(&s.recipe))).collect();
        prop_assert_eq!(imgs.len(), plan.states.len());
    }

    /// The store's cheap comparison (over the two deltas only) says two
    /// states are equal outside a covered range exactly when their full
    /// images are.
    #[test]
    fn same_outside_agrees_with_comparing_whole_images(
        specs in specs(), from in 0u64..DISK_LBAS, len in 0u64..4,
    ) {
        let r = record(&specs, &[]);
        let p = Planner::new(&r, rules(1));
        let plan = p.plan(&StateLimits::default());
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("disk");
        std::fs::write(&base, p.image(None)).unwrap();
        let file = std::fs::File::open(&base).unwrap();
        let store = lab_disk::StateStore::new(&file, r.clone(), &plan.states).unwrap();
        let lba = u64::from(LBA);
        let covered = if len == 0 { vec![] } else { vec![(from * lba, (from + len).min(DISK_LBAS) * lba)] };
        let images: Vec<Vec<u8>> = plan.states.iter().map(|s| p.image(Some(&s.recipe))).collect();
        for a in 0..images.len() {
            for b in 0..images.len() {
                let brute = (0..DISK_LBAS).all(|l| {
                    lab_core::filemap::inside(&covered, l * lba, (l + 1) * lba)
                        || images[a][(l * lba) as usize..((l + 1) * lba) as usize]
                            == images[b][(l * lba) as usize..((l + 1) * lba) as usize]
                });
                prop_assert_eq!(store.same_outside(a, b, &covered).unwrap(), brute, "states {} and {}", a, b);
            }
        }
    }

    /// Small windows: every reachable image of whole-write subsets is
    /// produced (not only some).
    #[test]
    fn small_windows_are_exhaustive(specs in specs()) {
        let r = record(&specs, &[]);
        let p = Planner::new(&r, rules(8)); // everything atomic: subsets only
        let plan = p.plan(&StateLimits::default());
        let got: HashSet<Vec<u8>> = plan.states.iter().map(|s| p.image(Some(&s.recipe))).collect();
        prop_assert_eq!(got, reachable(&r, rules(8), specs.len() as u64, &|w| w.acked.is_some()));
    }
}

/// Disjoint in-flight writes with distinct data: 2^n subsets, plus head
/// and tail per tear point of each non-atomic write.
#[test]
fn counts_match_the_formula() {
    // Three in flight: 1 LBA (atomic), 3 LBAs and 4 LBAs (not atomic with a
    // 2-LBA unit); one durable.
    let specs = [(0, 1, false), (1, 3, false), (4, 4, false), (0, 1, true)];
    let r = record(&specs, &[]);
    let p = Planner::new(&r, rules(2));
    let plan = p.plan(&StateLimits::default());
    let tears = 2 * (2 + 3); // 3 LBAs: 2 interior boundaries; 4 LBAs: 3
    assert_eq!(plan.in_flight_at_cut, 3);
    assert_eq!(plan.generated, 8 + tears);
    // The durable write 3 overwrites LBA 0 after write 0: subsets that
    // differ only in write 0 have the same bytes.
    assert_eq!(plan.states.len(), 4 + tears);
    assert!(plan
        .states
        .iter()
        .all(|s| !s.recipe.except.contains_key(&3)));
}

#[test]
fn atomic_writes_are_never_torn_and_big_ones_are() {
    let specs = [(0, 1, false), (1, 4, false)];
    let r = record(&specs, &[]);
    let plan = Planner::new(&r, rules(1)).plan(&StateLimits::default());
    let torn: HashSet<u64> = plan.states.iter().flat_map(|s| s.torn.clone()).collect();
    assert_eq!(torn, HashSet::from([1]));
}

#[test]
fn boundaries_make_writes_non_atomic() {
    let r = AtomicRules {
        lba: 512,
        unit_lbas: 8,
        boundary_lbas: Some(4),
    };
    assert!(r.is_atomic(0, 4 * 512));
    assert!(!r.is_atomic(2 * 512, 4 * 512), "crosses LBA 4");
    assert!(r.is_atomic(4 * 512, 2 * 512));
    assert!(!r.is_atomic(0, 16 * 512), "above the unit");
}

#[test]
fn large_windows_use_bounded_random_subsets() {
    let specs: Vec<Spec> = (0..20).map(|i| (i % 8, 1, false)).collect();
    let r = record(&specs, &[]);
    let lim = StateLimits {
        random_subsets: 10,
        ..StateLimits::default()
    };
    let plan = Planner::new(&r, rules(1)).plan(&lim);
    assert_eq!(plan.generated, 2 + 20 + 10);
}

#[test]
fn tear_points_start_at_the_midpoint_and_stay_bounded() {
    assert_eq!(lab_disk::states::tear_points(4, 8), vec![2, 1, 3]);
    let t = lab_disk::states::tear_points(256, 8);
    assert_eq!(t[0], 128);
    assert!(t.len() <= 8 && t.iter().all(|&x| (1..256).contains(&x)));
    assert!(lab_disk::states::tear_points(1, 8).is_empty());
}

#[test]
fn recipes_print_and_parse() {
    let r: Recipe = "cut@37 35:- 38:0..2+3..4".parse().unwrap();
    assert_eq!(r.to_string(), "cut@37 35:- 38:0..2+3..4");
    assert!("cut37".parse::<Recipe>().is_err());
    assert_eq!("mark:a@3".parse::<Recipe>().unwrap().point, "mark:a");
}

proptest! {
    /// The crash disk's rule is the device's rule, byte for LBA.
    #[test]
    fn atomic_rules_agree_with_the_device(nawupf in 0u16..64, nabspf in 0u16..128,
                                         slba in 0u64..512, nlb in 1u64..80, lba_i in 0usize..4) {
        let lba = [512u32, 1024, 2048, 4096][lba_i];
        let d = lab_core::device::DeviceParams {
            lba_size: lba,
            nawun: nawupf,
            nawupf,
            nabsn: nabspf,
            nabspf,
            ..Default::default()
        };
        let r = AtomicRules::of_device(&d);
        prop_assert_eq!(
            r.is_atomic(slba * u64::from(lba), (nlb * u64::from(lba)) as u32),
            d.write_is_atomic(slba, nlb)
        );
    }
}
