//! `results/<run-id>/index.html`: reads what a run, a bisection or a merge
//! left in its results directory (summary.json, bisect.json, each
//! testcase's console, crash record, sweep points and kept crash states)
//! and writes the page `lab_core::html` renders from it.
//!
//! Everything here is reading files and turning them into the page's
//! data; the HTML itself (and its escaping) is lab-core's. A file that is
//! missing or unreadable leaves its part of the page out rather than
//! failing the page: a run cut short still gets a page of what it has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use lab_core::bisect::BisectReport;
use lab_core::html::{
    self, BisectPage, CaseView, Cell, CellKind, MapViolation, Page, SectorMap, SweepPoint,
    Timeline, TimelineWrite, WriteState,
};
use lab_core::report::{RunReport, SuiteReport};
use lab_core::stamp::Sector;
use lab_model::{FileScan, Op, OpKind};
use serde::Deserialize;

use crate::powercut::kept::KeptCase;

/// The page's file name inside a results directory.
pub const INDEX: &str = "index.html";

/// Writes `dir/index.html` and returns its path.
pub fn write(dir: &Path) -> Result<PathBuf> {
    let html = render_dir(dir)?;
    let path = dir.join(INDEX);
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes the page and says where it is (the last line of a command's
/// summary); a page that cannot be written is a warning, never the run's
/// failure: junit.xml and summary.json are already there.
pub fn write_and_print(dir: &Path) {
    match write(dir) {
        Ok(p) => println!("page: {}", p.display()),
        Err(e) => eprintln!("lab: warning: no HTML page: {e:#}"),
    }
}

/// The page of a results directory (one holding summary.json).
pub fn render_dir(dir: &Path) -> Result<String> {
    let summary = dir.join("summary.json");
    let run: RunReport = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .with_context(|| format!("reading {}", summary.display()))?,
    )
    .with_context(|| format!("{}: not a lab summary", summary.display()))?;
    let bisect = std::fs::read_to_string(dir.join("bisect.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .map(|report| BisectPage {
            links: step_links(dir, &report),
            report,
        });
    // `lab verify` lines name kept states as the run printed them: absolute.
    let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let compare = compare(dir, &run);
    let cases = run.suites.iter().map(|s| case_view(dir, s)).collect();
    Ok(html::render(&Page {
        run: &run,
        cases,
        bisect,
        compare,
    }))
}

/// Each bisection step's build log, build error and consoles, where they
/// exist (a level that did not apply has none).
fn step_links(dir: &Path, b: &BisectReport) -> Vec<Vec<(String, String)>> {
    b.steps
        .iter()
        .map(|s| {
            let mut links = Vec::new();
            if s.dir.is_empty() {
                return links;
            }
            for (label, file) in [
                ("build log", "build.log"),
                ("build error", "build-error.txt"),
            ] {
                let rel = format!("{}/{file}", s.dir);
                if dir.join(&rel).is_file() {
                    links.push((label.to_string(), rel));
                }
            }
            for t in 1..=s.tries.max(1) {
                let rel = format!("{}/try-{t}/{}/console.log", s.dir, b.testcase);
                if dir.join(&rel).is_file() {
                    links.push((format!("console (try {t})"), rel));
                }
            }
            links
        })
        .collect()
}

/// `--compare-base`: the base's and the patched run's own summaries.
fn compare(dir: &Path, run: &RunReport) -> Option<Vec<html::CompareRow>> {
    if run.property("compare_base") != Some("true") {
        return None;
    }
    let read = |d: &str| -> Option<RunReport> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(d).join("summary.json")).ok()?).ok()
    };
    Some(html::compare_rows(&read("patched")?, &read("base")?))
}

/// Where a testcase's files are, relative to the results directory: beside
/// its console log (`patched/<name>/` under --compare-base), else its name.
fn case_rel(s: &SuiteReport) -> String {
    s.console_log
        .as_deref()
        .and_then(|c| Path::new(c).parent())
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| s.name.clone())
}

const CONSOLE_LINES: usize = 40;
const CONSOLE_BYTES: usize = 8 * 1024;
/// Crash states drawn per testcase: each is a few tens of KB of SVG, and
/// the first ones show the pattern; the rest are named by their checks.
const MAPS_PER_CASE: usize = 4;

