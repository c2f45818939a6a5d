//! `lab run`: load testcases, run each in a fresh VM, judge, report.

pub mod contents;
pub mod mapped;
pub mod outcome;
pub mod page;
pub mod powercut;
pub mod progress;
pub mod results;
pub mod sweep;
pub mod vms;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lab_core::limits::{self, LimitsReport};
use lab_core::report::{CaseResult, Outcome, RunReport, SuiteReport};
use lab_core::schedule::{Queue, Slot as QueueSlot};
use lab_core::steps::{self, Plan, Step, StepResult, StepVerdict};
use lab_core::testcase::{self, Mkfs, Mount, Testcase, TestcaseError, Workload};

use crate::host::launch::LaunchError;
use crate::host::LabHost;
use crate::proc::reaper;
use crate::vm::{agent, Vm};
use outcome::{judge_steps, lab_error, result, stamp_run_id, vm_error_result, StageError};
use results::{new_run_dir, now_rfc3339, write_results};
use vms::Vms;

/// Loads testcases from files or directories (default `testcases/`).
/// All errors are returned together so a user fixes them in one go.
pub fn load(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Testcase)>, Vec<TestcaseError>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            v.retain(|f| matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
            v.sort();
            files.extend(v);
        } else {
            files.push(p.clone());
        }
    }
    let mut ok = Vec::new();
    let mut errs = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(text) => match testcase::parse(&name, &text) {
                Ok(tc) => ok.push((f, tc)),
                Err(e) => errs.push(e),
            },
            Err(e) => errs.push(TestcaseError {
                file: name,
                line: 0,
                column: 0,
                field: None,
                message: format!("cannot read: {e}"),
                hint: None,
            }),
        }
    }
    let mut seen = std::collections::HashMap::new();
    for (f, tc) in &ok {
        if let Some(prev) = seen.insert(tc.name.clone(), f.clone()) {
            errs.push(TestcaseError {
                file: f.display().to_string(),
                line: 1,
                column: 1,
                field: Some("name".into()),
                message: format!(
                    "duplicate testcase name {:?} (also in {})",
                    tc.name,
                    prev.display()
                ),
                hint: None,
            });
        }
    }
    if errs.is_empty() {
        Ok(ok)
    } else {
        Err(errs)
    }
}

/// Keeps the testcases a filter selects (all when there is none): a filter
/// that is exactly a testcase name selects that one; otherwise it selects
/// every name that contains it.
pub fn select(all: Vec<(PathBuf, Testcase)>, filters: &[String]) -> Vec<(PathBuf, Testcase)> {
    if filters.is_empty() {
        return all;
    }
    let exact: Vec<bool> = filters
        .iter()
        .map(|f| all.iter().any(|(_, tc)| &tc.name == f))
        .collect();
    all.into_iter()
        .filter(|(_, tc)| {
            filters.iter().zip(&exact).any(|(f, ex)| {
                if *ex {
                    &tc.name == f
                } else {
                    tc.name.contains(f.as_str())
                }
            })
        })
        .collect()
}

pub struct RunOptions {
    pub results: PathBuf,
    /// The command line that reproduces this run.
    pub reproduce: String,
    /// The same without testcase names: a testcase's own reproduce command
    /// is this plus its name.
    pub reproduce_prefix: String,
    /// Added to the run's properties (the kernel build, the series).
    pub properties: Vec<(String, String)>,
    /// How many testcases at once, and whether VMs are reused.
    pub parallel: Parallel,
}

/// `lab run -j N`: up to `jobs` testcases at once, each in its own VM; with
/// `reuse`, a worker runs testcases of one VM class in one booted VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallel {
    pub jobs: usize,
    pub reuse: bool,
}

impl Parallel {
    /// One testcase at a time, each in a VM booted for it (`-j 1`).
    pub const SERIAL: Parallel = Parallel {
        jobs: 1,
        reuse: false,
    };
}

/// Runs the testcases and writes results/<run-id>/. Returns the report.
pub fn run(
    host: &LabHost,
    cases: &[(PathBuf, Testcase)],
    opts: &RunOptions,
) -> Result<(RunReport, PathBuf)> {
    let (id, dir) = new_run_dir(&opts.results, None)?;
    let report = run_into(host, cases, opts, &id, &dir)?;
    Ok((report, dir))
}

