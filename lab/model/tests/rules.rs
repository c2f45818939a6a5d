//! One hand-written scenario per rule: the state the rule forbids fails with
//! that rule, a neighbouring allowed state passes, and a model with the rule
//! switched off misses the forbidden one (so every rule is load-bearing).

mod common;

use common::*;
use lab_core::stamp::Sector;
use lab_model::{FileScan, Model, Rule, Rules};

fn rules_of(ops: &[lab_model::Op], files: &[FileScan]) -> Vec<Rule> {
    Model::new(ops)
        .judge(files)
        .violations
        .iter()
        .map(|v| v.rule)
        .collect()
}

fn without(ops: &[lab_model::Op], files: &[FileScan], r: Rules) -> bool {
    Model::with_rules(ops, r).judge(files).passed()
}

struct Case {
    name: &'static str,
    kinds: Vec<K>,
    ended: usize,
    in_flight: bool,
    /// Per sector: None zero, Some(op) that op's stamp, or garbage.
    bad: Vec<Option<usize>>,
    good: Vec<Option<usize>>,
    rule: Rule,
    off: fn(&mut Rules),
}

fn sectors(ops: &[lab_model::Op], v: &[Option<usize>]) -> Vec<Sector> {
    v.iter()
        .enumerate()
        .map(|(s, o)| match o {
            None => Sector::Zero,
            Some(usize::MAX) => Sector::Garbage,
            Some(i) => by(ops, *i, s as u64),
        })
        .collect()
}

const G: Option<usize> = Some(usize::MAX);

#[test]
fn every_rule_has_a_scenario_and_is_load_bearing() {
    let cases = vec![
        Case {
            name: "fsync'd write lost",
            kinds: vec![K::W(0, 2, false, false), K::Fsync, K::W(2, 1, false, false)],
            ended: 3,
            in_flight: false,
            bad: vec![None, None, Some(2)],
            good: vec![Some(0), Some(0), None],
            rule: Rule::DurableDataLost,
            off: |r| r.durability = false,
        },
        Case {
            name: "O_DSYNC write lost",
            kinds: vec![K::W(0, 1, false, true), K::W(1, 1, false, false)],
            ended: 2,
            in_flight: false,
            bad: vec![None, Some(1)],
            good: vec![Some(0), None],
            rule: Rule::DurableDataLost,
            off: |r| r.durability = false,
        },
        Case {
            name: "durable write replaced by an older one",
            kinds: vec![
                K::W(0, 1, false, false),
                K::W(0, 1, false, false),
                K::Fdatasync,
            ],
            ended: 3,
            in_flight: false,
            bad: vec![Some(0)],
            good: vec![Some(1)],
            rule: Rule::DurableDataLost,
            off: |r| r.durability = false,
        },
        Case {
            name: "atomic write torn",
            kinds: vec![K::W(0, 4, true, false)],
            ended: 1,
            in_flight: false,
            bad: vec![Some(0), Some(0), None, None],
            good: vec![None, None, None, None],
            rule: Rule::TornAtomicWrite,
            off: |r| r.atomicity = false,
        },
        Case {
            name: "atomic write torn while in flight",
            kinds: vec![K::W(0, 2, false, false), K::Fsync, K::W(0, 2, true, false)],
            ended: 2,
            in_flight: true,
            bad: vec![Some(2), Some(0)],
            good: vec![Some(2), Some(2)],
            rule: Rule::TornAtomicWrite,
            off: |r| r.atomicity = false,
        },
        Case {
            name: "garbage",
            kinds: vec![K::W(0, 2, false, false)],
            ended: 1,
            in_flight: false,
            bad: vec![Some(0), G],
            good: vec![Some(0), None],
            rule: Rule::Garbage,
            off: |r| r.no_garbage = false,
        },
        Case {
            name: "misplaced: a write's data at another offset",
            kinds: vec![K::W(0, 1, false, false), K::W(1, 1, false, false)],
            ended: 2,
            in_flight: false,
            // sector 0 shows write 1's stamp made for sector 0... which
            // write 1 never wrote (it covers sector 1 only).
            bad: vec![Some(1), Some(1)],
            good: vec![Some(0), Some(1)],
            rule: Rule::Misplaced,
            off: |r| r.no_garbage = false,
        },
        Case {
            name: "msync'd store lost",
            kinds: vec![
                K::W(0, 2, false, false),
                K::Fsync,
                K::Store(0, 1, Some((0, 2))),
            ],
            ended: 3,
            in_flight: false,
            bad: vec![Some(0), Some(0)],
            good: vec![Some(2), Some(0)],
            rule: Rule::DurableDataLost,
            off: |r| r.range_sync = false,
        },
        Case {
            name: "a write in the pages an msync synced lost",
            kinds: vec![K::W(0, 2, false, false), K::Store(0, 1, Some((0, 2)))],
            ended: 2,
            in_flight: false,
            bad: vec![Some(1), None],
            good: vec![Some(1), Some(0)],
            rule: Rule::DurableDataLost,
            off: |r| r.range_sync = false,
        },
        Case {
            name: "a half-stored sector after the store's msync",
            kinds: vec![K::Store(0, 2, Some((0, 2)))],
            ended: 1,
            in_flight: false,
            bad: vec![G, Some(0)],
            good: vec![Some(0), Some(0)],
            rule: Rule::Garbage,
            off: |r| r.no_garbage = false,
        },
    ];
    for c in cases {
        let ops = log(&c.kinds, c.ended, c.in_flight);
        let bad = scan(sectors(&ops, &c.bad));
        let good = scan(sectors(&ops, &c.good));
        assert_eq!(
            rules_of(&ops, &good),
            vec![],
            "{}: allowed state judged bad",
            c.name
        );
        let got = rules_of(&ops, &bad);
        assert!(
            got.contains(&c.rule),
            "{}: expected {:?}, got {got:?}",
            c.name,
            c.rule
        );
        let mut r = Rules::default();
        (c.off)(&mut r);
        assert!(
            without(&ops, &bad, r),
            "{}: still caught with the rule off",
            c.name
        );
    }
}

