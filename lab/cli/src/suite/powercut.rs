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
use crate::powercut::verifier::Verifier;
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
    crash.arm(Some(pc.at.clone()), pc.hold);
    let disk = crash.disk.clone();
    let mut marks = 0;
    // Lines are kept as they come: the command's output is lost with the
    // guest when the cut kills QEMU under it.
    let mut lines = String::new();
    let out = vm.exec_streaming(&command, timeout, &mut |line| {
        lines.push_str(line);
        lines.push('\n');
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
    let stdout = lines;
    let cut = match fired {
        Some(c) => {
            results.push(result(case, "power_cut.cut", Outcome::Passed, elapsed));
            c
        }
        None => {
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
                        "cut policy {} never fired: the kernel refused the workload's atomic writes (EOPNOTSUPP), so it made only {writes} writes",
                        pc.at
                    ),
                }
            } else {
                Outcome::Failed {
                    message: format!(
                        "cut policy {} never fired: the workload made {writes} writes and ended",
                        pc.at
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
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    let ops = match workload {
        CutWorkload::Steps(steps) => {
            let _ = std::fs::write(dir.join("steps.jsonl"), &stdout);
            // Steps the cut stopped are not checks of the kernel: only the
            // steps that finished are judged.
            let mut judged = judge_steps(steps, &stdout, case, elapsed, &|_, _| Outcome::Passed);
            let finished = stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<lab_core::steps::StepResult>(l).ok())
                .count();
            judged.truncate(finished);
            results.extend(judged);
            lab_model::steps_log::from_steps(&plan, &lines)
        }
        CutWorkload::Generate(g) => {
            let _ = std::fs::write(dir.join("oplog.jsonl"), &stdout);
            generator_ops(run_id, g, &lines)
                .map_err(|e| StageError::lab("power-cut workload", anyhow::anyhow!(e)))?
        }
    };
    vm_gone(vm);

    let t = Instant::now();
    let record = if pc.device_lies {
        crash.disk.record().as_if_acks_lied()
    } else {
        crash.disk.record()
    };
    let rules = rules(tc);
    let planner = Planner::new(&record, rules);
    let mut state_plan = planner.plan(&pc.states);
    let left_out = state_plan.sample(pc.states.max as usize, pc.states.seed);
    let store = StateStore::new(crash.disk.file(), record.clone(), &state_plan.states)
        .map(Arc::new)
        .map_err(|e| StageError::lab("crash-states", e))?;
    let guest = guest_writes(&record, &ops);
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
    let scans = scan_states(&store, &record, &state_plan, rules)
        .map_err(|e| StageError::lab("crash-states", e))?;
    write_artifacts(dir, &record, &state_plan, &scans, &guest);
    props.extend([
        ("power_cut.policy".into(), pc.at.to_string()),
        ("power_cut.cut".into(), cut.reason.clone()),
        ("power_cut.writes".into(), record.writes.len().to_string()),
        ("power_cut.marks".into(), marks.to_string()),
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
        ("power_cut.device_lies".into(), pc.device_lies.to_string()),
        (
            "power_cut.atomic_unit_bytes".into(),
            (u64::from(rules.unit_lbas) * u64::from(rules.lba)).to_string(),
        ),
    ]);
    // Checks that cannot apply to this cut (nothing of the kind was in
    // flight) are not results: the reason goes into the properties, so a
    // case that passed reads PASS.
    for r in judge_states(
        case,
        &record,
        &state_plan,
        &scans,
        &guest,
        rules,
        t.elapsed(),
    ) {
        match r.outcome {
            Outcome::Skipped { reason } => {
                props.push((r.check.clone(), format!("not applicable: {reason}")))
            }
            _ => results.push(r),
        }
    }
    if tc.mkfs.is_some() {
        results.extend(verify_states(
            host,
            &crash.dir().join("disk.raw"),
            tc,
            case,
            dir,
            &store,
            &state_plan,
            &ops,
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
    ops: &[lab_model::Op],
    props: &mut Vec<(String, String)>,
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    let _ = std::fs::write(
        dir.join("crash/oplog.json"),
        serde_json::to_string_pretty(ops).unwrap_or_default(),
    );
    let mut files: Vec<String> = ops
        .iter()
        .filter_map(|o| match &o.kind {
            lab_model::OpKind::Write(w) => Some(w.file.clone()),
            _ => None,
        })
        .collect();
    files.sort();
    files.dedup();
    let model = lab_model::Model::new(ops);
    let in_flight = ops
        .iter()
        .filter(|o| o.started.is_some() && o.ended.is_none())
        .count();
    props.push(("verify.ops_in_flight_at_cut".into(), in_flight.to_string()));
    let t = Instant::now();
    let mut verifier: Option<Verifier> = None;
    let mut restarts = 0;
    let mut times = Vec::new();
    let mut verified = 0;
    for (i, st) in plan.states.iter().enumerate() {
        let name = format!("state.{}", lab_disk::cow::state_name(i));
        if verifier.is_none() {
            match Verifier::start(
                host,
                store.clone(),
                &tc.device,
                dir.join(format!("verifier-{restarts}.console.log")),
            ) {
                Ok(v) => {
                    props.push((
                        format!("verify.boot_{restarts}_s"),
                        format!("{:.2}", v.boot_seconds()),
                    ));
                    verifier = Some(v)
                }
                Err(e) => {
                    results.push(result(
                        case,
                        &name,
                        Outcome::Error {
                            message: format!("the verifier VM did not start: {e:#}"),
                            detail: String::new(),
                        },
                        Duration::ZERO,
                    ));
                    break;
                }
            }
        }
        let v = verifier.as_mut().expect("started");
        let ts = Instant::now();
        let reproduce = format!(
            "recipe `{}`; rerun the cut: lab run {} (deterministic for write/mark/LBA cuts)",
            st.recipe, tc.name
        );
        let outcome = match v.check(i, &files, Duration::from_secs(tc.timeouts.command_s)) {
            Ok(c) => {
                verified += 1;
                times.push(c.times);
                if let Some(m) = c.mount_error {
                    Outcome::Failed {
                        message: format!("XFS: mount (log recovery) failed on crash state {i}"),
                        detail: format!(
                            "{m}
{reproduce}"
                        ),
                    }
                } else if let Some(r) = c.repair_error {
                    Outcome::Failed {
                        message: format!("XFS: xfs_repair -n found corruption in crash state {i}"),
                        detail: format!(
                            "{r}
{reproduce}"
                        ),
                    }
                } else {
                    let verdict = model.judge(&c.files);
                    if verdict.passed() {
                        Outcome::Passed
                    } else {
                        let first = &verdict.violations[0];
                        Outcome::Failed {
                            message: format!("{}: {}", first.rule, first.message),
                            detail: format!(
                                "{}
{reproduce}",
                                verdict
                                    .violations
                                    .iter()
                                    .map(|v| format!("- {} ({}): {}", v.rule, v.file, v.message))
                                    .collect::<Vec<_>>()
                                    .join("\n")
                            ),
                        }
                    }
                }
            }
            Err(e) => {
                // A hung or crashed verifier: this state fails with the
                // console; a fresh VM takes the rest.
                let o = Outcome::Failed {
                    message: format!("verifier guest failed on crash state {i}: {e}"),
                    detail: format!(
                        "{}
{reproduce}",
                        e.console_tail().unwrap_or_default()
                    ),
                };
                if let Some(v) = verifier.take() {
                    v.shutdown();
                }
                restarts += 1;
                if restarts > 2 {
                    results.push(result(case, &name, o, ts.elapsed()));
                    break;
                }
                o
            }
        };
        // A failing state is kept (recipe + compressed delta) so it can be
        // judged again without the run: `lab verify DIR`.
        let outcome = match outcome {
            Outcome::Failed { message, detail } => {
                let kept = crate::powercut::kept::KeptCase {
                    testcase: tc.name.clone(),
                    device: tc.device.clone(),
                    files: files.clone(),
                    ops: ops.to_vec(),
                    recipe: st.recipe.to_string(),
                    timeout_s: tc.timeouts.command_s,
                };
                match crate::powercut::kept::keep_state(
                    &dir.join("crash"),
                    base,
                    store,
                    i,
                    st,
                    &kept,
                ) {
                    Ok(d) => Outcome::Failed {
                        message: format!("{message} (reproduce: lab verify {})", d.display()),
                        detail,
                    },
                    Err(e) => Outcome::Failed {
                        message,
                        detail: format!(
                            "{detail}
(could not keep the state: {e:#})"
                        ),
                    },
                }
            }
            o => o,
        };
        results.push(result(case, &name, outcome, ts.elapsed()));
    }
    if let Some(v) = verifier.take() {
        for s in v.vm().splats() {
            results.push(result(
                case,
                "verify.console",
                Outcome::Failed {
                    message: format!("{} (verifier guest)", s.title),
                    detail: s.excerpt.clone(),
                },
                Duration::ZERO,
            ));
        }
        v.shutdown();
    }
    let total = t.elapsed().as_secs_f64();
    let n = times.len().max(1) as f64;
    let sum =
        |f: fn(&crate::powercut::verifier::PhaseTimes) -> f64| times.iter().map(f).sum::<f64>() / n;
    props.extend([
        ("verify.states".into(), verified.to_string()),
        ("verify.total_s".into(), format!("{total:.2}")),
        (
            "verify.per_state_attach_s".into(),
            format!("{:.3}", sum(|t| t.attach)),
        ),
        (
            "verify.per_state_mount_s".into(),
            format!("{:.3}", sum(|t| t.mount)),
        ),
        (
            "verify.per_state_scan_s".into(),
            format!("{:.3}", sum(|t| t.scan)),
        ),
        (
            "verify.per_state_repair_s".into(),
            format!("{:.3}", sum(|t| t.repair)),
        ),
        (
            "verify.per_state_overhead_s".into(),
            format!("{:.3}", sum(|t| t.overhead)),
        ),
    ]);
    results
}

/// QEMU is dead after the cut; wait for it so nothing is left behind.
fn vm_gone(vm: &mut Vm) {
    if !vm.wait_exit(Duration::from_secs(10)) {
        tracing::warn!("QEMU still running after the power cut");
    }
}

/// The model's log of a generator run: its limits line, the operations
/// the seed gives every thread (the host derives the same ones), and the
/// start and end lines that reached the host.
fn generator_ops(run: u64, g: &GenParams, lines: &[String]) -> Result<Vec<lab_model::Op>, String> {
    let limits = lines
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            serde_json::from_value::<lab_core::generate::GenLimits>(v.get("limits")?.clone()).ok()
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
        run,
        "/mnt",
        &open,
        &per_thread,
        lines,
    ))
}

/// A guest pwrite, identified by the stamp its sectors carry.
#[derive(Debug, Clone, Serialize)]
struct GuestWrite {
    /// The agent's write id.
    write: u32,
    /// `step 4 pwritev2(...)` / `thread 1 op 7 pwritev2(...)`.
    describe: String,
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
struct WriteScan {
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

/// Reads every state back through its export and, for each write in
/// flight at the cut, counts the LBAs holding its bytes.
fn scan_states(
    store: &StateStore,
    record: &Record,
    plan: &StatePlan,
    rules: AtomicRules,
) -> std::io::Result<Vec<Vec<WriteScan>>> {
    let cut = record.cut.as_ref().expect("scanned after the cut");
    let in_flight = record.in_flight(cut.writes_before, cut.at);
    let lba = rules.lba as usize;
    // Which LBAs of each in-flight data write can tell whether it landed:
    // those no later write overwrote. The same for every state, so worked
    // out once.
    let telling_lbas: Vec<(&WriteRecord, Vec<bool>)> = in_flight
        .iter()
        .map(|&seq| &record.writes[seq as usize])
        .filter(|w| w.kind == WriteKind::Data)
        .map(|w| {
            let first = w.offset / lba as u64;
            let tells = (0..u64::from(w.len) / lba as u64)
                .map(|k| {
                    let l = first + k;
                    !record.writes[w.seq as usize + 1..]
                        .iter()
                        .any(|o| o.offset <= l * lba as u64 && o.end() >= (l + 1) * lba as u64)
                })
                .collect();
            (w, tells)
        })
        .collect();
    let mut out = Vec::with_capacity(plan.states.len());
    for i in 0..plan.states.len() {
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

fn judge_states(
    case: &str,
    record: &Record,
    plan: &StatePlan,
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
                "{} is torn in crash state {} ({} of {} LBAs landed) although it must be all or nothing",
                label(s.seq),
                lab_disk::cow::state_name(*i),
                s.landed,
                s.telling
            ),
            detail: format!(
                "recipe: {}\n{} torn atomic writes in all",
                plan.states[*i].recipe,
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
    let tearable: Vec<u64> = scans
        .first()
        .map(|st| {
            st.iter()
                .filter(|s| !must_be_whole(s.seq) && s.telling > 1)
                .map(|s| s.seq)
                .collect()
        })
        .unwrap_or_default();
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
    if std::fs::create_dir_all(&crash).is_err() {
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