fn case_view(dir: &Path, s: &SuiteReport) -> CaseView {
    let rel = case_rel(s);
    let case_dir = dir.join(&rel);
    let console = s.console_log.as_deref().filter(|c| dir.join(c).is_file());
    CaseView {
        suite: s.name.clone(),
        console_href: console.map(str::to_string),
        console_tail: console.and_then(|c| tail(&dir.join(c))),
        timeline: timeline(&case_dir.join("crash/record.json")),
        sector_maps: sector_maps(&case_dir.join("crash")),
        sweep: sweep(&case_dir.join("crash/sweep.jsonl")),
    }
}

/// The last lines of a console, lossily decoded (a console is bytes).
fn tail(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(CONSOLE_LINES)..].join("\n");
    if out.len() > CONSOLE_BYTES {
        let mut cut = out.len() - CONSOLE_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = out[cut..].to_string();
    }
    Some(out)
}

/// crash/record.json as `suite::powercut::write_record` writes it (only
/// what the timeline needs).
#[derive(Deserialize)]
struct RecordFile {
    writes: Vec<RecordWrite>,
    #[serde(default)]
    marks: Vec<RecordMark>,
    cut: Option<RecordCut>,
    #[serde(default)]
    guest_writes: HashMap<String, RecordGuest>,
}

#[derive(Deserialize)]
struct RecordWrite {
    seq: u64,
    offset: u64,
    len: u32,
    received: Duration,
    acked: Option<Duration>,
}

#[derive(Deserialize)]
struct RecordMark {
    name: String,
    at: Duration,
}

#[derive(Deserialize)]
struct RecordCut {
    reason: String,
    at: Duration,
    writes_before: u64,
}

#[derive(Deserialize)]
struct RecordGuest {
    describe: String,
}

/// Writes drawn before and after the cut.
const TIMELINE_BEFORE: usize = 24;
const TIMELINE_AFTER: usize = 8;

fn timeline(path: &Path) -> Option<Timeline> {
    let r: RecordFile = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let cut = r.cut?;
    let cut_s = cut.at.as_secs_f64();
    let writes = r
        .writes
        .iter()
        .map(|w| {
            let acked_s = w.acked.map(|a| a.as_secs_f64());
            TimelineWrite {
                seq: w.seq,
                received_s: w.received.as_secs_f64(),
                acked_s,
                offset: w.offset,
                len: w.len,
                state: WriteState::at_cut(w.seq, acked_s, cut_s, cut.writes_before),
                describe: r
                    .guest_writes
                    .get(&w.seq.to_string())
                    .map(|g| g.describe.clone()),
            }
        })
        .collect();
    Some(Timeline::around_cut(
        writes,
        cut_s,
        cut.reason,
        r.marks
            .into_iter()
            .map(|m| (m.name, m.at.as_secs_f64()))
            .collect(),
        TIMELINE_BEFORE,
        TIMELINE_AFTER,
    ))
}

#[derive(Deserialize)]
struct SweepLine {
    point: String,
    at_s: f64,
    described: String,
    #[serde(default)]
    states: Vec<SweepState>,
}

#[derive(Deserialize)]
struct SweepState {
    verdict: Option<String>,
}

fn sweep(path: &Path) -> Vec<SweepPoint> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<SweepLine>(l).ok())
        .map(|p| {
            let verdict = |v: &SweepState| v.verdict.clone().unwrap_or_default();
            SweepPoint {
                failed: p
                    .states
                    .iter()
                    .filter(|s| verdict(s).starts_with("failed"))
                    .count(),
                unchecked: p
                    .states
                    .iter()
                    .filter(|s| matches!(verdict(s).as_str(), "" | "unchecked"))
                    .count(),
                states: p.states.len(),
                name: p.point,
                at_s: p.at_s,
                described: p.described,
            }
        })
        .collect()
}

