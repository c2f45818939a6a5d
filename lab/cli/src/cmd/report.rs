//! `lab report merge DIR... --out DIR`: one junit.xml and summary.json from
//! the results of a run's shards (`lab run --shard M/N` in each CI job).
//! The rules (same kernel, no testcase twice, what no shard ran) live in
//! `lab_core::merge`; this reads the shards and writes the merged run.
//!
//! `lab report DIR`: writes (again) the HTML page of any results directory
//! (`suite::page`), e.g. one an older lab wrote, or after copying it.

use std::path::{Path, PathBuf};

use lab_core::report::RunReport;

use crate::exit::{CmdError, Exit};
use crate::suite::results::write_results;

// `lab report DIR` or `lab report merge ...`: a positional directory and a
// subcommand that exclude each other, so `merge` stays a subcommand and any
// other word is a directory (`./merge` is one named merge).
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub what: Option<ReportCmd>,
    /// A results directory (holding summary.json) whose index.html to
    /// write again.
    #[arg(required = true)]
    pub dir: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum ReportCmd {
    /// Merge the results of a run's shards into one run: refuses shards of
    /// different kernels or a testcase two shards ran (exit 2); what no
    /// shard ran is an error of the merged run. Exit code: that of one run
    /// over everything.
    Merge {
        /// Each shard's run directory (holding summary.json), or a results
        /// directory whose `latest` is the shard's run.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where the merged junit.xml and summary.json go.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: ReportArgs) -> Result<Exit, CmdError> {
    match (args.what, args.dir) {
        (Some(ReportCmd::Merge { dirs, out }), _) => merge(&dirs, &out),
        (None, Some(dir)) => page(&dir),
        (None, None) => Err(CmdError::bad_input(
            "lab report needs a results directory or `merge`",
        )),
    }
}

/// `lab report DIR`: the page of a results directory; exit 0 once written.
fn page(dir: &Path) -> Result<Exit, CmdError> {
    if !dir.join("summary.json").is_file() {
        return Err(CmdError::bad_input(format!(
            "{}: no summary.json (give a run's results directory)",
            dir.display()
        )));
    }
    let path = crate::suite::page::write(dir).map_err(CmdError::Lab)?;
    println!("page: {}", path.display());
    Ok(Exit::Passed)
}

/// A shard's summary: `DIR/summary.json`, else `DIR/latest/summary.json`.
fn read_shard(dir: &Path) -> Result<RunReport, CmdError> {
    let path = [dir.join("summary.json"), dir.join("latest/summary.json")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CmdError::bad_input(format!(
                "{}: no summary.json (give a shard's run directory or its results directory)",
                dir.display()
            ))
        })?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CmdError::bad_input(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CmdError::bad_input(format!("{}: not a lab summary: {e}", path.display())))
}

fn merge(dirs: &[PathBuf], out: &Path) -> Result<Exit, CmdError> {
    let shards = dirs
        .iter()
        .map(|d| Ok((d.display().to_string(), read_shard(d)?)))
        .collect::<Result<Vec<_>, CmdError>>()?;
    let merged = lab_core::merge::merge(&shards).map_err(|e| CmdError::bad_input(e.to_string()))?;
    std::fs::create_dir_all(out)
        .map_err(|e| CmdError::Lab(anyhow::anyhow!("creating {}: {e}", out.display())))?;
    write_results(out, &merged.report)?;
    let r = &merged.report;
    let c = r.counts();
    println!(
        "merged {} shard(s): {} testcases, {} passed, {} failed, {} skipped, {} errors",
        shards.len(),
        r.suites.len(),
        c.passed,
        c.failed,
        c.skipped,
        c.errors
    );
    if !merged.missing_shards.is_empty() {
        println!(
            "missing: no results from shard(s) {}",
            merged.missing_shards.join(", ")
        );
    }
    if !merged.not_run.is_empty() {
        println!(
            "not run: {} testcase(s) of the selection: {}",
            merged.not_run.len(),
            merged.not_run.join(" ")
        );
    }
    println!("results: {}", out.display());
    crate::suite::page::write_and_print(out);
    Ok(Exit::of_report(r))
}
