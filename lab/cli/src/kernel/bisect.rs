//! `lab bisect`: the first patch of a series (or commit of a range,
//! `--good`/`--bad`) whose kernel fails a testcase.
//!
//! The planner (`lab_core::bisect`) says which level to try; this module
//! builds it, runs the testcase on it and records the step. A level that
//! does not apply or build is skipped (`git bisect skip`); a level passes
//! only when the testcase passes `1 + retries` times in a row, so a flaky
//! failure is not mistaken for a good level, and runs that disagree are
//! named flaky. The culprit is then confirmed as KernelCI does: the bad end
//! with it reverted must pass `1 + retries` times.
//!
//! Writes `results/<run-id>/`: bisect.json (the answer and every step),
//! junit.xml and summary.json (one testcase per step), and per step
//! `level-<k>/` with the build log, config and each try's run directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;
use lab_core::bisect::{
    self, Bisect, BisectReport, BisectStep, ConfirmReport, Confirmation, LevelVerdict, Next, Runs,
};
use lab_core::report::{CaseResult, Outcome, RunReport, SuiteReport};
use lab_core::testcase::Testcase;

use crate::exit::{CmdError, Exit};
use crate::host::accel::AccelChoice;
use crate::host::LabHost;
use crate::kernel::build::BuildError;
use crate::kernel::pipeline::{self, KernelRequest, Pipeline, PipelineError};
use crate::kernel::series;
use crate::proc::reaper;
use crate::suite::{self, RunOptions};

pub struct BisectOptions {
    pub request: KernelRequest,
    pub testcase: (PathBuf, Testcase),
    /// Extra passing runs a level needs before it is called good.
    pub retries: u32,
    pub results: PathBuf,
    pub accel: AccelChoice,
    /// Revert the culprit on the bad end and run again (`--no-confirm`: no).
    pub confirm: bool,
}

