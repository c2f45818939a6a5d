//! Helpers the `lab` binary's integration tests share: running `lab` from
//! this checkout and reading the results it writes.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab_core::report::{Outcome, RunReport, SuiteReport};

/// The repository root (`LAB_ROOT` for the `lab` under test).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `lab` binary of this build, run against this checkout.
pub fn lab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
    c.env("LAB_ROOT", root());
    c
}

/// Exit code, stdout and stderr of a command.
pub fn output(c: &mut Command) -> (Option<i32>, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The summary.json of a run directory, typed.
pub fn summary_in(run: &Path) -> RunReport {
    let path = run.join("summary.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The summary.json of the newest run under a results directory.
pub fn summary_of(dir: &Path) -> RunReport {
    summary_in(&dir.join("latest"))
}

/// One testcase's suite from a summary.
pub fn suite_of<'a>(summary: &'a RunReport, name: &str) -> &'a SuiteReport {
    summary
        .suites
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} missing: {summary:?}"))
}

/// The outcome of one check of a suite, as summary.json spells it
/// (`passed`, `failed`, `skipped`, `error`).
pub fn outcome(suite: &SuiteReport, check: &str) -> &'static str {
    suite
        .results
        .iter()
        .find(|r| r.check == check)
        .map(|r| r.outcome.label())
        .unwrap_or_else(|| panic!("{check} missing in {suite:?}"))
}

/// One property of a suite.
pub fn prop(suite: &SuiteReport, key: &str) -> String {
    suite
        .property(key)
        .unwrap_or_else(|| panic!("{key} missing in {suite:?}"))
        .to_string()
}

/// One property of the run.
pub fn run_prop(summary: &RunReport, key: &str) -> String {
    summary
        .property(key)
        .unwrap_or_else(|| panic!("{key} missing in {:?}", summary.properties))
        .to_string()
}

/// (check, outcome, message) of every check of a suite.
pub fn suite_results(summary: &RunReport, name: &str) -> Vec<(String, String, String)> {
    suite_of(summary, name)
        .results
        .iter()
        .map(|r| {
            let message = match &r.outcome {
                Outcome::Failed { message, .. } | Outcome::Error { message, .. } => message.clone(),
                Outcome::Skipped { .. } => String::new(),
                Outcome::Passed => String::new(),
            };
            (r.check.clone(), r.outcome.label().to_string(), message)
        })
        .collect()
}

/// The failed checks of the newest run under `dir` with their details
/// (console tails of hung guests included), for assertion messages.
pub fn failure_details(dir: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(dir.join("latest/summary.json")) else {
        return "(no summary.json)".into();
    };
    let Ok(summary) = serde_json::from_str::<RunReport>(&text) else {
        return format!("(summary.json does not parse: {text})");
    };
    let mut out = String::new();
    for r in summary.suites.iter().flat_map(|s| &s.results) {
        if let Outcome::Failed { message, detail } | Outcome::Error { message, detail } = &r.outcome
        {
            out.push_str(&format!(
                "--- {} {}: {message}\n{detail}\n",
                r.case, r.check
            ));
        }
    }
    out
}

/// One `lab run` into a fresh results directory, and what it printed.
pub struct LabRun {
    pub results: tempfile::TempDir,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl LabRun {
    /// `lab run ARGS... --results <a fresh directory>`, with `env` set.
    pub fn new(args: &[&str], env: &[(&str, &str)]) -> LabRun {
        let results = tempfile::tempdir().unwrap();
        let mut cmd = lab();
        cmd.arg("run")
            .args(args)
            .arg("--results")
            .arg(results.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (code, stdout, stderr) = output(&mut cmd);
        LabRun {
            results,
            code,
            stdout,
            stderr,
        }
    }

    /// Asserts the exit code; the message has stdout, stderr and every
    /// failed check with its details (a hung guest's console tail).
    pub fn expect_exit(&self, code: i32) -> &LabRun {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}\nfailed checks:\n{}",
            self.stdout,
            self.stderr,
            failure_details(self.results.path())
        );
        self
    }

    /// The run's directory (`results/latest`, resolved).
    pub fn dir(&self) -> PathBuf {
        std::fs::canonicalize(self.results.path().join("latest"))
            .expect("results/latest points at the run")
    }

    pub fn summary(&self) -> RunReport {
        summary_of(self.results.path())
    }
}

/// QEMU processes whose parent is `pid`.
pub fn qemu_children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (stat.contains("(qemu-system-x86") && ppid == pid)
                .then(|| e.file_name().to_string_lossy().parse().ok())
                .flatten()
        })
        .collect()
}

/// Polls `f` until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
