//! The kernel pipeline as users run it: Debian's linux-source tarball
//! unpacked into a git repository, the lab's config fragments, real `make`
//! builds with `O=` and ccache, `git am`, real boots of the kernels built.
//! The first test to run builds the base (about 18 minutes on two cores
//! with a cold ccache); the others reuse its artifacts or build
//! incrementally from it.

use std::path::{Path, PathBuf};

mod common;
use common::{
    check_bisect_page, check_page, keep_page, lab, output, read, root, run_prop, summary_of,
};

fn demo_series() -> PathBuf {
    root().join("patches/demo-atomic-align")
}

/// The demo series with its third patch's context changed so that it no
/// longer matches the tree.
fn series_that_does_not_apply(dir: &Path) -> PathBuf {
    let s = dir.join("bad-series");
    std::fs::create_dir_all(&s).unwrap();
    for e in std::fs::read_dir(demo_series()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let mut text = read(&p);
        if name.starts_with("0003") {
            let old = " static bool atomic_write_naturally_aligned(loff_t pos, size_t len)";
            assert!(text.contains(old));
            text = text.replace(
                old,
                " static bool atomic_write_naturally_aligned(loff_t off, size_t len)",
            );
        }
        std::fs::write(s.join(name), text).unwrap();
    }
    s
}

#[test]
fn a_patch_that_does_not_apply_is_named_with_its_file_and_hunk() {
    let tmp = tempfile::tempdir().unwrap();
    let series = series_that_does_not_apply(tmp.path());
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--series"])
            .arg(&series)
            .arg("--results")
            .arg(tmp.path().join("results"))
            .arg("limits-4k"),
    );
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "patch 3/4 fs: test atomic write alignment with a mask does not apply",
        "0003-fs-test-atomic-write-alignment-with-a-mask.patch",
        "fs/read_write.c, hunk #1 (@@ -1804,7 +1804,11 @@",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn a_config_option_that_does_not_survive_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let frag = tmp.path().join("extra.config");
    // NVME_TARGET_TCP depends on NVME_TARGET, which tinyconfig does not
    // have; the second option does not exist at all.
    std::fs::write(
        &frag,
        "# extra\nCONFIG_NVME_TARGET_TCP=y\nCONFIG_LAB_NO_SUCH_OPTION=y\nCONFIG_XFS_FS=y\n",
    )
    .unwrap();
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--kconfig"])
            .arg(&frag)
            .arg("--results")
            .arg(tmp.path().join("results"))
            .arg("limits-4k"),
    );
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let f = frag.display().to_string();
    assert!(
        stderr.contains("2 kernel config option(s) asked for did not survive olddefconfig"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:2: CONFIG_NVME_TARGET_TCP=y")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:3: CONFIG_LAB_NO_SUCH_OPTION=y")),
        "{stderr}"
    );
    assert!(!stderr.contains("CONFIG_XFS_FS=y but"), "{stderr}");
}

#[test]
fn a_patch_that_breaks_the_build_shows_the_file_and_the_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let patch = tmp.path().join("0001-broken.patch");
    // Lines joined explicitly: a diff's context lines start with a space,
    // which a string continuation would strip.
    let lines = [
        "From: Lab Test <lab@atomic-write-lab.invalid>",
        "Subject: [PATCH] fs: a patch that does not compile",
        "",
        "This patch is for the lab's tests: it must fail to build.",
        "---",
        "diff --git a/fs/read_write.c b/fs/read_write.c",
        "--- a/fs/read_write.c",
        "+++ b/fs/read_write.c",
        "@@ -1806,6 +1806,7 @@ int generic_atomic_write_valid(struct kiocb *iocb, struct iov_iter *iter)",
        " \tsize_t len = iov_iter_count(iter);",
        " ",
        " \tif (!iter_is_ubuf(iter))",
        "+\t\tlab_undeclared_symbol++;",
        " \t\treturn -EINVAL;",
        " ",
        " \tif (!is_power_of_2(len))",
        "-- ",
        "2.47.3",
        "",
    ];
    std::fs::write(&patch, lines.join("\n")).unwrap();
    let results = tmp.path().join("results");
    // --compare-base builds the base first, so the broken level builds
    // incrementally from it (the base is the other tests' too).
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--compare-base", "--series"])
            .arg(&patch)
            .arg("--results")
            .arg(&results)
            .arg("limits-4k"),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("build failed: fs/read_write.c:1809"),
        "{stderr}"
    );
    assert!(stderr.contains("lab_undeclared_symbol"), "{stderr}");
    assert!(stderr.contains("--- last lines of "), "{stderr}");
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let junit = read(&run.join("junit.xml"));
    assert!(junit.contains("name=\"kernel-build\""), "{junit}");
    assert!(junit.contains("fs/read_write.c:1809"), "{junit}");
}

