//! `lab bisect`: finds the first patch of a series, or commit of a git
//! tree's range (`--good`/`--bad`), whose kernel fails a testcase (both ends
//! first, then binary search; levels that do not apply or build are
//! skipped), then confirms it by reverting it on the bad end. Exit 0 when
//! it names the patch (or the range).

use std::path::{Path, PathBuf};

use crate::cmd::args::BuildArgs;
use crate::exit::{CmdError, Exit};
use crate::host::accel::AccelChoice;
use crate::kernel::bisect::{self, BisectOptions};
use crate::kernel::pipeline::RangeRequest;
use crate::paths;
use crate::suite;

#[derive(clap::Args)]
pub struct BisectArgs {
    #[command(flatten)]
    pub b: BuildArgs,
    /// The testcase: a name in testcases/ or a YAML file.
    #[arg(long)]
    pub testcase: String,
    /// Extra passing runs before a level is called good (flaky bugs).
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// A commit of --kernel-tree that passes: bisect its commits up to --bad
    /// instead of a series.
    #[arg(
        long,
        requires = "bad",
        requires = "kernel_tree",
        conflicts_with = "series"
    )]
    pub good: Option<String>,
    /// A commit of --kernel-tree that fails (with --good).
    #[arg(long, requires = "good")]
    pub bad: Option<String>,
    /// Bisect every commit between --good and --bad in topological order,
    /// not only the first-parent line (`git bisect --first-parent`, the
    /// default: merged branches are tested as their merge).
    #[arg(long, requires = "good")]
    pub full_history: bool,
    /// Do not confirm the culprit (by reverting it on the bad end and
    /// running the testcase 1 + --retries times).
    #[arg(long)]
    pub no_confirm: bool,
    /// CPU accelerator: auto probes KVM with a real boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Results directory (default: results/ in the repo).
    #[arg(long)]
    pub results: Option<PathBuf>,
}

pub fn run(args: BisectArgs) -> Result<Exit, CmdError> {
    let root = paths::repo_root()?;
    let mut req = args.b.request(&root);
    if let (Some(good), Some(bad)) = (&args.good, &args.bad) {
        req.range = Some(RangeRequest {
            good: good.clone(),
            bad: bad.clone(),
            full_history: args.full_history,
        });
    }
    if req.series.is_none() && req.range.is_none() {
        return Err(CmdError::bad_input(
            "lab bisect needs --series, or --kernel-tree with --good and --bad",
        ));
    }
    if req.upto.is_some() || req.rev.is_some() {
        return Err(CmdError::bad_input(
            "--upto and --rev do not apply to lab bisect (it tries the levels itself)",
        ));
    }
    // A testcase by name (in testcases/ and testcases/controls/) or a file.
    let as_file = paths::user_path(&root, Path::new(&args.testcase));
    let paths_to_load = if as_file.is_file() {
        vec![as_file]
    } else {
        vec![root.join("testcases"), root.join("testcases/controls")]
    };
    let all = suite::load(&paths_to_load).map_err(|errs| CmdError::BadInputs {
        summary: format!("{} testcase file(s) are invalid", errs.len()),
        errors: errs.iter().map(ToString::to_string).collect(),
    })?;
    let found = if paths_to_load.len() == 1 {
        all.into_iter().next()
    } else {
        all.into_iter().find(|(_, tc)| tc.name == args.testcase)
    };
    let Some(tc) = found else {
        return Err(CmdError::bad_input(format!(
            "--testcase {}: no such testcase (see `lab run --list`) and no such file",
            args.testcase
        )));
    };
    let opts = BisectOptions {
        request: req,
        testcase: tc,
        retries: args.retries,
        results: args.results.unwrap_or_else(|| paths::results_dir(&root)),
        accel: args.accel,
        confirm: !args.no_confirm,
    };
    bisect::bisect(&root, &paths::cache_dir(), &opts)
}
