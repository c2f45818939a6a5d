//! Power-cut sweeps (`power_cut.sweep`): virtual cuts at many moments of
//! one recorded run, each judged as a real cut there would be.
//!
//! A cut at disk time T leaves what `Record::cut_at(T)` keeps (lab-disk's
//! `sweep` module says why), and the guest can only have been promised
//! what the host saw end by T: the agent's lines are stamped with the
//! disk's clock as they arrive, so the op log at T is built from the lines
//! that had arrived by T, and the model's lag rule covers the rest. Each
//! distinct content goes through the verifier once; the model judges it at
//! every point that can leave it (docs/powercut.md, "Sweeps").

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_core::powercut::{PowerCut, Sweep, SweepEvery};
use lab_core::report::{CaseResult, Outcome};
use lab_core::testcase::Testcase;
use lab_disk::sweep::{self, CutPoint, NextEvent, SweepPlan};
use lab_disk::{Planner, Record, StateStore};
use lab_model::{Op, OpKind, OpResult};

use crate::host::LabHost;
use crate::powercut::kept::KeptCase;
use crate::powercut::verifier::VerifierPool;
use crate::suite::contents::{self, Content};
use crate::suite::outcome::{result, StageError};
use crate::suite::powercut::{
    judge_states, rules, scan_states, AgentStream, GuestWrite, OpLog, StateRow,
};

/// At most this many failing cut points get a result (and a kept state)
/// each; the rest are counted in the properties.
const REPORTED_POINTS: usize = 16;

/// What a sweep needs from the run that recorded it.
pub(crate) struct SweepInput<'a> {
    pub host: &'a LabHost,
    pub tc: &'a Testcase,
    pub pc: &'a PowerCut,
    pub sweep: &'a Sweep,
    pub case: &'a str,
    pub dir: &'a Path,
    /// The crash disk's backing file (kept states are deltas against it).
    pub base: &'a Path,
    pub disk_file: &'a std::fs::File,
    /// The whole record, up to the real cut (or the run's end).
    pub record: &'a Record,
    /// The op log as the host had it at the end.
    pub ops: &'a [Op],
    pub log: &'a OpLog<'a>,
    /// The disk's clock when each of the agent's lines arrived.
    pub stamps: &'a [Duration],
    pub guest: &'a HashMap<u64, GuestWrite>,
    pub verifiers: &'a VerifierPool,
}

/// The moments each completed sync reached the host: fsync, fdatasync,
/// sync(2), synchronous writes and msync'd stores the host saw succeed.
pub fn sync_moments(ops: &[Op], stamps: &[Duration]) -> Vec<Duration> {
    ops.iter()
        .filter(|o| o.result == Some(OpResult::Ok))
        .filter(|o| match &o.kind {
            OpKind::Fsync { .. } | OpKind::Fdatasync { .. } | OpKind::Sync => true,
            OpKind::Write(w) => w.sync || w.range_sync.is_some(),
            _ => false,
        })
        .filter_map(|o| stamps.get(o.ended? as usize).copied())
        .collect()
}

/// The sweep's cut points, sampled; and how many there were before.
pub fn cut_points(
    sw: &Sweep,
    record: &Record,
    ops: &[Op],
    stamps: &[Duration],
) -> (Vec<CutPoint>, usize) {
    let mut points = match sw.every {
        SweepEvery::Write => sweep::every_event(record, record.armed.unwrap_or_default()),
        SweepEvery::Sync => sweep::after_each(record, &sync_moments(ops, stamps)),
        SweepEvery::Mark => {
            let marks: Vec<Duration> = record.marks.iter().map(|m| m.at).collect();
            sweep::after_each(record, &marks)
        }
    };
    let found = points.len();
    sweep::sample(&mut points, sw.max_points as usize, sw.seed);
    (points, found)
}

/// A cut point in words: when, after which operation the host saw end,
/// and before what the disk saw next.
fn describe_point(
    p: &CutPoint,
    ops: &[Op],
    record: &Record,
    guest: &HashMap<u64, GuestWrite>,
) -> String {
    let mut s = format!("cut at {:.6} s", p.at.as_secs_f64());
    let last = ops
        .iter()
        .filter_map(|o| Some((o.ended?, o)))
        .max_by_key(|&(e, _)| e);
    match last {
        Some((_, o)) => {
            let _ = write!(s, ", after `{}` ended", o.describe);
        }
        None => s.push_str(", before any operation ended"),
    }
    let write = |seq: u64| match guest.get(&seq) {
        Some(g) => format!("device write {seq} (`{}`)", g.describe),
        None => format!(
            "device write {seq} ({} bytes at byte {})",
            record.writes[seq as usize].len, record.writes[seq as usize].offset
        ),
    };
    let _ = match p.next {
        NextEvent::Arrival(seq) => write!(s, ", just before {} arrived", write(seq)),
        NextEvent::Ack(seq) => write!(s, ", just before {} was acknowledged", write(seq)),
        NextEvent::Flush(i) => write!(s, ", just before flush {i}"),
        NextEvent::End => write!(s, ", at the end of the record"),
    };
    s
}