/// Bisects, printing each step; the exit says whether it named a culprit
/// (0), could not (1: the base fails, the series passes, an end does not
/// build), or stopped on bad input, a lab error or an interrupt (the steps
/// so far are in the results either way).
pub fn bisect(root: &Path, cache: &Path, opts: &BisectOptions) -> Result<Exit, CmdError> {
    let started = Instant::now();
    let (tc_path, tc) = &opts.testcase;
    let pipe = match Pipeline::prepare(root, cache, &opts.request) {
        Ok(p) => p,
        Err(PipelineError::BadInput(m)) => return Err(CmdError::BadInput(m)),
        Err(PipelineError::Lab(e)) => return Err(CmdError::Lab(e)),
    };
    let n = pipe.patches();
    let (id, dir) = suite::results::new_run_dir(&opts.results, None)?;
    let reproduce = format!(
        "lab bisect{} --testcase {} --retries {}{}",
        opts.request.reproduce_args(),
        tc_path.display(),
        opts.retries,
        if opts.confirm { "" } else { " --no-confirm" }
    );
    match &pipe.range {
        Some(r) => eprintln!(
            "lab: bisecting {} commits ({}) of {} from good {} to bad {} with testcase {} (at most {} builds)",
            n,
            if r.first_parent { "first-parent" } else { "full history" },
            pipe.tree.arg.as_deref().unwrap_or(Path::new("-")).display(),
            r.good.label(),
            pipe.level_label(n),
            tc.name,
            bisect::max_builds(n)
        ),
        None => eprintln!(
            "lab: bisecting {} patches of {} on {} with testcase {} (at most {} builds)",
            n,
            opts.request
                .series
                .as_deref()
                .unwrap_or(Path::new("-"))
                .display(),
            pipe.tree.describe,
            tc.name,
            bisect::max_builds(n)
        ),
    }
    let mut report = BisectReport {
        testcase: tc.name.clone(),
        series: opts
            .request
            .series
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        kernel_source: pipe.tree.describe.clone(),
        patches: (1..=n).map(|l| pipe.level_label(l)).collect(),
        outcome: "running".into(),
        first_bad: None,
        first_bad_patch: None,
        candidates: Vec::new(),
        message: String::new(),
        mode: if pipe.range.is_some() {
            "commits"
        } else {
            "series"
        }
        .into(),
        first_bad_commit: None,
        confirmation: None,
        flaky_levels: Vec::new(),
        steps: Vec::new(),
        builds: 0,
        max_builds: bisect::max_builds(n),
        retries: opts.retries,
        total_s: 0.0,
        reproduce: reproduce.clone(),
    };
    let mut planner = Bisect::new(n);
    // Levels past a patch that does not apply cannot be built: skipped up
    // front, each with the reason.
    if let Some(f) = &pipe.levels.failure {
        eprintln!("lab: {f}");
        for level in f.patch..=n {
            planner.record(level, LevelVerdict::Skip);
            report.steps.push(BisectStep {
                level,
                patch: pipe.level_label(level),
                commit: String::new(),
                verdict: LevelVerdict::Skip,
                reason: format!("does not apply: {f}"),
                build_s: 0.0,
                build_cached: false,
                build_seeded_from: None,
                test_s: 0.0,
                tries: 0,
                failed_runs: 0,
                flaky: None,
                dir: String::new(),
            });
        }
        let _ = std::fs::write(dir.join("apply-error.log"), &f.raw);
    }

    let code = loop {
        if reaper::interrupted() {
            report.outcome = "interrupted".into();
            report.message = "interrupted: partial results".into();
            break Exit::Interrupted;
        }
        match planner.next() {
            Next::Test(level) => {
                match test_level(&pipe, level, opts, &dir, &id) {
                    Ok(step) => {
                        eprintln!(
                            "lab: level {} ({}): {}{}{}",
                            level,
                            step.patch,
                            verdict_word(step.verdict),
                            step.flaky
                                .as_ref()
                                .map(|f| format!(" ({f})"))
                                .unwrap_or_default(),
                            if step.reason.is_empty() {
                                String::new()
                            } else {
                                format!(" - {}", first_line(&step.reason))
                            }
                        );
                        planner.record(level, step.verdict);
                        if step.flaky.is_some() {
                            report.flaky_levels.push(level);
                        }
                        // A build the lab ran (a failed one included).
                        if !step.build_cached && step.build_s > 0.0 {
                            report.builds += 1;
                        }
                        report.steps.push(step);
                    }
                    Err(e) => match e.end(&mut report) {
                        Ok(exit) => break exit,
                        Err(m) => {
                            eprintln!("lab: error: {m}");
                            report.outcome = "lab_error".into();
                            report.message = m;
                            break Exit::LabError;
                        }
                    },
                }
                report.total_s = started.elapsed().as_secs_f64();
                let _ = write_bisect(&dir, &id, &report);
            }
            Next::FirstBad(p) => {
                report.outcome = "first_bad".into();
                report.first_bad = Some(p);
                report.first_bad_patch = Some(pipe.level_label(p));
                if pipe.range.is_some() {
                    report.first_bad_commit = pipe.levels.commits.get(p).cloned();
                }
                report.message = format!("first bad {}: {}", pipe.unit(), pipe.level_label(p));
                if opts.confirm {
                    // Said before the revert is built: it takes a build and runs.
                    println!("{}", report.message);
                    report.total_s = started.elapsed().as_secs_f64();
                    let _ = write_bisect(&dir, &id, &report);
                    match confirm(&pipe, p, opts, &dir, &id) {
                        Ok(c) => report.confirmation = Some(c),
                        Err(e) => match e.end(&mut report) {
                            Ok(exit) => break exit,
                            // The culprit stays named: only its confirmation
                            // could not be run (exit 3 says so).
                            Err(m) => {
                                eprintln!("lab: error: the confirmation could not run: {m}");
                                report.message = format!(
                                    "{} (not confirmed: the lab could not run: {m})",
                                    report.message
                                );
                                break Exit::LabError;
                            }
                        },
                    }
                }
                break Exit::Passed;
            }
            Next::OneOf(v) => {
                report.outcome = "one_of".into();
                report.candidates = v.clone();
                report.message = format!(
                    "the first bad patch is one of {} (the levels between could not be built or applied)",
                    v.iter()
                        .map(|l| pipe.level_label(*l))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                break Exit::Passed;
            }
            Next::BaseFails => {
                report.outcome = "base_fails".into();
                report.message = format!(
                    "the base kernel already fails {}: nothing to bisect",
                    tc.name
                );
                break Exit::Failed;
            }
            Next::SeriesPasses => {
                report.outcome = "series_passes".into();
                report.message = format!("the whole series passes {}: nothing to bisect", tc.name);
                break Exit::Failed;
            }
            Next::EndSkipped(l) => {
                report.outcome = "end_skipped".into();
                report.message = format!(
                    "level {l} ({}) could not be applied or built, so the bisection has no {} end",
                    pipe.level_label(l),
                    if l == 0 { "good" } else { "bad" }
                );
                break Exit::Failed;
            }
        }
    };
    report.total_s = started.elapsed().as_secs_f64();
    write_bisect(&dir, &id, &report).context("writing the bisection's results")?;
    match &report.confirmation {
        // The first-bad line was printed before the revert was built.
        Some(c) => println!("{}", c.message),
        None => println!("{}", report.message),
    }
    if !report.flaky_levels.is_empty() {
        println!(
            "flaky levels (runs disagreed, counted bad): {}",
            report
                .flaky_levels
                .iter()
                .map(|l| format!("{l} ({})", pipe.level_label(*l)))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    println!(
        "{} steps, {} builds (at most {} expected), {:.0} s",
        report.steps.len(),
        report.builds,
        report.max_builds,
        report.total_s
    );
    println!("results: {}", dir.display());
    println!("reproduce: {reproduce}");
    suite::page::write_and_print(&dir);
    Ok(code)
}

enum StepError {
    BadInput(String),
    Lab(String),
}

impl StepError {
    /// A build that failed other than by not compiling (which is a level's
    /// verdict, handled where it is built).
    fn from_build(e: BuildError) -> StepError {
        match e {
            BuildError::Dropped { .. } | BuildError::Fragment(_) => {
                StepError::BadInput(e.to_string())
            }
            BuildError::Interrupted => StepError::Lab("interrupted".into()),
            BuildError::Lab(e) => StepError::Lab(format!("{e:#}")),
            BuildError::Compile { .. } => StepError::Lab(e.to_string()),
        }
    }

    /// Ends the bisection on bad input or Ctrl-C, recording why in the
    /// report and returning the exit; a lab failure is given back for the
    /// caller to word (a failed level and a failed confirmation differ).
    fn end(self, report: &mut BisectReport) -> Result<Exit, String> {
        match self {
            StepError::BadInput(m) => {
                eprintln!("lab: error: {m}");
                report.outcome = "bad_input".into();
                report.message = m;
                Ok(Exit::BadInput)
            }
            StepError::Lab(_) if reaper::interrupted() => {
                report.outcome = "interrupted".into();
                report.message = "interrupted: partial results".into();
                Ok(Exit::Interrupted)
            }
            StepError::Lab(m) => Err(m),
        }
    }
}

fn test_level(
    pipe: &Pipeline,
    level: usize,
    opts: &BisectOptions,
    dir: &Path,
    id: &str,
) -> Result<BisectStep, StepError> {
    let rel = format!("level-{level}");
    let ldir = dir.join(&rel);
    let _ = std::fs::create_dir_all(&ldir);
    let mut step = BisectStep {
        level,
        patch: pipe.level_label(level),
        commit: pipe.levels.commits.get(level).cloned().unwrap_or_default(),
        verdict: LevelVerdict::Skip,
        reason: String::new(),
        build_s: 0.0,
        build_cached: false,
        build_seeded_from: None,
        test_s: 0.0,
        tries: 0,
        failed_runs: 0,
        flaky: None,
        dir: rel.clone(),
    };
    let t0 = Instant::now();
    let built = match pipe.build_level(level) {
        Ok(b) => b,
        Err(BuildError::Compile { summary, tail, log }) => {
            let _ = std::fs::copy(&log, ldir.join("build.log"));
            step.build_s = t0.elapsed().as_secs_f64();
            step.reason = format!("build failed: {summary}");
            let _ = std::fs::write(
                ldir.join("build-error.txt"),
                format!("{summary}\n\n{tail}\n"),
            );
            return Ok(step);
        }
        Err(e) => return Err(StepError::from_build(e)),
    };
    eprintln!(
        "{}",
        pipeline::describe_build(&pipe.level_short(level), &built)
    );
    pipeline::keep_build_files(&built, &ldir);
    step.build_s = if built.cached {
        0.0
    } else {
        built.meta.duration_s
    };
    step.build_cached = built.cached;
    step.build_seeded_from = built.meta.seeded_from.clone();
    let (runs, reason, test_s) = run_tries(
        pipe,
        &built,
        level,
        &pipe.level_request(level).reproduce_args(),
        opts,
        (dir, &ldir),
        id,
    )?;
    step.tries = runs.total();
    step.failed_runs = runs.failed;
    step.flaky = runs.flaky_note();
    step.verdict = runs.verdict();
    step.reason = match &step.flaky {
        Some(f) => format!("{f}: {reason}"),
        None => reason,
    };
    step.test_s = test_s;
    Ok(step)
}

/// Runs the testcase on a built kernel until [`Runs::done`]: the runs,
/// the failing checks of the failing run, and the time it took. Each run
/// goes to `<ldir>/try-<n>/`. A run the lab could not complete (a boot that
/// stalled twice) is an error, not a verdict.
fn run_tries(
    pipe: &Pipeline,
    built: &crate::kernel::build::Built,
    level: usize,
    kernel_args: &str,
    opts: &BisectOptions,
    (dir, ldir): (&Path, &Path),
    id: &str,
) -> Result<(Runs, String, f64), StepError> {
    let (tc_path, tc) = &opts.testcase;
    let host = LabHost::with_kernel(built.kernel.clone(), opts.accel)
        .map_err(|e| StepError::Lab(format!("{e:#}")))?;
    let t1 = Instant::now();
    let cases = vec![(tc_path.clone(), tc.clone())];
    let mut runs = Runs::default();
    let mut reason = String::new();
    while !runs.done(opts.retries) {
        let tdir = ldir.join(format!("try-{}", runs.total() + 1));
        let prefix = format!("lab run{kernel_args} --testcases {}", tc_path.display());
        let ropts = RunOptions {
            parallel: suite::Parallel::SERIAL,
            results: dir.to_path_buf(),
            reproduce: format!("{prefix} {}", tc.name),
            reproduce_prefix: prefix,
            properties: pipe.properties(level, built),
        };
        let r = suite::run_into(&host, &cases, &ropts, id, &tdir)
            .map_err(|e| StepError::Lab(format!("{e:#}")))?;
        match Exit::of_report(&r) {
            Exit::Passed => runs.record(true),
            Exit::Failed => {
                runs.record(false);
                reason = failing_checks(&r);
            }
            _ => {
                if reaper::interrupted() {
                    return Err(StepError::Lab("interrupted".into()));
                }
                return Err(StepError::Lab(format!(
                    "the lab could not run {} on level {level}: {} (see {})",
                    tc.name,
                    failing_checks(&r),
                    tdir.display()
                )));
            }
        }
    }
    Ok((runs, reason, t1.elapsed().as_secs_f64()))
}

/// Reverts the culprit (level `p`'s patch or commit) on top of the bad end,
/// builds that and runs the testcase `1 + retries` times: KernelCI's rule
/// before it trusts a culprit. Reverting the last level gives the tree of
/// the level before it, whose build is then reused.
fn confirm(
    pipe: &Pipeline,
    p: usize,
    opts: &BisectOptions,
    dir: &Path,
    id: &str,
) -> Result<ConfirmReport, StepError> {
    let tc = &opts.testcase.1;
    let n = pipe.patches();
    let culprit_label = pipe.level_label(p);
    let rel = "confirm".to_string();
    let cdir = dir.join(&rel);
    let _ = std::fs::create_dir_all(&cdir);
    let mut c = ConfirmReport {
        outcome: Confirmation::RevertDoesNotApply,
        message: String::new(),
        commit: String::new(),
        reason: String::new(),
        runs: Runs::default(),
        build_s: 0.0,
        build_cached: false,
        test_s: 0.0,
        dir: rel,
    };
    let (bad, culprit) = (&pipe.levels.commits[n], &pipe.levels.commits[p]);
    eprintln!(
        "lab: confirming: {} with {culprit_label} reverted",
        pipe.level_short(n)
    );
    let reverted =
        series::revert(&pipe.tree, bad, culprit).map_err(|e| StepError::Lab(format!("{e:#}")))?;
    let commit = match reverted {
        Ok(commit) => commit,
        Err(conflict) => {
            c.reason = conflict.to_string();
            c.message = format!(
                "{} ({})",
                c.outcome
                    .message(&culprit_label, pipe.unit(), &tc.name, &c.runs),
                c.reason
            );
            return Ok(c);
        }
    };
    c.commit = commit.clone();
    let t0 = Instant::now();
    let label = format!("{} - {}", pipe.level_short(n), pipe.level_short(p));
    let built = match pipe.builder.build(&commit, &label) {
        Ok(b) => b,
        Err(BuildError::Compile { summary, log, .. }) => {
            let _ = std::fs::copy(&log, cdir.join("build.log"));
            c.build_s = t0.elapsed().as_secs_f64();
            c.outcome = Confirmation::RevertDoesNotBuild;
            c.reason = format!("build failed: {summary}");
            c.message = format!(
                "{} ({})",
                c.outcome
                    .message(&culprit_label, pipe.unit(), &tc.name, &c.runs),
                c.reason
            );
            return Ok(c);
        }
        Err(e) => return Err(StepError::from_build(e)),
    };
    eprintln!("{}", pipeline::describe_build(&label, &built));
    pipeline::keep_build_files(&built, &cdir);
    c.build_s = if built.cached {
        0.0
    } else {
        built.meta.duration_s
    };
    c.build_cached = built.cached;
    // The runs' reproduce lines name the bad end: no flag rebuilds the
    // revert itself, and `lab run` on the bad end is where to start.
    let (runs, reason, test_s) = run_tries(
        pipe,
        &built,
        n,
        &pipe.level_request(n).reproduce_args(),
        opts,
        (dir, &cdir),
        id,
    )?;
    c.runs = runs;
    c.test_s = test_s;
    c.outcome = Confirmation::of_runs(&runs);
    c.reason = reason;
    c.message = c
        .outcome
        .message(&culprit_label, pipe.unit(), &tc.name, &runs);
    if c.outcome == Confirmation::NotConfirmed && !c.reason.is_empty() {
        c.message.push_str(&format!(": {}", first_line(&c.reason)));
    }
    Ok(c)
}

fn failing_checks(r: &RunReport) -> String {
    r.suites
        .iter()
        .flat_map(|s| &s.results)
        .filter_map(|c| match &c.outcome {
            Outcome::Failed { message, .. } => Some(format!("{}: {message}", c.check)),
            Outcome::Error { message, .. } => Some(format!("{}: {message}", c.check)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn verdict_word(v: LevelVerdict) -> &'static str {
    match v {
        LevelVerdict::Good => "good",
        LevelVerdict::Bad => "bad",
        LevelVerdict::Skip => "skip",
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// bisect.json, plus a JUnit file and summary with one testcase per step
/// (passed: good, failed: bad, skipped: could not apply or build).
fn write_bisect(dir: &Path, id: &str, report: &BisectReport) -> Result<()> {
    std::fs::write(
        dir.join("bisect.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    let mut results: Vec<CaseResult> = report
        .steps
        .iter()
        .map(|s| CaseResult {
            case: format!("bisect.{}", report.testcase),
            check: format!("level {} ({})", s.level, s.patch),
            outcome: match s.verdict {
                LevelVerdict::Good => Outcome::Passed,
                LevelVerdict::Bad => Outcome::Failed {
                    message: format!("{} fails: {}", report.testcase, s.reason),
                    detail: format!("logs: {}/", s.dir),
                },
                LevelVerdict::Skip => Outcome::Skipped {
                    reason: s.reason.clone(),
                },
            },
            duration_s: s.build_s + s.test_s,
        })
        .collect();
    // The confirmation is a testcase of its own: a culprit whose revert
    // still fails is a red line in CI, a revert that cannot be tested a skip.
    if let Some(c) = &report.confirmation {
        results.push(CaseResult {
            case: format!("bisect.{}", report.testcase),
            check: format!(
                "confirm (revert {})",
                report.first_bad_patch.as_deref().unwrap_or("-")
            ),
            outcome: match c.outcome {
                Confirmation::Confirmed => Outcome::Passed,
                Confirmation::NotConfirmed => Outcome::Failed {
                    message: c.message.clone(),
                    detail: format!("logs: {}/", c.dir),
                },
                Confirmation::RevertDoesNotApply | Confirmation::RevertDoesNotBuild => {
                    Outcome::Skipped {
                        reason: c.message.clone(),
                    }
                }
            },
            duration_s: c.build_s + c.test_s,
        });
    }
    let suite = SuiteReport {
        name: format!("bisect.{}", report.testcase),
        properties: vec![
            ("outcome".into(), report.outcome.clone()),
            ("message".into(), report.message.clone()),
            ("series".into(), report.series.clone()),
            ("kernel.source".into(), report.kernel_source.clone()),
            ("builds".into(), report.builds.to_string()),
            (
                "confirmation".into(),
                report
                    .confirmation
                    .as_ref()
                    .map_or("none".into(), |c| c.message.clone()),
            ),
            (
                "flaky_levels".into(),
                report
                    .flaky_levels
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("max_builds".into(), report.max_builds.to_string()),
        ],
        results,
        console_log: None,
        reproduce: report.reproduce.clone(),
    };
    let run = RunReport {
        run_id: id.to_string(),
        started_at: suite::results::now_rfc3339(),
        properties: vec![("command".into(), "bisect".into())],
        suites: vec![suite],
        reproduce: report.reproduce.clone(),
        interrupted: report.outcome == "interrupted",
    };
    suite::results::write_results(dir, &run)?;
    Ok(())
}
