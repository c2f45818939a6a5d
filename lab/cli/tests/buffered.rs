//! The team's own buffered atomic write series (patches/xfs-buffered-atomic)
//! proves the lab end to end: built from Debian's linux-source-7.2, the
//! buffered RWF_ATOMIC testcases run for real (mainline skips them), power
//! cuts during buffered atomic writes tear none, and the broken variant's
//! two-halves patch is caught and named by `lab bisect`; buffered atomic
//! writes inside a proved large folio (the lab config has THP) read back
//! whole and tear under no cut of a sweep. The first test to
//! run builds the series (~10 minutes on two cores: it changes headers
//! every file includes); the bisection then builds incrementally.

mod common;
use common::{
    check_bisect_page, check_page, keep_page, lab, outcome, output, prop, read, run_prop, suite_of,
    summary_of,
};

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
                "large-folio-buffered-atomic-xfs-1k",
                "powercut-large-folio-buffered-atomic-xfs-1k",
            ]),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Nothing skipped: mainline skips the buffered atomic writes (EOPNOTSUPP).
    assert!(
        stdout.contains(" 0 failed, 0 skipped, 0 errors"),
        "{stdout}"
    );
    let v = summary_of(&results);
    assert_eq!(
        run_prop(&v, "kernel.level"),
        "4/4 xfs: report buffered atomic write limits in statx"
    );
    // A well-formed buffered atomic write and one from a page-crossing buffer succeed.
    let buffered = suite_of(&v, "buffered-atomic-xfs-4k");
    for step in ["step04.pwrite", "step05.pwrite"] {
        assert_eq!(outcome(buffered, step), "passed", "{step}");
    }
    // The power was cut with a buffered atomic write in flight; no state tears it.
    let pc = suite_of(&v, "powercut-buffered-atomic-xfs-4k");
    let during = prop(pc, "power_cut.during");
    assert!(during.contains("RWF_ATOMIC"), "{during}");
    assert_eq!(outcome(pc, "power_cut.atomic_writes_whole"), "passed");
    // The positive control: buffered writeback larger than the unit is torn in some state.
    let torn = suite_of(&v, "powercut-buffered-torn-xfs-4k");
    assert_eq!(outcome(torn, "power_cut.positive_control"), "passed");
    // The lab-built kernel caches a 2 MiB buffered write in one large
    // folio (the lab config has THP), and buffered atomic writes of 1 KiB
    // blocks inside it, next to a dirty non-atomic block, read back whole.
    let large = suite_of(&v, "large-folio-buffered-atomic-xfs-1k");
    assert_eq!(prop(large, "page_cache.large_folios"), "yes");
    assert!(
        prop(large, "folios.step05").starts_with("512 of 512 pages cached, in 1 folio"),
        "{}",
        prop(large, "folios.step05")
    );
    assert_eq!(outcome(large, "step11.pwrite"), "passed");
    assert_eq!(outcome(large, "step13.verify"), "passed");
    // The same under a sweep: every cut point judged, none torn.
    let swept = suite_of(&v, "powercut-large-folio-buffered-atomic-xfs-1k");
    assert_eq!(prop(swept, "page_cache.large_folios"), "yes");
    assert_eq!(outcome(swept, "sweep.verdicts"), "passed");
    assert_eq!(prop(swept, "sweep.cut_points_left_out"), "0");
    // statx reports the buffered limits apart from the direct ones.
    let limits = suite_of(&v, "limits-4k");
    for c in [
        "xfs.statx_buf.unit_min",
        "xfs.statx_buf.unit_max",
        "xfs.statx.combined_request",
    ] {
        assert_eq!(outcome(limits, c), "passed", "{c}");
    }
    assert_eq!(prop(limits, "guest.xfs.statx_buf.abi"), "separate_fields");
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
    let b: serde_json::Value = serde_json::from_str(&read(&run.join("bisect.json"))).unwrap();
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
    // The bisection's page, in a browser: the culprit and every step.
    let page = check_page(&run);
    check_bisect_page(
        &page,
        "4/5 xfs: write buffered atomic writes through in two halves",
        b["steps"].as_array().unwrap().len(),
    );
    keep_page(&page, "bisect-buffered");
}

/// The broken variant's two-halves patch is caught by a sweep with no
/// hand-placed cut: the cut points before each write arrives and each
/// completion is sent (all of them) include one between the two halves of
/// each buffered atomic write, and a state there shows it torn.
#[test]
fn a_sweep_catches_the_broken_buffered_series_with_no_hand_placed_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "run",
                "--series",
                "patches/xfs-buffered-atomic-broken",
                "--upto",
                "4",
                "--results",
            ])
            .arg(&results)
            .arg("powercut-sweep-buffered-atomic-xfs-4k"),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let s = suite_of(&v, "powercut-sweep-buffered-atomic-xfs-4k");
    assert_eq!(prop(s, "power_cut.policy"), "none");
    let torn: Vec<String> = s
        .results
        .iter()
        .filter(|r| r.check.starts_with("sweep.cut-") && r.outcome.label() == "failed")
        .map(|r| format!("{:?}", r.outcome))
        .collect();
    assert!(
        torn.iter().any(|m| m.contains("an atomic write was torn")),
        "{stdout}"
    );
}