/// One failing judgement.
struct Failure {
    point: usize,
    judgement: usize,
    outcome: Outcome,
}

/// Plans the sweep, checks every distinct content once, judges every
/// (cut point, state) pair, and turns it into results and properties.
pub(crate) fn judge_sweep(
    input: &SweepInput,
    props: &mut Vec<(String, String)>,
) -> Result<Vec<CaseResult>, StageError> {
    let SweepInput {
        host,
        tc,
        pc,
        sweep: sw,
        case,
        dir,
        base,
        disk_file,
        record,
        ops,
        log,
        stamps,
        guest,
        verifiers,
    } = *input;
    let t = Instant::now();
    let rules = rules(tc);
    let (points, found) = cut_points(sw, record, ops, stamps);
    let plan: SweepPlan = Planner::new(record, rules).plan_sweep(&points, &pc.states);
    let store = StateStore::new(disk_file, record.clone(), &plan.states)
        .map(Arc::new)
        .map_err(|e| StageError::lab("crash-states", e))?;
    // The op log at each point: the lines that had reached the host.
    let point_ops: Vec<Vec<Op>> = points
        .iter()
        .map(|p| log.ops(AgentStream::arrived_by(stamps, p.at)))
        .collect::<Result<_, _>>()
        .map_err(|e| StageError::lab("sweep", anyhow::anyhow!(e)))?;
    let described: Vec<String> = points
        .iter()
        .zip(&point_ops)
        .map(|(p, o)| describe_point(p, o, record, guest))
        .collect();

    // Device level: each judgement's state read back against the record
    // as a real cut at its point would have left it.
    let mut rows = Vec::with_capacity(plan.judgements.len());
    let mut scans = Vec::with_capacity(plan.judgements.len());
    for (i, p) in points.iter().enumerate() {
        let at_point: Vec<&lab_disk::Judgement> =
            plan.judgements.iter().filter(|j| j.point == i).collect();
        let states: Vec<usize> = at_point.iter().map(|j| j.state).collect();
        let cut = record.cut_at(p.at, "virtual cut");
        scans.extend(
            scan_states(&store, &cut, &states, rules)
                .map_err(|e| StageError::lab("crash-states", e))?,
        );
        rows.extend(at_point.iter().map(|j| StateRow {
            name: format!("{} ({})", point_name(i), described[i]),
            recipe: j.recipe.to_string(),
        }));
    }
    let mut results = Vec::new();
    for r in judge_states(case, record, &rows, &scans, guest, rules, t.elapsed()) {
        match r.outcome {
            Outcome::Skipped { reason } => {
                props.push((r.check.clone(), format!("not applicable: {reason}")))
            }
            _ => results.push(r),
        }
    }
    crate::suite::powercut::write_record(&dir.join("crash"), record, guest);
    props.extend([
        ("sweep.every".into(), sw.every.to_string()),
        ("sweep.cut_points".into(), points.len().to_string()),
        ("sweep.cut_points_found".into(), found.to_string()),
        (
            "sweep.cut_points_left_out".into(),
            (found - points.len()).to_string(),
        ),
        ("sweep.states_generated".into(), plan.generated.to_string()),
        ("sweep.states_left_out".into(), plan.left_out.to_string()),
        ("sweep.contents".into(), plan.states.len().to_string()),
        ("sweep.judgements".into(), plan.judgements.len().to_string()),
        ("sweep.judgements_spread".into(), plan.spread().to_string()),
        (
            "sweep.dedupe_ratio".into(),
            format!(
                "{:.2}",
                plan.judgements.len() as f64 / plan.states.len().max(1) as f64
            ),
        ),
    ]);
    if tc.mkfs.is_none() {
        write_sweep_artifacts(dir, &plan, &described, &[]);
        return Ok(results);
    }

    // Filesystem level: each content through the verifier once, then the
    // model at every point it occurs.
    let files = contents::written_files(ops);
    let checked = contents::check_contents(
        &contents::Site {
            host,
            tc,
            case,
            dir,
            store: &store,
            verifiers,
        },
        plan.states.len(),
        &files,
        props,
    );
    let tj = Instant::now();
    let models: Vec<lab_model::Model> =
        point_ops.iter().map(|o| lab_model::Model::new(o)).collect();
    let mut failures: Vec<Failure> = Vec::new();
    let mut judged = 0usize;
    let mut verdicts = vec!["unchecked".to_string(); plan.judgements.len()];
    for (k, j) in plan.judgements.iter().enumerate() {
        let Some(outcome) = contents::judge(&checked.contents[j.state], &models[j.point]) else {
            continue;
        };
        judged += 1;
        verdicts[k] = match &outcome {
            Outcome::Failed { message, .. } => format!("failed: {message}"),
            o => o.label().to_string(),
        };
        if matches!(outcome, Outcome::Failed { .. }) {
            failures.push(Failure {
                point: j.point,
                judgement: k,
                outcome,
            });
        }
    }
    let judge_s = tj.elapsed().as_secs_f64();
    write_sweep_artifacts(dir, &plan, &described, &verdicts);
    let mut failed_points: Vec<usize> = failures.iter().map(|f| f.point).collect();
    failed_points.dedup();
    props.extend([
        ("sweep.judged".into(), judged.to_string()),
        ("sweep.judgements_failed".into(), failures.len().to_string()),
        (
            "sweep.cut_points_failed".into(),
            failed_points.len().to_string(),
        ),
        ("sweep.judge_s".into(), format!("{judge_s:.3}")),
        (
            "sweep.contents_broken".into(),
            checked
                .contents
                .iter()
                .filter(|c| matches!(c, Content::Broken { .. }))
                .count()
                .to_string(),
        ),
    ]);
    let per_point = t.elapsed() / points.len().max(1) as u32;
    if failures.is_empty() && judged > 0 {
        results.push(result(case, "sweep.verdicts", Outcome::Passed, t.elapsed()));
    }
    // The first failing judgement of each failing point, in time order.
    let mut reported = 0;
    let mut last_point = None;
    for f in &failures {
        if last_point == Some(f.point) {
            continue;
        }
        last_point = Some(f.point);
        if reported == REPORTED_POINTS {
            results.push(result(
                case,
                "sweep.more",
                Outcome::Failed {
                    message: format!(
                        "{} more cut points failed (crash/sweep.jsonl lists every point)",
                        failed_points.len() - REPORTED_POINTS
                    ),
                    detail: String::new(),
                },
                Duration::ZERO,
            ));
            break;
        }
        reported += 1;
        let j = &plan.judgements[f.judgement];
        let name = format!(
            "{}-{}",
            point_name(f.point),
            lab_disk::cow::state_name(j.state)
        );
        let Outcome::Failed { message, detail } = f.outcome.clone() else {
            unreachable!("only failures are kept")
        };
        let others = failures.iter().filter(|g| g.point == f.point).count() - 1;
        let outcome = Outcome::Failed {
            message: format!("{message} ({})", described[f.point]),
            detail: format!(
                "{detail}\nrecipe `{}`; {others} more states failed at this point; rerun the sweep: lab run {}",
                j.recipe, tc.name
            ),
        };
        let kept = KeptCase {
            testcase: tc.name.clone(),
            device: tc.device.clone(),
            files: files.clone(),
            ops: point_ops[f.point].clone(),
            recipe: j.recipe.to_string(),
            timeout_s: tc.timeouts.command_s,
        };
        let outcome = contents::keep_failure(
            outcome,
            &checked.contents[j.state],
            dir,
            base,
            &store,
            j.state,
            &plan.states[j.state],
            &name,
            &kept,
        );
        results.push(result(
            case,
            &format!("sweep.{}", point_name(f.point)),
            outcome,
            per_point,
        ));
    }
    results.extend(checked.results);
    Ok(results)
}