#[test]
fn bisect_names_the_planted_patch_of_the_demo_series() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["bisect", "--series"])
            .arg(demo_series())
            .args(["--testcase", "atomic-misaligned-raw-64k", "--results"])
            .arg(&results),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("first bad patch: 3/4 fs: test atomic write alignment with a mask"),
        "{stdout}\n{stderr}"
    );
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let b: serde_json::Value = serde_json::from_str(&read(&run.join("bisect.json"))).unwrap();
    assert_eq!(b["outcome"], "first_bad");
    assert_eq!(b["first_bad"], 3);
    let steps = b["steps"].as_array().unwrap();
    let levels: Vec<u64> = steps.iter().map(|s| s["level"].as_u64().unwrap()).collect();
    assert_eq!(levels, [0, 4, 2, 3], "both ends first, then the middle");
    let verdicts: Vec<&str> = steps
        .iter()
        .map(|s| s["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["good", "bad", "good", "bad"]);
    assert!(b["builds"].as_u64().unwrap() <= b["max_builds"].as_u64().unwrap());
    assert_eq!(b["max_builds"], 4);
    // A good level passed 1 + retries times; a bad one stopped at the first failure.
    assert_eq!(steps[0]["tries"], 2);
    assert_eq!(steps[1]["tries"], 1);
    assert!(
        steps[1]["reason"]
            .as_str()
            .unwrap()
            .contains("expected EINVAL, got success"),
        "{}",
        steps[1]
    );
    // Every step keeps its build log, config and console.
    for s in steps {
        let d = run.join(s["dir"].as_str().unwrap());
        assert!(d.join("build.log").is_file(), "{}", d.display());
        assert!(d.join("config").is_file(), "{}", d.display());
        assert!(
            d.join("try-1/atomic-misaligned-raw-64k/console.log")
                .is_file(),
            "{}",
            d.display()
        );
    }
    // The culprit is confirmed: the whole series with 3/4 reverted passes
    // 1 + retries times (issue 18).
    assert!(
        stdout.contains("confirmed: reverting 3/4 fs: test atomic write alignment with a mask makes atomic-misaligned-raw-64k pass (2 of 2 runs passed)"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        b["confirmation"]["outcome"], "confirmed",
        "{}",
        b["confirmation"]
    );
    assert_eq!(b["confirmation"]["runs"]["passed"], 2);
    assert!(run
        .join("confirm/try-2/atomic-misaligned-raw-64k/console.log")
        .is_file());
    assert_eq!(b["flaky_levels"].as_array().unwrap().len(), 0);
    let junit = read(&run.join("junit.xml"));
    assert_eq!(junit.matches("<testcase ").count(), 5, "{junit}");
    assert!(junit.contains("level 3 (3/4 fs: test atomic write alignment with a mask)"));
    assert!(junit.contains("confirm (revert 3/4 fs: test atomic write alignment with a mask)"));
    // The reproduce line of a step builds exactly that level.
    let summary = read(&run.join("level-3/try-1/summary.json"));
    assert!(summary.contains("--upto 3"), "{summary}");
    // The bisection's page, in a browser: the culprit and the four steps.
    let page = check_page(&run);
    check_bisect_page(
        &page,
        "3/4 fs: test atomic write alignment with a mask",
        steps.len(),
    );
    keep_page(&page, "bisect-demo");
}

/// Two bad patches (issue 18): the series' 3/5 and 5/5 each let the same
/// misaligned atomic write through. The bisection names 3/5, and its
/// confirmation (the series with 3/5 reverted) still fails, which is said.
/// Levels 1-4 are the demo series' trees, so their builds are shared.
#[test]
fn bisect_with_two_bad_patches_names_the_first_and_does_not_confirm_it() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["bisect", "--accel", "tcg", "--retries", "0", "--series"])
            .arg(root().join("patches/demo-two-bad"))
            .args(["--testcase", "atomic-misaligned-raw-64k", "--results"])
            .arg(&results),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("first bad patch: 3/5 fs: test atomic write alignment with a mask"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("not confirmed: atomic-misaligned-raw-64k still fails with 3/5 fs: test atomic write alignment with a mask reverted (a later patch is also bad, or they interact)"),
        "{stdout}\n{stderr}"
    );
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let b: serde_json::Value = serde_json::from_str(&read(&run.join("bisect.json"))).unwrap();
    assert_eq!(b["first_bad"], 3);
    assert_eq!(b["confirmation"]["outcome"], "not_confirmed");
    assert!(
        b["confirmation"]["reason"]
            .as_str()
            .unwrap()
            .contains("expected EINVAL, got success"),
        "{}",
        b["confirmation"]
    );
    let junit = read(&run.join("junit.xml"));
    assert!(junit.contains("confirm (revert 3/5"), "{junit}");
    assert!(junit.contains("not confirmed:"), "{junit}");
}