/// One run of one testcase: a testcase with `repeat: N` makes N.
struct Slot<'a> {
    tc: &'a Testcase,
    suite_name: String,
}

/// Runs the testcases into `dir` (junit.xml, summary.json, one directory
/// per testcase), rewriting the report after each testcase. With several
/// jobs the testcases finish in any order; the report lists them in the
/// order they were given, whatever order they finished in.
pub fn run_into(
    host: &LabHost,
    cases: &[(PathBuf, Testcase)],
    opts: &RunOptions,
    id: &str,
    dir: &Path,
) -> Result<RunReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut properties = host.properties();
    properties.extend(opts.properties.iter().cloned());
    let par = opts.parallel;
    properties.push(("run.jobs".into(), par.jobs.to_string()));
    properties.push(("run.reuse".into(), par.reuse.to_string()));
    let report = RunReport {
        run_id: id.to_string(),
        started_at: now_rfc3339(),
        properties,
        suites: Vec::new(),
        reproduce: opts.reproduce.clone(),
        interrupted: false,
    };
    let slots: Vec<Slot> = cases
        .iter()
        .flat_map(|(_, tc)| {
            (0..tc.repeat).map(move |rep| Slot {
                tc,
                suite_name: if tc.repeat > 1 {
                    format!("{}#{}", tc.name, rep + 1)
                } else {
                    tc.name.clone()
                },
            })
        })
        .collect();
    // A testcase's verifier VMs share the host with the other jobs' VMs.
    let mut host = host.clone();
    if par.jobs > 1 && !host.verify_jobs_chosen {
        host.verify_jobs = (host.verify_jobs / par.jobs).max(1);
    }
    let workers = par.jobs.min(slots.len()).max(1);
    let queue = std::sync::Mutex::new(Queue::new(
        slots
            .iter()
            .map(|s| QueueSlot {
                class: if par.reuse { s.tc.vm_class() } else { None },
                device: s.tc.device_key(),
                // One worker gains nothing from starting the long ones
                // first: -j 1 keeps the given order.
                power_cut: par.jobs > 1 && s.tc.power_cut.is_some(),
            })
            .collect(),
        workers,
    ));
    let shared = Shared {
        host: &host,
        opts,
        dir,
        slots: &slots,
        queue,
        done: std::sync::Mutex::new(Done {
            report,
            suites: (0..slots.len()).map(|_| None).collect(),
            error: None,
        }),
        bars: progress::Bars::new(workers),
    };
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let shared = &shared;
            scope.spawn(move || shared.work(worker));
        }
    });
    let mut d = shared.done.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = d.error.take() {
        return Err(e);
    }
    d.report.interrupted = reaper::interrupted() || d.suites.iter().any(Option::is_none);
    d.write(dir)?;
    Ok(d.collect())
}

/// What a run's workers share.
struct Shared<'a> {
    host: &'a LabHost,
    opts: &'a RunOptions,
    dir: &'a Path,
    slots: &'a [Slot<'a>],
    queue: std::sync::Mutex<Queue>,
    done: std::sync::Mutex<Done>,
    bars: progress::Bars,
}