#[test]
fn a_later_non_atomic_write_voids_the_guarantee_until_synced() {
    // atomic 0..2, then plain write over sector 1, nothing synced: the
    // atomic write's sector 0 may survive without its sector 1.
    let kinds = vec![K::W(0, 2, true, false), K::W(1, 1, false, false)];
    let ops = log(&kinds, 2, false);
    let st = scan(vec![by(&ops, 0, 0), Sector::Zero]);
    assert!(Model::new(&ops).judge(&st).passed());
    let strict = Rules {
        overwrite_voids_atomicity: false,
        ..Rules::default()
    };
    assert!(!Model::with_rules(&ops, strict).judge(&st).passed());
    // Synced in between: the atomic write is durable, so its sector 1
    // reading zeroes is lost data.
    let kinds = vec![K::W(0, 2, true, false), K::Fsync, K::W(1, 1, false, false)];
    let ops = log(&kinds, 3, false);
    let st = scan(vec![by(&ops, 0, 0), Sector::Zero]);
    let rules = rules_of(&ops, &st);
    assert_eq!(rules, vec![Rule::DurableDataLost]);
}

#[test]
fn lag_never_makes_a_false_positive() {
    // The host saw nothing after op 0 started; the guest may have done all
    // of it: every write's data may be there, torn non-atomic ones too.
    let kinds = vec![
        K::W(0, 2, false, false),
        K::Fsync,
        K::W(0, 2, false, false),
        K::W(2, 2, true, false),
    ];
    let ops = log(&kinds, 0, true);
    let st = scan(vec![
        by(&ops, 2, 0),
        by(&ops, 0, 1),
        by(&ops, 3, 2),
        by(&ops, 3, 3),
    ]);
    let v = Model::new(&ops).judge(&st);
    assert!(v.passed(), "{:?}", v.violations);
    assert_eq!(v.in_flight, 1);
    // ...but an fsync the host did not see complete promises nothing.
    let st = scan(vec![Sector::Zero; 4]);
    assert!(Model::new(&ops).judge(&st).passed());
}

