//! The team's own buffered atomic write series (patches/xfs-buffered-atomic)
//! proves the lab end to end: built from Debian's linux-source-7.2, the
//! buffered RWF_ATOMIC testcases run for real (mainline skips them), power
//! cuts during buffered atomic writes tear none, and the broken variant's
//! two-halves patch is caught and named by `lab bisect`. The first test to
//! run builds the series (~10 minutes on two cores: it changes headers
//! every file includes); the bisection then builds incrementally.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn lab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lab"));
    c.env("LAB_ROOT", root());
    c
}

fn output(c: &mut Command) -> (Option<i32>, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn summary(results: &Path) -> serde_json::Value {
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn check<'a>(v: &'a serde_json::Value, suite: &str, check: &str) -> &'a serde_json::Value {
    v["suites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == suite)
        .unwrap_or_else(|| panic!("no suite {suite}"))["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no check {check} in {suite}"))
}

#[test]
fn the_buffered_atomic_series_runs_the_buffered_testcases_for_real() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "run",
                "--series",
                "patches/xfs-buffered-atomic",
                "--results",
            ])
            .arg(&results)
            .args([
                "buffered-atomic-xfs-4k",
                "buffered-atomic-xfs-1k",
                "powercut-buffered-atomic-xfs-4k",
                "powercut-buffered-torn-xfs-4k",
                "limits-4k",
            ]),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Nothing skipped: mainline skips the buffered atomic writes (EOPNOTSUPP).
    assert!(
        stdout.contains(" 0 failed, 0 skipped, 0 errors"),
        "{stdout}"
    );
    let v = summary(&results);
    assert_eq!(
        v["properties"]["kernel.level"],
        "4/4 xfs: report buffered atomic write limits in statx"
    );
    // A well-formed buffered atomic write and one from a page-crossing buffer succeed.
    for step in ["step04.pwrite", "step05.pwrite"] {
        assert_eq!(
            check(&v, "buffered-atomic-xfs-4k", step)["outcome"]["status"],
            "passed"
        );
    }
    // The power was cut with a buffered atomic write in flight; no state tears it.
    let pc = v["suites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "powercut-buffered-atomic-xfs-4k")
        .unwrap();
    assert!(
        pc["properties"]["power_cut.during"]
            .as_str()
            .unwrap()
            .contains("RWF_ATOMIC"),
        "{}",
        pc["properties"]
    );
    assert_eq!(
        check(
            &v,
            "powercut-buffered-atomic-xfs-4k",
            "power_cut.atomic_writes_whole"
        )["outcome"]["status"],
        "passed"
    );
    // The positive control: buffered writeback larger than the unit is torn in some state.
    assert_eq!(
        check(
            &v,
            "powercut-buffered-torn-xfs-4k",
            "power_cut.positive_control"
        )["outcome"]["status"],
        "passed"
    );
    // statx reports the buffered limits apart from the direct ones.
    for c in ["xfs.statx_buf.unit_min", "xfs.statx_buf.unit_max"] {
        assert_eq!(
            check(&v, "limits-4k", c)["outcome"]["status"],
            "passed",
            "{c}"
        );
    }
}

#[test]
fn bisect_names_the_broken_patch_of_the_buffered_series() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "bisect",
                "--series",
                "patches/xfs-buffered-atomic-broken",
                "--testcase",
                "powercut-buffered-atomic-xfs-4k",
                "--retries",
                "0",
                "--results",
            ])
            .arg(&results),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(
            "first bad patch: 4/5 xfs: write buffered atomic writes through in two halves"
        ),
        "{stdout}\n{stderr}"
    );
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("bisect.json")).unwrap()).unwrap();
    assert_eq!(b["first_bad"], 4);
    assert!(b["builds"].as_u64().unwrap() <= b["max_builds"].as_u64().unwrap());
    // The bad level failed because a crash state showed a torn atomic write.
    let bad = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["level"] == 4)
        .unwrap();
    assert_eq!(bad["verdict"], "bad");
    assert!(bad["reason"].as_str().unwrap().contains("torn"), "{bad}");
}