impl Shared<'_> {
    /// One worker: takes testcases from the queue until none is left (or
    /// Ctrl-C), runs each in a VM of its own or the one it holds, and
    /// records and prints each as it finishes.
    fn work(&self, worker: usize) {
        let pb = self.bars.worker(worker);
        let mut vms = if self.opts.parallel.reuse {
            Vms::reusing()
        } else {
            Vms::one_each()
        };
        while !reaper::interrupted() {
            let next = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                // A VM whose class has no testcase left is shut down now,
                // not when the whole run ends.
                if vms.held().is_some_and(|h| !q.wants(h.class)) {
                    vms.let_go();
                }
                let next = q.next(worker, vms.held());
                (next, q.wants_power_cut())
            };
            let (Some(i), power_cuts_left) = next else {
                break;
            };
            let slot = &self.slots[i];
            // Power cuts go first: once none is left, neither is any use
            // for the verifier VMs this worker kept.
            if slot.tc.power_cut.is_none() && !power_cuts_left {
                vms.verifiers().shut_down();
            }
            let case_dir = self.dir.join(&slot.suite_name);
            if let Err(e) = std::fs::create_dir_all(&case_dir) {
                self.done.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e.into());
                break;
            }
            let started = Instant::now();
            let getting = match vms.held() {
                Some(h) if Some(h.class) == slot.tc.vm_class().as_deref() => {
                    if h.device == slot.tc.device_key() {
                        "resetting a VM"
                    } else {
                        "resetting a VM, swapping its NVMe device"
                    }
                }
                _ => "booting",
            };
            pb.start(format!(
                "{}: {getting} ({})",
                slot.suite_name,
                self.host.accel.as_str()
            ));
            let mut suite = run_case_on(
                self.host,
                slot.tc,
                &slot.suite_name,
                &case_dir,
                pb.bar(),
                &mut vms,
            );
            suite.reproduce = format!("{} {}", self.opts.reproduce_prefix, slot.tc.name);
            suite.properties.push((
                "time.total_s".into(),
                format!("{:.2}", started.elapsed().as_secs_f64()),
            ));
            pb.clear();
            self.bars.print(&suite_text(&suite));
            let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
            d.suites[i] = Some(suite);
            if let Err(e) = d.write(self.dir) {
                d.error = Some(e);
                break;
            }
        }
        vms.let_go();
        vms.verifiers().shut_down();
        self.bars.finish(worker);
    }
}

/// What the workers have finished, in the order the testcases were given.
struct Done {
    report: RunReport,
    suites: Vec<Option<SuiteReport>>,
    error: Option<anyhow::Error>,
}

impl Done {
    fn collect(&self) -> RunReport {
        let mut r = self.report.clone();
        r.suites = self.suites.iter().flatten().cloned().collect();
        r
    }

    fn write(&self, dir: &Path) -> Result<()> {
        write_results(dir, &self.collect())
    }
}