/// A git history of a handful of commits on top of the lab's cached base
/// tree, made cheaply: a `--shared` clone of the cached tree (no objects
/// copied) with a sparse checkout of `fs/` only. Its commits reuse the demo
/// series' trees, so every commit but the broken one has a cached build:
///
///   base <- c1 demo 1+2/4 <- c2 does not compile <- c3 compiles again
///        <- c4 demo 3/4 (the planted bug) <- c5 demo 4/4
///
/// Made at a fixed path, so the cache's fetched refs are reused between
/// runs. Returns the tree, the base and every commit.
fn planted_history() -> (PathBuf, String, Vec<String>) {
    let t0 = std::time::Instant::now();
    let cache = std::env::var_os("LAB_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/lab"),
        PathBuf::from,
    );
    // The cached tree of the default source (made by any series build; a
    // config-only build of the base makes it if this test runs first).
    let cfg = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = output(
        lab()
            .args(["build", "--series"])
            .arg(demo_series())
            .args(["--upto", "0", "--config-only", "--out"])
            .arg(cfg.path()),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let tarball = std::fs::canonicalize(cache.join("src/default")).unwrap();
    let tar_name = tarball.file_name().unwrap().to_string_lossy().into_owned();
    let cached = std::fs::read_dir(cache.join("kernel/trees"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_none()
                && p.join(".git/lab-base").is_file()
                && git_out(
                    p,
                    &[
                        "log",
                        "-1",
                        "--format=%s",
                        read(&p.join(".git/lab-base")).trim(),
                    ],
                )
                .is_some_and(|s| s == tar_name)
        })
        .expect("the cached default tree");
    let base = read(&cached.join(".git/lab-base")).trim().to_string();
    let h = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bisect-history");
    let _ = std::fs::remove_dir_all(&h);
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            "--shared",
            "--no-checkout",
            &cached.to_string_lossy(),
            &h.to_string_lossy(),
        ],
    );
    git(&h, &["sparse-checkout", "set", "fs"]);
    git(&h, &["checkout", "-q", "--detach", &base]);
    git(&h, &["checkout", "-q", "-B", "planted"]);
    let patch = |n: &str| {
        std::fs::read_dir(demo_series())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(n))
            .unwrap()
    };
    let mut commits = Vec::new();
    git(
        &h,
        &[
            "am",
            "-q",
            &patch("0001").to_string_lossy(),
            &patch("0002").to_string_lossy(),
        ],
    );
    git(&h, &["reset", "-q", "--soft", "HEAD~2"]);
    git(
        &h,
        &[
            "commit",
            "-q",
            "-m",
            "fs: document and factor generic_atomic_write_valid()",
        ],
    );
    commits.push(git_out(&h, &["rev-parse", "HEAD"]).unwrap());
    let rw = h.join("fs/read_write.c");
    let good = read(&rw);
    std::fs::write(
        &rw,
        format!("{good}\nint lab_broken(void) {{ return lab_undeclared_symbol; }}\n"),
    )
    .unwrap();
    git(
        &h,
        &[
            "commit",
            "-q",
            "-a",
            "-m",
            "fs: a commit that does not compile",
        ],
    );
    commits.push(git_out(&h, &["rev-parse", "HEAD"]).unwrap());
    std::fs::write(&rw, &good).unwrap();
    git(&h, &["commit", "-q", "-a", "-m", "fs: compile again"]);
    commits.push(git_out(&h, &["rev-parse", "HEAD"]).unwrap());
    for n in ["0003", "0004"] {
        git(&h, &["am", "-q", &patch(n).to_string_lossy()]);
        commits.push(git_out(&h, &["rev-parse", "HEAD"]).unwrap());
    }
    eprintln!(
        "history of {} commits made in {:.1} s",
        commits.len(),
        t0.elapsed().as_secs_f64()
    );
    (h, base, commits)
}