#[test]
fn refused_writes_write_nothing() {
    let kinds = vec![K::Refused(0, 8)];
    let mut ops = log(&kinds, 1, false);
    ops[0].errno = Some("EINVAL".into());
    // Half of the refused write's sectors hold its data: one finding that
    // names the errno and counts the sectors, not a misplaced block each.
    let mut sectors: Vec<Sector> = (0..4).map(|s| by(&ops, 0, s)).collect();
    sectors.extend(vec![Sector::Zero; 4]);
    let st = scan(sectors);
    let v = Model::new(&ops).judge(&st);
    let rules: Vec<Rule> = v.violations.iter().map(|v| v.rule).collect();
    assert_eq!(rules, vec![Rule::FailedWriteLanded], "{:?}", v.violations);
    assert_eq!(
        v.violations[0].message,
        "op 0 refused pwrite returned EINVAL but 4 of its 8 sectors reached f"
    );
    // Its data at another place is still misplaced data.
    let st = scan(vec![by(&ops, 0, 1), Sector::Zero]);
    assert_eq!(rules_of(&ops, &st), vec![Rule::Misplaced]);
    // With the no-garbage rule off, nothing is said.
    let st = scan(vec![by(&ops, 0, 0)]);
    assert!(without(
        &ops,
        &st,
        Rules {
            no_garbage: false,
            ..Rules::default()
        }
    ));
}

#[test]
fn size_made_durable_by_fsync() {
    let kinds = vec![K::W(0, 4, false, false), K::Fsync];
    let ops = log(&kinds, 2, false);
    let mut st = scan(vec![by(&ops, 0, 0), by(&ops, 0, 1)]);
    let rules = rules_of(&ops, &st);
    assert!(rules.contains(&Rule::FileSizeLost), "{rules:?}");
    // A truncate after the fsync may have shrunk it.
    let kinds = vec![K::W(0, 4, false, false), K::Fsync, K::Trunc(2)];
    let ops2 = log(&kinds, 2, true);
    st[0].sectors = vec![by(&ops2, 0, 0), by(&ops2, 0, 1)];
    assert!(Model::new(&ops2).judge(&st).passed());
    // And a missing file that was fsync'd is lost.
    let rules: Vec<Rule> = Model::new(&ops)
        .judge(&[])
        .violations
        .iter()
        .map(|v| v.rule)
        .collect();
    assert_eq!(rules, vec![Rule::FileLost]);
}

/// Block size < page size: one 4 KiB folio holds four 1 KiB atomic writes
/// (two sectors each); each is all or nothing on its own, and a plain
/// write into the same folio but not over an atomic block leaves their
/// guarantees alone.
#[test]
fn small_blocks_in_one_folio_are_atomic_each() {
    let kinds = vec![
        K::W(0, 2, true, false),
        K::W(2, 2, true, false),
        K::W(4, 2, true, false),
        K::W(6, 2, false, false),
    ];
    let ops = log(&kinds, 4, false);
    // Block 0 whole, block 1 absent, block 2 whole, plain write half there.
    let ok = scan(vec![
        by(&ops, 0, 0),
        by(&ops, 0, 1),
        Sector::Zero,
        Sector::Zero,
        by(&ops, 2, 4),
        by(&ops, 2, 5),
        by(&ops, 3, 6),
        Sector::Zero,
    ]);
    let v = Model::new(&ops).judge(&ok);
    assert!(v.passed(), "{:?}", v.violations);
    assert_eq!(v.atomic_whole, 2);
    // Block 1 torn inside the folio.
    let bad = scan(vec![
        by(&ops, 0, 0),
        by(&ops, 0, 1),
        by(&ops, 1, 2),
        Sector::Zero,
        Sector::Zero,
        Sector::Zero,
        Sector::Zero,
        Sector::Zero,
    ]);
    let v = Model::new(&ops).judge(&bad);
    assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
    assert!(
        v.violations[0]
            .message
            .contains("op 1 pwrite(sectors 2..4 atomic) to f is torn: 1 of its 2 sectors"),
        "{}",
        v.violations[0].message
    );
}

#[test]
fn reports_read_like_bug_reports() {
    let kinds = vec![K::W(0, 2, false, false), K::Fsync];
    let ops = log(&kinds, 2, false);
    let v = Model::new(&ops).judge(&scan(vec![Sector::Zero, Sector::Zero]));
    assert_eq!(
        v.violations.len(),
        1,
        "adjacent sectors merge: {:?}",
        v.violations
    );
    assert_eq!(
        v.violations[0].message,
        "f bytes 0-1024 hold zeroes, but op 0 pwrite(sectors 0..2) was made durable by op 1 fsync, which completed"
    );
}