/// One line per testcase, the checks that did not pass under it: printed
/// as one block, so a testcase's lines stay together whatever the other
/// jobs print.
fn suite_text(s: &SuiteReport) -> String {
    use std::fmt::Write;
    let worst = s
        .results
        .iter()
        .map(|r| r.outcome.severity())
        .max()
        .unwrap_or(0);
    let label = ["PASS", "SKIP", "FAIL", "ERROR"][worst];
    let passed = s
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let vm = match (
        s.property("boot_to_ssh_s"),
        s.property("vm.reused_after"),
        s.property("vm.device_swap_s"),
    ) {
        (Some(b), ..) => format!(", boot {b} s"),
        (None, Some(_), Some(swap)) => format!(", reused VM, device swapped in {swap} s"),
        (None, Some(_), None) => ", reused VM".to_string(),
        (None, None, _) => String::new(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{label:<5} {} ({passed}/{} checks passed{vm})",
        s.name,
        s.results.len()
    );
    if let Some(first) = s.property("boot.retried_after") {
        let _ = writeln!(
            out,
            "      NOTE  first boot failed before any workload ({first}); retried once with a fresh VM"
        );
    }
    if worst >= 2 && !s.reproduce.is_empty() {
        let _ = writeln!(out, "      reproduce: {}", s.reproduce);
    }
    for r in &s.results {
        let _ = match &r.outcome {
            Outcome::Passed => Ok(()),
            Outcome::Failed { message, .. } => writeln!(out, "      FAIL  {}: {message}", r.check),
            Outcome::Skipped { reason } => writeln!(out, "      SKIP  {}: {reason}", r.check),
            Outcome::Error { message, .. } => writeln!(out, "      ERROR {}: {message}", r.check),
        };
    }
    out
}

/// Runs one testcase in a VM booted for it.
pub(crate) fn run_case(
    host: &LabHost,
    tc: &Testcase,
    suite_name: &str,
    dir: &Path,
    pb: &indicatif::ProgressBar,
) -> SuiteReport {
    run_case_on(host, tc, suite_name, dir, pb, &mut Vms::one_each())
}

/// Runs one testcase in a VM from `vms`: booted for it, or reused.
pub(crate) fn run_case_on(
    host: &LabHost,
    tc: &Testcase,
    suite_name: &str,
    dir: &Path,
    pb: &indicatif::ProgressBar,
    vms: &mut Vms,
) -> SuiteReport {
    let mut suite = SuiteReport {
        name: suite_name.to_string(),
        properties: vec![
            ("device.lba_size".into(), tc.device.lba_size.to_string()),
            ("device.awun".into(), tc.device.awun.to_string()),
            ("device.awupf".into(), tc.device.awupf.to_string()),
            ("device.dn".into(), tc.device.dn.to_string()),
            ("device.size_mib".into(), tc.device.size_mib.to_string()),
            ("device.namespaces".into(), tc.device.namespaces.to_string()),
        ],
        results: Vec::new(),
        console_log: Some(format!("{suite_name}/console.log")),
        reproduce: String::new(),
    };
    if let Some(m) = &tc.mkfs {
        suite
            .properties
            .push(("mkfs.block_size".into(), m.block_size.to_string()));
        suite
            .properties
            .push(("mkfs.reflink".into(), m.reflink.to_string()));
    }
    for (f, v) in tc.device.namespace_atomic_values() {
        suite
            .properties
            .push((format!("device.{}", f.name), v.to_string()));
    }
    let start = Instant::now();
    // Namespace atomics on a QEMU without them: an error naming what is
    // missing, never a run on a device other than the testcase's.
    if let Err(e) = host.qemu.check_device(&tc.device) {
        suite
            .results
            .push(lab_error(suite_name, "qemu", &e, start.elapsed()));
        return suite;
    }
    let cmd_timeout = Duration::from_secs(tc.timeouts.command_s);
    let mut lease = match vms.acquire(host, tc, dir, cmd_timeout) {
        Ok(lease) => lease,
        Err(LaunchError::Setup { stage, error }) => {
            suite
                .results
                .push(lab_error(suite_name, stage, &error, start.elapsed()));
            return suite;
        }
        Err(LaunchError::Boot {
            error,
            retried_after,
        }) => {
            if let Some(first) = retried_after {
                suite.properties.push(("boot.retried_after".into(), first));
            }
            suite
                .results
                .push(vm_error_result(suite_name, "boot", &error, start.elapsed()));
            return suite;
        }
    };
    if let Some(first) = &lease.vm.retried_after {
        // Said in the results (and by print_suite on the terminal): the
        // verdicts come from the second VM.
        suite
            .properties
            .push(("boot.retried_after".into(), first.clone()));
    }
    if let Some(why) = &lease.reset_failed {
        suite
            .properties
            .push(("vm.reset_failed".into(), why.clone()));
    }
    if lease.booted {
        let vm = &lease.vm;
        for (stage, at) in &vm.stage_times {
            suite.properties.push((
                format!("boot.{stage}_done_s"),
                format!("{:.2}", at.as_secs_f64()),
            ));
        }
        if let Some(b) = vm.boot_time {
            suite
                .properties
                .push(("boot_to_ssh_s".into(), format!("{:.2}", b.as_secs_f64())));
        }
        if let Err(e) = lease.vm.wait_modules(cmd_timeout) {
            suite
                .results
                .push(vm_error_result(suite_name, "modules", &e, start.elapsed()));
            let _ = vms.release(lease, suite_name, false);
            return suite;
        }
        vms.baseline(&mut lease, cmd_timeout);
    } else {
        suite
            .properties
            .push(("vm.reused_after".into(), lease.served_before().join(" ")));
        if let Some(r) = &lease.reset {
            suite.properties.push(("vm.reset".into(), r.clone()));
        }
        if let Some(t) = lease.reset_time {
            suite
                .properties
                .push(("vm.reset_s".into(), format!("{:.2}", t.as_secs_f64())));
        }
        if let Some(swap) = &lease.swap {
            suite.properties.push((
                "vm.device_swap_s".into(),
                format!("{:.2}", swap.total.as_secs_f64()),
            ));
            suite.properties.push((
                "vm.device_unplug_s".into(),
                format!("{:.2}", swap.unplug.as_secs_f64()),
            ));
        }
    }
    let workload_started = Instant::now();
    let (vm, crash) = (&mut lease.vm.vm, &lease.vm.crash);
    pb.set_message(format!("{suite_name}: running {}", tc.workload.label()));
    // A power-cut testcase runs its steps or generator on the crash disk.
    let cut_workload = match &tc.workload {
        Workload::Steps(steps) => Some(crate::suite::powercut::CutWorkload::Steps(steps)),
        Workload::Generate(g) => Some(crate::suite::powercut::CutWorkload::Generate(g)),
        Workload::Limits | Workload::Command(_) => None,
    };
    // The filesystem under test is made and mounted the same way for every
    // workload, and unmounted after it.
    let body = make_fs(vm, tc, cmd_timeout).and_then(|()| {
        if let (Some(pc), Some(crash), Some(w)) = (&tc.power_cut, crash, cut_workload) {
            crate::suite::powercut::kill_on_cut(crash, vm);
            return crate::suite::powercut::workload_with_power_cut(
                host,
                vm,
                crash,
                tc,
                pc,
                w,
                suite_name,
                dir,
                cmd_timeout,
                vms.verifiers(),
                &mut suite.properties,
            );
        }
        match &tc.workload {
            Workload::Limits => {
                limits_workload(vm, tc, suite_name, dir, cmd_timeout, &mut suite.properties)
            }
            Workload::Steps(steps) => steps_workload(
                vm,
                steps,
                suite_name,
                dir,
                cmd_timeout,
                &mut suite.properties,
            ),
            Workload::Command(c) => command_workload(vm, c, suite_name, dir, cmd_timeout),
            Workload::Generate(g) => {
                generate_workload(vm, g, suite_name, dir, cmd_timeout, &mut suite.properties)
            }
        }
    });
    match body {
        Ok(results) => {
            suite.results.extend(results);
            if tc.mkfs.is_some() && tc.power_cut.is_none() {
                if let Err(StageError { stage, error: e }) =
                    exec_ok(vm, "umount", "umount /mnt", cmd_timeout)
                {
                    suite
                        .results
                        .push(vm_error_result(suite_name, &stage, &e, start.elapsed()));
                }
            }
        }
        Err(StageError { stage, error: e }) => {
            suite
                .results
                .push(vm_error_result(suite_name, &stage, &e, start.elapsed()))
        }
    }
    // Splats fail the case even when every check passed.
    let splats = vm.splats();
    let t = start.elapsed();
    if splats.is_empty() {
        suite
            .results
            .push(result(suite_name, "console", Outcome::Passed, t));
    }
    for s in splats {
        suite.results.push(result(
            suite_name,
            "console",
            Outcome::Failed {
                message: s.title.clone(),
                detail: format!("console.log line {}:\n{}", s.line, s.excerpt),
            },
            t,
        ));
    }
    suite.properties.push((
        "time.workload_s".into(),
        format!("{:.2}", workload_started.elapsed().as_secs_f64()),
    ));
    let clean = suite
        .results
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Passed | Outcome::Skipped { .. }));
    if let Err(e) = vms.release(lease, suite_name, clean) {
        suite
            .results
            .push(vm_error_result(suite_name, "shutdown", &e, start.elapsed()));
    }
    suite
}