fn point_name(i: usize) -> String {
    format!("cut-{i:03}")
}

/// `crash/sweep.jsonl`: one line per cut point, with its judgements and,
/// with a filesystem, the model's verdict on each.
fn write_sweep_artifacts(dir: &Path, plan: &SweepPlan, described: &[String], verdicts: &[String]) {
    let crash = dir.join("crash");
    if std::fs::create_dir_all(&crash).is_err() {
        return;
    }
    let lines: String = plan
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let states: Vec<serde_json::Value> = plan
                .judgements
                .iter()
                .enumerate()
                .filter(|(_, j)| j.point == i)
                .map(|(k, j)| {
                    serde_json::json!({
                        "state": lab_disk::cow::state_name(j.state),
                        "recipe": j.recipe.to_string(),
                        "spread": j.spread,
                        "verdict": verdicts.get(k),
                    })
                })
                .collect();
            serde_json::json!({
                "point": point_name(i),
                "at_s": p.at.as_secs_f64(),
                "writes_before": p.writes_before,
                "described": described[i],
                "states": states,
            })
            .to_string()
                + "\n"
        })
        .collect();
    let _ = std::fs::write(crash.join("sweep.jsonl"), lines);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::steps::{FileOnly, Open, Plan, Pwrite, Step};

    use crate::suite::powercut::CutWorkload;

    fn plan() -> Plan {
        Plan {
            run: 1,
            root: "/mnt".into(),
            steps: vec![
                Step::Open(Open {
                    file: "a".into(),
                    direct: true,
                    sync: false,
                    dsync: false,
                    expect: Default::default(),
                }),
                Step::Pwrite(Pwrite::new(0, 4096, false)),
                Step::Fdatasync(FileOnly::default()),
                Step::Pwrite(Pwrite::new(4096, 4096, true)),
                Step::Fsync(FileOnly::default()),
            ],
        }
    }

    fn lines() -> Vec<String> {
        [
            r#"{"begin":0}"#,
            r#"{"index":0,"op":"open","ret":3,"errno":null}"#,
            r#"{"begin":1}"#,
            r#"{"index":1,"op":"pwrite","ret":4096,"errno":null}"#,
            r#"{"begin":2}"#,
            r#"{"index":2,"op":"fdatasync","ret":0,"errno":null}"#,
            r#"{"begin":3}"#,
            r#"{"index":3,"op":"pwrite","ret":4096,"errno":null}"#,
            r#"{"begin":4}"#,
            r#"{"index":4,"op":"fsync","ret":0,"errno":null}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The op log at T holds exactly the starts and ends whose lines had
    /// reached the host by T: never an end seen after T (a promise the
    /// guest had not made yet at a real cut there).
    #[test]
    fn the_op_log_at_t_holds_only_what_the_host_had_seen() {
        let (plan, lines) = (plan(), lines());
        let stamps: Vec<Duration> = (0..lines.len() as u64)
            .map(|i| Duration::from_millis(10 * (i + 1)))
            .collect();
        let log = OpLog {
            run: 1,
            plan: &plan,
            workload: CutWorkload::Steps(&plan.steps),
            lines: &lines,
        };
        for ms in 0..=120 {
            let t = Duration::from_millis(ms);
            let k = AgentStream::arrived_by(&stamps, t);
            let ops = log.ops(k).unwrap();
            assert_eq!(ops.len(), plan.steps.len(), "the plan is known in full");
            for o in &ops {
                for pos in [o.started, o.ended].into_iter().flatten() {
                    assert!(stamps[pos as usize] <= t, "{ms} ms: {o:?}");
                }
            }
            // Every line that had arrived is in the log.
            let seen = ops
                .iter()
                .map(|o| usize::from(o.started.is_some()) + usize::from(o.ended.is_some()))
                .sum::<usize>();
            assert_eq!(seen, k, "{ms} ms");
        }
        // A line stamped exactly at T has arrived by T.
        assert_eq!(AgentStream::arrived_by(&stamps, stamps[3]), 4);
    }

    /// `every: sync` cuts after each fsync, fdatasync and synchronous write
    /// the host saw succeed, at the moment its end arrived.
    #[test]
    fn sync_moments_are_the_ends_of_completed_syncs() {
        let (plan, lines) = (plan(), lines());
        let ops = lab_model::steps_log::from_steps(&plan, &lines);
        let stamps: Vec<Duration> = (0..lines.len() as u64).map(Duration::from_secs).collect();
        assert_eq!(
            sync_moments(&ops, &stamps),
            vec![Duration::from_secs(5), Duration::from_secs(9)]
        );
        // One the host never saw end is no moment.
        let ops = lab_model::steps_log::from_steps(&plan, &lines[..9]);
        assert_eq!(sync_moments(&ops, &stamps), vec![Duration::from_secs(5)]);
    }

    /// An mmap_write that msyncs its pages is a sync moment; one that does
    /// not is not.
    #[test]
    fn an_msyncd_store_is_a_sync_moment() {
        use lab_core::steps::{Expect, MmapWrite};
        let mmap = |offset, msync| {
            Step::MmapWrite(MmapWrite {
                file: None,
                offset,
                len: 4096,
                msync,
                expect: Expect::Ok,
            })
        };
        let mut plan = plan();
        plan.steps.truncate(2);
        plan.steps.push(mmap(0, true));
        plan.steps.push(mmap(4096, false));
        let lines: Vec<String> = lines()[..4]
            .iter()
            .cloned()
            .chain(
                [
                    r#"{"begin":2}"#,
                    r#"{"index":2,"op":"mmap_write","ret":4096,"errno":null}"#,
                    r#"{"begin":3}"#,
                    r#"{"index":3,"op":"mmap_write","ret":4096,"errno":null}"#,
                ]
                .map(String::from),
            )
            .collect();
        let ops = lab_model::steps_log::from_steps(&plan, &lines);
        let stamps: Vec<Duration> = (0..lines.len() as u64).map(Duration::from_secs).collect();
        assert_eq!(sync_moments(&ops, &stamps), vec![Duration::from_secs(5)]);
    }
}