/// Stores through a mapping: until they are durable, writeback may have
/// caught a sector half stored (garbage there is allowed); msync(MS_SYNC)
/// makes durable what lies in its pages and nothing else, not the file's
/// size.
#[test]
fn stores_may_be_half_stored_until_synced_and_msync_syncs_its_pages_only() {
    // Not synced, or in flight (its msync not seen complete): a sector may
    // be half stored.
    let kinds = vec![
        K::W(0, 2, false, false),
        K::Fsync,
        K::Store(0, 2, None),
        K::Store(0, 2, Some((0, 2))),
    ];
    for ops in [log(&kinds[..3], 3, false), log(&kinds, 3, true)] {
        let st = scan(vec![Sector::Garbage, by(&ops, 0, 1)]);
        let v = Model::new(&ops).judge(&st);
        assert!(v.passed(), "{:?}", v.violations);
    }
    // A later fsync wrote the stores back whole.
    let kinds = vec![K::Store(0, 2, None), K::Fsync];
    let ops = log(&kinds, 2, false);
    let st = scan(vec![Sector::Garbage, by(&ops, 0, 1)]);
    assert_eq!(rules_of(&ops, &st), vec![Rule::Garbage]);
    // A store older than the durable data cannot show through it.
    let kinds = vec![K::Store(0, 1, None), K::W(0, 1, false, true)];
    let ops = log(&kinds, 2, false);
    assert_eq!(
        rules_of(&ops, &scan(vec![Sector::Garbage])),
        vec![Rule::Garbage]
    );

    // The msync covers sectors 0-1 (its pages); the write's sectors 2-3
    // are not durable, nor is the file's length.
    let kinds = vec![K::W(0, 4, false, false), K::Store(0, 1, Some((0, 2)))];
    let ops = log(&kinds, 2, false);
    let st = scan(vec![
        by(&ops, 1, 0),
        by(&ops, 0, 1),
        Sector::Zero,
        Sector::Zero,
    ]);
    let v = Model::new(&ops).judge(&st);
    assert!(v.passed(), "{:?}", v.violations);
    let short = scan(vec![by(&ops, 1, 0), by(&ops, 0, 1)]);
    let v = Model::new(&ops).judge(&short);
    assert!(v.passed(), "{:?}", v.violations);
    // A store's msync does not reach back to data written after it began.
    let kinds = vec![K::Store(0, 1, Some((0, 2))), K::W(1, 1, false, false)];
    let ops = log(&kinds, 2, false);
    let v = Model::new(&ops).judge(&scan(vec![by(&ops, 0, 0), Sector::Zero]));
    assert!(v.passed(), "{:?}", v.violations);
    // What was lost is named with the msync that promised it.
    let v = Model::new(&ops).judge(&scan(vec![Sector::Zero, Sector::Zero]));
    assert_eq!(
        v.violations[0].message,
        "f bytes 0-512 hold zeroes, but op 0 store(sectors 0..1) msync(0..2) was made durable by its own msync(MS_SYNC), which completed"
    );
    let kinds = vec![K::W(0, 2, false, false), K::Store(0, 1, Some((0, 2)))];
    let ops = log(&kinds, 2, false);
    let v = Model::new(&ops).judge(&scan(vec![by(&ops, 1, 0), Sector::Zero]));
    assert_eq!(
        v.violations[0].message,
        "f bytes 512-1024 hold zeroes, but op 0 pwrite(sectors 0..2) was made durable by op 1 store(sectors 0..1) msync(0..2), which completed"
    );
    // An atomic write is one unit: an msync of part of it promises
    // nothing; of all of it, all of it.
    let part = log(
        &[K::W(1, 2, true, false), K::Store(0, 1, Some((0, 2)))],
        2,
        false,
    );
    let st = scan(vec![by(&part, 1, 0), Sector::Zero, Sector::Zero]);
    let v = Model::new(&part).judge(&st);
    assert!(v.passed(), "{:?}", v.violations);
    let all = log(
        &[K::W(1, 2, true, false), K::Store(0, 1, Some((0, 4)))],
        2,
        false,
    );
    let st = scan(vec![by(&all, 1, 0), Sector::Zero, Sector::Zero]);
    assert_eq!(rules_of(&all, &st), vec![Rule::DurableDataLost]);
}