/// git with a fixed identity and dates: the same history every run.
fn git_cmd(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("git");
    c.arg("-C").arg(dir).args(args);
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "Atomic Write Lab"),
        ("GIT_AUTHOR_EMAIL", "lab@atomic-write-lab.invalid"),
        ("GIT_AUTHOR_DATE", "@1700000000 +0000"),
        ("GIT_COMMITTER_NAME", "Atomic Write Lab"),
        ("GIT_COMMITTER_EMAIL", "lab@atomic-write-lab.invalid"),
        ("GIT_COMMITTER_DATE", "@1700000000 +0000"),
    ] {
        c.env(k, v);
    }
    c
}

fn git(dir: &Path, args: &[&str]) {
    let (code, stdout, stderr) = output(&mut git_cmd(dir, args));
    assert_eq!(code, Some(0), "git {args:?}: {stdout}{stderr}");
}

fn git_out(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_cmd(dir, args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Commit ranges and `git bisect run` over one planted history (issue 18):
/// `lab bisect --good --bad` names the planted commit (id and subject),
/// skipping the commit that does not compile, and confirms it by revert;
/// `git bisect run lab run --bisect-exit --kernel-tree .` ends on the same
/// commit, the broken one skipped with 125 rather than aborting.
#[test]
fn commit_range_and_git_bisect_run_name_the_planted_commit() {
    let (h, base, commits) = planted_history();
    let (broken, planted) = (&commits[1], &commits[3]);
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args([
                "bisect",
                "--accel",
                "tcg",
                "--retries",
                "0",
                "--kernel-tree",
            ])
            .arg(&h)
            .args(["--good", &base, "--bad", "planted"])
            .args(["--testcase", "atomic-misaligned-raw-64k", "--results"])
            .arg(&results),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let named = format!(
        "first bad commit: {} fs: test atomic write alignment with a mask",
        &planted[..12]
    );
    assert!(stdout.contains(&named), "{named}\n{stdout}\n{stderr}");
    assert!(stdout.contains("confirmed: reverting"), "{stdout}");
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let b: serde_json::Value = serde_json::from_str(&read(&run.join("bisect.json"))).unwrap();
    assert_eq!(b["mode"], "commits");
    assert_eq!(b["first_bad_commit"], planted.as_str());
    assert_eq!(b["confirmation"]["outcome"], "confirmed");
    let steps = b["steps"].as_array().unwrap();
    let skipped: Vec<&serde_json::Value> =
        steps.iter().filter(|s| s["verdict"] == "skip").collect();
    assert_eq!(skipped.len(), 1, "{steps:#?}");
    assert_eq!(skipped[0]["commit"], broken.as_str());
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("lab_undeclared_symbol"),
        "{}",
        skipped[0]
    );
    // A step's reproduce line builds exactly that commit.
    let summary = read(&run.join("level-4/try-1/summary.json"));
    assert!(summary.contains(&format!("--rev {planted}")), "{summary}");

    // git bisect run, from inside the tree, as its documentation says.
    let results2 = tmp.path().join("results-git");
    git(&h, &["bisect", "start", "planted", &base]);
    let (code, stdout, stderr) = output(
        git_cmd(
            &h,
            &[
                "bisect",
                "run",
                env!("CARGO_BIN_EXE_lab"),
                "run",
                "--bisect-exit",
                "--accel",
                "tcg",
                "--kernel-tree",
                ".",
                "--results",
                &results2.to_string_lossy(),
                "atomic-misaligned-raw-64k",
            ],
        )
        .env("LAB_ROOT", root()),
    );
    let log = git_out(&h, &["bisect", "log"]).unwrap_or_default();
    git(&h, &["bisect", "reset"]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!("{planted} is the first bad commit")),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        log.contains(&format!("git bisect skip {broken}")),
        "{log}\n{stderr}"
    );
    assert!(
        stderr.contains("lab: --bisect-exit: exit 125 (skip"),
        "{stderr}"
    );
}

