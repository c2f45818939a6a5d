//! The model against a brute-force enumerator on tiny logs: every state
//! the enumerator can reach passes, and every state the model passes is
//! reachable (over all per-sector combinations of zeroes, garbage and the
//! covering writes' stamps).
//!
//! The enumerator's semantics, written independently of the model: each
//! write lands on a subset of its sectors, applied in log order over
//! zeroes. A write lands on every sector where it is durable: it completed,
//! and it was synchronous, or a completed fsync/fdatasync followed it, or a
//! completed range sync (msync, its own or a later one) covers the sector
//! (an atomic write: all of its sectors).
//! An atomic write lands whole or not at all, unless a later non-atomic
//! write over its range started before it was durable. Stores through a
//! mapping may also leave any sector where they are not durable half
//! stored (garbage). Everything else (in flight, unseen, not synced) lands
//! on any subset.
//!
//! A punched or zeroed range (fallocate PUNCH_HOLE / ZERO_RANGE) is a
//! write of zeroes: it lands on any subset of its sectors until a completed
//! fsync, fdatasync or sync(2) after it, then on all of them. It does not
//! lift an earlier atomic write's all-or-nothing: the atomic write lands
//! whole or not at all, and the zeroes land over it afterwards. sync(2)
//! makes every write before it durable, like an fsync.

mod common;

use std::collections::HashSet;

use common::*;
use lab_core::stamp::Sector;
use lab_model::{Model, Op, OpKind};
use proptest::prelude::*;

const SECTORS: u64 = 4;
/// Sectors per page, for the range a store's msync covers.
const PAGE: u64 = 2;
/// A sector holding garbage, in an image.
const GARBAGE: usize = usize::MAX;

struct Wr {
    i: usize,
    /// Zeroes (a punch or zero range), not data.
    zero: bool,
    first: u64,
    n: u64,
    atomic: bool,
    sync: bool,
    store: bool,
    /// Range sync, in sectors.
    range: Option<(u64, u64)>,
}

fn ws(ops: &[Op]) -> Vec<Wr> {
    ops.iter()
        .filter_map(|o| match &o.kind {
            OpKind::Zero { offset, len, .. } => Some(Wr {
                i: o.index,
                zero: true,
                first: offset / SEC,
                n: len / SEC,
                atomic: false,
                sync: false,
                store: false,
                range: None,
            }),
            OpKind::Write(w) => Some(Wr {
                i: o.index,
                zero: false,
                first: w.offset / SEC,
                n: w.len / SEC,
                atomic: w.atomic,
                sync: w.sync,
                store: w.store,
                range: w.range_sync.map(|(a, b)| (a / SEC, b / SEC)),
            }),
            _ => None,
        })
        .collect()
}

/// Whether write `w` is durable at sector `s`.
fn durable(ops: &[Op], w: &Wr, s: u64) -> bool {
    let done = |o: &Op| o.ended.is_some();
    // A range sync covers a sector, or all of an atomic write.
    let (from, to) = if w.atomic {
        (w.first, w.first + w.n)
    } else {
        (s, s + 1)
    };
    // A range sync (msync) promises nothing about a punch: the model asks
    // only what fsync, fdatasync and sync(2) promise of one.
    let in_range = |r: Option<(u64, u64)>| !w.zero && r.is_some_and(|(a, b)| a <= from && to <= b);
    if !done(&ops[w.i]) {
        return false;
    }
    w.sync
        || in_range(w.range)
        || ops[w.i + 1..].iter().any(|o| {
            done(o)
                && match &o.kind {
                    OpKind::Fsync { .. } | OpKind::Fdatasync { .. } | OpKind::Sync => true,
                    OpKind::Write(x) => in_range(x.range_sync.map(|(a, b)| (a / SEC, b / SEC))),
                    _ => false,
                }
        })
}