/// A punch over part of a pending atomic write: the atomic write stays all
/// or nothing where it can survive (its sectors outside the hole), the hole
/// may hold what it held before or zeroes until a sync, then zeroes.
#[test]
fn a_punch_over_pending_atomic_data_keeps_it_all_or_nothing() {
    let kinds = vec![
        K::W(0, 4, false, false),
        K::Fsync,
        K::W(0, 4, true, false),
        K::Punch(2, 2),
        K::Fsync,
    ];
    let z = Sector::Zero;
    // Before the second fsync completed (4 ops ended).
    let ops = log(&kinds, 4, false);
    let pass = |st: Vec<Sector>| Model::new(&ops).judge(&scan(st)).passed();
    let (w0, a) = (|s| by(&ops, 0, s), |s| by(&ops, 2, s));
    assert!(
        pass(vec![w0(0), w0(1), w0(2), w0(3)]),
        "nothing happened yet"
    );
    assert!(pass(vec![w0(0), w0(1), z, z]), "the punch landed alone");
    assert!(pass(vec![a(0), a(1), z, z]), "both landed");
    assert!(
        pass(vec![a(0), a(1), a(2), a(3)]),
        "the write, not the punch"
    );
    assert!(pass(vec![a(0), a(1), a(2), z]), "the punch in part");
    // The atomic write seen in the hole but not beside it is torn, whatever
    // the punch did: never accepted.
    assert_eq!(
        rules_of(&ops, &scan(vec![w0(0), w0(1), a(2), a(3)])),
        vec![Rule::TornAtomicWrite]
    );
    assert_eq!(
        rules_of(&ops, &scan(vec![a(0), w0(1), z, z])),
        vec![Rule::TornAtomicWrite]
    );
    // After the fsync: the hole is zeroes, the rest the atomic write.
    let ops = log(&kinds, 5, false);
    let pass = |st: Vec<Sector>| Model::new(&ops).judge(&scan(st)).passed();
    assert!(pass(vec![a(0), a(1), z, z]));
    assert!(!pass(vec![w0(0), w0(1), z, z]));
    let v = Model::new(&ops).judge(&scan(vec![a(0), a(1), a(2), z]));
    assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
    assert_eq!(v.violations[0].rule, Rule::DurableDataLost);
    assert_eq!(
        v.violations[0].message,
        "f bytes 1024-1536 hold the older op 2 pwrite(sectors 0..4 atomic), but op 3 punch_hole(sectors 2..4) was made durable by op 4 fsync, which completed"
    );
}

/// sync(2) is a durability point for every file, and ZERO_RANGE grows the
/// file: its size is promised by the sync after it.
#[test]
fn sync_makes_everything_durable_and_zero_range_grows_the_file() {
    let kinds = vec![K::W(0, 1, true, false), K::ZeroRange(0, 4), K::Sync];
    let ops = log(&kinds, 3, false);
    let z = Sector::Zero;
    let v = Model::new(&ops).judge(&scan(vec![by(&ops, 0, 0), z, z, z]));
    assert_eq!(
        v.violations.iter().map(|v| v.rule).collect::<Vec<_>>(),
        vec![Rule::DurableDataLost],
        "the zero range is durable, the write under it is gone"
    );
    assert!(Model::new(&ops).judge(&scan(vec![z; 4])).passed());
    let mut short = scan(vec![z; 2]);
    short[0].size = Some(2 * SEC);
    assert_eq!(rules_of(&ops, &short), vec![Rule::FileSizeLost]);
    // Without the sync's completion nothing is promised.
    let ops = log(&kinds, 2, true);
    assert!(Model::new(&ops)
        .judge(&scan(vec![by(&ops, 0, 0), z, z, z]))
        .passed());
    assert!(Model::new(&ops).judge(&short).passed());
}
