//! Helpers the `lab` binary's integration tests share: running `lab` from
//! this checkout and reading the results it writes.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// The summary.json of the newest run under a results directory.
pub fn summary_of(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&read(&dir.join("latest/summary.json"))).unwrap()
}

/// One testcase's suite from a summary.
pub fn suite_of(summary: &serde_json::Value, name: &str) -> serde_json::Value {
    summary["suites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {summary}"))
        .clone()
}

/// The status of one check of a suite.
pub fn outcome(suite: &serde_json::Value, check: &str) -> String {
    suite["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == check)
        .map(|r| r["outcome"]["status"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| panic!("{check} missing in {suite}"))
}

/// One property of a suite.
pub fn prop(suite: &serde_json::Value, key: &str) -> String {
    suite["properties"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {suite}"))
        .to_string()
}
