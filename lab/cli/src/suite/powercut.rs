//! Power-cut runs: a steps or generator workload on the crash disk, the
//! cut, the crash states planned from it, and each state read back through
//! its copy-on-write export and checked for torn writes; with a filesystem,
//! every state then goes through the verifier VM and the model.
//!
//! At the device level: an in-flight write that is atomic by the device's
//! rules (and every RWF_ATOMIC write the agent made) is whole or absent in
//! every state, and a write that is not atomic is seen torn in some state
//! (the positive control: otherwise the injector is blind).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab_core::generate::GenParams;
use lab_core::powercut::PowerCut;
use lab_core::report::{CaseResult, Outcome};
use lab_core::stamp::{self, Sector, SECTOR};
use lab_core::steps::{Plan, Step};
use lab_core::testcase::Testcase;
use lab_disk::states::{State, StatePlan};
use lab_disk::{AtomicRules, Planner, Record, StateStore, WriteKind, WriteRecord};
use serde::Serialize;

use crate::host::disks::CrashDisk;
use crate::host::LabHost;
use crate::powercut::kept::KeptCase;
use crate::powercut::verifier::VerifierPool;
use crate::suite::contents;
use crate::suite::outcome::{judge_steps, result, stamp_run_id, StageError};
use crate::vm::{agent, Vm};

/// The device's atomicity as the crash disk applies it.
pub fn rules(tc: &Testcase) -> AtomicRules {
    AtomicRules::of_device(&tc.device)
}

/// Kills QEMU the moment the disk cuts the power.
pub fn kill_on_cut(crash: &CrashDisk, vm: &Vm) {
    if let Some(pid) = vm.pid() {
        crash.disk.on_cut(move |_| {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        });
    }
}

