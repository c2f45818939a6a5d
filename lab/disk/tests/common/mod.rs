//! Records for the planner's tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lab_disk::{AtomicRules, Record, WriteKind, WriteRecord};

pub const LBA: u32 = 512;

/// Data write `seq` over `lbas` LBAs from `first`: its bytes differ per
/// write and per LBA and are never zero, so every state's image tells
/// which write landed where.
pub fn data_write(
    seq: u64,
    first: u64,
    lbas: u32,
    fua: bool,
    received: Duration,
    acked: Option<Duration>,
) -> WriteRecord {
    let data: Vec<u8> = (0..lbas * LBA)
        .map(|b| (seq as u32 * 31 + b / LBA * 7 + 1) as u8)
        .collect();
    WriteRecord {
        seq,
        kind: WriteKind::Data,
        offset: first * u64::from(LBA),
        len: lbas * LBA,
        fua,
        data: Arc::new(data),
        received,
        acked,
    }
}

/// Every image the rules allow after a cut with `writes_before` writes
/// received, where `durable` says which of them were durable at it: each
/// durable write whole; each other write whole or absent if atomic, any
/// subset of its LBAs if not; applied in arrival order over zeroes. The
/// brute-force oracle of the planner's tests.
pub fn reachable(
    r: &Record,
    rules: AtomicRules,
    writes_before: u64,
    durable: &dyn Fn(&WriteRecord) -> bool,
) -> HashSet<Vec<u8>> {
    let ws = &r.writes[..writes_before as usize];
    let choices: Vec<Vec<u64>> = ws
        .iter()
        .map(|w| {
            let n = w.len / LBA;
            let full = (1u64 << n) - 1;
            if durable(w) {
                vec![full]
            } else if rules.is_atomic(w.offset, w.len) {
                vec![0, full]
            } else {
                (0..=full).collect()
            }
        })
        .collect();
    let mut out = HashSet::new();
    let mut idx = vec![0usize; ws.len()];
    loop {
        let mut img = vec![0u8; r.size as usize];
        for (w, (c, i)) in ws.iter().zip(choices.iter().zip(&idx)) {
            let mask = c[*i];
            for l in 0..w.len / LBA {
                if mask & (1 << l) != 0 {
                    let at = (w.offset + u64::from(l * LBA)) as usize;
                    img[at..at + LBA as usize].copy_from_slice(w.lba_bytes(l, LBA).unwrap());
                }
            }
        }
        out.insert(img);
        // Next combination.
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