/// The kept crash states of a testcase (`crash/<name>/` with case.json
/// and the verifier's scan.json), in name order, judged again by the model
/// so each file the model faulted gets its map.
fn sector_maps(crash: &Path) -> Vec<SectorMap> {
    let Ok(entries) = std::fs::read_dir(crash) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("scan.json").is_file() && p.join("case.json").is_file())
        .collect();
    // state-2 before state-10.
    dirs.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        (digits.len(), name)
    });
    let mut maps = Vec::new();
    for d in &dirs {
        if maps.len() >= MAPS_PER_CASE {
            break;
        }
        let (Ok(case), Ok(scan)) = (
            read_json::<KeptCase>(&d.join("case.json")),
            read_json::<Vec<FileScan>>(&d.join("scan.json")),
        ) else {
            continue;
        };
        let state = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let verdict = lab_model::Model::new(&case.ops).judge(&scan);
        for f in &scan {
            let violations: Vec<MapViolation> = verdict
                .violations
                .iter()
                .filter(|v| v.file == f.file)
                .map(|v| MapViolation {
                    rule: v.rule.to_string(),
                    from: v.from,
                    to: v.to,
                    message: v.message.clone(),
                })
                .collect();
            if violations.is_empty() {
                continue;
            }
            let sectors = classify(&case.ops, f, &violations);
            // States that look alike (the lying disk loses the same file
            // in most of them) are drawn once and named under it.
            let same = |m: &SectorMap| {
                m.file == f.file
                    && m.size == f.size
                    && m.sectors == sectors
                    && m.violations.len() == violations.len()
                    && m.violations
                        .iter()
                        .zip(&violations)
                        .all(|(a, b)| (&a.rule, a.from, a.to) == (&b.rule, b.from, b.to))
            };
            if let Some(m) = maps.iter_mut().find(|m| same(m)) {
                m.also.push(state.clone());
                continue;
            }
            maps.push(SectorMap {
                state: state.clone(),
                recipe: case.recipe.clone(),
                file: f.file.clone(),
                size: f.size,
                sectors,
                violations,
                verify: format!("lab verify {}", d.display()),
                also: Vec::new(),
            });
        }
    }
    maps
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
}

const SECTOR: u64 = lab_core::stamp::SECTOR as u64;