/// What one write may do to each of its sectors: 0 nothing, 1 land, 2
/// leave it half stored.
fn choices(ops: &[Op], writes: &[Wr], w: &Wr) -> Vec<Vec<u8>> {
    let per_sector: Vec<Vec<u8>> = (w.first..w.first + w.n)
        .map(|s| {
            if durable(ops, w, s) {
                vec![1]
            } else if w.store {
                vec![0, 1, 2]
            } else {
                vec![0, 1]
            }
        })
        .collect();
    let mut all: Vec<Vec<u8>> = vec![vec![]];
    for opts in &per_sector {
        all = all
            .iter()
            .flat_map(|c| {
                opts.iter().map(move |&o| {
                    let mut c = c.clone();
                    c.push(o);
                    c
                })
            })
            .collect();
    }
    let voided = writes.iter().any(|x| {
        x.i > w.i && !x.atomic && !x.zero && x.first < w.first + w.n && w.first < x.first + x.n
    });
    if w.atomic && !voided {
        all.retain(|c| c.iter().all(|&o| o == 1) || c.iter().all(|&o| o == 0));
    }
    all
}

/// Every reachable per-sector content: None zero, Some(op index), or
/// Some(GARBAGE).
fn reachable(ops: &[Op]) -> HashSet<Vec<Option<usize>>> {
    let writes = ws(ops);
    let mut images: HashSet<Vec<Option<usize>>> = HashSet::from([vec![None; SECTORS as usize]]);
    for w in &writes {
        let cs = choices(ops, &writes, w);
        images = images
            .iter()
            .flat_map(|img| {
                cs.iter().map(move |c| {
                    let mut img = img.clone();
                    for (k, &o) in c.iter().enumerate() {
                        let s = (w.first + k as u64) as usize;
                        match o {
                            1 if w.zero => img[s] = None,
                            1 => img[s] = Some(w.i),
                            2 => img[s] = Some(GARBAGE),
                            _ => {}
                        }
                    }
                    img
                })
            })
            .collect();
    }
    images
}

type Raw = (u8, u64, u64, bool);

fn kinds() -> impl Strategy<Value = Vec<Raw>> {
    prop::collection::vec((0u8..10, 0..SECTORS, 1..=SECTORS, any::<bool>()), 1..=4)
}

fn build(raw: &[Raw]) -> Vec<K> {
    raw.iter()
        .map(|&(k, first, n, atomic)| {
            let n = n.min(SECTORS - first);
            match k {
                0 => K::Fsync,
                1 => K::Fdatasync,
                2 => K::W(first, n, atomic, true),
                3 | 4 => K::W(first, n, atomic, false),
                // The pages holding the stores.
                5 => K::Store(
                    first,
                    n,
                    Some((first / PAGE * PAGE, (first + n).div_ceil(PAGE) * PAGE)),
                ),
                6 => K::Store(first, n, None),
                7 => K::Punch(first, n),
                8 => K::ZeroRange(first, n),
                _ => K::Sync,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn model_passes_exactly_the_reachable_states(raw in kinds(), ended in 0usize..5, in_flight in any::<bool>()) {
        let kinds = build(&raw);
        let ended = ended.min(kinds.len());
        let ops = log(&kinds, ended, in_flight);
        let reach = reachable(&ops);
        let model = Model::new(&ops);
        // Every combination of zero / covering write per sector.
        let options: Vec<Vec<Option<usize>>> = (0..SECTORS)
            .map(|s| {
                // (The model judges only files the log wrote to.)
                let mut v = vec![None];
                if ws(&ops).iter().any(|w| !w.zero) {
                    v.push(Some(GARBAGE));
                }
                v.extend(ws(&ops).iter().filter(|w| !w.zero && w.first <= s && s < w.first + w.n).map(|w| Some(w.i)));
                v
            })
            .collect();
        let mut idx = vec![0usize; SECTORS as usize];
        loop {
            let img: Vec<Option<usize>> = idx.iter().enumerate().map(|(s, &k)| options[s][k]).collect();
            let sectors: Vec<Sector> = img
                .iter()
                .enumerate()
                .map(|(s, o)| match o {
                    None => Sector::Zero,
                    Some(GARBAGE) => Sector::Garbage,
                    Some(i) => by(&ops, *i, s as u64),
                })
                .collect();
            let mut files = scan(sectors);
            // Size is not what this test is about: make it never short.
            files[0].size = Some(SECTORS * SEC * 2);
            let v = model.judge(&files);
            prop_assert_eq!(
                v.passed(),
                reach.contains(&img),
                "state {:?}: model says {:?}; log {:#?}",
                img,
                v.violations.iter().map(|v| &v.message).collect::<Vec<_>>(),
                ops
            );
            let mut k = 0;
            loop {
                if k == idx.len() {
                    break;
                }
                idx[k] += 1;
                if idx[k] < options[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
            if k == idx.len() {
                break;
            }
        }
    }
}