/// The workloads a power cut can interrupt.
#[derive(Clone, Copy)]
pub enum CutWorkload<'a> {
    Steps(&'a [Step]),
    Generate(&'a GenParams),
}

const GEN_FILE: &str = "gen";

/// Runs the workload with the cut armed, then judges the steps that ran
/// and every crash state.
#[allow(clippy::too_many_arguments)]
pub fn workload_with_power_cut(
    host: &LabHost,
    vm: &mut Vm,
    crash: &CrashDisk,
    tc: &Testcase,
    pc: &PowerCut,
    workload: CutWorkload,
    case: &str,
    dir: &Path,
    timeout: Duration,
    verifiers: &VerifierPool,
    props: &mut Vec<(String, String)>,
) -> Result<Vec<CaseResult>, StageError> {
    let run_id = stamp_run_id();
    let plan = Plan {
        run: run_id,
        root: "/mnt".into(),
        steps: match workload {
            CutWorkload::Steps(s) => s.to_vec(),
            CutWorkload::Generate(_) => Vec::new(),
        },
    };
    let command = match workload {
        CutWorkload::Steps(_) => agent::run_with_sync_marks(&plan),
        CutWorkload::Generate(g) => agent::generate(&agent::GenerateInput {
            run: run_id,
            root: "/mnt",
            file: GEN_FILE,
            params: g,
        }),
    };
    let t = Instant::now();
    crash.arm(pc.at.clone(), pc.hold);
    let disk = crash.disk.clone();
    let mut marks = 0;
    // Lines are kept as they come, each with the disk's clock when it
    // arrived: the command's output is lost with the guest when the cut
    // kills QEMU under it, and a sweep judges each cut point against the
    // lines the host had by then.
    let mut stream = AgentStream::default();
    let out = vm.exec_streaming(&command, timeout, &mut |line| {
        stream.push(disk.clock(), line);
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let name = v.get("mark")?.as_str()?;
        marks += 1;
        disk.mark(name);
        Some("go\n".into())
    });
    let elapsed = t.elapsed();
    let mut results = Vec::new();
    let fired = crash.disk.cut_info();
    if let (Err(e), None) = (out, &fired) {
        return Err(StageError::new("power-cut workload", e));
    }
    let stdout = stream.text();
    let cut = match (fired, &pc.at) {
        (Some(c), _) => {
            results.push(result(case, "power_cut.cut", Outcome::Passed, elapsed));
            c
        }
        // A sweep alone: the workload ran to its end and the power goes
        // now; the sweep's last point is this cut.
        (None, None) => {
            crash
                .disk
                .cut_now("the workload ended (sweep: no real cut asked)");
            crash.disk.cut_info().expect("just cut")
        }
        (None, Some(at)) => {
            crash
                .disk
                .cut_now("the workload ended before the cut policy fired");
            // Writes since arming (the policy's count), not mkfs's.
            let record = crash.disk.record();
            let writes = record
                .writes
                .iter()
                .filter(|w| record.armed.is_some_and(|a| w.received >= a))
                .count();
            // A kernel that refuses the workload's atomic writes (buffered
            // RWF_ATOMIC on mainline) makes fewer writes than the policy
            // counts on: that is "unsupported", never a failure.
            let may_skip = match workload {
                CutWorkload::Steps(s) => s
                    .iter()
                    .any(|st| st.expect() == &lab_core::steps::Expect::SupportedOrSkip),
                CutWorkload::Generate(g) => {
                    g.expect_atomic == lab_core::steps::Expect::SupportedOrSkip
                }
            };
            let outcome = if may_skip && stdout.contains("\"EOPNOTSUPP\"") {
                Outcome::Skipped {
                    reason: format!(
                        "cut policy {at} never fired: the kernel refused the workload's atomic writes (EOPNOTSUPP), so it made only {writes} writes"
                    ),
                }
            } else {
                Outcome::Failed {
                    message: format!(
                        "cut policy {at} never fired: the workload made {writes} writes and ended"
                    ),
                    detail: "the power was cut after the workload instead".into(),
                }
            };
            results.push(result(case, "power_cut.cut", outcome, elapsed));
            crash.disk.cut_info().expect("just cut")
        }
    };
    // The agent's own lines are lost with the guest when QEMU dies under
    // the command; steps that did not report were cut short.
    let log = OpLog {
        run: run_id,
        plan: &plan,
        workload,
        lines: &stream.lines,
    };
    let ops = match workload {
        CutWorkload::Steps(steps) => {
            let _ = std::fs::write(dir.join("steps.jsonl"), &stdout);
            // Steps the cut stopped are not checks of the kernel: only the
            // steps that finished are judged.
            let mut judged = judge_steps(
                steps,
                &stdout,
                case,
                elapsed,
                &|_, _| Outcome::Passed,
                props,
            );
            let finished = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<lab_core::steps::StepResult>(l).ok())
                .count();
            judged.truncate(finished);
            results.extend(judged);
            log.ops(stream.lines.len())
        }
        CutWorkload::Generate(_) => {
            let _ = std::fs::write(dir.join("oplog.jsonl"), &stdout);
            // As without a cut: every operation that finished is judged,
            // so refused buffered atomic writes skip the case with the
            // kernel's reason instead of passing unnoticed.
            results.push(result(
                case,
                "generate.ops",
                judge_generated(&stdout),
                elapsed,
            ));
            log.ops(stream.lines.len())
        }
    }
    .map_err(|e| StageError::lab("power-cut workload", anyhow::anyhow!(e)))?;
    vm_gone(vm);

    let record = if pc.device_lies {
        crash.disk.record().as_if_acks_lied()
    } else {
        crash.disk.record()
    };
    let rules = rules(tc);
    props.extend([
        (
            "power_cut.policy".into(),
            pc.at.as_ref().map_or("none".into(), ToString::to_string),
        ),
        ("power_cut.cut".into(), cut.reason.clone()),
        ("power_cut.writes".into(), record.writes.len().to_string()),
        ("power_cut.marks".into(), marks.to_string()),
        ("power_cut.device_lies".into(), pc.device_lies.to_string()),
        (
            "power_cut.atomic_unit_bytes".into(),
            (u64::from(rules.unit_lbas) * u64::from(rules.lba)).to_string(),
        ),
    ]);
    let guest = guest_writes(&record, &ops);
    if let Some(sweep) = &pc.sweep {
        let input = crate::suite::sweep::SweepInput {
            host,
            tc,
            pc,
            sweep,
            case,
            dir,
            base: &crash.dir().join("disk.raw"),
            disk_file: crash.disk.file(),
            record: &record,
            ops: &ops,
            log: &log,
            stamps: &stream.stamps,
            guest: &guest,
            verifiers,
        };
        results.extend(crate::suite::sweep::judge_sweep(&input, props)?);
        return Ok(results);
    }

    let t = Instant::now();
    let planner = Planner::new(&record, rules);
    let mut state_plan = planner.plan(&pc.states);
    let left_out = state_plan.sample(pc.states.max as usize, pc.states.seed);
    let store = StateStore::new(crash.disk.file(), record.clone(), &state_plan.states)
        .map(Arc::new)
        .map_err(|e| StageError::lab("crash-states", e))?;
    // Where the cut fell, from the write that triggered it: the agent's
    // result lines lag behind the guest (some die with it).
    let during = match cut.writes_before.checked_sub(1).and_then(|s| guest.get(&s)) {
        Some(g)
            if record.writes.len() as u64 == cut.writes_before && !cut.reason.contains("ms") =>
        {
            g.describe.clone()
        }
        _ => {
            let ended = ops.iter().filter(|o| o.ended.is_some()).count();
            format!("after {ended} of {} operations ended", ops.len())
        }
    };
    props.push(("power_cut.during".into(), during));
    let all: Vec<usize> = (0..state_plan.states.len()).collect();
    let scans = scan_states(&store, &record, &all, rules)
        .map_err(|e| StageError::lab("crash-states", e))?;
    let rows: Vec<StateRow> = state_plan
        .states
        .iter()
        .enumerate()
        .map(|(i, st)| StateRow {
            name: format!("crash state {}", lab_disk::cow::state_name(i)),
            recipe: st.recipe.to_string(),
        })
        .collect();
    write_artifacts(dir, &record, &state_plan, &scans, &guest);
    props.extend([
        (
            "power_cut.in_flight".into(),
            state_plan.in_flight_at_cut.to_string(),
        ),
        (
            "power_cut.states_generated".into(),
            state_plan.generated.to_string(),
        ),
        (
            "power_cut.states".into(),
            state_plan.states.len().to_string(),
        ),
        ("power_cut.states_left_out".into(), left_out.to_string()),
    ]);
    // Checks that cannot apply to this cut (nothing of the kind was in
    // flight) are not results: the reason goes into the properties, so a
    // case that passed reads PASS.
    for r in judge_states(case, &record, &rows, &scans, &guest, rules, t.elapsed()) {
        match r.outcome {
            Outcome::Skipped { reason } => {
                props.push((r.check.clone(), format!("not applicable: {reason}")))
            }
            _ => results.push(r),
        }
    }
    if tc.mkfs.is_some() {
        // A state made at a mark (the disk as it was there) is what a cut
        // at the mark leaves, so it is judged against the op log the host
        // had at the mark, not at the cut: a sync that completed between
        // the two promised nothing to it.
        let mut mark_ops = HashMap::new();
        for st in &state_plan.states {
            let Some(name) = st.recipe.point.strip_prefix("mark:") else {
                continue;
            };
            if let Some(m) = record
                .marks
                .iter()
                .find(|m| m.name == name && m.writes_before == st.recipe.writes_before)
            {
                let at_mark = log
                    .ops(AgentStream::arrived_by(&stream.stamps, m.at))
                    .map_err(|e| StageError::lab("power-cut workload", anyhow::anyhow!(e)))?;
                mark_ops.insert(st.recipe.point.clone(), at_mark);
            }
        }
        results.extend(verify_states(
            host,
            &crash.dir().join("disk.raw"),
            tc,
            case,
            dir,
            &store,
            &state_plan,
            (&ops, &mark_ops),
            verifiers,
            props,
        ));
    }
    Ok(results)
}

