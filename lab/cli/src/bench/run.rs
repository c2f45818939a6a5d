//! `lab bench run`: the default testcases (or a named subset) run twice in
//! one invocation, with one VM booted for every testcase one after another
//! (`-j 1`, the baseline) and with `-j N` plus VM reuse: wall time of each,
//! the speed-up, boots per testcase, where each run's time went (boot,
//! reset, workload, verification, summed over testcases), and whether every
//! check came out the same.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use lab_core::report::{verdict_difference, RunReport};

use crate::bench::{accel_record, rec, Measurement};
use crate::host::LabHost;
use crate::paths;
use crate::suite::{self, Parallel, RunOptions};

pub struct RunBenchPlan {
    pub filters: Vec<String>,
    /// `-j` of the parallel run (default: the host's).
    pub jobs: Option<usize>,
}

pub fn bench_run(host: &LabHost, plan: &RunBenchPlan) -> Result<Vec<Measurement>> {
    let all = suite::load(&[host.root.join("testcases")]).map_err(|errs| {
        anyhow::anyhow!(
            "{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let cases = suite::select(all, &plan.filters);
    if cases.is_empty() {
        bail!("no testcase matches {:?}", plan.filters);
    }
    let jobs = plan
        .jobs
        .unwrap_or_else(|| crate::host::default_jobs(host.accel).jobs);
    let runs_dir = runs_dir(&host.root);
    let mut out = vec![
        accel_record(host),
        rec("testcases", cases.len() as f64, "count"),
        rec("jobs", jobs as f64, "count"),
    ];
    let mut reports = Vec::new();
    for (label, par) in [
        ("serial", Parallel::SERIAL),
        ("parallel", Parallel { jobs, reuse: true }),
    ] {
        eprintln!(
            "lab bench run: {label} ({} jobs, reuse {})",
            par.jobs, par.reuse
        );
        let opts = RunOptions {
            results: runs_dir.join(label),
            reproduce: format!("lab run -j {}", par.jobs),
            reproduce_prefix: format!("lab run -j {}", par.jobs),
            properties: vec![("bench.run".into(), label.into())],
            parallel: par,
        };
        let started = Instant::now();
        let (report, dir) = suite::run(host, &cases, &opts)?;
        let wall = started.elapsed().as_secs_f64();
        if report.interrupted {
            bail!("interrupted; partial runs in {}", runs_dir.display());
        }
        out.extend(split_records(label, &report, wall, &dir));
        reports.push((wall, report));
    }
    let (serial_wall, serial) = &reports[0];
    let (parallel_wall, parallel) = &reports[1];
    out.push(rec("speedup", serial_wall / parallel_wall, "ratio"));
    let differ = differing_testcases(serial, parallel);
    out.push(rec("verdicts_differing", differ.len() as f64, "testcases"));
    for why in differ {
        eprintln!("lab bench run: verdicts differ: {why}");
    }
    Ok(out)
}

fn prop_sum(report: &RunReport, key: &str) -> f64 {
    report
        .suites
        .iter()
        .filter_map(|s| s.property(key)?.parse::<f64>().ok())
        .sum()
}

/// Verifier VMs booted over a run, and their boot seconds summed. With
/// several verifier jobs a testcase also repeats job 0's first boot as
/// `verify.boot_0_s`; that one is not counted twice.
fn verifier_boots(report: &RunReport) -> (f64, f64) {
    let (mut n, mut sum) = (0.0, 0.0);
    for s in &report.suites {
        let per_job = s.property("verify.jobs").is_some_and(|j| j != "1");
        for (k, v) in &s.properties {
            let boot = if per_job {
                k.starts_with("verify.job") && k.contains(".boot_")
            } else {
                k.starts_with("verify.boot_")
            };
            if let (true, Ok(v)) = (boot && k.ends_with("_s"), v.parse::<f64>()) {
                n += 1.0;
                sum += v;
            }
        }
    }
    (n, sum)
}

/// Wall time, boots, and the time of all testcases summed by part.
fn split_records(label: &str, r: &RunReport, wall: f64, dir: &Path) -> Vec<Measurement> {
    let n = r.suites.len().max(1) as f64;
    let boots = r
        .suites
        .iter()
        .filter(|s| s.property("boot_to_ssh_s").is_some())
        .count() as f64;
    let c = r.counts();
    let verifier_boots = verifier_boots(r);
    let m = |what: &str, v: f64, unit: &str| rec(&format!("{label}.{what}"), v, unit);
    eprintln!("lab bench run: {label} run in {}", dir.display());
    vec![
        m("wall_s", wall, "s"),
        m("boots_per_testcase", boots / n, "ratio"),
        m("boot_s_sum", prop_sum(r, "boot_to_ssh_s"), "s"),
        m("reset_s_sum", prop_sum(r, "vm.reset_s"), "s"),
        m(
            "device_swaps",
            r.suites
                .iter()
                .filter(|s| s.property("vm.device_swap_s").is_some())
                .count() as f64,
            "count",
        ),
        m("device_swap_s_sum", prop_sum(r, "vm.device_swap_s"), "s"),
        m("workload_s_sum", prop_sum(r, "time.workload_s"), "s"),
        m("verify_s_sum", prop_sum(r, "verify.total_s"), "s"),
        m("verifier_boots", verifier_boots.0, "count"),
        m("verifier_boot_s_sum", verifier_boots.1, "s"),
        m("verifiers_reused", prop_sum(r, "verify.reused"), "count"),
        m("testcase_s_sum", prop_sum(r, "time.total_s"), "s"),
        m("checks_passed", c.passed as f64, "count"),
        m("checks_failed", (c.failed + c.errors) as f64, "count"),
        m("checks_skipped", c.skipped as f64, "count"),
    ]
}

/// Testcases whose checks disagree between two runs
/// (`lab_core::report::verdict_difference`), each with why.
fn differing_testcases(a: &RunReport, b: &RunReport) -> Vec<String> {
    let mut out = Vec::new();
    for sa in &a.suites {
        match b.suites.iter().find(|s| s.name == sa.name) {
            None => out.push(format!("{}: missing from the parallel run", sa.name)),
            Some(sb) => out.extend(verdict_difference(sa, sb)),
        }
    }
    out.extend(
        b.suites
            .iter()
            .filter(|sb| !a.suites.iter().any(|s| s.name == sb.name))
            .map(|sb| format!("{}: missing from the serial run", sb.name)),
    );
    out
}

/// Where the two runs are kept: `results/bench-run/{serial,parallel}`.
pub fn runs_dir(root: &Path) -> PathBuf {
    paths::results_dir(root).join("bench-run")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::report::SuiteReport;

    fn suite(props: &[(&str, &str)]) -> SuiteReport {
        SuiteReport {
            name: "t".into(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            results: Vec::new(),
            console_log: None,
            reproduce: String::new(),
        }
    }

    #[test]
    fn verifier_boots_are_counted_once_per_vm() {
        let report = RunReport {
            run_id: "r".into(),
            started_at: String::new(),
            properties: Vec::new(),
            suites: vec![
                // One job: two boots (the first crawled).
                suite(&[
                    ("verify.jobs", "1"),
                    ("verify.boot_0_s", "10"),
                    ("verify.boot_1_s", "12"),
                ]),
                // Two jobs: job 0's first boot is repeated as verify.boot_0_s.
                suite(&[
                    ("verify.jobs", "2"),
                    ("verify.boot_0_s", "9"),
                    ("verify.job0.boot_0_s", "9"),
                    ("verify.job1.boot_0_s", "11"),
                ]),
                // A kept verifier: no boot.
                suite(&[("verify.jobs", "1"), ("verify.reused", "1")]),
                suite(&[("boot_to_ssh_s", "7")]),
            ],
            reproduce: String::new(),
            interrupted: false,
        };
        assert_eq!(verifier_boots(&report), (4.0, 42.0));
        assert_eq!(prop_sum(&report, "verify.reused"), 1.0);
    }
}