/// The bisection of a broken variant and what it names: `first bad patch`
/// in the output, level 4 bad for a torn atomic write, the culprit
/// confirmed by its revert, and the page.
fn bisect_names_a_planted_patch(series: &str, testcase: &str, culprit: &str, page_name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "bisect",
                "--series",
                series,
                "--testcase",
                testcase,
                "--retries",
                "0",
                "--results",
            ])
            .arg(&results),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("first bad patch: {culprit}")),
        "{stdout}\n{stderr}"
    );
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let b: serde_json::Value = serde_json::from_str(&read(&run.join("bisect.json"))).unwrap();
    assert_eq!(b["first_bad"], 4);
    let bad = b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["level"] == 4)
        .unwrap();
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("an atomic write was torn"),
        "{bad}"
    );
    assert_eq!(b["confirmation"]["outcome"], "confirmed", "{b}");
    let page = check_page(&run);
    check_bisect_page(&page, culprit, b["steps"].as_array().unwrap().len());
    keep_page(&page, page_name);
}

/// A sub-page bug: a block smaller than a page written through as two
/// halves. The 4 KiB-block power cut cannot see it (its blocks are a page);
/// the matrix's 1 KiB cell, several atomic blocks in one folio, tears one
/// under a sweep, and the bisection names the planted patch.
#[test]
fn the_sub_page_variant_is_caught_by_the_1k_matrix_cell_and_bisected() {
    const SERIES: &str = "patches/xfs-buffered-atomic-broken-subpage";
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--series", SERIES, "--results"])
            .arg(&results)
            .args([
                "powercut-buffered-atomic-xfs-4k",
                "matrix-buffered-atomic-1k-folio-atomic-blocks",
            ]),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let four_k = suite_of(&v, "powercut-buffered-atomic-xfs-4k");
    assert!(
        four_k.results.iter().all(|r| r.outcome.label() == "passed"),
        "the 4 KiB case should miss a sub-page bug:\n{stdout}"
    );
    let cell = suite_of(&v, "matrix-buffered-atomic-1k-folio-atomic-blocks");
    assert!(
        cell.results
            .iter()
            .any(|r| r.check.starts_with("sweep.cut-")
                && format!("{:?}", r.outcome).contains("an atomic write was torn")),
        "{stdout}"
    );
    bisect_names_a_planted_patch(
        SERIES,
        "matrix-buffered-atomic-1k-folio-atomic-blocks",
        "4/5 xfs: write sub-page buffered atomic writes through in two halves",
        "bisect-subpage",
    );
}

/// A bug that needs a folio already dirty from a non-atomic write: the
/// matrix's overwrite cell (an atomic write over a pending plain one) tears
/// the atomic block during writeback, and the bisection names the patch.
#[test]
fn the_dirty_folio_variant_is_caught_by_the_overwrite_cell_and_bisected() {
    bisect_names_a_planted_patch(
        "patches/xfs-buffered-atomic-broken-shared-folio",
        "matrix-buffered-atomic-4k-overwrites",
        "4/5 xfs: leave buffered atomic writes to writeback in a dirty folio",
        "bisect-shared-folio",
    );
}

/// A kernel that speaks the seed RFC's statx interface for buffered atomic
/// writes (our fixture series: the buffered limits in the direct-I/O
/// fields, and the two bits asked for together answered with neither):
/// the direct limits still read right because each bit is asked for alone,
/// the buffered ones are found in the shared fields, and the combined
/// request is the one failing check, named with its rule.
#[test]
fn the_rfc_statx_interface_is_one_named_finding_not_twenty() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "run",
                "--series",
                "patches/xfs-buffered-atomic-rfc-statx",
                "--results",
            ])
            .arg(&results)
            .arg("limits-4k"),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let limits = suite_of(&v, "limits-4k");
    assert_eq!(prop(limits, "guest.xfs.statx_buf.abi"), "shared_fields");
    let failed: Vec<&str> = limits
        .results
        .iter()
        .filter(|r| r.outcome.label() != "passed")
        .map(|r| r.check.as_str())
        .collect();
    assert_eq!(failed, ["xfs.statx.combined_request"], "{stdout}");
    let combined = format!(
        "{:?}",
        limits
            .results
            .iter()
            .find(|r| r.check == "xfs.statx.combined_request")
            .unwrap()
            .outcome
    );
    assert!(combined.contains("neither"), "{combined}");
    assert!(combined.contains("mutually exclusive"), "{combined}");
    for c in [
        "xfs.statx.mask",
        "xfs.statx.unit_min",
        "xfs.statx.unit_max",
        "xfs.statx_buf.form",
    ] {
        assert_eq!(outcome(limits, c), "passed", "{c}");
    }
}

/// A subset of the buffered atomic matrix on our series (the whole matrix,
/// about 16 minutes here, is in `lab bench run` and docs/testcases.md):
/// punch and zero range over pending atomic blocks, synchronous atomic
/// writes, O_DIRECT over pending buffered atomic data, and atomic and plain
/// blocks interleaved in one folio all pass, every cut point judged.
#[test]
fn matrix_cells_pass_on_our_series() {
    const CELLS: [&str; 4] = [
        "matrix-buffered-atomic-4k-punch-zero",
        "matrix-buffered-atomic-4k-dsync",
        "matrix-buffered-atomic-4k-direct-over-pending",
        "matrix-buffered-atomic-1k-folio-interleaved",
    ];
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
            .args(CELLS),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    for cell in CELLS {
        let s = suite_of(&v, cell);
        assert!(
            s.results.iter().all(|r| r.outcome.label() == "passed"),
            "{cell}: every check passes, none skipped, on a kernel with buffered atomic writes"
        );
        assert!(
            s.results.iter().any(|r| r.check.starts_with("sweep.")),
            "{cell}: judged by a sweep"
        );
    }
}