/// Every crash state through the verifier VM and the model: one result per
/// state.
#[allow(clippy::too_many_arguments)]
fn verify_states(
    host: &LabHost,
    base: &Path,
    tc: &Testcase,
    case: &str,
    dir: &Path,
    store: &Arc<StateStore>,
    plan: &StatePlan,
    (ops, mark_ops): (&[lab_model::Op], &HashMap<String, Vec<lab_model::Op>>),
    verifiers: &VerifierPool,
    props: &mut Vec<(String, String)>,
) -> Vec<CaseResult> {
    let _ = std::fs::write(
        dir.join("crash/oplog.json"),
        serde_json::to_string_pretty(ops).unwrap_or_default(),
    );
    let files = contents::written_files(ops);
    let model = lab_model::Model::new(ops);
    let mark_models: HashMap<&str, lab_model::Model> = mark_ops
        .iter()
        .map(|(point, o)| (point.as_str(), lab_model::Model::new(o)))
        .collect();
    let in_flight = ops
        .iter()
        .filter(|o| o.started.is_some() && o.ended.is_none())
        .count();
    props.push(("verify.ops_in_flight_at_cut".into(), in_flight.to_string()));
    let t = Instant::now();
    let checked = contents::check_contents(
        &contents::Site {
            host,
            tc,
            case,
            dir,
            store,
            verifiers,
        },
        plan.states.len(),
        &files,
        props,
    );
    let per_state = t.elapsed() / plan.states.len().max(1) as u32;
    let mut results = Vec::new();
    for (i, (st, content)) in plan.states.iter().zip(&checked.contents).enumerate() {
        let point = st.recipe.point.as_str();
        let Some(outcome) = contents::judge(content, mark_models.get(point).unwrap_or(&model))
        else {
            continue;
        };
        let name = lab_disk::cow::state_name(i);
        let reproduce = format!(
            "recipe `{}`; rerun the cut: lab run {} (deterministic for write/mark/LBA cuts)",
            st.recipe, tc.name
        );
        let outcome = match outcome {
            Outcome::Failed { message, detail } => Outcome::Failed {
                message: format!("{message} (crash state {name})"),
                detail: format!("{detail}\n{reproduce}"),
            },
            o => o,
        };
        let kept = KeptCase {
            testcase: tc.name.clone(),
            device: tc.device.clone(),
            files: files.clone(),
            ops: mark_ops
                .get(point)
                .map_or_else(|| ops.to_vec(), Clone::clone),
            recipe: st.recipe.to_string(),
            timeout_s: tc.timeouts.command_s,
        };
        let outcome =
            contents::keep_failure(outcome, content, dir, base, store, i, st, &name, &kept);
        results.push(result(case, &format!("state.{name}"), outcome, per_state));
    }
    results.extend(checked.results);
    results
}

