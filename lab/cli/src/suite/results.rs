//! A run's results directory: its id, `results/<run-id>/` with
//! `results/latest` pointing at it, and junit.xml and summary.json written
//! into it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lab_core::report::RunReport;

/// "YYYYmmddTHHMMSSZ-PID": sortable, unique on one host, safe in a file
/// name.
fn run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

/// Creates `results/<run-id>/` and points `results/latest` at it at once,
/// so a run cut short is still found. `given` is a `--run-id` (checked by
/// `lab_core::shard::check_run_id`); its directory is created only if it
/// is not there yet, in one step, so a run never writes into another
/// run's directory.
pub fn new_run_dir(results: &Path, given: Option<&str>) -> Result<(String, PathBuf)> {
    let id = given.map_or_else(run_id, str::to_string);
    let dir = results.join(&id);
    std::fs::create_dir_all(results).with_context(|| format!("creating {}", results.display()))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(run_id_taken(results, &id))
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let latest = results.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&id, &latest);
    Ok((id, dir))
}

/// Why a `--run-id` cannot be used: the results directory has it already.
pub fn run_id_taken(results: &Path, id: &str) -> String {
    format!(
        "{} already holds a run with id {id}: each shard of a pipeline writes its own results directory",
        results.display()
    )
}

/// Now, as RFC 3339 in UTC to the second (`2026-12-02T15:04:05Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn write_results(dir: &Path, report: &RunReport) -> Result<()> {
    std::fs::write(dir.join("junit.xml"), report.junit_xml())?;
    std::fs::write(dir.join("summary.json"), report.summary_json())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times_have_their_documented_shapes() {
        let id = run_id();
        let (stamp, pid) = id.split_once('-').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(stamp.len(), 16, "{id}");
        assert!(stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T', "{id}");
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        assert_eq!(&t[..4], &stamp[..4]);
    }
}
