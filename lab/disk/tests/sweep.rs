//! Virtual cuts against real ones: the states of a cut at T planned from
//! the whole record equal those planned from the record a real cut at T
//! would have left; one state per content, never two contents merged.

use std::collections::HashSet;
use std::time::Duration;

use lab_core::powercut::StateLimits;
use lab_disk::sweep::{after_each, every_event, point_after, sample};
use lab_disk::{AtomicRules, Cut, NextEvent, Planner, Record, WriteRecord};
use proptest::prelude::*;

mod common;
use common::{data_write, reachable, LBA};

const DISK_LBAS: u64 = 8;

/// A write for the tests: (first LBA, LBAs, gap before it arrives in ms,
/// time to its acknowledgement in ms or never, FUA).
type Spec = (u64, u32, u64, Option<u64>, bool);

fn record(specs: &[Spec], flushes: &[u64]) -> Record {
    let ms = Duration::from_millis;
    let mut t = 0;
    let writes: Vec<WriteRecord> = specs
        .iter()
        .enumerate()
        .map(|(i, &(first, n, gap, ack, fua))| {
            t += gap + 1;
            data_write(i as u64, first, n, fua, ms(t), ack.map(|a| ms(t + a)))
        })
        .collect();
    let end = ms(t + 50);
    Record {
        lba: LBA,
        size: DISK_LBAS * u64::from(LBA),
        cut: Some(Cut {
            reason: "end".into(),
            at: end,
            writes_before: writes.len() as u64,
        }),
        writes,
        flushes: flushes.iter().map(|&f| ms(f)).collect(),
        marks: vec![],
        armed: Some(Duration::ZERO),
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
    prop::collection::vec(
        (
            0u64..6,
            1u32..=3,
            0u64..10,
            prop::option::of(0u64..30),
            any::<bool>(),
        ),
        1..=5,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(f, n, g, a, fua)| (f.min(DISK_LBAS - u64::from(n)), n, g, a, fua))
            .collect()
    })
}