/// QEMU is dead after the cut; wait for it so nothing is left behind.
fn vm_gone(vm: &mut Vm) {
    if !vm.wait_exit(Duration::from_secs(10)) {
        tracing::warn!("QEMU still running after the power cut");
    }
}

/// The agent's lines as they reached the host, each with the disk's clock
/// at its arrival (the time base of the crash disk's record).
#[derive(Default)]
pub(crate) struct AgentStream {
    pub lines: Vec<String>,
    pub stamps: Vec<Duration>,
}

impl AgentStream {
    fn push(&mut self, at: Duration, line: &str) {
        self.lines.push(line.to_string());
        self.stamps.push(at);
    }

    fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// How many lines had arrived by disk time `t`.
    pub fn arrived_by(stamps: &[Duration], t: Duration) -> usize {
        stamps.partition_point(|&s| s <= t)
    }
}

/// The model's op log of a power-cut workload, as the host had it after
/// any number of the agent's lines.
pub(crate) struct OpLog<'a> {
    pub run: u64,
    pub plan: &'a Plan,
    pub workload: CutWorkload<'a>,
    /// Every line the host received, in order.
    pub lines: &'a [String],
}

impl OpLog<'_> {
    /// The log after the first `k` lines. A generator's operations come
    /// from its seed and the guest's limits line (a fact about the device,
    /// not a promise, so it is read from all the lines); starts and ends
    /// from the first `k`.
    pub fn ops(&self, k: usize) -> Result<Vec<lab_model::Op>, String> {
        let seen = &self.lines[..k];
        let g = match self.workload {
            CutWorkload::Steps(_) => return Ok(lab_model::steps_log::from_steps(self.plan, seen)),
            CutWorkload::Generate(g) => g,
        };
        let limits = self
            .lines
            .iter()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                serde_json::from_value::<lab_core::generate::GenLimits>(v.get("limits")?.clone())
                    .ok()
            })
            .ok_or("the generator's limits line never reached the lab before the cut: its operations are unknown")?;
        let per_thread = lab_core::generate::generate(g, &limits);
        let open = Step::Open(lab_core::steps::Open {
            file: GEN_FILE.into(),
            direct: g.direct,
            sync: false,
            dsync: false,
            expect: Default::default(),
        });
        Ok(lab_model::steps_log::from_threads(
            self.run,
            "/mnt",
            &open,
            &per_thread,
            seen,
        ))
    }
}

