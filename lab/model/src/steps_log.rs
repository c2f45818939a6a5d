//! The op log of a steps workload: the plan (known in full before it runs)
//! and the agent's lines as the host received them up to the cut (`begin`
//! before each step, its result after). Pure.

use std::collections::HashMap;

use lab_core::stamp::SECTOR;
use lab_core::steps::{Plan, Step, StepResult};

use crate::{Op, OpKind, OpResult, StampKey, Write};

/// errnos meaning the kernel refused before any I/O.
const REFUSALS: [&str; 2] = ["EINVAL", "EOPNOTSUPP"];

/// Builds the model's log of a steps workload (one thread). File names and
/// ids, stamp write ids and sync flags are worked out the way the agent
/// assigns them.
pub fn from_steps(plan: &Plan, lines: &[String]) -> Vec<Op> {
    let mut events = Events::default();
    for (pos, v) in parsed(lines) {
        if let Some(i) = v.get("begin").and_then(serde_json::Value::as_u64) {
            events.started.insert((0, i as usize), pos);
        } else if let Ok(r) = serde_json::from_value::<StepResult>(v) {
            events.ended.insert((0, r.index), (pos, r));
        }
    }
    let thread = Thread {
        steps: &plan.steps,
        write_base: 0,
        preamble: None,
    };
    build(plan.run, &plan.root, &[thread], &events)
}

/// The log of a generator workload: each thread opened the file first
/// (not a step of its own), then ran its operations, numbering its writes
/// from `t << 24`. Lines: `{"tbegin":[t,i]}` and `{"thread":t,"result":...}`.
pub fn from_threads(
    run: u64,
    root: &str,
    open: &Step,
    threads: &[Vec<Step>],
    lines: &[String],
) -> Vec<Op> {
    let mut events = Events::default();
    for (pos, v) in parsed(lines) {
        if let Some(a) = v.get("tbegin").and_then(serde_json::Value::as_array) {
            if let (Some(t), Some(i)) = (
                a.first().and_then(|x| x.as_u64()),
                a.get(1).and_then(|x| x.as_u64()),
            ) {
                events.started.insert((t as usize, i as usize), pos);
            }
        } else if let (Some(t), Some(r)) = (
            v.get("thread").and_then(serde_json::Value::as_u64),
            v.get("result")
                .cloned()
                .and_then(|r| serde_json::from_value::<StepResult>(r).ok()),
        ) {
            events.ended.insert((t as usize, r.index), (pos, r));
        }
    }
    let ts: Vec<Thread> = threads
        .iter()
        .enumerate()
        .map(|(t, steps)| Thread {
            steps,
            write_base: (t as u32) << 24,
            preamble: Some(open),
        })
        .collect();
    build(run, root, &ts, &events)
}

fn parsed(lines: &[String]) -> impl Iterator<Item = (u64, serde_json::Value)> + '_ {
    lines
        .iter()
        .enumerate()
        .filter_map(|(pos, l)| Some((pos as u64, serde_json::from_str(l).ok()?)))
}

#[derive(Default)]
struct Events {
    started: HashMap<(usize, usize), u64>,
    ended: HashMap<(usize, usize), (u64, StepResult)>,
}

struct Thread<'a> {
    steps: &'a [Step],
    write_base: u32,
    /// A step the thread ran before its numbered steps (the generator's
    /// open), assumed done.
    preamble: Option<&'a Step>,
}

/// The stamp a write's sectors carry: the agent stamps only writes that are
/// whole sectors (a pwrite and the stores of an mmap_write alike).
fn stamp_of(run: u64, file: u32, write: u32, offset: u64, len: u64) -> Option<StampKey> {
    (offset.is_multiple_of(SECTOR as u64) && len.is_multiple_of(SECTOR as u64))
        .then_some(StampKey { run, file, write })
}

