//! The op log of a steps workload: the plan (known in full before it runs)
//! and the agent's lines as the host received them up to the cut (`begin`
//! before each step, its result after). Pure.

use std::collections::HashMap;

use lab_core::stamp::SECTOR;
use lab_core::steps::{Plan, Step, StepResult};

use crate::{Op, OpKind, OpResult, StampKey, Write};

/// errnos meaning the kernel refused before any I/O.
const REFUSALS: [&str; 2] = ["EINVAL", "EOPNOTSUPP"];

/// Builds the model's log. File names and ids, stamp write ids and sync
/// flags are worked out the way the agent assigns them.
pub fn from_steps(plan: &Plan, lines: &[String]) -> Vec<Op> {
    let mut started = HashMap::new();
    let mut ended: HashMap<usize, (u64, StepResult)> = HashMap::new();
    for (pos, line) in lines.iter().enumerate() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(i) = v.get("begin").and_then(serde_json::Value::as_u64) {
            started.insert(i as usize, pos as u64);
        } else if let Ok(r) = serde_json::from_value::<StepResult>(v) {
            ended.insert(r.index, (pos as u64, r));
        }
    }
    let resolve = |f: &str| {
        if f.starts_with('/') {
            f.to_string()
        } else {
            format!("{}/{f}", plan.root.trim_end_matches('/'))
        }
    };
    // Per open file: (agent's file id, O_SYNC|O_DSYNC).
    let mut open: HashMap<String, (u32, bool)> = HashMap::new();
    let mut last: Option<String> = None;
    let mut next_file = 0u32;
    let mut next_write = 0u32;
    let mut ops = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let file_of = |f: &Option<String>, last: &Option<String>| {
            f.as_deref()
                .map(resolve)
                .or_else(|| last.clone())
                .unwrap_or_default()
        };
        let end = ended.get(&i);
        let result = end.map(|(_, r)| match (&r.errno, r.detail.is_empty()) {
            (None, true) => OpResult::Ok,
            (Some(e), _) if REFUSALS.contains(&e.as_str()) => OpResult::Refused,
            _ => OpResult::Failed,
        });
        let kind = match step {
            Step::Open(o) => {
                let path = resolve(&o.file);
                // The agent numbers every open that succeeds; one the host
                // never saw end is assumed to have succeeded.
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
                let stamped = p.offset % SECTOR as u64 == 0 && p.len % SECTOR as u64 == 0;
                OpKind::Write(Write {
                    file: path,
                    offset: p.offset,
                    len: p.len,
                    atomic: p.atomic,
                    sync: open_sync || p.sync || p.dsync,
                    stamp: stamped.then_some(StampKey {
                        run: plan.run,
                        file: file_id,
                        write: next_write,
                    }),
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
            Step::Ftruncate(t) => OpKind::Ftruncate {
                file: file_of(&t.file, &last),
                len: t.len,
            },
            Step::Close(f) => {
                let path = file_of(&f.file, &last);
                open.remove(&path);
                OpKind::Other
            }
            // Reads, allocations (they read back as zeroes), marks.
            Step::Verify(_) | Step::Fallocate(_) | Step::Mark(_) | Step::Clone(_) => OpKind::Other,
        };
        ops.push(Op {
            index: i,
            describe: format!("step {} {}", i + 1, step.describe()),
            kind,
            started: started.get(&i).copied(),
            ended: end.map(|(p, _)| *p),
            result,
        });
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
}
