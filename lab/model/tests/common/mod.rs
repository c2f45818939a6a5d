//! Building logs and scans for the model's tests.
#![allow(dead_code)]

use lab_core::stamp::{Sector, Stamp};
use lab_model::{FileScan, Op, OpKind, OpResult, StampKey, Write};

pub const RUN: u64 = 77;
pub const SEC: u64 = 512;

/// A sequential log: op i starts at event 2i and ends at 2i+1, up to
/// `ended` ops; the next one (if `in_flight`) started only; the rest unseen.
pub struct Log {
    pub ops: Vec<Op>,
}

pub enum K {
    /// sectors [first, first+n), atomic, sync
    W(u64, u64, bool, bool),
    Fsync,
    Fdatasync,
    Trunc(u64),
    /// A write refused with EINVAL.
    Refused(u64, u64),
    /// Stores through a mapping over sectors [first, first+n); with a range
    /// sync of sectors [from, to) (msync) or none.
    Store(u64, u64, Option<(u64, u64)>),
    /// fallocate PUNCH_HOLE (zeroes, size kept) over sectors [first, first+n).
    Punch(u64, u64),
    /// fallocate ZERO_RANGE over sectors [first, first+n): the file grows.
    ZeroRange(u64, u64),
    /// sync(2).
    Sync,
}

pub fn log(kinds: &[K], ended: usize, in_flight: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut write_id = 0;
    for (i, k) in kinds.iter().enumerate() {
        let (kind, describe, refused) = match k {
            K::W(first, n, atomic, sync) => {
                write_id += 1;
                (
                    OpKind::Write(Write {
                        file: "f".into(),
                        offset: first * SEC,
                        len: n * SEC,
                        atomic: *atomic,
                        sync: *sync,
                        stamp: Some(StampKey {
                            run: RUN,
                            file: 1,
                            write: write_id,
                        }),
                        store: false,
                        range_sync: None,
                    }),
                    format!(
                        "op {i} pwrite(sectors {first}..{}{}{})",
                        first + n,
                        if *atomic { " atomic" } else { "" },
                        if *sync { " dsync" } else { "" }
                    ),
                    false,
                )
            }
            K::Refused(first, n) => {
                write_id += 1;
                (
                    OpKind::Write(Write {
                        file: "f".into(),
                        offset: first * SEC,
                        len: n * SEC,
                        atomic: true,
                        sync: false,
                        stamp: Some(StampKey {
                            run: RUN,
                            file: 1,
                            write: write_id,
                        }),
                        store: false,
                        range_sync: None,
                    }),
                    format!("op {i} refused pwrite"),
                    true,
                )
            }
            K::Store(first, n, sync) => {
                write_id += 1;
                (
                    OpKind::Write(Write {
                        file: "f".into(),
                        offset: first * SEC,
                        len: n * SEC,
                        atomic: false,
                        sync: false,
                        stamp: Some(StampKey {
                            run: RUN,
                            file: 1,
                            write: write_id,
                        }),
                        store: true,
                        range_sync: sync.map(|(from, to)| (from * SEC, to * SEC)),
                    }),
                    match sync {
                        Some((from, to)) => {
                            format!(
                                "op {i} store(sectors {first}..{}) msync({from}..{to})",
                                first + n
                            )
                        }
                        None => format!("op {i} store(sectors {first}..{})", first + n),
                    },
                    false,
                )
            }
            K::Punch(first, n) | K::ZeroRange(first, n) => (
                OpKind::Zero {
                    file: "f".into(),
                    offset: first * SEC,
                    len: n * SEC,
                    extends: matches!(k, K::ZeroRange(..)),
                },
                format!(
                    "op {i} {}(sectors {first}..{})",
                    if matches!(k, K::ZeroRange(..)) {
                        "zero_range"
                    } else {
                        "punch_hole"
                    },
                    first + n
                ),
                false,
            ),
            K::Sync => (OpKind::Sync, format!("op {i} sync"), false),
            K::Fsync => (
                OpKind::Fsync { file: "f".into() },
                format!("op {i} fsync"),
                false,
            ),
            K::Fdatasync => (
                OpKind::Fdatasync { file: "f".into() },
                format!("op {i} fdatasync"),
                false,
            ),
            K::Trunc(n) => (
                OpKind::Ftruncate {
                    file: "f".into(),
                    len: n * SEC,
                },
                format!("op {i} ftruncate({})", n * SEC),
                false,
            ),
        };
        let (started, ended, result) = if i < ended {
            (
                Some(2 * i as u64),
                Some(2 * i as u64 + 1),
                Some(if refused {
                    OpResult::Refused
                } else {
                    OpResult::Ok
                }),
            )
        } else if i == ended && in_flight {
            (Some(2 * i as u64), None, None)
        } else {
            (None, None, None)
        };
        ops.push(Op {
            index: i,
            describe,
            kind,
            started,
            ended,
            result,
            errno: None,
        });
    }
    ops
}

/// The stamp write id of op `i` (writes are numbered from 1 in order).
pub fn write_id(ops: &[Op], i: usize) -> u32 {
    match &ops[i].kind {
        OpKind::Write(w) => w.stamp.unwrap().write,
        _ => panic!("op {i} is not a write"),
    }
}

/// A sector holding op `i`'s stamp at sector `s`.
pub fn by(ops: &[Op], i: usize, s: u64) -> Sector {
    Sector::Stamped(Stamp {
        run: RUN,
        file: 1,
        write: write_id(ops, i),
        generation: 0,
        offset: s * SEC,
    })
}

pub fn scan(sectors: Vec<Sector>) -> Vec<FileScan> {
    vec![FileScan {
        file: "f".into(),
        size: Some(sectors.len() as u64 * SEC),
        sectors,
    }]
}
