//! Turning what happened in a testcase into its results: one
//! [`CaseResult`] per check, a lab error or a kernel failure from a VM
//! error, the agent's step reports judged; and [`StageError`], a stage that
//! could not complete. Shared by the testcase runner and its power-cut stage.

use std::time::Duration;

use lab_core::report::{CaseResult, Outcome};
use lab_core::steps::{self, Step, StepResult, StepVerdict};

use crate::vm::VmError;

/// A stage of a testcase that could not complete, and why.
#[derive(Debug)]
pub struct StageError {
    /// The stage, as its check is named in the results (`mkfs`, `steps`).
    pub stage: String,
    pub error: VmError,
}

impl StageError {
    pub fn new(stage: &str, error: VmError) -> StageError {
        StageError {
            stage: stage.to_string(),
            error,
        }
    }

    /// An error of the lab's own (not the guest's) in `stage`.
    pub fn lab(stage: &str, error: impl Into<anyhow::Error>) -> StageError {
        StageError::new(stage, VmError::Other(error.into()))
    }
}

pub fn result(case: &str, check: &str, outcome: Outcome, d: Duration) -> CaseResult {
    CaseResult {
        case: case.to_string(),
        check: check.to_string(),
        outcome,
        duration_s: d.as_secs_f64(),
    }
}

/// The lab could not do its part of a case (no disk, no image).
pub fn lab_error(case: &str, stage: &str, e: &anyhow::Error, d: Duration) -> CaseResult {
    result(
        case,
        stage,
        Outcome::Error {
            message: format!("{e:#}"),
            detail: String::new(),
        },
        d,
    )
}

/// An error of the lab or the guest, as a result: a crash of the kernel is a
/// failure of the kernel under test; anything else is the lab not able to run.
pub fn vm_error_result(case: &str, stage: &str, e: &VmError, d: Duration) -> CaseResult {
    let detail = e
        .console_tail()
        .map(|t| format!("console tail:\n{t}"))
        .unwrap_or_default();
    let outcome = match e {
        VmError::Crashed { splat, .. } => Outcome::Failed {
            message: format!("{} (during {stage})", splat.title),
            detail: format!("{}\n\n{detail}", splat.excerpt),
        },
        VmError::Timeout { .. } => Outcome::Failed {
            message: format!("guest hung: {e}"),
            detail,
        },
        // Nothing says the kernel was at fault: the lab could not run it.
        VmError::BootStalled { diagnosis, .. } => Outcome::Error {
            message: format!("{e}"),
            detail: format!("{diagnosis}\n{detail}"),
        },
        other => Outcome::Error {
            message: format!("{other:#}"),
            detail,
        },
    };
    result(case, stage, outcome, d)
}

/// A run id for stamps: never 0, differs between runs.
pub fn stamp_run_id() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 48) | 1
}

/// One result per step from the agent's JSON lines; `missing` says what a
/// step the agent never reported means. A `folios` step's census becomes
/// the properties `folios.stepNN` and `page_cache.large_folios` (yes when
/// any census found a folio of several pages).
pub fn judge_steps(
    steps: &[Step],
    agent_stdout: &str,
    case: &str,
    elapsed: Duration,
    missing: &dyn Fn(usize, &Step) -> Outcome,
    properties: &mut Vec<(String, String)>,
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    let reported: Vec<StepResult> = agent_stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut large_folios = None;
    for (i, step) in steps.iter().enumerate() {
        let name = format!("step{:02}.{}", i + 1, step.name());
        if let Some(c) = reported
            .iter()
            .find(|r| r.index == i)
            .and_then(|r| r.folios.as_ref())
        {
            properties.push((format!("folios.step{:02}", i + 1), c.describe()));
            large_folios = Some(large_folios.unwrap_or(false) || c.has_large_folios());
        }
        let outcome = match reported.iter().find(|r| r.index == i) {
            Some(r) => match steps::judge(step, r) {
                StepVerdict::Pass => Outcome::Passed,
                StepVerdict::Skip(reason) => Outcome::Skipped { reason },
                StepVerdict::Fail(message) => Outcome::Failed {
                    message,
                    detail: format!(
                        "step {}: {}\nagent: {}",
                        i + 1,
                        step.describe(),
                        serde_json::to_string(r).unwrap_or_default()
                    ),
                },
            },
            None => missing(i, step),
        };
        results.push(result(case, &name, outcome, elapsed));
    }
    if let Some(yes) = large_folios {
        let v = if yes { "yes" } else { "no" };
        properties.push(("page_cache.large_folios".into(), v.into()));
    }
    results
}