/// What each sector of a file holds in a crash state, against the op log:
/// the newest write there, an older one, zeroes, garbage, another place's
/// data, or nothing (beyond the end, or no file); a sector of an
/// RWF_ATOMIC write whose range the state shows only in part is torn.
/// `refused`: inside a byte range the model faulted.
pub fn classify(ops: &[Op], scan: &FileScan, violations: &[MapViolation]) -> Vec<Cell> {
    let writes: Vec<(usize, &lab_model::Write, &Op)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match &o.kind {
            OpKind::Write(w) if w.file == scan.file => Some((i, w, o)),
            _ => None,
        })
        .collect();
    let logged_end = writes
        .iter()
        .map(|(_, w, _)| w.offset + w.len)
        .max()
        .unwrap_or(0);
    let n = (scan.sectors.len() as u64).max(logged_end.div_ceil(SECTOR)) as usize;
    // Op position of the newest write covering each sector.
    let newest = |off: u64| {
        writes
            .iter()
            .rev()
            .find(|(_, w, _)| w.offset <= off && off < w.offset + w.len)
            .map(|(i, _, _)| *i)
    };
    // Which op each stamp belongs to.
    let by_stamp: HashMap<(u64, u32, u32), usize> = writes
        .iter()
        .filter_map(|(i, w, _)| w.stamp.map(|s| ((s.run, s.file, s.write), *i)))
        .collect();
    let mut holds: Vec<Option<usize>> = vec![None; n];
    let mut cells: Vec<Cell> = (0..n)
        .map(|i| {
            let off = i as u64 * SECTOR;
            let newest_op = newest(off);
            let describe = |op: Option<usize>| op.map(|k| ops[k].describe.clone());
            let (kind, write) = match (scan.size, scan.sectors.get(i)) {
                (None, _) | (_, None) => (CellKind::Missing, describe(newest_op)),
                (_, Some(Sector::Zero)) => (CellKind::Zeroes, describe(newest_op)),
                (_, Some(Sector::Garbage)) => (CellKind::Garbage, None),
                (_, Some(Sector::Stamped(st))) => {
                    match by_stamp.get(&(st.run, st.file, st.write)) {
                        Some(&k)
                            if st.offset == off
                                && matches!(&ops[k].kind, OpKind::Write(w) if w.offset <= off && off < w.offset + w.len) =>
                        {
                            holds[i] = Some(k);
                            let kind = if Some(k) == newest_op {
                                CellKind::New
                            } else {
                                CellKind::Old
                            };
                            (kind, describe(Some(k)))
                        }
                        Some(&k) => (CellKind::Misplaced, describe(Some(k))),
                        None => (CellKind::Misplaced, None),
                    }
                }
            };
            let refused = violations.iter().any(|v| v.from <= off && off < v.to);
            Cell {
                kind,
                write,
                refused,
            }
        })
        .collect();
    // An atomic write shown in part: its sectors that hold it are torn.
    for (k, w, _) in writes.iter().filter(|(_, w, _)| w.atomic) {
        let range =
            (w.offset / SECTOR) as usize..((w.offset + w.len).div_ceil(SECTOR) as usize).min(n);
        let shown = range.clone().filter(|&i| holds[i] == Some(*k)).count();
        let newer_or_it = range
            .clone()
            .filter(|&i| holds[i].is_some_and(|h| h >= *k))
            .count();
        if shown > 0 && newer_or_it < range.len() {
            for i in range.filter(|&i| holds[i] == Some(*k)) {
                cells[i].kind = CellKind::Torn;
            }
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::stamp::Stamp;
    use lab_model::{OpResult, StampKey, Write};

    fn write_op(index: usize, offset: u64, len: u64, atomic: bool) -> Op {
        Op {
            index,
            describe: format!("step {index} pwritev2(off={offset} len={len})"),
            kind: OpKind::Write(Write {
                file: "/mnt/f".into(),
                offset,
                len,
                atomic,
                sync: false,
                stamp: Some(StampKey {
                    run: 7,
                    file: 1,
                    write: index as u32,
                }),
                store: false,
                range_sync: None,
            }),
            started: Some(0),
            ended: Some(1),
            result: Some(OpResult::Ok),
            errno: None,
        }
    }

    fn stamped(write: u32, offset: u64) -> Sector {
        Sector::Stamped(Stamp {
            run: 7,
            file: 1,
            write,
            generation: write,
            offset,
        })
    }

    #[test]
    fn sectors_are_new_old_zeroes_torn_misplaced_or_missing() {
        // Write 0 covers sectors 0-3, write 1 (atomic) rewrites 2-5.
        let ops = vec![write_op(0, 0, 2048, false), write_op(1, 1024, 2048, true)];
        let scan = FileScan {
            file: "/mnt/f".into(),
            size: Some(3072),
            sectors: vec![
                stamped(0, 0),    // new: write 0 is the newest here
                Sector::Zero,     // zeroes
                stamped(0, 1024), // old: write 1 is newer here
                stamped(1, 1536), // write 1, but 2/4/5 do not hold it: torn
                stamped(1, 0),    // write 1's data at the wrong place
                Sector::Garbage,
            ],
        };
        let v = [MapViolation {
            rule: "an atomic write was torn".into(),
            from: 1024,
            to: 3072,
            message: String::new(),
        }];
        let cells = classify(&ops, &scan, &v);
        let kinds: Vec<CellKind> = cells.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [
                CellKind::New,
                CellKind::Zeroes,
                CellKind::Old,
                CellKind::Torn,
                CellKind::Misplaced,
                CellKind::Garbage
            ]
        );
        let refused: Vec<bool> = cells.iter().map(|c| c.refused).collect();
        assert_eq!(refused, [false, false, true, true, true, true]);
        // A missing file: every sector the log wrote is missing.
        let gone = FileScan {
            file: "/mnt/f".into(),
            size: None,
            sectors: vec![],
        };
        let cells = classify(&ops, &gone, &[]);
        assert_eq!(cells.len(), 6);
        assert!(cells.iter().all(|c| c.kind == CellKind::Missing));
        assert_eq!(
            cells[5].write.as_deref(),
            Some("step 1 pwritev2(off=1024 len=2048)")
        );
    }
}