fn images(p: &Planner, recipes: impl Iterator<Item = lab_disk::Recipe>) -> HashSet<Vec<u8>> {
    recipes.map(|r| p.image(Some(&r))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A virtual cut at T leaves exactly the contents a real cut at T
    /// would: planned from the whole record, or from the record truncated
    /// at T as the disk would have kept it.
    #[test]
    fn a_virtual_cut_equals_a_real_cut(specs in specs(), flushes in prop::collection::vec(0u64..120, 0..3),
                                       t in 0u64..150, unit in 1u32..=2) {
        let r = record(&specs, &flushes);
        let t = Duration::from_micros(t * 1000 + 500).min(r.cut.as_ref().unwrap().at);
        // Unsampled on both sides: the sets compared are whole.
        let limits = StateLimits { max: u32::MAX, ..StateLimits::default() };
        let whole = Planner::new(&r, rules(unit));
        let p = lab_disk::CutPoint { at: t, writes_before: r.writes_received_by(t), next: NextEvent::End };
        let virt = whole.plan_sweep(std::slice::from_ref(&p), &limits);

        let truncated = r.cut_at(t, "real");
        let real = Planner::new(&truncated, rules(unit));
        let plan = real.plan(&limits);
        prop_assert_eq!(
            images(&whole, virt.states.iter().map(|s| s.recipe.clone())),
            images(&real, plan.states.iter().filter(|s| s.recipe.point == "cut").map(|s| s.recipe.clone()))
        );
    }

    /// Over many points, every distinct content is one state, and every
    /// judgement's own recipe rebuilds its state's bytes (dedupe never
    /// merges two contents).
    #[test]
    fn dedupe_across_points_keeps_contents_apart(specs in specs(), flushes in prop::collection::vec(0u64..120, 0..3),
                                                unit in 1u32..=2) {
        let r = record(&specs, &flushes);
        let planner = Planner::new(&r, rules(unit));
        let points = every_event(&r, Duration::ZERO);
        let plan = planner.plan_sweep(&points, &StateLimits::default());
        let imgs: Vec<Vec<u8>> = plan.states.iter().map(|s| planner.image(Some(&s.recipe))).collect();
        prop_assert_eq!(imgs.iter().collect::<HashSet<_>>().len(), imgs.len());
        let mut pairs = HashSet::new();
        for j in &plan.judgements {
            prop_assert_eq!(&planner.image(Some(&j.recipe)), &imgs[j.state], "{}", j.recipe);
            prop_assert!(pairs.insert((j.point, j.state)), "pair judged twice");
            prop_assert_eq!(lab_disk::CutPoint::time_of(&j.recipe), Some(plan.points[j.point].at));
        }
        // Every point is judged at least once (the disk as it was then is a state).
        let judged: HashSet<usize> = plan.judgements.iter().map(|j| j.point).collect();
        prop_assert_eq!(judged.len(), plan.points.len());

        // Sampled to `max` per point: never more, and what was left out is
        // counted exactly.
        let whole = planner.plan_sweep(&points, &StateLimits { max: u32::MAX, ..StateLimits::default() });
        prop_assert_eq!(whole.left_out, 0);
        let max = 2;
        let small = planner.plan_sweep(&points, &StateLimits { max, ..StateLimits::default() });
        let planned = |p: &lab_disk::SweepPlan, i: usize| {
            p.judgements.iter().filter(|j| j.point == i && !j.spread).count()
        };
        for i in 0..points.len() {
            let n = planned(&small, i);
            prop_assert!(n >= 1 && n <= max as usize, "point {i}: {n}");
        }
        prop_assert_eq!(
            small.judgements.len() - small.spread() + small.left_out,
            whole.judgements.len() - whole.spread()
        );
    }

    /// Every judgement, planned at its point or spread to it from another,
    /// is a state a real cut at that point could leave: its image is one
    /// the brute-force enumeration of the rules allows there.
    #[test]
    fn every_judgement_is_a_state_its_point_allows(specs in specs(), flushes in prop::collection::vec(0u64..120, 0..3),
                                                   unit in 1u32..=2, max in 1u32..4, seed in any::<u64>()) {
        let r = record(&specs, &flushes);
        let planner = Planner::new(&r, rules(unit));
        let points = every_event(&r, Duration::ZERO);
        let plan = planner.plan_sweep(&points, &StateLimits { max, seed, ..StateLimits::default() });
        for (i, p) in plan.points.iter().enumerate() {
            let allowed = reachable(&r, rules(unit), p.writes_before, &|w| r.durable_at(w, p.at));
            for j in plan.judgements.iter().filter(|j| j.point == i) {
                prop_assert!(allowed.contains(&planner.image(Some(&j.recipe))),
                    "point {i} ({:?}): `{}` (spread: {})", p.next, j.recipe, j.spread);
            }
        }
    }

    /// Every-event points cut each interval at its end: strictly in time
    /// order, each just before a disk event (nothing the disk saw lies in
    /// (previous point, this point]) but the last, which is the end; and a
    /// moment's point is the first one at or after it.
    #[test]
    fn points_fall_just_before_each_event(specs in specs(), flushes in prop::collection::vec(0u64..120, 0..3),
                                          t in 0u64..150) {
        let r = record(&specs, &flushes);
        let points = every_event(&r, Duration::ZERO);
        prop_assert!(points.windows(2).all(|w| w[0].at < w[1].at));
        let last = points.last().unwrap();
        prop_assert_eq!(last.next, NextEvent::End);
        prop_assert_eq!(last.at, r.cut.as_ref().unwrap().at);
        for p in &points[..points.len() - 1] {
            let next = p.at + Duration::from_nanos(1);
            let hit = match p.next {
                NextEvent::Arrival(s) => r.writes[s as usize].received == next,
                NextEvent::Ack(s) => r.writes[s as usize].acked == Some(next),
                NextEvent::Flush(i) => r.flushes[i] == next,
                NextEvent::End => false,
            };
            prop_assert!(hit, "{p:?}");
            prop_assert_eq!(p.writes_before, r.writes_received_by(p.at));
        }
        let moment = Duration::from_millis(t).min(last.at);
        let after = point_after(&r, moment);
        let first = points.iter().find(|p| p.at >= moment).unwrap();
        prop_assert_eq!(&after, first);
        prop_assert_eq!(after_each(&r, &[moment, moment]), vec![after]);
    }

    /// Sampling keeps the end, keeps time order, says what it left out,
    /// and the same seed picks the same points.
    #[test]
    fn sampling_is_seeded_and_keeps_the_end(specs in specs(), max in 1usize..6, seed in any::<u64>()) {
        let r = record(&specs, &[]);
        let all = every_event(&r, Duration::ZERO);
        let mut a = all.clone();
        let left = sample(&mut a, max, seed);
        prop_assert_eq!(a.len() + left, all.len());
        prop_assert!(a.len() <= max);
        prop_assert_eq!(a.last(), all.last());
        prop_assert!(a.windows(2).all(|w| w[0].at < w[1].at));
        let mut b = all.clone();
        sample(&mut b, max, seed);
        prop_assert_eq!(a, b);
    }
}

/// Write 0 arrives at 1 ms and is acknowledged at 5 ms; write 1, over the
/// same LBA, arrives at 10 ms and is never acknowledged. Cuts just before
/// each of those and at the end leave, in turn: zeroes; zeroes or write 0;
/// write 0 only; write 0 or write 1.
#[test]
fn the_intervals_of_a_small_run() {
    let r = record(&[(0, 1, 0, Some(4), true), (0, 1, 8, None, true)], &[]);
    let planner = Planner::new(&r, rules(1));
    let points = every_event(&r, Duration::ZERO);
    let nexts: Vec<NextEvent> = points.iter().map(|p| p.next).collect();
    assert_eq!(
        nexts,
        [
            NextEvent::Arrival(0),
            NextEvent::Ack(0),
            NextEvent::Arrival(1),
            NextEvent::End
        ]
    );
    let plan = planner.plan_sweep(&points, &StateLimits::default());
    let per_point = |i: usize| -> HashSet<Vec<u8>> {
        plan.judgements
            .iter()
            .filter(|j| j.point == i)
            .map(|j| planner.image(Some(&j.recipe)))
            .collect()
    };
    let zero = vec![0u8; (DISK_LBAS * u64::from(LBA)) as usize];
    let mut w0 = zero.clone();
    w0[..LBA as usize].copy_from_slice(r.writes[0].lba_bytes(0, LBA).unwrap());
    let mut w1 = zero.clone();
    w1[..LBA as usize].copy_from_slice(r.writes[1].lba_bytes(0, LBA).unwrap());
    assert_eq!(per_point(0), HashSet::from([zero.clone()]));
    assert_eq!(per_point(1), HashSet::from([zero.clone(), w0.clone()]));
    assert_eq!(per_point(2), HashSet::from([w0.clone()]));
    assert_eq!(per_point(3), HashSet::from([w0.clone(), w1.clone()]));
    // Three contents scanned once each, six judgements.
    assert_eq!(plan.states.len(), 3);
    assert_eq!(plan.judgements.len(), 6);
}

/// Two writes that are never acknowledged, each point keeping one content
/// (`max: 1`, chosen by the seeded hash): a cut anywhere after a content's
/// point could still leave it (nothing ever became durable), so once
/// scanned it is judged at every later point too, and the end judges them
/// all. Over a few seeds, some content is judged at points that did not
/// choose it.
#[test]
fn a_scanned_content_is_judged_at_every_point_that_allows_it() {
    let r = record(&[(0, 1, 0, None, true), (2, 1, 5, None, true)], &[]);
    let planner = Planner::new(&r, rules(1));
    let points = every_event(&r, Duration::ZERO);
    assert_eq!(points.len(), 3, "{points:?}");
    let mut spread = 0;
    for seed in 0..16 {
        let limits = StateLimits {
            max: 1,
            seed,
            ..StateLimits::default()
        };
        let plan = planner.plan_sweep(&points, &limits);
        for s in 0..plan.states.len() {
            let at: Vec<usize> = plan
                .judgements
                .iter()
                .filter(|j| j.state == s)
                .map(|j| j.point)
                .collect();
            let first = *at.iter().min().unwrap();
            assert_eq!(
                at.len(),
                points.len() - first,
                "seed {seed}: state {s} at {at:?}"
            );
        }
        let at_end = plan.judgements.iter().filter(|j| j.point == 2).count();
        assert_eq!(at_end, plan.states.len(), "seed {seed}");
        spread += plan.spread();
    }
    assert!(spread > 0);
}
