//! The run's HTML page (`results/<run-id>/index.html`): one self-contained
//! file with inline CSS and SVG, no script, no network reference.
//!
//! Pure: the caller (lab-cli's `report::page`) reads the results directory
//! into a [`Page`]; this turns it into a `String`. Everything that comes
//! from a run (testcase and check names, messages, console output, patch
//! subjects, paths) is untrusted text and goes through [`esc`], in element
//! text and attribute values alike; the page also carries a
//! Content-Security-Policy that allows no script and no load at all, so a
//! mistake here shows as an inert string, not as code.

use std::fmt::Write as _;

use crate::bisect::{BisectReport, Confirmation, LevelVerdict};
use crate::report::{Outcome, RunReport, SuiteReport};

/// Everything the page shows.
pub struct Page<'a> {
    pub run: &'a RunReport,
    /// Extras per testcase run, matched to `run.suites` by name.
    pub cases: Vec<CaseView>,
    pub bisect: Option<BisectPage>,
    /// `--compare-base`: the patched run's failures against the base.
    pub compare: Option<Vec<CompareRow>>,
}

/// What the results directory holds for one testcase besides its results.
#[derive(Debug, Clone, Default)]
pub struct CaseView {
    pub suite: String,
    /// Relative link to its console log, when the file exists.
    pub console_href: Option<String>,
    /// The console's last lines (shown for failures and errors).
    pub console_tail: Option<String>,
    pub timeline: Option<Timeline>,
    /// One per file of each failing crash state kept for `lab verify`.
    pub sector_maps: Vec<SectorMap>,
    /// A sweep's cut points (crash/sweep.jsonl).
    pub sweep: Vec<SweepPoint>,
}

/// The device writes around the power cut, from crash/record.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub writes: Vec<TimelineWrite>,
    pub cut_s: f64,
    pub cut_reason: String,
    pub marks: Vec<(String, f64)>,
    /// Writes left out before and after the window shown.
    pub hidden_before: usize,
    pub hidden_after: usize,
    /// Totals over the whole record.
    pub acknowledged: usize,
    pub in_flight: usize,
    pub after: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimelineWrite {
    pub seq: u64,
    pub received_s: f64,
    pub acked_s: Option<f64>,
    pub offset: u64,
    pub len: u32,
    pub state: WriteState,
    /// The guest write it carries (`step 2 pwritev2(...)`), if known.
    pub describe: Option<String>,
}

/// Where a device write stands at the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    /// Completed by the cut: on the media in every crash state.
    Acknowledged,
    /// Received, not completed: any subset may have landed (torn where not
    /// atomic).
    InFlight,
    /// Received after the cut (a sweep's later writes, or the run's tail).
    After,
}

impl WriteState {
    /// What the crash disk's rules make of a write: `seq` below the cut's
    /// `writes_before` was received by the cut; acknowledged by then means
    /// durable (the namespace's write cache is off, every write is FUA).
    pub fn at_cut(seq: u64, acked_s: Option<f64>, cut_s: f64, writes_before: u64) -> WriteState {
        if seq >= writes_before {
            WriteState::After
        } else if acked_s.is_some_and(|a| a <= cut_s) {
            WriteState::Acknowledged
        } else {
            WriteState::InFlight
        }
    }

    fn class(self) -> &'static str {
        match self {
            WriteState::Acknowledged => "ack",
            WriteState::InFlight => "infl",
            WriteState::After => "after",
        }
    }

    fn words(self) -> &'static str {
        match self {
            WriteState::Acknowledged => "acknowledged before the cut",
            WriteState::InFlight => "in flight at the cut",
            WriteState::After => "after the cut",
        }
    }
}

impl Timeline {
    /// The window shown: the `before` last writes received before the cut
    /// (every in-flight one among them, however old) and the `after` first
    /// ones after it. `writes` is in arrival order.
    pub fn around_cut(
        writes: Vec<TimelineWrite>,
        cut_s: f64,
        cut_reason: String,
        marks: Vec<(String, f64)>,
        before: usize,
        after: usize,
    ) -> Timeline {
        let count = |s: WriteState| writes.iter().filter(|w| w.state == s).count();
        let (acknowledged, in_flight, after_n) = (
            count(WriteState::Acknowledged),
            count(WriteState::InFlight),
            count(WriteState::After),
        );
        let first_after = writes
            .iter()
            .position(|w| w.state == WriteState::After)
            .unwrap_or(writes.len());
        let oldest_in_flight = writes
            .iter()
            .position(|w| w.state == WriteState::InFlight)
            .unwrap_or(first_after);
        let from = first_after.saturating_sub(before).min(oldest_in_flight);
        let to = (first_after + after).min(writes.len());
        let total = writes.len();
        let shown: Vec<TimelineWrite> = writes.into_iter().skip(from).take(to - from).collect();
        Timeline {
            writes: shown,
            cut_s,
            cut_reason,
            marks,
            hidden_before: from,
            hidden_after: total - to,
            acknowledged,
            in_flight,
            after: after_n,
        }
    }
}

/// One file of a failing crash state, sector by sector.
#[derive(Debug, Clone, PartialEq)]
pub struct SectorMap {
    /// `state-2`, `cut-004-state-1`: the kept directory's name.
    pub state: String,
    pub recipe: String,
    pub file: String,
    /// None: the file does not exist in this state.
    pub size: Option<u64>,
    /// Sector i covers bytes [512 i, 512 (i + 1)) of the file, as far as
    /// the state or the log reaches.
    pub sectors: Vec<Cell>,
    /// The model's findings in this file: rule in words, byte range.
    pub violations: Vec<MapViolation>,
    /// `lab verify DIR` for this state.
    pub verify: String,
    /// Other kept states whose map of this file is the same (not drawn
    /// again).
    pub also: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MapViolation {
    pub rule: String,
    pub from: u64,
    pub to: u64,
    pub message: String,
}

/// One sector: what the state holds and whether the model allowed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub kind: CellKind,
    /// The write whose stamp it holds (or, for zeroes and missing sectors,
    /// the newest write the log has there).
    pub write: Option<String>,
    /// Inside a range the model refused.
    pub refused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CellKind {
    /// The newest write the log has at this place.
    New,
    /// An older write at this place.
    Old,
    Zeroes,
    /// A stamped write whose other sectors (of one atomic write) are not
    /// all there: the write is torn here.
    Torn,
    /// Neither zeroes nor a valid stamp.
    Garbage,
    /// Another place's (or file's) data.
    Misplaced,
    /// Beyond the file's end, or the file is missing.
    Missing,
}

impl CellKind {
    fn class(self) -> &'static str {
        match self {
            CellKind::New => "new",
            CellKind::Old => "old",
            CellKind::Zeroes => "zero",
            CellKind::Torn => "torn",
            CellKind::Garbage => "garb",
            CellKind::Misplaced => "misp",
            CellKind::Missing => "miss",
        }
    }

