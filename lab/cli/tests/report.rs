//! The run's HTML page (`results/<run-id>/index.html`) as a person sees it:
//! rendered by headless Chromium (Debian's; `scripts/setup.sh test`
//! installs it) for a passing run, a failing power-cut run (the lying-disk
//! control), a bisection (a real one kept as a fixture, re-rendered with
//! `lab report DIR`) and untrusted text. Each keeps its screenshot,
//! `index.png`, beside the page. Two short VM runs (about 3 min on TCG).

mod common;
use std::path::{Path, PathBuf};

use common::{check_page, lab, output, read, root};

/// A `lab run` into its own results directory; returns the run's directory
/// (resolved, so it outlives a later `latest`) and stdout.
fn lab_run(results: &Path, args: &[&str]) -> (Option<i32>, PathBuf, String) {
    let (code, stdout, stderr) = output(lab().arg("run").args(args).arg("--results").arg(results));
    let run = std::fs::canonicalize(results.join("latest"))
        .unwrap_or_else(|e| panic!("no run directory ({e}):\n{stdout}\n{stderr}"));
    (code, run, stdout)
}

/// The page and its screenshot outlive the test's temporary results:
/// copied to `target/tmp/report-pages/<name>/` to be looked at.
fn keep(page: &common::Page, name: &str) {
    common::keep_page(page, name);
}

#[test]
fn the_page_of_a_passing_run_lists_its_testcases_and_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, run, stdout) = lab_run(&results, &["limits-4k", "atomic-errors-raw-4k"]);
    assert_eq!(code, Some(0), "{stdout}");
    // The terminal summary ends with the page's path.
    let page_line = format!("page: {}", run.join("index.html").display());
    assert_eq!(stdout.lines().last(), Some(page_line.as_str()), "{stdout}");
    let page = check_page(&run);
    for want in [
        "limits-4k",
        "atomic-errors-raw-4k",
        "QEMU",
        "accelerator",
        "Reproduce",
        "lab run --accel",
    ] {
        assert!(page.text.contains(want), "{want} not on the page");
    }
    assert_eq!(
        page.dom.matches("class=\"b pass\"").count(),
        2,
        "two passing rows"
    );
    assert!(!page.dom.contains("class=\"b fail\""));
    // `lab report merge` writes the merged run's page too.
    let merged = tmp.path().join("merged");
    let (code, stdout, stderr) = output(
        lab()
            .args(["report", "merge"])
            .arg(&run)
            .arg("--out")
            .arg(&merged),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("page: "), "{stdout}");
    assert!(merged.join("index.html").is_file());
    keep(&page, "passing-run");
}

#[test]
fn the_page_of_the_lying_disk_shows_the_rule_the_timeline_and_sector_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, run, stdout) = lab_run(
        &results,
        &["--testcases", "testcases/controls/lying-disk-xfs-4k.yaml"],
    );
    assert_eq!(code, Some(1), "the control fails:\n{stdout}");
    let page = check_page(&run);
    let t = &page.text;
    assert!(t.contains("lying-disk-xfs-4k"));
    assert!(
        page.dom.contains("class=\"case fail\""),
        "a failing testcase section"
    );
    // The rule in words, and the command that judges a kept state again.
    assert!(
        t.contains("a file made durable by a completed sync is missing")
            || t.contains("data made durable by a completed sync was lost"),
        "no rule on the page"
    );
    assert!(t.contains("lab verify "), "no lab verify line");
    // Pictures: the writes around the cut and a sector map per kept state.
    assert!(page.dom.contains("class=\"timeline\""), "no timeline");
    assert!(t.contains("in flight at the cut"));
    assert!(page.dom.contains("class=\"sectormap\""), "no sector map");
    assert!(
        page.dom.contains("<rect class=\"refused\""),
        "no sector the model refused is outlined"
    );
    // The console tail of a failing testcase.
    assert!(t.contains("console (last lines)"));
    keep(&page, "lying-disk");
}

#[test]
fn the_page_of_a_bisection_shows_its_steps_and_the_culprit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bisect");
    copy_dir(&root().join("lab/cli/tests/fixtures/bisect-demo"), &dir);
    let (code, stdout, stderr) = output(lab().arg("report").arg(&dir));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("page: "), "{stdout}");
    let page = check_page(&dir);
    common::check_bisect_page(&page, "3/4 fs: test atomic write alignment with a mask", 4);
    keep(&page, "bisection");
}

/// Testcase names, check messages, console output and patch subjects are
/// untrusted: each carries markup and quotes, and the browser shows them
/// as text.
#[test]
fn untrusted_text_reaches_the_browser_as_text() {
    const NASTY: &str = r#"<script>alert("x")</script>'q' & "dq""#;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nasty");
    copy_dir(&root().join("lab/cli/tests/fixtures/bisect-demo"), &dir);
    // A patch subject and a failing testcase of the run, with a console.
    let mut b: serde_json::Value = serde_json::from_str(&read(&dir.join("bisect.json"))).unwrap();
    b["patches"][2] = format!("3/4 {NASTY}").into();
    b["first_bad_patch"] = format!("3/4 {NASTY}").into();
    b["message"] = format!("first bad patch: 3/4 {NASTY}").into();
    b["steps"][3]["reason"] = NASTY.into();
    std::fs::write(dir.join("bisect.json"), b.to_string()).unwrap();
    let mut s: serde_json::Value = serde_json::from_str(&read(&dir.join("summary.json"))).unwrap();
    let name = format!("case {NASTY}");
    s["suites"][0]["name"] = name.clone().into();
    s["suites"][0]["console_log"] = format!("{name}/console.log").into();
    s["suites"][0]["results"][1]["check"] = NASTY.into();
    s["suites"][0]["results"][1]["outcome"]["message"] = NASTY.into();
    std::fs::write(dir.join("summary.json"), s.to_string()).unwrap();
    std::fs::create_dir_all(dir.join(&name)).unwrap();
    std::fs::write(
        dir.join(&name).join("console.log"),
        format!("[    1.000] {NASTY}\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = output(lab().arg("report").arg(&dir));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    // check_page: no script element, no console message, the console link
    // (percent-encoded) names the file.
    let page = check_page(&dir);
    assert!(page.text.contains(&format!("3/4 {NASTY}")), "the subject");
    assert!(page.text.contains(&name), "the testcase name");
    assert!(
        page.text.contains(&format!("[    1.000] {NASTY}")),
        "the console"
    );
    assert!(page.dom.matches("&lt;script&gt;").count() >= 5);
    keep(&page, "untrusted-text");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