fn build(run: u64, root: &str, threads: &[Thread], events: &Events) -> Vec<Op> {
    let resolve = |f: &str| {
        if f.starts_with('/') {
            f.to_string()
        } else {
            format!("{}/{f}", root.trim_end_matches('/'))
        }
    };
    let mut ops = Vec::new();
    for (t, th) in threads.iter().enumerate() {
        // Per open file: (the agent's file id, O_SYNC|O_DSYNC); per thread,
        // as each writer thread has its own agent state.
        let mut open: HashMap<String, (u32, bool)> = HashMap::new();
        let mut last: Option<String> = None;
        let mut next_file = 0u32;
        let mut next_write = th.write_base;
        if let Some(Step::Open(o)) = th.preamble {
            next_file += 1;
            let path = resolve(&o.file);
            open.insert(path.clone(), (next_file, o.sync || o.dsync));
            last = Some(path);
        }
        for (i, step) in th.steps.iter().enumerate() {
            let file_of = |f: &Option<String>, last: &Option<String>| {
                f.as_deref()
                    .map(resolve)
                    .or_else(|| last.clone())
                    .unwrap_or_default()
            };
            let end = events.ended.get(&(t, i));
            let result = end.map(|(_, r)| match (&r.errno, r.detail.is_empty()) {
                (None, true) => OpResult::Ok,
                // An mmap_write's errno may come from its msync, after the
                // stores: never "nothing written".
                (Some(e), _)
                    if REFUSALS.contains(&e.as_str()) && !matches!(step, Step::MmapWrite(_)) =>
                {
                    OpResult::Refused
                }
                _ => OpResult::Failed,
            });
            let kind = match step {
                Step::Open(o) => {
                    let path = resolve(&o.file);
                    // The agent numbers every open that succeeds; one the
                    // host never saw end is assumed to have succeeded.
                    if result.is_none_or(|r| r == OpResult::Ok) {
                        next_file += 1;
                        open.insert(path.clone(), (next_file, o.sync || o.dsync));
                        last = Some(path);
                    }
                    OpKind::Other
                }
                Step::Pwrite(p) => {
                    next_write += 1;
                    let path = file_of(&p.file, &last);
                    let (file_id, open_sync) = open.get(&path).copied().unwrap_or((0, false));
                    OpKind::Write(Write {
                        file: path,
                        offset: p.offset,
                        len: p.len,
                        atomic: p.atomic,
                        sync: open_sync || p.sync || p.dsync,
                        stamp: stamp_of(run, file_id, next_write, p.offset, p.len),
                        store: false,
                        range_sync: None,
                    })
                }
                // Stores through a shared mapping: never synchronous (O_SYNC
                // is for write(2)), stamped as a pwrite of the range would
                // be; msync(MS_SYNC) syncs the mapped pages.
                Step::MmapWrite(m) => {
                    next_write += 1;
                    let path = file_of(&m.file, &last);
                    let (file_id, _) = open.get(&path).copied().unwrap_or((0, false));
                    OpKind::Write(Write {
                        file: path,
                        offset: m.offset,
                        len: m.len,
                        atomic: false,
                        sync: false,
                        stamp: stamp_of(run, file_id, next_write, m.offset, m.len),
                        store: true,
                        range_sync: m.msync.then(|| m.pages()),
                    })
                }
                Step::Fsync(f) => OpKind::Fsync {
                    file: file_of(&f.file, &last),
                },
                Step::Fdatasync(f) => OpKind::Fdatasync {
                    file: file_of(&f.file, &last),
                },
                Step::SyncFileRange(r) => OpKind::SyncFileRange {
                    file: file_of(&r.file, &last),
                },
                Step::Ftruncate(tr) => OpKind::Ftruncate {
                    file: file_of(&tr.file, &last),
                    len: tr.len,
                },
                Step::PunchHole(r) | Step::ZeroRange(r) => OpKind::Zero {
                    file: file_of(&r.file, &last),
                    offset: r.offset,
                    len: r.len,
                    extends: matches!(step, Step::ZeroRange(_)),
                },
                Step::Sync(_) => OpKind::Sync,
                Step::Close(f) => {
                    let path = file_of(&f.file, &last);
                    open.remove(&path);
                    OpKind::Other
                }
                // Reads, allocations (they read back as zeroes), marks,
                // page-cache censuses. Writeback knobs, sleeps and memory
                // pressure may start writeback, which promises nothing: no
                // durability of their own.
                Step::Verify(_)
                | Step::Fallocate(_)
                | Step::Mark(_)
                | Step::Clone(_)
                | Step::Folios(_)
                | Step::Sysctl(_)
                | Step::Sleep(_)
                | Step::MemoryPressure(_) => OpKind::Other,
            };
            let who = if threads.len() > 1 {
                format!("thread {t} op {}", i + 1)
            } else {
                format!("step {}", i + 1)
            };
            ops.push(Op {
                index: ops.len(),
                describe: format!("{who} {}", step.describe()),
                kind,
                started: events.started.get(&(t, i)).copied(),
                ended: end.map(|(p, _)| *p),
                result,
                errno: end.and_then(|(_, r)| r.errno.clone()),
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::steps::{FileOnly, Open, Pwrite};

    #[test]
    fn ids_flags_and_progress_follow_the_agent() {
        let plan = Plan {
            run: 5,
            root: "/mnt".into(),
            steps: vec![
                Step::Open(Open {
                    file: "a".into(),
                    direct: true,
                    sync: false,
                    dsync: true,
                    expect: Default::default(),
                }),
                Step::Pwrite(Pwrite::new(0, 4096, false)),
                Step::Pwrite(Pwrite {
                    atomic: true,
                    ..Pwrite::new(100, 4096, true)
                }),
                Step::Fsync(FileOnly::default()),
            ],
        };
        let lines: Vec<String> = [
            r#"{"begin":0}"#,
            r#"{"index":0,"op":"open","ret":3,"errno":null}"#,
            r#"{"begin":1}"#,
            r#"{"index":1,"op":"pwrite","ret":4096,"errno":null}"#,
            r#"{"begin":2}"#,
            r#"{"index":2,"op":"pwrite","ret":null,"errno":"EINVAL"}"#,
            r#"{"begin":3}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ops = from_steps(&plan, &lines);
        let OpKind::Write(w) = &ops[1].kind else {
            panic!()
        };
        assert_eq!(w.file, "/mnt/a");
        assert!(w.sync, "O_DSYNC on the open file");
        assert_eq!(
            w.stamp,
            Some(StampKey {
                run: 5,
                file: 1,
                write: 1
            })
        );
        let OpKind::Write(w2) = &ops[2].kind else {
            panic!()
        };
        assert_eq!(w2.stamp, None, "offset 100 is not sector aligned");
        assert_eq!(ops[2].result, Some(OpResult::Refused));
        assert_eq!((ops[3].started, ops[3].ended), (Some(6), None));
        assert_eq!(ops[1].describe, "step 2 pwritev2(off=0 len=4096 )");
    }

    /// An mmap_write is a non-atomic write of its range, numbered among the
    /// pwrites, never synchronous (even on an O_DSYNC file), a store, and
    /// with msync a range sync of the pages holding it.
    #[test]
    fn mmap_writes_are_stores_with_a_page_range_sync() {
        use lab_core::steps::{Expect, MmapWrite};
        let mmap = |offset, len, msync| {
            Step::MmapWrite(MmapWrite {
                file: None,
                offset,
                len,
                msync,
                expect: Expect::Ok,
            })
        };
        let plan = Plan {
            run: 6,
            root: "/mnt".into(),
            steps: vec![
                Step::Open(Open {
                    file: "a".into(),
                    direct: false,
                    sync: false,
                    dsync: true,
                    expect: Default::default(),
                }),
                Step::Pwrite(Pwrite::new(0, 16384, false)),
                mmap(5120, 1024, true),
                mmap(8192, 100, false),
                mmap(0, 512, true),
            ],
        };
        let lines: Vec<String> = [
            r#"{"begin":0}"#,
            r#"{"index":0,"op":"open","ret":3,"errno":null}"#,
            r#"{"begin":1}"#,
            r#"{"index":1,"op":"pwrite","ret":16384,"errno":null}"#,
            r#"{"begin":2}"#,
            r#"{"index":2,"op":"mmap_write","ret":1024,"errno":null}"#,
            r#"{"begin":3}"#,
            r#"{"index":3,"op":"mmap_write","ret":100,"errno":null}"#,
            r#"{"begin":4}"#,
            r#"{"index":4,"op":"mmap_write","ret":null,"errno":"EINVAL","detail":"msync(MS_SYNC) failed after the stores"}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ops = from_steps(&plan, &lines);
        let w = |i: usize| match &ops[i].kind {
            OpKind::Write(w) => w.clone(),
            k => panic!("{k:?}"),
        };
        let stored = w(2);
        assert!(stored.store && !stored.atomic && !stored.sync, "{stored:?}");
        assert_eq!(stored.range_sync, Some((4096, 8192)), "the page holding it");
        assert_eq!(
            stored.stamp,
            Some(StampKey {
                run: 6,
                file: 1,
                write: 2
            }),
            "numbered after the pwrite, as the agent numbers it"
        );
        let unsynced = w(3);
        assert_eq!((unsynced.range_sync, unsynced.stamp), (None, None));
        assert_eq!(w(4).stamp.map(|k| k.write), Some(4));
        assert_eq!(ops[4].result, Some(OpResult::Failed), "its stores happened");
        assert_eq!(
            ops[2].describe,
            "step 3 mmap_write(off=5120 len=1024 msync=MS_SYNC)"
        );
    }
}