fn exec_ok(vm: &mut Vm, stage: &str, cmd: &str, timeout: Duration) -> Result<String, StageError> {
    let out = vm
        .exec(cmd, timeout)
        .map_err(|e| StageError::new(stage, e))?;
    if out.status != 0 {
        return Err(StageError::lab(
            stage,
            anyhow::anyhow!("`{cmd}` exited with {}: {}", out.status, out.stderr.trim()),
        ));
    }
    Ok(out.stdout)
}

fn parse_report(stage: &str, json: &str) -> Result<LimitsReport, StageError> {
    serde_json::from_str(json.trim())
        .map_err(|e| StageError::lab(stage, anyhow::anyhow!("lab-guest printed {json:?}: {e}")))
}

fn checks_to_results(case: &str, checks: Vec<limits::Check>, d: Duration) -> Vec<CaseResult> {
    checks
        .into_iter()
        .map(|c| {
            let outcome = if c.passed {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    message: format!("{}: expected {}, got {}", c.name, c.expected, c.actual),
                    detail: format!("rule: {}", c.rule),
                }
            };
            result(case, &c.name, outcome, d)
        })
        .collect()
}

/// Device limits: sysfs and statx on the raw namespace, then statx on a file
/// of a fresh XFS, each compared with what the device parameters imply.
fn limits_workload(
    vm: &mut Vm,
    tc: &Testcase,
    case: &str,
    dir: &Path,
    timeout: Duration,
    props: &mut Vec<(String, String)>,
) -> Result<Vec<CaseResult>, StageError> {
    let t = Instant::now();
    let dev = NS1;
    let raw = exec_ok(vm, "bdev-limits", &agent::limits(&[dev]), timeout)?;
    let bdev = parse_report("bdev-limits", &raw)?;
    // What QEMU reports in Identify Namespace (all zero without namespace
    // atomic fields; a case that sets them never boots on a QEMU without).
    let want = limits::expected_block_limits(&tc.device, tc.device.identify_namespace());
    if let Some(s) = &bdev.sysfs {
        props.push((
            "guest.atomic_write_unit_min_bytes".into(),
            s.unit_min.to_string(),
        ));
        props.push((
            "guest.atomic_write_unit_max_bytes".into(),
            s.unit_max.to_string(),
        ));
        props.push(("guest.atomic_write_max_bytes".into(), s.max.to_string()));
        props.push((
            "guest.atomic_write_boundary_bytes".into(),
            s.boundary.to_string(),
        ));
    }
    let mut results = checks_to_results(case, limits::check_bdev(&bdev, &want), t.elapsed());
    // Every further namespace has the same parameters, so the same limits.
    for n in 2..=tc.device.namespaces {
        let t = Instant::now();
        let dev_n = format!("/dev/nvme0n{n}");
        let raw = exec_ok(vm, "bdev-limits", &agent::limits(&[&dev_n]), timeout)?;
        let report = parse_report("bdev-limits", &raw)?;
        for mut r in checks_to_results(case, limits::check_bdev(&report, &want), t.elapsed()) {
            r.check = format!("ns{n}.{}", r.check);
            results.push(r);
        }
    }

    let mkfs = tc.mkfs.as_ref().expect("validated: limits has mkfs");
    let t = Instant::now();
    exec_ok(vm, "touch", "touch /mnt/f", timeout)?;
    let raw_file = exec_ok(vm, "xfs-limits", &agent::limits(&["/mnt/f"]), timeout)?;
    let file = parse_report("xfs-limits", &raw_file)?;
    let expect = limits::expected_xfs_statx(&want, mkfs.block_size, mkfs.reflink);
    results.extend(checks_to_results(
        case,
        limits::check_xfs(&file, &expect)
            .into_iter()
            .chain(limits::check_xfs_buffered(&file, &expect))
            .chain(limits::check_combined_request(&file))
            .collect(),
        t.elapsed(),
    ));
    props.push((
        "guest.xfs.statx".into(),
        serde_json::to_string(&file.statx).unwrap_or_default(),
    ));
    props.push((
        "guest.xfs.statx_buf.abi".into(),
        file.statx_buf.abi.as_str().into(),
    ));
    let _ = std::fs::write(
        dir.join("limits.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "bdev": bdev, "xfs_file": file }))
            .unwrap_or_default(),
    );
    Ok(results)
}

/// The first namespace: the device workloads use.
const NS1: &str = "/dev/nvme0n1";

/// mkfs.xfs + mount on /mnt, as the testcase asks (nothing without `mkfs:`).
fn make_fs(vm: &mut Vm, tc: &Testcase, timeout: Duration) -> Result<(), StageError> {
    match &tc.mkfs {
        Some(mkfs) => mount_fresh_xfs(vm, mkfs, &tc.mount, timeout),
        None => Ok(()),
    }
}

/// A fresh XFS on the first namespace, mounted on /mnt: how every workload
/// (and `lab doctor`'s large-folio census) gets its filesystem.
pub(crate) fn mount_fresh_xfs(
    vm: &mut Vm,
    mkfs: &Mkfs,
    mount: &Mount,
    timeout: Duration,
) -> Result<(), StageError> {
    let dev = NS1;
    let opts = if mount.options.is_empty() {
        String::new()
    } else {
        format!("-o {} ", mount.options)
    };
    exec_ok(
        vm,
        "mkfs",
        &format!(
            "mkfs.xfs -f -q -b size={} -m reflink={} {dev} && mount -t xfs {opts}{dev} /mnt",
            mkfs.block_size,
            u8::from(mkfs.reflink)
        ),
        timeout,
    )?;
    Ok(())
}

/// Explicit steps: the agent runs them in order and reports each; every step
/// is judged against its expectation (one JUnit testcase per step).
fn steps_workload(
    vm: &mut Vm,
    steps: &[Step],
    case: &str,
    dir: &Path,
    timeout: Duration,
    properties: &mut Vec<(String, String)>,
) -> Result<Vec<CaseResult>, StageError> {
    let plan = Plan {
        run: stamp_run_id(),
        root: "/mnt".into(),
        steps: steps.to_vec(),
    };
    let t = Instant::now();
    let out = vm
        .exec(&agent::run(&plan), timeout)
        .map_err(|e| StageError::new("steps", e))?;
    let elapsed = t.elapsed();
    let _ = std::fs::write(dir.join("steps.jsonl"), &out.stdout);
    let missing = |i: usize, step: &Step| Outcome::Error {
        message: format!(
            "the agent reported nothing for step {} ({})",
            i + 1,
            step.describe()
        ),
        detail: format!(
            "agent exit status {}, stderr: {}",
            out.status,
            out.stderr.trim()
        ),
    };
    Ok(judge_steps(
        steps,
        &out.stdout,
        case,
        elapsed,
        &missing,
        properties,
    ))
}

/// A third-party client run as a shell command: exit status and output.
fn command_workload(
    vm: &mut Vm,
    c: &lab_core::testcase::CommandSpec,
    case: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<Vec<CaseResult>, StageError> {
    let t = Instant::now();
    let out = vm
        .exec(&format!("cd /mnt 2>/dev/null; {}", c.run), timeout)
        .map_err(|e| StageError::new("command", e))?;
    let elapsed = t.elapsed();
    let text = format!("{}{}", out.stdout, out.stderr);
    let _ = std::fs::write(
        dir.join("command.log"),
        format!("$ {}\n{text}\n[exit {}]\n", c.run, out.status),
    );
    let tail: String = {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    let mut results = Vec::new();
    let skipped = c.skip_if_output.as_ref().and_then(|re| {
        let re = regex::Regex::new(re).expect("validated");
        text.lines().find(|l| re.is_match(l)).map(str::to_string)
    });
    if let Some(line) = skipped {
        results.push(result(
            case,
            "command",
            Outcome::Skipped {
                reason: format!("`{}`: {}", c.run, line.trim()),
            },
            elapsed,
        ));
    } else {
        let exit = if out.status == c.expect_exit {
            Outcome::Passed
        } else {
            Outcome::Failed {
                message: format!(
                    "`{}` exited with {}, expected {}",
                    c.run, out.status, c.expect_exit
                ),
                detail: tail.clone(),
            }
        };
        results.push(result(case, "command.exit", exit, elapsed));
        if let Some(re) = &c.expect_output {
            let ok = regex::Regex::new(re).expect("validated").is_match(&text);
            let outcome = if ok {
                Outcome::Passed
            } else {
                Outcome::Failed {
                    message: format!("the output of `{}` does not match /{re}/", c.run),
                    detail: tail,
                }
            };
            results.push(result(case, "command.output", outcome, elapsed));
        }
    }
    Ok(results)
}

/// One line of `lab-guest generate` output.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum GenLine {
    Limits {
        limits: lab_core::generate::GenLimits,
    },
    Op {
        thread: u32,
        step: Step,
        result: StepResult,
    },
    Verify {
        verify: StepResult,
    },
}

/// A seeded generator: N threads of mixed atomic/non-atomic writes and
/// syncs on one file. Checks: every operation returned what it must (a
/// short write never passes), and the file reads back as the last write of
/// each sector's owner thread.
fn generate_workload(
    vm: &mut Vm,
    g: &lab_core::generate::GenParams,
    case: &str,
    dir: &Path,
    timeout: Duration,
    props: &mut Vec<(String, String)>,
) -> Result<Vec<CaseResult>, StageError> {
    let input = agent::GenerateInput {
        run: stamp_run_id(),
        root: "/mnt",
        file: "gen",
        params: g,
    };
    let t = Instant::now();
    let out = vm
        .exec(&agent::generate(&input), timeout)
        .map_err(|e| StageError::new("generate", e))?;
    let elapsed = t.elapsed();
    let _ = std::fs::write(dir.join("oplog.jsonl"), &out.stdout);
    props.push(("generate.seed".into(), g.seed.to_string()));
    let mut ops = 0usize;
    let mut atomic_ok = 0usize;
    let mut failures = Vec::new();
    let mut skip = None;
    let mut verify = None;
    for line in out.stdout.lines() {
        match serde_json::from_str::<GenLine>(line) {
            Ok(GenLine::Limits { limits }) => {
                props.push((
                    "generate.limits".into(),
                    serde_json::to_string(&limits).unwrap_or_default(),
                ));
            }
            Ok(GenLine::Op {
                thread,
                step,
                result,
            }) => {
                ops += 1;
                match steps::judge(&step, &result) {
                    StepVerdict::Pass => {
                        if matches!(&step, Step::Pwrite(p) if p.atomic) {
                            atomic_ok += 1;
                        }
                    }
                    StepVerdict::Skip(reason) => skip = Some(reason),
                    StepVerdict::Fail(m) => {
                        failures.push(format!("thread {thread} op {}: {m}", result.index + 1))
                    }
                }
            }
            Ok(GenLine::Verify { verify: v }) => verify = Some(v),
            Err(_) => {}
        }
    }
    let mut results = Vec::new();
    let ops_outcome = if ops == 0 || verify.is_none() {
        Outcome::Error {
            message: format!("lab-guest generate did not finish (exit {})", out.status),
            detail: out.stderr.clone(),
        }
    } else if !failures.is_empty() {
        Outcome::Failed {
            message: format!(
                "{} of {ops} operations failed; first: {}",
                failures.len(),
                failures[0]
            ),
            detail: failures.join("\n"),
        }
    } else if let Some(reason) = skip {
        Outcome::Skipped {
            reason: format!("atomic writes in this workload: {reason}"),
        }
    } else {
        Outcome::Passed
    };
    props.push(("generate.ops".into(), ops.to_string()));
    props.push(("generate.atomic_writes_ok".into(), atomic_ok.to_string()));
    results.push(result(case, "generate.ops", ops_outcome, elapsed));
    if let Some(v) = verify {
        let outcome = if v.errno.is_none() && v.detail.is_empty() {
            Outcome::Passed
        } else {
            Outcome::Failed {
                message: format!(
                    "read-back: {}",
                    if v.detail.is_empty() {
                        v.errno.clone().unwrap_or_default()
                    } else {
                        v.detail.clone()
                    }
                ),
                detail: format!("seed {} (oplog.jsonl has every operation)", g.seed),
            }
        };
        results.push(result(case, "generate.verify", outcome, elapsed));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(name: &str) -> (PathBuf, Testcase) {
        let text = format!("name: {name}\nmkfs: {{ block_size: 4096 }}\nworkload: limits\n");
        (PathBuf::from(name), testcase::parse("t", &text).unwrap())
    }

    #[test]
    fn exact_name_beats_substring() {
        let all = vec![tc("limits-4k"), tc("limits-4k-reflink"), tc("limits-512")];
        let names =
            |v: Vec<(PathBuf, Testcase)>| v.into_iter().map(|(_, t)| t.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(all.clone(), &["limits-4k".into()])),
            ["limits-4k"]
        );
        assert_eq!(
            names(select(all.clone(), &["4k".into()])),
            ["limits-4k", "limits-4k-reflink"]
        );
        assert_eq!(names(select(all, &[])).len(), 3);
    }
}