/// A guest pwrite, identified by the stamp its sectors carry.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GuestWrite {
    /// The agent's write id.
    write: u32,
    /// `step 4 pwritev2(...)` / `thread 1 op 7 pwritev2(...)`.
    pub describe: String,
    atomic: bool,
}

/// Which guest write each recorded device write carries, from the stamp in
/// its first sector, matched against the model's log.
fn guest_writes(record: &Record, ops: &[lab_model::Op]) -> HashMap<u64, GuestWrite> {
    let by_key: HashMap<(u64, u32, u32), (&str, bool)> = ops
        .iter()
        .filter_map(|o| match &o.kind {
            lab_model::OpKind::Write(w) => w
                .stamp
                .map(|k| ((k.run, k.file, k.write), (o.describe.as_str(), w.atomic))),
            _ => None,
        })
        .collect();
    let mut out = HashMap::new();
    for w in &record.writes {
        if w.kind != WriteKind::Data || w.data.len() < SECTOR {
            continue;
        }
        if let Sector::Stamped(st) = stamp::decode(&w.data[..SECTOR]) {
            if let Some((describe, atomic)) = by_key.get(&(st.run, st.file, st.write)) {
                out.insert(
                    w.seq,
                    GuestWrite {
                        write: st.write,
                        describe: describe.to_string(),
                        atomic: *atomic,
                    },
                );
            }
        }
    }
    out
}

/// How much of one in-flight write one state holds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WriteScan {
    seq: u64,
    /// LBAs of the write holding its data / LBAs it has that no later write
    /// overwrote (the ones that can tell).
    landed: u32,
    telling: u32,
}

impl WriteScan {
    fn torn(&self) -> bool {
        self.landed > 0 && self.landed < self.telling
    }
}

/// The generator's operations that reported a result, each judged
/// against what it had to return: any failure fails, else an unsupported
/// atomic write skips (with the kernel's reason), else a pass.
fn judge_generated(stdout: &str) -> Outcome {
    #[derive(serde::Deserialize)]
    struct Line {
        thread: u32,
        step: lab_core::steps::Step,
        result: lab_core::steps::StepResult,
    }
    let (mut ops, mut failures, mut skip) = (0, Vec::new(), None);
    for l in stdout.lines() {
        let Ok(l) = serde_json::from_str::<Line>(l) else {
            continue;
        };
        ops += 1;
        match lab_core::steps::judge(&l.step, &l.result) {
            lab_core::steps::StepVerdict::Pass => {}
            lab_core::steps::StepVerdict::Skip(reason) => skip = Some(reason),
            lab_core::steps::StepVerdict::Fail(m) => failures.push(format!(
                "thread {} op {}: {m}",
                l.thread,
                l.result.index + 1
            )),
        }
    }
    match (failures.first(), skip) {
        (Some(first), _) => Outcome::Failed {
            message: format!(
                "{} of {ops} operations failed; first: {first}",
                failures.len()
            ),
            detail: failures.join("\n"),
        },
        (None, Some(reason)) => Outcome::Skipped {
            reason: format!("atomic writes in this workload: {reason}"),
        },
        (None, None) => Outcome::Passed,
    }
}

