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

/// A run's HTML page as headless Chromium showed it.
pub struct Page {
    /// The page's file (`<run>/index.html`).
    pub path: PathBuf,
    /// The DOM after loading (`--dump-dom`), as HTML.
    pub dom: String,
    /// What a person reads: the DOM's text, tags dropped, entities decoded.
    pub text: String,
    /// The screenshot kept beside the page (`index.png`).
    pub screenshot: PathBuf,
}

/// Debian's Chromium (`LAB_CHROMIUM` to use another). No skip: without a
/// browser the page tests fail and say how to get one.
pub fn chromium() -> PathBuf {
    let name = std::env::var("LAB_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(&name))
        .chain(std::iter::once(PathBuf::from(&name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `{name}` on PATH: the HTML page tests open the page in headless Chromium; \
                 run `scripts/setup.sh test` (it installs Debian's chromium) or \
                 `apt-get install --no-install-recommends chromium`"
            )
        })
}

/// Headless Chromium on `url` with its own profile; returns stdout and
/// stderr. `--enable-logging=stderr --v=0` makes it print every console
/// message (CSP violations included) as an `INFO:CONSOLE` line: the page
/// has no script, so any such line is an error. No DevTools protocol.
fn run_chromium(extra: &[String], url: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["-k", "10", "120"])
        .arg(chromium())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "chromium {extra:?} {url}: {:?}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `%XX` escapes of a link back to bytes.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text of an HTML document: tags dropped, the entities the lab and
/// Chromium write decoded.
pub fn visible_text(dom: &str) -> String {
    let mut text = String::with_capacity(dom.len());
    let mut in_tag = false;
    for ch in dom.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Every value of attribute `name` in an HTML text.
fn attr_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let pat = format!(" {name}=\"");
    html.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &html[i + pat.len()..];
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
        .collect()
}

/// Opens `<run>/index.html` in headless Chromium and checks what any page
/// must be: under 2 MB, no script, no console message, every link and
/// source either an anchor on the page or a file in the results directory
/// (nothing on the network), and keeps a screenshot as `<run>/index.png`.
/// Returns the page as the browser has it for the caller's own checks.
pub fn check_page(run: &Path) -> Page {
    let page = run.join("index.html");
    let size = std::fs::metadata(&page)
        .unwrap_or_else(|e| panic!("{}: {e} (every run writes its page)", page.display()))
        .len();
    assert!(
        size < 2 << 20,
        "{}: {size} bytes, over 2 MB",
        page.display()
    );
    let url = format!("file://{}", std::fs::canonicalize(&page).unwrap().display());
    let (dom, stderr) = run_chromium(&["--dump-dom".into()], &url);
    assert!(dom.contains("</html>"), "no DOM from chromium:\n{stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(
        console.is_empty(),
        "console messages on {}:\n{}",
        page.display(),
        console.join("\n")
    );
    let lower = dom.to_lowercase();
    for tag in ["<script", "<iframe", "<object", "<embed", "<img"] {
        assert!(!lower.contains(tag), "{tag} in {}", page.display());
    }
    for link in attr_values(&dom, "href")
        .into_iter()
        .chain(attr_values(&dom, "src"))
    {
        if let Some(id) = link.strip_prefix('#') {
            assert!(
                dom.contains(&format!("id=\"{id}\"")),
                "{}: link to #{id}, which is not on the page",
                page.display()
            );
            continue;
        }
        let scheme = link
            .split_once(':')
            .is_some_and(|(s, _)| !s.contains('/') && !s.is_empty());
        assert!(
            !scheme && !link.starts_with("//"),
            "{}: reference {link} leaves the results directory",
            page.display()
        );
        let target = run.join(percent_decode(link.split('#').next().unwrap()));
        assert!(
            target.exists(),
            "{}: broken reference {link} ({} does not exist)",
            page.display(),
            target.display()
        );
    }
    let screenshot = run.join("index.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,2000".into(),
        ],
        &url,
    );
    let png =
        std::fs::read(&screenshot).unwrap_or_else(|e| panic!("{}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        screenshot.display()
    );
    let text = visible_text(&dom);
    Page {
        path: page,
        dom,
        text,
        screenshot,
    }
}

/// What the page of a bisection that named `culprit` (a patch's label,
/// `3/4 subject`) in `steps` steps shows: the culprit, the strip of steps
/// with their verdicts and times, the reproduce line.
pub fn check_bisect_page(page: &Page, culprit: &str, steps: usize) {
    assert!(
        page.text.contains(&format!("first bad patch: {culprit}")),
        "{}: the culprit is not named",
        page.path.display()
    );
    assert!(page.dom.contains("class=\"culprit\""));
    assert_eq!(
        page.dom.matches("<div class=\"step ").count(),
        steps,
        "{}: one box per step",
        page.path.display()
    );
    assert!(page.dom.contains("class=\"step good\""));
    assert!(page.dom.contains("class=\"step bad\""));
    assert!(page.text.contains("build ") && page.text.contains("test "));
    assert!(page.text.contains("lab bisect "), "no reproduce line");
    // A culprit's confirmation (the revert's runs) is on the page in words.
    let bisect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(page.path.with_file_name("bisect.json")).unwrap(),
    )
    .unwrap();
    if let Some(message) = bisect["confirmation"]["message"].as_str() {
        assert!(
            page.text.contains(message),
            "{}: the confirmation is not shown: {message}",
            page.path.display()
        );
    }
}

/// Copies a checked page and its screenshot to
/// `target/tmp/report-pages/<name>/`, where they outlive the test's
/// temporary results directory.
pub fn keep_page(page: &Page, name: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("report-pages")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&page.path, dir.join("index.html")).unwrap();
    std::fs::copy(&page.screenshot, dir.join("index.png")).unwrap();
    eprintln!("page kept: {}", dir.display());
}