    fn words(self) -> &'static str {
        match self {
            CellKind::New => "new data (the newest write here)",
            CellKind::Old => "old data (an older write)",
            CellKind::Zeroes => "zeroes",
            CellKind::Torn => "part of a torn atomic write",
            CellKind::Garbage => "garbage (no valid stamp)",
            CellKind::Misplaced => "another place's data",
            CellKind::Missing => "missing (beyond the end, or no file)",
        }
    }

    const ALL: [CellKind; 7] = [
        CellKind::New,
        CellKind::Old,
        CellKind::Zeroes,
        CellKind::Torn,
        CellKind::Garbage,
        CellKind::Misplaced,
        CellKind::Missing,
    ];
}

/// One cut point of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    pub name: String,
    pub at_s: f64,
    pub described: String,
    pub states: usize,
    pub failed: usize,
    pub unchecked: usize,
}

/// A bisection's page: its bisect.json, and per step the files worth a
/// click (label, path relative to the bisection's directory: build log,
/// build error, each try's console), filled by the reader with the files
/// that exist.
#[derive(Debug, Clone, Default)]
pub struct BisectPage {
    pub report: BisectReport,
    pub links: Vec<Vec<(String, String)>>,
}

/// A check the patched kernel failed, and what the base did.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    pub case: String,
    pub check: String,
    /// `passed`, `failed`, `skipped`, `error`, or `not run`.
    pub base: String,
    pub regression: bool,
    pub message: String,
}

/// Every failure of the patched run against the base run: a regression
/// unless the base failed it too (matched by testcase and check name, as
/// `report::regressions_only` matches them).
pub fn compare_rows(patched: &RunReport, base: &RunReport) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    for s in &patched.suites {
        for r in &s.results {
            let Outcome::Failed { message, .. } = &r.outcome else {
                continue;
            };
            let b = base
                .suites
                .iter()
                .filter(|b| b.name == s.name)
                .flat_map(|b| &b.results)
                .find(|b| b.check == r.check)
                .map(|b| &b.outcome);
            rows.push(CompareRow {
                case: s.name.clone(),
                check: r.check.clone(),
                base: b.map_or("not run", Outcome::label).to_string(),
                regression: !matches!(b, Some(Outcome::Failed { .. })),
                message: message.clone(),
            });
        }
    }
    rows
}

/// Text for HTML element content and (double- or single-quoted) attribute
/// values. Control characters other than newline and tab become U+FFFD so
/// a console's escape sequences cannot upset the page.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + s.len() / 8);
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\n' | '\t' => o.push(ch),
            c if c.is_control() => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// A relative link inside the results directory, as an attribute value:
/// each path segment percent-encoded where a URL needs it, so a testcase
/// name with `#`, `?` or `"` still names its own file.
pub fn href(rel: &str) -> String {
    let mut o = String::new();
    for b in rel.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                o.push(b as char)
            }
            _ => {
                let _ = write!(o, "%{b:02X}");
            }
        }
    }
    o
}

/// `lab verify ...` commands a failure message names.
pub fn verify_commands(message: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = message;
    while let Some(i) = rest.find("lab verify ") {
        let tail = &rest[i..];
        let end = tail.find([')', '\n']).unwrap_or(tail.len());
        v.push(tail[..end].trim_end().to_string());
        rest = &tail[end..];
    }
    v
}

/// Seconds for a table cell.
fn secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s >= 60.0 => format!("{}m{:02.0}s", (s / 60.0).floor(), s % 60.0),
        Some(s) => format!("{s:.1}s"),
        None => "-".into(),
    }
}

fn prop_f64(s: &SuiteReport, key: &str) -> Option<f64> {
    s.property(key).and_then(|v| v.parse().ok())
}

/// A testcase's time: boot (to SSH, or the clean slate's reset of a reused
/// VM), verification (the verifier VMs) and the workload (the workload, the
/// cut, the device-level checks: `time.workload_s` less verification), and
/// the total (`time.total_s`). Results written before those properties
/// existed get the total from the sum of their checks and the workload as
/// the rest.
pub fn time_split(s: &SuiteReport) -> (Option<f64>, Option<f64>, Option<f64>, f64) {
    let boot = prop_f64(s, "boot_to_ssh_s").or_else(|| prop_f64(s, "vm.reset_s"));
    let verify = prop_f64(s, "verify.total_s");
    let total = prop_f64(s, "time.total_s")
        .unwrap_or_else(|| s.results.iter().map(|r| r.duration_s.max(0.0)).sum());
    let workload = match prop_f64(s, "time.workload_s") {
        Some(w) => Some((w - verify.unwrap_or(0.0)).max(0.0)),
        None => {
            (total > 0.0).then(|| (total - boot.unwrap_or(0.0) - verify.unwrap_or(0.0)).max(0.0))
        }
    };
    (boot, workload, verify, total)
}