/// Which LBAs of data write `w` can tell whether it landed: those no later
/// write overwrote, and whose bytes differ from what each earlier write
/// covering them put there. Without the second half, a block written again
/// with mostly the same bytes (XFS writing back a block a punch zeroed two
/// sectors of) reads, in a state where that write did not land, as "6 of 8
/// LBAs landed": a torn write that is not one. A zeroes or trim request
/// counts as zero bytes, and so does the disk before any write (it starts
/// as zeroes: the record holds every write since), so an LBA the write
/// fills with zeroes never tells (a block written back with sectors it
/// never wrote, as a buffered write of part of a block leaves it).
pub(crate) fn telling(writes: &[WriteRecord], w: &WriteRecord, lba: u32) -> Vec<bool> {
    let l64 = u64::from(lba);
    let first = w.offset / l64;
    let zeroes = vec![0u8; lba as usize];
    let covers = |o: &WriteRecord, l: u64| o.offset <= l * l64 && o.end() >= (l + 1) * l64;
    (0..u64::from(w.len) / l64)
        .map(|k| {
            let l = first + k;
            let mine = w.lba_bytes(k as u32, lba).unwrap_or(&zeroes);
            let overwritten = writes[w.seq as usize + 1..].iter().any(|o| covers(o, l));
            let same_as_before = mine == zeroes.as_slice()
                || writes[..w.seq as usize].iter().any(|o| {
                    covers(o, l)
                        && o.lba_bytes(((l * l64 - o.offset) / l64) as u32, lba)
                            .unwrap_or(&zeroes)
                            == mine
                });
            !overwritten && !same_as_before
        })
        .collect()
}

/// Reads every state back through its export and, for each write in
/// flight at the cut, counts the LBAs holding its bytes.
/// Reads `states` of `store` back; `record` is cut where they were made
/// (the real cut, or a sweep's virtual one). One row per state.
pub(crate) fn scan_states(
    store: &StateStore,
    record: &Record,
    states: &[usize],
    rules: AtomicRules,
) -> std::io::Result<Vec<Vec<WriteScan>>> {
    let cut = record.cut.as_ref().expect("scanned after the cut");
    let in_flight = record.in_flight(cut.writes_before, cut.at);
    let lba = rules.lba as usize;
    // Which LBAs of each in-flight data write can tell whether it landed.
    // The same for every state, so worked out once.
    let telling_lbas: Vec<(&WriteRecord, Vec<bool>)> = in_flight
        .iter()
        .map(|&seq| &record.writes[seq as usize])
        .filter(|w| w.kind == WriteKind::Data)
        .map(|w| (w, telling(&record.writes, w, rules.lba)))
        .collect();
    let mut out = Vec::with_capacity(states.len());
    for &i in states {
        let mut scans = Vec::new();
        for (w, tells) in &telling_lbas {
            let mut buf = vec![0u8; w.len as usize];
            store.read(i, w.offset, &mut buf)?;
            let (mut landed, mut telling) = (0, 0);
            for (k, chunk) in buf.chunks(lba).enumerate() {
                if !tells[k] {
                    continue;
                }
                telling += 1;
                if chunk == &w.data[k * lba..(k + 1) * lba] {
                    landed += 1;
                }
            }
            scans.push(WriteScan {
                seq: w.seq,
                landed,
                telling,
            });
        }
        out.push(scans);
    }
    Ok(out)
}

/// What the device-level checks call one scanned row: a crash state of a
/// cut, or a (cut point, state) pair of a sweep.
pub(crate) struct StateRow {
    pub name: String,
    pub recipe: String,
}

