//! The model against a brute-force enumerator on tiny logs: every state
//! the enumerator can reach passes, and every state the model passes is
//! reachable (over all per-sector combinations of zeroes and the covering
//! writes' stamps).
//!
//! The enumerator's semantics, written independently of the model: each
//! write lands on a subset of its sectors, applied in log order over
//! zeroes. A durable write (completed, and synchronous or followed by a
//! completed fsync/fdatasync) lands whole. An atomic write lands whole or
//! not at all, unless a later non-atomic write over its range started
//! before it was durable. Everything else (in flight, unseen, not synced)
//! lands on any subset.

mod common;

use std::collections::HashSet;

use common::*;
use lab_core::stamp::Sector;
use lab_model::{Model, Op, OpKind};
use proptest::prelude::*;

const SECTORS: u64 = 4;

fn ws(ops: &[Op]) -> Vec<(usize, u64, u64, bool, bool)> {
    ops.iter()
        .filter_map(|o| match &o.kind {
            OpKind::Write(w) => Some((o.index, w.offset / SEC, w.len / SEC, w.atomic, w.sync)),
            _ => None,
        })
        .collect()
}

fn durable(ops: &[Op], i: usize, sync: bool) -> bool {
    let done = |o: &Op| o.ended.is_some();
    if !done(&ops[i]) {
        return false;
    }
    sync || ops[i + 1..]
        .iter()
        .any(|o| matches!(o.kind, OpKind::Fsync { .. } | OpKind::Fdatasync { .. }) && done(o))
}

/// Every reachable per-sector content: None zero, Some(op index).
fn reachable(ops: &[Op]) -> HashSet<Vec<Option<usize>>> {
    let writes = ws(ops);
    // Choices per write: bitmasks of landed sectors (relative).
    let choices: Vec<Vec<u32>> = writes
        .iter()
        .map(|&(i, first, n, atomic, sync)| {
            let full = (1u32 << n) - 1;
            if durable(ops, i, sync) {
                return vec![full];
            }
            let voided = writes
                .iter()
                .any(|&(j, f2, n2, a2, _)| j > i && !a2 && f2 < first + n && first < f2 + n2);
            if atomic && !voided {
                vec![0, full]
            } else {
                (0..=full).collect()
            }
        })
        .collect();
    let mut out = HashSet::new();
    let mut idx = vec![0usize; writes.len()];
    loop {
        let mut img = vec![None; SECTORS as usize];
        for (k, &(i, first, n, _, _)) in writes.iter().enumerate() {
            let mask = choices[k][idx[k]];
            for s in 0..n {
                if mask & (1 << s) != 0 {
                    img[(first + s) as usize] = Some(i);
                }
            }
        }
        out.insert(img);
        let mut k = 0;
        loop {
            if k == idx.len() {
                return out;
            }
            idx[k] += 1;
            if idx[k] < choices[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

fn kinds() -> impl Strategy<Value = Vec<(u8, u64, u64, bool, bool)>> {
    prop::collection::vec(
        (
            0u8..5,
            0..SECTORS,
            1..=SECTORS,
            any::<bool>(),
            any::<bool>(),
        ),
        1..=4,
    )
}

fn build(raw: &[(u8, u64, u64, bool, bool)]) -> Vec<K> {
    raw.iter()
        .map(|&(k, first, n, atomic, sync)| match k {
            0 => K::Fsync,
            1 => K::Fdatasync,
            _ => {
                let n = n.min(SECTORS - first);
                K::W(first, n, atomic, sync && k == 2)
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
                let mut v = vec![None];
                v.extend(ws(&ops).iter().filter(|w| w.1 <= s && s < w.1 + w.2).map(|w| Some(w.0)));
                v
            })
            .collect();
        let mut idx = vec![0usize; SECTORS as usize];
        loop {
            let img: Vec<Option<usize>> = idx.iter().enumerate().map(|(s, &k)| options[s][k]).collect();
            let sectors: Vec<Sector> = img
                .iter()
                .enumerate()
                .map(|(s, o)| o.map_or(Sector::Zero, |i| by(&ops, i, s as u64)))
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