#[test]
fn run_compare_base_reports_only_regressions() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--series"])
            .arg(demo_series())
            .args(["--compare-base", "--results"])
            .arg(&results)
            .args(["atomic-misaligned-raw-64k", "atomic-errors-raw-4k"]),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let run = std::fs::canonicalize(results.join("latest")).unwrap();
    let v = summary_of(&results);
    assert_eq!(run_prop(&v, "compare_base"), "true");
    assert_eq!(run_prop(&v, "series.patches"), "4");
    let failed: Vec<String> = v
        .suites
        .iter()
        .flat_map(|s| &s.results)
        .filter(|r| r.outcome.label() == "failed")
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(
        failed.iter().all(|f| f.contains("regression:")),
        "{failed:#?}"
    );
    for sub in [
        "patched/summary.json",
        "base/summary.json",
        "kernel/build.log",
        "base/kernel/config",
    ] {
        assert!(run.join(sub).is_file(), "{sub}");
    }
}

/// A durability bug only a sweep sees (issue 15's acceptance): our planted
/// patch makes fdatasync skip the XFS log force, so an allocating write's
/// data is lost if the power goes after the fdatasync returned and before
/// a later fsync forced the log. On that kernel, single cuts placed before
/// the fdatasync and after the fsync both pass; the sweep, with no cut
/// placed by hand, fails at the cut point after the fdatasync and names
/// it.
#[test]
fn a_sweep_finds_the_planted_fdatasync_bug_that_single_cuts_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = read(&root().join("testcases/powercut-sweep-fdatasync-xfs-4k.yaml"));
    assert!(sweep.contains("sweep: { every: sync }"));
    let cases = tmp.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::write(cases.join("sweep.yaml"), &sweep).unwrap();
    for (name, at) in [("before-fdatasync", "written"), ("after-fsync", "end")] {
        let text = sweep
            .replace(
                "name: powercut-sweep-fdatasync-xfs-4k",
                &format!("name: single-cut-{name}"),
            )
            .replace("sweep: { every: sync }", &format!("at: {{ mark: {at} }}"));
        std::fs::write(cases.join(format!("{name}.yaml")), text).unwrap();
    }
    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--series"])
            .arg(root().join("patches/xfs-fdatasync-planted"))
            .arg("--testcases")
            .arg(&cases)
            .arg("--results")
            .arg(&results),
    );
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let v = summary_of(&results);
    let suite = |name: &str| {
        v.suites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {stdout}"))
    };
    for single in ["single-cut-before-fdatasync", "single-cut-after-fsync"] {
        let s = suite(single);
        let failed: Vec<_> = s
            .results
            .iter()
            .filter(|r| r.outcome.label() != "passed")
            .collect();
        assert!(failed.is_empty(), "{single} misses the bug: {failed:?}");
    }
    let s = suite("powercut-sweep-fdatasync-xfs-4k");
    let caught: Vec<String> = s
        .results
        .iter()
        .filter(|r| r.check.starts_with("sweep.cut-") && r.outcome.label() == "failed")
        .map(|r| format!("{:?}", r.outcome))
        .collect();
    assert!(!caught.is_empty(), "the sweep missed it: {stdout}");
    assert!(
        caught.iter().any(
            |m| m.contains("data made durable by a completed sync was lost")
                || m.contains("is missing")
        ),
        "{caught:#?}"
    );
    assert!(
        caught
            .iter()
            .all(|m| m.contains("after `step 4 fdatasync()` ended")),
        "only the moment between the fdatasync and the fsync: {caught:#?}"
    );
}