/// The worst outcome of a testcase run, as the terminal labels it.
pub fn worst(s: &SuiteReport) -> &'static str {
    let w = s
        .results
        .iter()
        .map(|r| r.outcome.severity())
        .max()
        .unwrap_or(0);
    ["pass", "skip", "fail", "error"][w]
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header,main{max-width:1200px;margin:0 auto;padding:12px 20px}
header{background:#1d2330;color:#fff;max-width:none}
header h1{font-size:20px;margin:4px 0}
h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border:1px solid #d5d9e0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eceff3}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre,code{font:12px/1.35 ui-monospace,"DejaVu Sans Mono",monospace}
pre{background:#fff;border:1px solid #d5d9e0;padding:6px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:4px 0}
.b{display:inline-block;padding:0 6px;border-radius:3px;font-weight:600;font-size:12px;color:#fff}
.b.pass,.b.good{background:#2e7d32}.b.fail,.b.bad{background:#c62828}.b.skip{background:#8d6e00}.b.error{background:#6a1b9a}
.totals span{margin-right:14px}
.case{background:#fff;border:1px solid #d5d9e0;padding:6px 12px;margin:10px 0}
.case.fail{border-left:5px solid #c62828}.case.error{border-left:5px solid #6a1b9a}
.rule{font-weight:600}
.kv td:first-child{width:170px;color:#555}
svg{background:#fff;display:block;max-width:100%;height:auto}
.ack{fill:#43a047}.infl{fill:#fb8c00}.after{fill:#b0bec5}
.new{fill:#43a047}.old{fill:#90caf9}.zero{fill:#fff;stroke:#9e9e9e}.torn{fill:#fb8c00}.garb{fill:#6d4c41}.misp{fill:#8e24aa}.miss{fill:#eceff1;stroke:#cfd8dc}
.refused{stroke:#d50000;stroke-width:2}
.cut{stroke:#d50000;stroke-width:2}.mark{stroke:#1565c0;stroke-dasharray:3 2}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px;border:1px solid #9e9e9e}
.strip{display:flex;gap:6px;flex-wrap:wrap}
.step{border:1px solid #d5d9e0;background:#fff;padding:4px 8px;flex:0 1 260px;font-size:12px}
.step.good{border-top:5px solid #2e7d32}.step.bad{border-top:5px solid #c62828}.step.skip{border-top:5px solid #8d6e00}
.culprit{background:#fdecea;border:1px solid #c62828;padding:8px;font-size:15px}
.muted{color:#666}
"#;

/// The sector maps' grid: a white line right and below each 12 px cell,
/// drawn over runs of like sectors (defined once for the page).
const CELLS: &str = "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs><pattern id=\"cells\" width=\"12\" height=\"12\" x=\"2\" y=\"2\" patternUnits=\"userSpaceOnUse\"><path d=\"M11 0V12M0 11H12\" stroke=\"#fff\" stroke-width=\"2\"/></pattern></defs></svg>\n";

/// Legend swatch colours (the same as the CSS classes; a legend is HTML).
fn swatch(class: &str) -> &'static str {
    match class {
        "ack" | "new" => "#43a047",
        "infl" | "torn" => "#fb8c00",
        "after" => "#b0bec5",
        "old" => "#90caf9",
        "zero" => "#ffffff",
        "garb" => "#6d4c41",
        "misp" => "#8e24aa",
        _ => "#eceff1",
    }
}

/// The whole page.
pub fn render(page: &Page) -> String {
    let run = page.run;
    let mut o = String::with_capacity(64 * 1024);
    let title = match &page.bisect {
        Some(b) => format!("lab bisect {} ({})", b.report.testcase, run.run_id),
        None => format!("lab run {}", run.run_id),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{}</title><style>{CSS}</style></head><body>\n{CELLS}",
        esc(&title)
    );
    let c = run.counts();
    let _ = write!(
        o,
        "<header><h1>{}</h1><div class=\"totals\"><span>{} testcase(s)</span><span>checks: {} passed</span><span>{} failed</span><span>{} skipped</span><span>{} errors</span>{}</div></header>\n<main>\n",
        esc(&title),
        run.suites.len(),
        c.passed,
        c.failed,
        c.skipped,
        c.errors,
        if run.interrupted {
            "<span><b>interrupted: partial results</b></span>"
        } else {
            ""
        }
    );
    run_header(&mut o, run);
    if let Some(b) = &page.bisect {
        bisect_section(&mut o, b);
    }
    if let Some(rows) = &page.compare {
        compare_section(&mut o, rows);
    }
    case_table(&mut o, page);
    for (i, s) in run.suites.iter().enumerate() {
        let view = page.cases.iter().find(|v| v.suite == s.name);
        case_section(&mut o, i, s, view);
    }
    o.push_str("<p class=\"muted\">Written by the lab; every file named here is in this run's results directory.</p>\n</main></body></html>\n");
    o
}

fn kv(o: &mut String, k: &str, v: &str) {
    if !v.is_empty() {
        let _ = writeln!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
}

fn run_header(o: &mut String, run: &RunReport) {
    let p = |k: &str| run.property(k).unwrap_or("").to_string();
    o.push_str("<h2>Run</h2><table class=\"kv\">\n");
    kv(o, "run id", &run.run_id);
    kv(o, "started", &run.started_at);
    let kernel = [p("kernel.release"), p("kernel.path")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" — ");
    kv(o, "kernel", &kernel);
    kv(o, "kernel source", &p("kernel.source"));
    kv(o, "series", &p("series"));
    kv(o, "level", &p("kernel.level"));
    kv(o, "config", &p("kernel.config"));
    kv(o, "commit", &p("kernel.commit"));
    let qemu = match (p("qemu.version"), p("qemu.source")) {
        (v, s) if s.is_empty() => v,
        (v, s) => format!("{v} ({s})"),
    };
    kv(o, "QEMU", &qemu);
    let accel = match (p("accel"), p("accel.reason")) {
        (a, r) if r.is_empty() => a,
        (a, r) => format!("{a} ({r})"),
    };
    kv(o, "accelerator", &accel);
    kv(o, "shard", &p("run.shard"));
    kv(o, "command", &p("command"));
    o.push_str("</table>\n");
    if !run.reproduce.is_empty() {
        let _ = writeln!(
            o,
            "<h3>Reproduce</h3><pre><code>{}</code></pre>",
            esc(&run.reproduce)
        );
    }
    if !run.properties.is_empty() {
        o.push_str("<details><summary>all run properties</summary><table class=\"kv\">\n");
        for (k, v) in &run.properties {
            kv(o, k, v);
        }
        o.push_str("</table></details>\n");
    }
}

fn badge(label: &str) -> String {
    format!("<span class=\"b {0}\">{0}</span>", esc(label))
}

fn anchor(i: usize) -> String {
    format!("case-{i}")
}

fn case_table(o: &mut String, page: &Page) {
    if page.run.suites.is_empty() {
        o.push_str("<p>No testcase ran.</p>\n");
        return;
    }
    o.push_str("<h2>Testcases</h2><table><tr><th>testcase</th><th>outcome</th><th>checks</th><th>boot</th><th>workload</th><th>verification</th><th>total</th><th>power cut</th></tr>\n");
    for (i, s) in page.run.suites.iter().enumerate() {
        let passed = s
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count();
        let (boot, work, verify, total) = time_split(s);
        let cut = match (
            s.property("sweep.cut_points"),
            s.property("power_cut.policy"),
        ) {
            (Some(points), _) => format!(
                "sweep every {}: {points} cut points, {} failing",
                s.property("sweep.every").unwrap_or("?"),
                s.property("sweep.cut_points_failed").unwrap_or("?")
            ),
            (None, Some(p)) => match s.property("power_cut.states") {
                Some(states) => format!("{p}, {states} states"),
                None => p.to_string(),
            },
            (None, None) => String::new(),
        };
        let _ = writeln!(
            o,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td class=\"n\">{passed}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            anchor(i),
            esc(&s.name),
            badge(worst(s)),
            s.results.len(),
            match s.property("vm.reused_after") {
                Some(_) => format!("{} (reset)", secs(boot)),
                None => secs(boot),
            },
            secs(work),
            secs(verify),
            secs(Some(total)),
            esc(&cut)
        );
    }
    o.push_str("</table>\n");
}

fn case_section(o: &mut String, i: usize, s: &SuiteReport, view: Option<&CaseView>) {
    let w = worst(s);
    let has_pictures = view
        .is_some_and(|v| v.timeline.is_some() || !v.sector_maps.is_empty() || !v.sweep.is_empty());
    // A passing testcase without pictures is its table row; the page of a
    // 60-testcase run stays short and small.
    if w == "pass" && !has_pictures {
        let _ = write!(o, "<span id=\"{}\"></span>", anchor(i));
        return;
    }
    let _ = writeln!(
        o,
        "<section class=\"case {w}\" id=\"{}\"><h3>{} {}</h3>",
        anchor(i),
        badge(w),
        esc(&s.name)
    );
    if !s.reproduce.is_empty() && matches!(w, "fail" | "error") {
        let _ = writeln!(
            o,
            "<div>reproduce:</div><pre><code>{}</code></pre>",
            esc(&s.reproduce)
        );
    }
    let bad: Vec<_> = s
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. } | Outcome::Error { .. }))
        .collect();
    if !bad.is_empty() {
        o.push_str("<table><tr><th>check</th><th>what failed</th></tr>\n");
        for r in bad {
            let (label, message, detail) = match &r.outcome {
                Outcome::Failed { message, detail } => ("fail", message, detail),
                Outcome::Error { message, detail } => ("error", message, detail),
                _ => unreachable!("filtered"),
            };
            let _ = write!(
                o,
                "<tr><td>{} {}</td><td><div class=\"rule\">{}</div>",
                badge(label),
                esc(&r.check),
                esc(message)
            );
            // The detail repeats the message with every violation and the
            // recipe: there on a click, so the pictures stay near the top.
            if !detail.is_empty() {
                let _ = write!(
                    o,
                    "<details><summary>detail</summary><pre>{}</pre></details>",
                    esc(detail)
                );
            }
            for cmd in verify_commands(message) {
                let _ = write!(o, "<pre><code>{}</code></pre>", esc(&cmd));
            }
            o.push_str("</td></tr>\n");
        }
        o.push_str("</table>\n");
    }
    let skipped: Vec<_> = s
        .results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Skipped { reason } => Some((r, reason)),
            _ => None,
        })
        .collect();
    if !skipped.is_empty() {
        let _ = write!(
            o,
            "<details><summary>{} skipped check(s)</summary><ul>",
            skipped.len()
        );
        for (r, reason) in skipped {
            let _ = write!(o, "<li>{}: {}</li>", esc(&r.check), esc(reason));
        }
        o.push_str("</ul></details>\n");
    }
    if let Some(v) = view {
        if let Some(t) = &v.timeline {
            timeline_svg(o, t);
        }
        if !v.sweep.is_empty() {
            sweep_section(o, &v.sweep);
        }
        for m in &v.sector_maps {
            sector_map_svg(o, m);
        }
        if matches!(w, "fail" | "error") {
            if let Some(tail) = &v.console_tail {
                let _ = writeln!(
                    o,
                    "<details open><summary>console (last lines)</summary><pre>{}</pre></details>",
                    esc(tail)
                );
            }
        }
        if let Some(h) = &v.console_href {
            let _ = writeln!(o, "<div><a href=\"{}\">console.log</a></div>", href(h));
        }
    }
    o.push_str("</section>\n");
}

fn legend(o: &mut String, items: &[(&str, &str)]) {
    o.push_str("<div class=\"legend\">");
    for (class, words) in items {
        let border = if *class == "refused" {
            "border:2px solid #d50000;background:#fff"
        } else {
            ""
        };
        let _ = write!(
            o,
            "<span><i style=\"background:{};{border}\"></i>{}</span>",
            swatch(class),
            esc(words)
        );
    }
    o.push_str("</div>\n");
}

/// Writes as bars on a time axis from arrival to completion, one row each,
/// the cut a red line and marks dashed blue ones.
fn timeline_svg(o: &mut String, t: &Timeline) {
    let _ = writeln!(
        o,
        "<h3>Writes around the cut</h3><div class=\"muted\">cut: {} at {:.6} s; {} acknowledged, {} in flight, {} after{}</div>",
        esc(&t.cut_reason),
        t.cut_s,
        t.acknowledged,
        t.in_flight,
        t.after,
        if t.hidden_before + t.hidden_after > 0 {
            format!(
                " ({} earlier and {} later writes not drawn)",
                t.hidden_before, t.hidden_after
            )
        } else {
            String::new()
        }
    );
    if t.writes.is_empty() {
        o.push_str("<p>No device write was recorded.</p>\n");
        return;
    }
    let (row, label_w, plot_w) = (14.0, 330.0, 620.0);
    let t0 = t
        .writes
        .iter()
        .map(|w| w.received_s)
        .fold(t.cut_s, f64::min);
    let t1 = t
        .writes
        .iter()
        .map(|w| w.acked_s.unwrap_or(w.received_s).max(w.received_s))
        .fold(t.cut_s, f64::max);
    let span = (t1 - t0).max(1e-6);
    let x = |s: f64| label_w + (s - t0) / span * plot_w;
    let h = 24.0 + row * t.writes.len() as f64;
    let width = label_w + plot_w + 10.0;
    let _ = write!(
        o,
        "<svg class=\"timeline\" viewBox=\"0 0 {width} {h}\" width=\"{width}\" role=\"img\" aria-label=\"device writes around the cut\">"
    );
    for (i, w) in t.writes.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let end = w.acked_s.unwrap_or(t1).max(w.received_s);
        let (x0, x1) = (x(w.received_s), x(end));
        let what = w
            .describe
            .as_deref()
            .unwrap_or("(filesystem metadata or log)");
        let label = format!(
            "#{} {}+{} {}",
            w.seq,
            w.offset,
            w.len,
            w.describe.as_deref().unwrap_or("")
        );
        let tip = format!(
            "write #{}: bytes {}..{} ({}), {}; received {:.6} s, {}",
            w.seq,
            w.offset,
            w.offset + u64::from(w.len),
            what,
            w.state.words(),
            w.received_s,
            match w.acked_s {
                Some(a) => format!("acknowledged {a:.6} s"),
                None => "never acknowledged".into(),
            }
        );
        let _ = write!(
            o,
            "<g><title>{}</title><text x=\"2\" y=\"{:.1}\" font-size=\"10\">{}</text><rect class=\"{}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"/></g>",
            esc(&tip),
            y + 10.0,
            esc(&truncate(&label, 58)),
            w.state.class(),
            (x1 - x0).max(2.0),
            row - 3.0
        );
    }
    for (name, at) in &t.marks {
        if *at >= t0 && *at <= t1 {
            let _ = write!(
                o,
                "<g><title>mark {}</title><line class=\"mark\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"0\" y2=\"{h}\"/></g>",
                esc(name),
                x(*at),
                x(*at)
            );
        }
    }
    let _ = writeln!(
        o,
        "<g><title>the cut</title><line class=\"cut\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{h}\"/></g><text x=\"{1:.1}\" y=\"{2:.1}\" font-size=\"10\">{3:.6} s</text><text x=\"{4:.1}\" y=\"{2:.1}\" font-size=\"10\" text-anchor=\"end\">{5:.6} s</text></svg>",
        x(t.cut_s),
        label_w,
        h - 4.0,
        t0,
        label_w + plot_w,
        t1
    );
    legend(
        o,
        &[
            ("ack", "acknowledged (durable)"),
            ("infl", "in flight at the cut"),
            ("after", "after the cut"),
        ],
    );
    o.push_str("<div class=\"legend\"><span>red line: the cut</span><span>dashed blue: a mark</span></div>\n");
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

/// Half-open index ranges of consecutive cells that look the same.
fn runs(cells: &[Cell]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        match v.last_mut() {
            Some((from, to)) if cells[*from] == *c => *to = i + 1,
            _ => v.push((i, i + 1)),
        }
    }
    v
}

/// Sectors as a grid of cells (64 a row), coloured by what the state holds,
/// outlined red where the model refused it. Large files are drawn with
/// several sectors a cell (the worst of them).
fn sector_map_svg(o: &mut String, m: &SectorMap) {
    const PER_ROW: usize = 64;
    const MAX_CELLS: usize = 1024;
    let _ = writeln!(
        o,
        "<h3>Sector map: {} in crash state {}</h3><div class=\"muted\">recipe <code>{}</code>; {}</div>",
        esc(&m.file),
        esc(&m.state),
        esc(&m.recipe),
        match m.size {
            Some(s) => format!("file size {s} bytes in this state"),
            None => "the file does not exist in this state".into(),
        }
    );
    for v in &m.violations {
        let _ = writeln!(
            o,
            "<div><span class=\"rule\">{}</span> (bytes {}-{}): {}</div>",
            esc(&v.rule),
            v.from,
            v.to,
            esc(&v.message)
        );
    }
    let per_cell = m.sectors.len().div_ceil(MAX_CELLS).max(1);
    let cells: Vec<Cell> = m
        .sectors
        .chunks(per_cell)
        .map(|ch| {
            let worst = ch
                .iter()
                .max_by_key(|c| (c.refused, c.kind))
                .expect("chunks are not empty");
            Cell {
                kind: worst.kind,
                write: worst.write.clone(),
                refused: ch.iter().any(|c| c.refused),
            }
        })
        .collect();
    if cells.is_empty() {
        o.push_str(
            "<p>No sector to draw: the file is missing and the log wrote nothing to it.</p>\n",
        );
    } else {
        // Runs of like cells are drawn as one rectangle per row with one
        // tooltip, and the page's `cells` pattern draws the grid over them:
        // a 64 KiB file is a few elements, not 128 (the page of a run with
        // many failing states stays small).
        let size = 12.0;
        let rows = cells.len().div_ceil(PER_ROW);
        let (w, h) = (PER_ROW as f64 * size + 4.0, rows as f64 * size + 4.0);
        let _ = write!(
            o,
            "<svg class=\"sectormap\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" role=\"img\" aria-label=\"sector map of {}\">",
            esc(&m.file)
        );
        let mut outlines = String::new();
        for (from, to) in runs(&cells) {
            let c = &cells[from];
            let (first, last) = (from * per_cell, to * per_cell - 1);
            let tip = format!(
                "{} {}-{} (bytes {}-{}): {}{}; model: {}",
                if last > first { "sectors" } else { "sector" },
                first,
                last,
                first * 512,
                (last + 1) * 512,
                c.kind.words(),
                match (c.kind, c.write.as_deref()) {
                    (_, None) => String::new(),
                    (CellKind::Zeroes | CellKind::Missing, Some(w)) =>
                        format!("; the newest write here in the log: {w}"),
                    (_, Some(w)) => format!(" from {w}"),
                },
                if c.refused { "refused" } else { "allowed" }
            );
            let mut i = from;
            while i < to {
                let row_end = ((i / PER_ROW + 1) * PER_ROW).min(to);
                let (x, y) = (
                    2.0 + (i % PER_ROW) as f64 * size,
                    2.0 + (i / PER_ROW) as f64 * size,
                );
                let width = (row_end - i) as f64 * size;
                let _ = write!(
                    o,
                    "<rect class=\"{}\" x=\"{x}\" y=\"{y}\" width=\"{width}\" height=\"{size}\"><title>{}</title></rect>",
                    c.kind.class(),
                    esc(&tip)
                );
                if c.refused {
                    let _ = write!(
                        outlines,
                        "<rect class=\"refused\" fill=\"none\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
                        x + 0.5,
                        y + 0.5,
                        width - 2.5,
                        size - 2.5,
                        esc(&tip)
                    );
                }
                i = row_end;
            }
        }
        // The grid: full rows, then the last row's cells.
        let full = cells.len() / PER_ROW;
        if full > 0 {
            let _ = write!(
                o,
                "<rect fill=\"url(#cells)\" x=\"2\" y=\"2\" width=\"{}\" height=\"{}\"/>",
                PER_ROW as f64 * size,
                full as f64 * size
            );
        }
        if !cells.len().is_multiple_of(PER_ROW) {
            let _ = write!(
                o,
                "<rect fill=\"url(#cells)\" x=\"2\" y=\"{}\" width=\"{}\" height=\"{size}\"/>",
                2.0 + full as f64 * size,
                (cells.len() % PER_ROW) as f64 * size
            );
        }
        o.push_str(&outlines);
        o.push_str("</svg>\n");
        if per_cell > 1 {
            let _ = writeln!(
                o,
                "<div class=\"muted\">{per_cell} sectors a cell (the worst of them)</div>"
            );
        }
    }
    if !m.also.is_empty() {
        let _ = writeln!(
            o,
            "<div>The same map, rule and ranges in: {}</div>",
            esc(&m.also.join(", "))
        );
    }
    let mut items: Vec<(&str, &str)> = CellKind::ALL
        .iter()
        .filter(|k| m.sectors.iter().any(|c| c.kind == **k))
        .map(|k| (k.class(), k.words()))
        .collect();
    items.push(("refused", "red outline: the model refused it"));
    legend(o, &items);
    let _ = writeln!(o, "<pre><code>{}</code></pre>", esc(&m.verify));
}

fn sweep_section(o: &mut String, points: &[SweepPoint]) {
    let failed = points.iter().filter(|p| p.failed > 0).count();
    let _ = writeln!(
        o,
        "<h3>Sweep: {} cut points, {} failing</h3>",
        points.len(),
        failed
    );
    // A strip of squares, one per point, then a table of the failing ones.
    let size = 12.0;
    let per_row = 64;
    let rows = points.len().div_ceil(per_row);
    let (w, h) = (per_row as f64 * size + 4.0, rows as f64 * size + 4.0);
    let _ = write!(
        o,
        "<svg class=\"sweep\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" role=\"img\" aria-label=\"cut points\">"
    );
    for (i, p) in points.iter().enumerate() {
        let class = if p.failed > 0 {
            "torn refused"
        } else if p.unchecked == p.states && p.states > 0 {
            "miss"
        } else {
            "new"
        };
        let _ = write!(
            o,
            "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
            2.0 + (i % per_row) as f64 * size,
            2.0 + (i / per_row) as f64 * size,
            size - 2.0,
            size - 2.0,
            esc(&format!(
                "{} at {:.6} s: {}; {} states, {} failed",
                p.name, p.at_s, p.described, p.states, p.failed
            ))
        );
    }
    o.push_str("</svg>\n");
    legend(
        o,
        &[
            ("new", "every state passed"),
            ("refused", "a state failed"),
            ("miss", "unchecked"),
        ],
    );
    if failed > 0 {
        o.push_str(
            "<table><tr><th>point</th><th>at</th><th>where</th><th>states failed</th></tr>\n",
        );
        for p in points.iter().filter(|p| p.failed > 0) {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"n\">{:.6} s</td><td>{}</td><td class=\"n\">{}/{}</td></tr>",
                esc(&p.name),
                p.at_s,
                esc(&p.described),
                p.failed,
                p.states
            );
        }
        o.push_str("</table>\n");
    }
}

fn verdict_class(v: LevelVerdict) -> &'static str {
    match v {
        LevelVerdict::Good => "good",
        LevelVerdict::Bad => "bad",
        LevelVerdict::Skip => "skip",
    }
}

fn bisect_section(o: &mut String, page: &BisectPage) {
    let b = &page.report;
    o.push_str("<h2>Bisection</h2>\n");
    let _ = writeln!(
        o,
        "<div class=\"culprit\">{}</div>",
        esc(if b.message.is_empty() {
            &b.outcome
        } else {
            &b.message
        })
    );
    if let Some(c) = &b.confirmation {
        let class = if c.outcome == Confirmation::Confirmed {
            "good"
        } else {
            "bad"
        };
        let _ = writeln!(
            o,
            "<p class=\"confirmation\">{} {}</p>",
            badge(class),
            esc(&c.message)
        );
    }
    o.push_str("<table class=\"kv\">\n");
    kv(o, "testcase", &b.testcase);
    kv(o, "series", &b.series);
    kv(o, "kernel source", &b.kernel_source);
    kv(o, "outcome", &b.outcome);
    let unit = if b.mode == "commits" {
        "commit"
    } else {
        "patch"
    };
    kv(
        o,
        &format!("first bad {unit}"),
        b.first_bad_patch.as_deref().unwrap_or(""),
    );
    kv(o, "commit", b.first_bad_commit.as_deref().unwrap_or(""));
    if let Some(c) = &b.confirmation {
        kv(
            o,
            "confirmation",
            &format!(
                "{} ({} of {} runs passed with it reverted{})",
                serde_json::to_value(c.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default(),
                c.runs.passed,
                c.runs.total(),
                if c.commit.is_empty() {
                    String::new()
                } else {
                    format!("; revert {}", &c.commit[..12.min(c.commit.len())])
                }
            ),
        );
    }
    if !b.flaky_levels.is_empty() {
        kv(
            o,
            "flaky levels",
            &b.flaky_levels
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    kv(
        o,
        "builds",
        &format!("{} (at most {} expected)", b.builds, b.max_builds),
    );
    kv(o, "retries", &b.retries.to_string());
    kv(o, "total", &secs(Some(b.total_s)));
    o.push_str("</table>\n<h3>Steps, in the order they ran</h3><div class=\"strip\">\n");
    for (k, s) in b.steps.iter().enumerate() {
        let verdict = verdict_class(s.verdict);
        let _ = write!(
            o,
            "<div class=\"step {verdict}\"><div>step {} · level {}</div><div><b>{}</b></div><div>{}</div><div class=\"muted\">build {}{} · test {} · {} tr{}</div>",
            k + 1,
            s.level,
            esc(&s.patch),
            badge(verdict),
            secs(Some(s.build_s)),
            if s.build_cached { " (cached)" } else { "" },
            secs(Some(s.test_s)),
            s.tries,
            if s.tries == 1 { "y" } else { "ies" }
        );
        if let Some(f) = &s.flaky {
            let _ = write!(o, "<div><b>{}</b></div>", esc(f));
        }
        if !s.reason.is_empty() {
            let _ = write!(o, "<div>{}</div>", esc(&truncate(&s.reason, 300)));
        }
        let links = page.links.get(k).map_or(&[][..], Vec::as_slice);
        if !links.is_empty() {
            o.push_str("<div>");
            for (label, rel) in links {
                let _ = write!(o, "<a href=\"{}\">{}</a> ", href(rel), esc(label));
            }
            o.push_str("</div>");
        }
        o.push_str("</div>\n");
    }
    let _ =
        write!(
        o,
        "</div>\n<h3>The {}</h3><table><tr><th>level</th><th>{unit}</th><th>verdict</th></tr>\n",
        if b.mode == "commits" { "commits" } else { "series" }
    );
    let _ = writeln!(
        o,
        "<tr><td class=\"n\">0</td><td>base</td><td>{}</td></tr>",
        level_verdict(b, 0)
    );
    for (i, p) in b.patches.iter().enumerate() {
        let level = i + 1;
        let culprit = b.first_bad == Some(level) || b.candidates.contains(&level);
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{level}</td><td>{}{}</td><td>{}</td></tr>",
            if culprit { "<b>⇒ </b>" } else { "" },
            esc(p),
            level_verdict(b, level)
        );
    }
    o.push_str("</table>\n");
    if !b.reproduce.is_empty() {
        let _ = writeln!(o, "<pre><code>{}</code></pre>", esc(&b.reproduce));
    }
}

/// A level's verdict as the steps found it (the last step that tested it).
fn level_verdict(b: &BisectReport, level: usize) -> String {
    b.steps.iter().rev().find(|s| s.level == level).map_or_else(
        || "<span class=\"muted\">not tested</span>".to_string(),
        |s| badge(verdict_class(s.verdict)),
    )
}

fn compare_section(o: &mut String, rows: &[CompareRow]) {
    let regressions = rows.iter().filter(|r| r.regression).count();
    let _ = writeln!(
        o,
        "<h2>Against the base kernel</h2><p>{regressions} regression(s); {} failure(s) the base kernel has too.</p>",
        rows.len() - regressions
    );
    if rows.is_empty() {
        return;
    }
    o.push_str("<table><tr><th>testcase</th><th>check</th><th>base</th><th>patched</th></tr>\n");
    for r in rows {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(&r.case),
            esc(&r.check),
            esc(&r.base),
            badge(if r.regression { "fail" } else { "skip" }),
            esc(&format!(
                "{}{}",
                if r.regression {
                    "regression: "
                } else {
                    "not a regression: "
                },
                r.message
            ))
        );
    }
    o.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisect::{BisectStep, ConfirmReport};
    use crate::report::CaseResult;

    const NASTY: &str = r#"<script>alert("x")</script>'quoted' & "double""#;

    fn suite(name: &str, results: Vec<(&str, Outcome)>) -> SuiteReport {
        SuiteReport {
            name: name.into(),
            properties: vec![
                ("boot_to_ssh_s".into(), "6.20".into()),
                ("verify.total_s".into(), "10.5".into()),
                ("time.total_s".into(), "30.0".into()),
                ("time.workload_s".into(), "23.8".into()),
            ],
            results: results
                .into_iter()
                .map(|(c, o)| CaseResult {
                    case: name.into(),
                    check: c.into(),
                    outcome: o,
                    duration_s: 1.0,
                })
                .collect(),
            console_log: Some(format!("{name}/console.log")),
            reproduce: format!("lab run {name}"),
        }
    }

    fn run(suites: Vec<SuiteReport>) -> RunReport {
        RunReport {
            run_id: "20261203T000000Z-1".into(),
            started_at: "2026-12-03T00:00:00Z".into(),
            properties: vec![
                ("kernel.release".into(), "7.2.13".into()),
                ("qemu.version".into(), "11.1.3".into()),
                ("accel".into(), "tcg".into()),
            ],
            suites,
            reproduce: "lab run".into(),
            interrupted: false,
        }
    }

    fn cell(kind: CellKind, refused: bool) -> Cell {
        Cell {
            kind,
            write: Some("step 2 pwritev2(off=0 len=65536 )".into()),
            refused,
        }
    }

    /// No raw markup from the input survives anywhere: the nasty string
    /// only ever appears escaped, and no `<script` element exists.
    fn assert_inert(html: &str) {
        assert!(!html.contains(NASTY), "raw input in the page");
        assert!(!html.to_lowercase().contains("<script"), "a script element");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39;quoted&#39; &amp; &quot;double&quot;"),
            "the text, escaped"
        );
    }

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("a\x1b[31mb\nc\td"), "a\u{FFFD}[31mb\nc\td");
        assert_eq!(href("a b/#x?\"y'.log"), "a%20b/%23x%3F%22y%27.log");
    }

    #[test]
    fn untrusted_text_in_every_field_appears_as_text() {
        let mut s = suite(
            &format!("case {NASTY}"),
            vec![
                ("ok", Outcome::Passed),
                (
                    NASTY,
                    Outcome::Failed {
                        message: format!("rule {NASTY} (reproduce: lab verify /r/{NASTY})"),
                        detail: NASTY.into(),
                    },
                ),
                (
                    "skip",
                    Outcome::Skipped {
                        reason: NASTY.into(),
                    },
                ),
                (
                    "err",
                    Outcome::Error {
                        message: NASTY.into(),
                        detail: String::new(),
                    },
                ),
            ],
        );
        s.reproduce = format!("lab run {NASTY}");
        s.properties.push(("power_cut.policy".into(), NASTY.into()));
        let mut r = run(vec![s.clone()]);
        r.properties.push(("kernel.source".into(), NASTY.into()));
        r.reproduce = NASTY.into();
        let view = CaseView {
            suite: s.name.clone(),
            console_href: Some(format!("{}/console.log", s.name)),
            console_tail: Some(format!("[ 1.0] {NASTY}\n")),
            timeline: Some(Timeline::around_cut(
                vec![TimelineWrite {
                    seq: 0,
                    received_s: 1.0,
                    acked_s: None,
                    offset: 0,
                    len: 4096,
                    state: WriteState::InFlight,
                    describe: Some(NASTY.into()),
                }],
                1.5,
                NASTY.into(),
                vec![(NASTY.into(), 1.2)],
                10,
                10,
            )),
            sector_maps: vec![SectorMap {
                state: NASTY.into(),
                recipe: NASTY.into(),
                file: NASTY.into(),
                size: Some(4096),
                sectors: vec![cell(CellKind::Zeroes, true)],
                violations: vec![MapViolation {
                    rule: NASTY.into(),
                    from: 0,
                    to: 512,
                    message: NASTY.into(),
                }],
                verify: format!("lab verify {NASTY}"),
                also: vec![NASTY.into()],
            }],
            sweep: vec![SweepPoint {
                name: NASTY.into(),
                at_s: 1.0,
                described: NASTY.into(),
                states: 2,
                failed: 1,
                unchecked: 0,
            }],
        };
        let report = BisectReport {
            testcase: NASTY.into(),
            series: NASTY.into(),
            kernel_source: NASTY.into(),
            patches: vec![NASTY.into()],
            outcome: "first_bad".into(),
            first_bad: Some(1),
            first_bad_patch: Some(NASTY.into()),
            first_bad_commit: Some(NASTY.into()),
            message: NASTY.into(),
            confirmation: Some(ConfirmReport {
                outcome: Confirmation::NotConfirmed,
                message: NASTY.into(),
                commit: NASTY.into(),
                reason: NASTY.into(),
                runs: Default::default(),
                build_s: 0.0,
                build_cached: false,
                test_s: 0.0,
                dir: NASTY.into(),
            }),
            steps: vec![BisectStep {
                level: 1,
                patch: NASTY.into(),
                reason: NASTY.into(),
                flaky: Some(NASTY.into()),
                ..BisectStep::default()
            }],
            reproduce: NASTY.into(),
            ..BisectReport::default()
        };
        let bisect = BisectPage {
            report,
            links: vec![vec![(NASTY.into(), NASTY.into())]],
        };
        let compare = vec![CompareRow {
            case: NASTY.into(),
            check: NASTY.into(),
            base: "passed".into(),
            regression: true,
            message: NASTY.into(),
        }];
        let html = render(&Page {
            run: &r,
            cases: vec![view],
            bisect: Some(bisect),
            compare: Some(compare),
        });
        assert_inert(&html);
        // Names as link targets are percent-encoded, never raw.
        assert!(html.contains("href=\"case%20%3Cscript%3Ealert"), "{html}");
        // The CSP that makes a slip inert.
        assert!(html.contains("default-src 'none'"));
    }

    #[test]
    fn the_page_shows_failures_with_their_rule_verify_line_and_times() {
        let s = suite(
            "lying-disk-xfs-4k",
            vec![
                ("power_cut.cut", Outcome::Passed),
                (
                    "state.state-2",
                    Outcome::Failed {
                        message: "data made durable by a completed sync was lost: /mnt/data bytes 0-65536 hold zeroes (crash state state-2) (reproduce: lab verify /r/lying-disk-xfs-4k/crash/state-2)".into(),
                        detail: "- data made durable by a completed sync was lost (/mnt/data): ...".into(),
                    },
                ),
            ],
        );
        let html = render(&Page {
            run: &run(vec![
                s.clone(),
                suite("limits-4k", vec![("a", Outcome::Passed)]),
            ]),
            cases: vec![],
            bisect: None,
            compare: None,
        });
        assert!(html.contains("data made durable by a completed sync was lost"));
        assert!(
            html.contains("<pre><code>lab verify /r/lying-disk-xfs-4k/crash/state-2</code></pre>")
        );
        assert!(html.contains("<pre><code>lab run lying-disk-xfs-4k</code></pre>"));
        // 6.2 boot + 10.5 verify of 30 s: 13.3 s of workload.
        assert!(html.contains(">6.2s<") && html.contains(">13.3s<") && html.contains(">10.5s<"));
        assert_eq!(time_split(&s).1.map(|w| (w * 10.0).round()), Some(133.0));
        // A passing testcase without pictures has its row and an anchor.
        assert!(html.contains("<span id=\"case-1\"></span>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn the_timeline_keeps_every_in_flight_write_and_a_window_around_the_cut() {
        let w = |seq: u64, acked: Option<f64>| {
            let received = seq as f64;
            TimelineWrite {
                seq,
                received_s: received,
                acked_s: acked,
                offset: seq * 4096,
                len: 4096,
                state: WriteState::at_cut(seq, acked, 50.5, 51),
                describe: None,
            }
        };
        // 0..=50 received before the cut at 50.5 (write 3 never completed),
        // 51..=59 after.
        let writes: Vec<_> = (0..60)
            .map(|s| w(s, if s == 3 { None } else { Some(s as f64 + 0.1) }))
            .collect();
        assert_eq!(writes[3].state, WriteState::InFlight);
        assert_eq!(writes[50].state, WriteState::Acknowledged);
        assert_eq!(writes[51].state, WriteState::After);
        let t = Timeline::around_cut(writes, 50.5, "mark done".into(), vec![], 8, 4);
        assert_eq!((t.acknowledged, t.in_flight, t.after), (50, 1, 9));
        assert_eq!(
            t.writes.first().map(|w| w.seq),
            Some(3),
            "the old in-flight write is drawn"
        );
        assert_eq!(t.writes.last().map(|w| w.seq), Some(54));
        assert_eq!((t.hidden_before, t.hidden_after), (3, 5));
        let mut o = String::new();
        timeline_svg(&mut o, &t);
        assert_eq!(o.matches("<rect class=\"infl\"").count(), 1);
        assert_eq!(o.matches("<rect class=\"after\"").count(), 4);
        assert!(o.contains("class=\"cut\""));
        // A write acknowledged exactly at the cut is durable.
        assert_eq!(
            WriteState::at_cut(0, Some(1.0), 1.0, 1),
            WriteState::Acknowledged
        );
    }

    #[test]
    fn a_sector_map_outlines_what_the_model_refused_and_folds_large_files() {
        let mut m = SectorMap {
            state: "state-2".into(),
            recipe: "cut@195 193:-".into(),
            file: "/mnt/data".into(),
            size: Some(65536),
            sectors: (0..128)
                .map(|i| {
                    cell(
                        if i < 8 {
                            CellKind::New
                        } else {
                            CellKind::Zeroes
                        },
                        i >= 8,
                    )
                })
                .collect(),
            violations: vec![],
            verify: "lab verify x".into(),
            also: vec![],
        };
        let mut o = String::new();
        sector_map_svg(&mut o, &m);
        // Two runs: sectors 0-7 new; 8-127 zeroes and refused, over two
        // rows: one rectangle per row of a run, one outline per refused one.
        assert_eq!(o.matches("<rect class=\"new\"").count(), 1);
        assert_eq!(o.matches("<rect class=\"zero\"").count(), 2);
        assert_eq!(o.matches("<rect class=\"refused\"").count(), 2);
        assert_eq!(o.matches("url(#cells)").count(), 1, "two full rows");
        assert!(
            o.contains("sectors 8-127 (bytes 4096-65536): zeroes; the newest write here in the log: step 2"),
            "{o}"
        );
        assert!(
            o.contains("sectors 0-7 (bytes 0-4096): new data (the newest write here) from step 2")
        );
        assert!(o.contains("red outline"));
        // 4096 sectors fold four to a cell; a refused sector marks its cell.
        m.sectors = (0..4096).map(|i| cell(CellKind::New, i == 5)).collect();
        let mut o = String::new();
        sector_map_svg(&mut o, &m);
        assert_eq!(o.matches("<rect class=\"refused\"").count(), 1);
        assert!(o.contains("sectors 4-7 (bytes 2048-4096)"), "{o}");
        assert!(o.contains("4 sectors a cell"));
        // The page defines the grid pattern the maps use, once.
        let r = run(vec![]);
        let page = render(&Page {
            run: &r,
            cases: vec![],
            bisect: None,
            compare: None,
        });
        assert_eq!(page.matches("<pattern id=\"cells\"").count(), 1);
    }

    #[test]
    fn compare_rows_name_regressions_and_failures_the_base_shares() {
        let patched = run(vec![suite(
            "t",
            vec![
                (
                    "a",
                    Outcome::Failed {
                        message: "m".into(),
                        detail: String::new(),
                    },
                ),
                (
                    "b",
                    Outcome::Failed {
                        message: "n".into(),
                        detail: String::new(),
                    },
                ),
                ("c", Outcome::Passed),
            ],
        )]);
        let base = run(vec![suite(
            "t",
            vec![
                ("a", Outcome::Passed),
                (
                    "b",
                    Outcome::Failed {
                        message: "n".into(),
                        detail: String::new(),
                    },
                ),
            ],
        )]);
        let rows = compare_rows(&patched, &base);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].regression && rows[0].base == "passed");
        assert!(!rows[1].regression && rows[1].base == "failed");
        let html = {
            let mut o = String::new();
            compare_section(&mut o, &rows);
            o
        };
        assert!(html.contains("1 regression(s); 1 failure(s) the base kernel has too"));
    }

    #[test]
    fn bisect_json_reads_with_fields_added_or_missing() {
        let b: BisectReport = serde_json::from_str(
            r#"{"testcase":"t","patches":["1/2 a","2/2 b"],"outcome":"first_bad","first_bad":2,
                "first_bad_patch":"2/2 b","message":"first bad patch: 2/2 b","confirmed":true,
                "steps":[{"level":0,"patch":"base","verdict":"good","build_s":10.0,"test_s":5.0,"tries":2,"dir":"level-0","new_field":1},
                         {"level":2,"patch":"2/2 b","verdict":"bad","build_s":3.0,"test_s":4.0,"tries":1}]}"#,
        )
        .unwrap();
        assert_eq!(b.steps.len(), 2);
        let r = run(vec![]);
        let page = |report: &BisectReport| {
            render(&Page {
                run: &r,
                cases: vec![],
                bisect: Some(BisectPage {
                    report: report.clone(),
                    links: vec![],
                }),
                compare: None,
            })
        };
        let html = page(&b);
        assert!(html.contains("<div class=\"culprit\">first bad patch: 2/2 b</div>"));
        assert!(html.contains("<b>⇒ </b>2/2 b"));
        assert_eq!(html.matches("class=\"step ").count(), 2);
        assert!(
            html.contains("<span class=\"muted\">not tested</span>"),
            "level 1 was not tested"
        );
        assert!(!html.contains("confirmation"), "an older file has none");

        // What `lab bisect` writes today: the confirmation and a flaky
        // level are on the page.
        let mut b = b;
        b.flaky_levels = vec![2];
        b.steps[1].flaky = Some("flaky: 1 of 2 runs failed".into());
        b.confirmation = Some(ConfirmReport {
            outcome: Confirmation::Confirmed,
            message: "confirmed: reverting 2/2 b makes t pass (2 of 2 runs passed)".into(),
            commit: "0123456789abcdef".into(),
            reason: String::new(),
            runs: crate::bisect::Runs {
                passed: 2,
                failed: 0,
            },
            build_s: 1.0,
            build_cached: false,
            test_s: 1.0,
            dir: "confirm".into(),
        });
        let html = page(&b);
        assert!(html.contains("<span class=\"b good\">good</span> confirmed: reverting 2/2 b"));
        assert!(
            html.contains("confirmed (2 of 2 runs passed with it reverted; revert 0123456789ab)")
        );
        assert!(html.contains("<td>flaky levels</td><td>2</td>"));
        assert!(html.contains("<b>flaky: 1 of 2 runs failed</b>"));
    }

    #[test]
    fn verify_commands_are_found_in_messages() {
        assert_eq!(
            verify_commands(
                "x (reproduce: lab verify /a/crash/state-1) and (reproduce: lab verify /b)"
            ),
            vec!["lab verify /a/crash/state-1", "lab verify /b"]
        );
        assert!(verify_commands("nothing").is_empty());
    }
}