/// The device-level checks over scanned rows: every write that must be
/// whole is, and some write that could tear is seen torn.
pub(crate) fn judge_states(
    case: &str,
    record: &Record,
    rows: &[StateRow],
    scans: &[Vec<WriteScan>],
    guest: &HashMap<u64, GuestWrite>,
    rules: AtomicRules,
    d: Duration,
) -> Vec<CaseResult> {
    let mut results = vec![result(case, "power_cut.states", Outcome::Passed, d)];
    let label = |seq: u64| {
        let w = &record.writes[seq as usize];
        match guest.get(&seq) {
            Some(g) => format!(
                "{} (device write {seq}: {} bytes at LBA {})",
                g.describe,
                w.len,
                w.offset / u64::from(rules.lba)
            ),
            None => format!(
                "device write {seq} ({} bytes at LBA {})",
                w.len,
                w.offset / u64::from(rules.lba)
            ),
        }
    };
    // Must be whole or absent: atomic by the device's rules, or RWF_ATOMIC.
    let must_be_whole = |seq: u64| {
        let w = &record.writes[seq as usize];
        rules.is_atomic(w.offset, w.len) || guest.get(&seq).is_some_and(|g| g.atomic)
    };
    let mut torn_bad = Vec::new();
    let mut torn_seen: HashMap<u64, usize> = HashMap::new();
    let mut whole_checked = std::collections::BTreeSet::new();
    for (i, st) in scans.iter().enumerate() {
        for s in st {
            if must_be_whole(s.seq) {
                whole_checked.insert(s.seq);
            }
            if s.torn() {
                *torn_seen.entry(s.seq).or_default() += 1;
                if must_be_whole(s.seq) {
                    torn_bad.push((i, s.clone()));
                }
            }
        }
    }
    let whole = if let Some((i, s)) = torn_bad.first() {
        Outcome::Failed {
            message: format!(
                "{} is torn in {} ({} of {} LBAs landed) although it must be all or nothing",
                label(s.seq),
                rows[*i].name,
                s.landed,
                s.telling
            ),
            detail: format!(
                "recipe: {}\n{} torn atomic writes in all",
                rows[*i].recipe,
                torn_bad.len()
            ),
        }
    } else if whole_checked.is_empty() {
        Outcome::Skipped {
            reason: "no write that must be all or nothing was in flight at the cut".into(),
        }
    } else {
        Outcome::Passed
    };
    results.push(result(case, "power_cut.atomic_writes_whole", whole, d));
    // Every row's in-flight writes (one set for one cut; a sweep's points
    // each have their own).
    let tearable: Vec<u64> = scans
        .iter()
        .flatten()
        .filter(|s| !must_be_whole(s.seq) && s.telling > 1)
        .map(|s| s.seq)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let control = if tearable.is_empty() {
        Outcome::Skipped {
            reason: format!(
                "no write larger than the atomic unit ({} bytes) was in flight: tearing was not possible",
                u64::from(rules.unit_lbas) * u64::from(rules.lba)
            ),
        }
    } else if tearable.iter().any(|s| torn_seen.contains_key(s)) {
        Outcome::Passed
    } else {
        Outcome::Failed {
            message: format!(
                "positive control: {} could be torn but no crash state shows it torn: the injector is blind",
                label(tearable[0])
            ),
            detail: format!("{} states scanned", scans.len()),
        }
    };
    results.push(result(case, "power_cut.positive_control", control, d));
    results
}

fn write_artifacts(
    dir: &Path,
    record: &Record,
    plan: &StatePlan,
    scans: &[Vec<WriteScan>],
    guest: &HashMap<u64, GuestWrite>,
) {
    let crash = dir.join("crash");
    write_record(&crash, record, guest);
    let lines: Vec<String> = plan
        .states
        .iter()
        .zip(scans)
        .enumerate()
        .map(|(i, (s, sc)): (usize, (&State, &Vec<WriteScan>))| {
            serde_json::json!({
                "state": lab_disk::cow::state_name(i),
                "recipe": s.recipe.to_string(),
                "delta_lbas": s.delta.len(),
                "torn": sc.iter().filter(|w| w.torn()).map(|w| w.seq).collect::<Vec<_>>(),
                "writes": sc,
            })
            .to_string()
        })
        .collect();
    let _ = std::fs::write(crash.join("states.jsonl"), lines.join("\n") + "\n");
}