/// `lab build` writes a kernel directory another machine can boot: the demo
/// series' bad end (built by the bisection test, or incrementally here),
/// then `lab run --kernel DIR` runs on it without building, and the
/// results name the artifact, the series level and the commit it ran.
#[test]
fn build_writes_a_kernel_directory_that_run_boots_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let kdir = tmp.path().join("kernel");
    let (code, stdout, stderr) = output(
        lab()
            .args(["build", "--series"])
            .arg(demo_series())
            .args(["--upto", "3", "--out"])
            .arg(&kdir),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for f in ["vmlinuz", "release", "config", "build.json"] {
        assert!(kdir.join(f).is_file(), "{f} missing in {}", kdir.display());
    }
    let meta: serde_json::Value = serde_json::from_str(&read(&kdir.join("build.json"))).unwrap();
    assert_eq!(
        meta["level"],
        "3/4 fs: test atomic write alignment with a mask"
    );
    assert_eq!(meta["level_index"], 3);
    let artifact = meta["artifact"].as_str().unwrap().to_string();
    assert!(!artifact.is_empty());

    let results = tmp.path().join("results");
    let (code, stdout, stderr) = output(
        lab()
            .args(["run", "--kernel"])
            .arg(&kdir)
            .arg("--results")
            .arg(&results)
            .arg("atomic-misaligned-raw-64k"),
    );
    // The planted patch is in: the testcase fails, on this kernel, with no build.
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("building kernel"), "{stderr}");
    let v = summary_of(&results);
    assert_eq!(run_prop(&v, "kernel.artifact"), artifact);
    assert_eq!(
        run_prop(&v, "kernel.level"),
        "3/4 fs: test atomic write alignment with a mask"
    );
    assert_eq!(
        run_prop(&v, "kernel.commit"),
        meta["commit"].as_str().unwrap()
    );
}

/// `--kconfig distro` takes the default kernel's own config as its base:
/// configured only (a full build of it belongs in `lab bench kernel`), the
/// config holds what Debian's has and tinyconfig lacks, the lab's
/// essentials built in, no debug info, and base-changes.txt says what the
/// lab changed.
#[test]
fn distro_config_is_the_default_kernels_own_with_the_labs_essentials() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cfg");
    let (code, stdout, stderr) = output(
        lab()
            .args(["build", "--kconfig", "distro", "--config-only", "--out"])
            .arg(&out),
    );
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        !out.join("vmlinuz").exists(),
        "configure only: nothing built"
    );
    let config = read(&out.join("config"));
    for line in [
        // Debian's, off in tinyconfig and not in lab.config:
        "CONFIG_IMA=y",
        "CONFIG_NUMA=y",
        "CONFIG_MODULES=y",
        // The lab's essentials, modules in Debian's config, built in here:
        "CONFIG_XFS_FS=y",
        "CONFIG_VIRTIO_NET=y",
        "CONFIG_TRANSPARENT_HUGEPAGE=y",
        "CONFIG_DEBUG_INFO_NONE=y",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "{line} missing in {}",
            out.join("config").display()
        );
    }
    let changes = read(&out.join("base-changes.txt"));
    assert!(changes.contains("  CONFIG_XFS_FS: m -> y\n"), "{changes}");
    assert!(
        changes.contains("  CONFIG_DEBUG_INFO_BTF: y -> not set\n"),
        "{changes}"
    );
    assert!(stderr.contains("lab: distro config: "), "{stderr}");
    assert!(stdout.contains("not built"), "{stdout}");
}

/// The kernel tree's lock covers what changes the tree (a series applied,
/// a build), not a run's testcases: with every tree lock held by someone
/// else, a run on a series built before goes ahead instead of waiting.
#[test]
fn a_run_on_a_built_series_does_not_wait_for_the_tree_lock() {
    use std::os::fd::AsRawFd;
    let tmp = tempfile::tempdir().unwrap();
    let run = |results: &Path| {
        let mut c = lab();
        c.args(["run", "-j", "1", "--series"])
            .arg(demo_series())
            .arg("--results")
            .arg(results)
            .arg("atomic-errors-raw-4k");
        c
    };
    // Built (or found in the cache) without anyone else holding a lock.
    let (code, stdout, stderr) = output(&mut run(&tmp.path().join("first")));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let trees = std::env::var_os("LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/lab"))
        .join("kernel/trees");
    let held: Vec<std::fs::File> = std::fs::read_dir(&trees)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lock"))
        .map(|p| {
            let f = std::fs::File::open(&p).unwrap();
            // SAFETY: flock on a descriptor we own; released when it closes.
            assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
            f
        })
        .collect();
    assert!(!held.is_empty(), "no tree lock in {}", trees.display());
    let mut child = run(&tmp.path().join("second"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A run that waited would never end while the locks are held: give it
    // far longer than it needs, then look.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    drop(held);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(finished, "the run waited for the tree lock:\n{stderr}");
    assert!(!stderr.contains("waiting for another lab"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