/// `crash/record.json`: every write the crash disk received, the marks,
/// the cut, and which guest write each device write carries.
pub(crate) fn write_record(crash: &Path, record: &Record, guest: &HashMap<u64, GuestWrite>) {
    if std::fs::create_dir_all(crash).is_err() {
        return;
    }
    let _ = std::fs::write(
        crash.join("record.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "lba": record.lba,
            "size": record.size,
            "writes": record.writes,
            "flushes": record.flushes.len(),
            "marks": record.marks,
            "cut": record.cut,
            "guest_writes": guest.iter().map(|(k, v)| (k.to_string(), v)).collect::<HashMap<_, _>>(),
        }))
        .unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn data(seq: u64, offset: u64, bytes: Vec<u8>) -> WriteRecord {
        WriteRecord {
            seq,
            kind: WriteKind::Data,
            offset,
            len: bytes.len() as u32,
            fua: true,
            data: Arc::new(bytes),
            received: Duration::ZERO,
            acked: None,
        }
    }

    #[test]
    fn generated_operations_skip_on_eopnotsupp_and_fail_short() {
        let line = |atomic: bool, ret: &str, errno: &str| {
            format!(
                r#"{{"thread":1,"step":{{"pwrite":{{"offset":0,"len":4096,"atomic":{atomic},"expect":"supported_or_skip"}}}},"result":{{"index":2,"op":"pwrite","ret":{ret},"errno":{errno}}}}}"#
            )
        };
        let ok = line(false, "4096", "null");
        assert_eq!(judge_generated(&ok), Outcome::Passed);
        let refused = [ok.clone(), line(true, "null", r#""EOPNOTSUPP""#)].join("\n");
        assert!(matches!(
            judge_generated(&refused),
            Outcome::Skipped { reason } if reason.contains("EOPNOTSUPP")
        ));
        let short = [refused, line(true, "1024", "null")].join("\n");
        assert!(matches!(
            judge_generated(&short),
            Outcome::Failed { message, .. } if message.contains("a short atomic write: 1024 of 4096 bytes written")
        ));
    }

    /// A block written back again with only two of its LBAs changed: the
    /// unchanged ones cannot tell whether it landed, so a state without it
    /// is not "torn"; an LBA a later write covers cannot tell either.
    #[test]
    fn only_lbas_the_write_changed_and_nothing_overwrote_tell() {
        let lba = 512u32;
        let old: Vec<u8> = (0..8 * 512).map(|i| (i / 512) as u8 + 1).collect();
        let mut new = old.clone();
        new[2 * 512..4 * 512].fill(0xEE);
        let writes = vec![
            data(0, 4096, old),
            data(1, 4096, new),
            data(2, 4096 + 3 * 512, vec![9; 512]),
        ];
        assert_eq!(
            telling(&writes, &writes[1], lba),
            [false, false, true, false, false, false, false, false]
        );
        // As the punch left it: the two changed LBAs are zeroes, which the
        // disk may hold anyway, and nothing tells.
        let mut punched = writes[0].data.to_vec();
        punched[2 * 512..4 * 512].fill(0);
        let writes = vec![writes[0].clone(), data(1, 4096, punched)];
        assert!(telling(&writes, &writes[1], lba).iter().all(|t| !t));
        // Zeroes requests read as zeroes: writing zeroes over them tells
        // nothing.
        let zeroed = WriteRecord {
            kind: WriteKind::Zeroes,
            data: Arc::new(vec![]),
            ..data(0, 0, vec![0; 1024])
        };
        let writes = vec![zeroed, data(1, 0, [vec![0; 512], vec![7; 512]].concat())];
        assert_eq!(telling(&writes, &writes[1], lba), [false, true]);
        // Nothing before it: every LBA tells but one of zeroes, which the
        // disk held before any write.
        let writes = vec![data(0, 0, [vec![5; 1024], vec![0; 512]].concat())];
        assert_eq!(telling(&writes, &writes[0], lba), [true, true, false]);
    }
}
