//! `lab run`: load and select testcases, pick or build the kernel, run,
//! and print the summary. With `--compare-base`, run on the unpatched base
//! too and keep only the regressions.

use std::path::{Path, PathBuf};

use lab_core::report::{regressions_only, CaseResult, Outcome, RunReport, SuiteReport};
use lab_core::testcase::Testcase;

use crate::cmd::args::{BuildArgs, KernelArgs};
use crate::cmd::level::{self, LevelFailure};
use crate::exit::{CmdError, Exit};
use crate::host::LabHost;
use crate::kernel::pipeline::{self, KernelRequest};
use crate::paths;
use crate::suite::{self, RunOptions};

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    #[command(flatten)]
    pub b: BuildArgs,
    /// Also run the testcases on the unpatched base and report only
    /// regressions (fails with the series, passes without).
    #[arg(long, requires = "series")]
    pub compare_base: bool,
    /// List the testcases and exit.
    #[arg(long)]
    pub list: bool,
    /// Testcases at once, each in its own VM (default: what the host can
    /// take: one VM per core under TCG, one per two cores under KVM, less
    /// when memory is short). Testcases on the same guest image share one
    /// VM, wiped between them, its NVMe device swapped by hot-plug where
    /// theirs differ; `-j 1` boots a VM for every testcase, one after
    /// another.
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Exit as `git bisect run` expects: 0 good, 1 bad, 125 when this
    /// revision cannot be tested (its kernel does not build, the lab could
    /// not run); bad input (128) and Ctrl-C (130) stop the bisection. For
    /// `git bisect run lab run --bisect-exit --kernel-tree . TESTCASE`.
    #[arg(long)]
    pub bisect_exit: bool,
    /// Run only shard M of N (1-based) of the selected testcases, split by
    /// a stable hash of each name: for CI matrices (`lab report merge`
    /// joins the shards' results).
    #[arg(long, value_name = "M/N")]
    pub shard: Option<lab_core::shard::Shard>,
    /// Use this run id for the results directory instead of a fresh one, so
    /// the shards of one pipeline share it.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Testcase files or directories.
    #[arg(long = "testcases", default_value = "testcases")]
    pub testcases: Vec<PathBuf>,
    /// Results directory (default: results/ in the repo).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Run only testcases whose name contains one of these; a YAML file
    /// (`testcases/limits-4k.yaml`, as tab completion gives it) runs that
    /// file.
    pub filters: Vec<String>,
}

/// A filter that names an existing YAML file is that testcase file.
fn is_testcase_file(filter: &str) -> bool {
    let p = Path::new(filter);
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) && p.is_file()
}

pub fn run(args: RunArgs) -> Result<Exit, CmdError> {
    let root = paths::repo_root()?;
    let (files, names): (Vec<&String>, Vec<&String>) =
        args.filters.iter().partition(|f| is_testcase_file(f));
    let default_sources = args.testcases == [PathBuf::from("testcases")];
    // Files named as filters replace the default testcase directory.
    let sources: Vec<PathBuf> = if !files.is_empty() && default_sources {
        files.iter().map(PathBuf::from).collect()
    } else {
        args.testcases
            .iter()
            .cloned()
            .chain(files.iter().map(PathBuf::from))
            .collect()
    };
    let tc_paths: Vec<PathBuf> = sources.iter().map(|p| paths::user_path(&root, p)).collect();
    let all = suite::load(&tc_paths).map_err(|errs| CmdError::BadInputs {
        summary: format!(
            "{} testcase file(s) are invalid; nothing was run",
            errs.len()
        ),
        errors: errs.iter().map(ToString::to_string).collect(),
    })?;
    let names: Vec<String> = names.into_iter().cloned().collect();
    let mut cases = suite::select(all, &names);
    if cases.is_empty() {
        return Err(CmdError::bad_input(format!(
            "no testcase matches {:?} (see `lab run --list`)",
            args.filters
        )));
    }
    if let Some(id) = &args.run_id {
        lab_core::shard::check_run_id(id).map_err(CmdError::bad_input)?;
    }
    let selected: Vec<String> = cases.iter().map(|(_, tc)| tc.name.clone()).collect();
    if let Some(shard) = args.shard {
        cases.retain(|(_, tc)| shard.contains(&tc.name));
        eprintln!(
            "lab: shard {shard}: {} of the {} selected testcases",
            cases.len(),
            selected.len()
        );
    }
    if args.list {
        for (path, tc) in &cases {
            println!(
                "{:<28} lba={:<5} fs_block={:<6} {:<8} {}  [{}]",
                tc.name,
                tc.device.lba_size,
                tc.mkfs
                    .as_ref()
                    .map_or("-".to_string(), |m| m.block_size.to_string()),
                tc.workload.label(),
                tc.description,
                path.display()
            );
        }
        return Ok(Exit::Passed);
    }
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| paths::results_dir(&root));
    if let Some(id) = &args.run_id {
        // Said before any kernel is built (exit 2); new_run_dir refuses it
        // again, atomically, when the directory is made.
        if results.join(id).exists() {
            return Err(CmdError::bad_input(suite::results::run_id_taken(
                &results, id,
            )));
        }
    }
    if cases.is_empty() {
        // A shard the split left empty (more shards than testcases): an
        // empty run, so a merge of the pipeline's shards still finds it.
        let (id, dir) = suite::results::new_run_dir(&results, args.run_id.as_deref())?;
        let report = RunReport {
            run_id: id,
            started_at: suite::results::now_rfc3339(),
            properties: shard_properties(&args, &selected),
            suites: vec![],
            reproduce: String::new(),
            interrupted: false,
        };
        suite::results::write_results(&dir, &report)?;
        return Ok(finish_run(&report, &dir));
    }
    let req = args.b.request(&root);
    // The reproduce line: everything that chose the kernel and testcases.
    let mut kernel_flags = String::from("lab run");
    if let Some(kp) = &args.k.kernel {
        kernel_flags.push_str(&format!(" --kernel {}", kp.display()));
    }
    kernel_flags.push_str(&req.reproduce_args());
    if args.compare_base {
        kernel_flags.push_str(" --compare-base");
    }
    // After --accel, which the run knows only once the host is resolved.
    let mut sources_flags = String::new();
    if !default_sources || !files.is_empty() {
        for t in &sources {
            sources_flags.push_str(&format!(" --testcases {}", t.display()));
        }
    }
    let reproduce = Reproduce {
        kernel_flags,
        sources_flags,
    };
    if !req.wanted() {
        let host = args.k.host()?;
        print_host(&host);
        let (id, dir) = suite::results::new_run_dir(&results, args.run_id.as_deref())?;
        let mut opts =
            reproduce.options(&host, &cases, &results, shard_properties(&args, &selected));
        opts.parallel = parallel(args.jobs, &host);
        let report = suite::run_into(&host, &cases, &opts, &id, &dir)?;
        return Ok(finish_run(&report, &dir));
    }
    let target = Target {
        cases: &cases,
        results: &results,
        run_id: args.run_id.as_deref(),
        properties: shard_properties(&args, &selected),
    };
    built_run(
        &root,
        &req,
        &args.k,
        args.compare_base,
        args.jobs,
        &target,
        &reproduce,
    )
}

/// `-j`: 1 is one VM per testcase, one after another (no reuse); N or the
/// host's default runs N at once with VMs reused within a class.
fn parallel(jobs: Option<u16>, host: &LabHost) -> suite::Parallel {
    let p = match jobs {
        Some(1) => suite::Parallel::SERIAL,
        Some(n) => suite::Parallel {
            jobs: usize::from(n),
            reuse: true,
        },
        None => {
            let d = crate::host::default_jobs(host.accel);
            eprintln!("lab: {} jobs ({}; -j to choose)", d.jobs, d.reason);
            suite::Parallel {
                jobs: d.jobs,
                reuse: true,
            }
        }
    };
    if jobs.is_some() {
        eprintln!(
            "lab: {} job{}{}",
            p.jobs,
            if p.jobs == 1 { "" } else { "s" },
            if p.reuse {
                ", VMs reused within a class"
            } else {
                ", a VM booted for every testcase"
            }
        );
    }
    p
}

/// Where a run goes: the testcases, the results directory, the run id
/// (`--run-id`, else a fresh one) and properties the flags add.
struct Target<'a> {
    cases: &'a [(PathBuf, Testcase)],
    results: &'a Path,
    run_id: Option<&'a str>,
    properties: Vec<(String, String)>,
}

/// `run.shard` and `run.selected` (every testcase the selection held
/// before the split, so a merge can name those no shard ran) when the run
/// is one shard of a split.
fn shard_properties(args: &RunArgs, selected: &[String]) -> Vec<(String, String)> {
    match args.shard {
        Some(s) => vec![
            ("run.shard".to_string(), s.to_string()),
            ("run.selected".to_string(), selected.join(" ")),
        ],
        None => Vec::new(),
    }
}

/// What goes into the reproduce line: `lab run <kernel flags> --accel X
/// <sources flags> <names>`.
struct Reproduce {
    kernel_flags: String,
    sources_flags: String,
}

impl Reproduce {
    fn options(
        &self,
        host: &LabHost,
        cases: &[(PathBuf, Testcase)],
        results: &Path,
        properties: Vec<(String, String)>,
    ) -> RunOptions {
        let reproduce_prefix = format!(
            "{} --accel {}{}",
            self.kernel_flags,
            host.accel.as_str(),
            self.sources_flags
        );
        let mut full = reproduce_prefix.clone();
        for (_, tc) in cases {
            full.push(' ');
            full.push_str(&tc.name);
        }
        RunOptions {
            results: results.to_path_buf(),
            reproduce: full,
            reproduce_prefix,
            properties,
            parallel: suite::Parallel::SERIAL,
        }
    }

    /// Without --accel (a build failure never chose one).
    fn without_accel(&self) -> String {
        format!("{}{}", self.kernel_flags, self.sources_flags)
    }
}

fn print_host(host: &LabHost) {
    eprintln!(
        "lab: kernel {}, QEMU {} ({}), accel {} ({})",
        host.kernel.release,
        host.qemu.version,
        host.qemu.source.describe(),
        host.accel.as_str(),
        host.accel_reason
    );
}

fn finish_run(report: &RunReport, dir: &Path) -> Exit {
    let c = report.counts();
    println!(
        "{} passed, {} failed, {} skipped, {} errors{}",
        c.passed,
        c.failed,
        c.skipped,
        c.errors,
        if report.interrupted {
            " (interrupted: partial results)"
        } else {
            ""
        }
    );
    println!("results: {}", dir.display());
    println!("reproduce: {}", report.reproduce);
    suite::page::write_and_print(dir);
    Exit::of_report(report)
}

fn built_run(
    root: &Path,
    req: &KernelRequest,
    k: &KernelArgs,
    compare_base: bool,
    jobs: Option<u16>,
    target: &Target,
    reproduce: &Reproduce,
) -> Result<Exit, CmdError> {
    let Target {
        cases,
        results,
        run_id,
        ..
    } = *target;
    let (pipe, level) = level::prepare(root, req)?;
    let (id, dir) = suite::results::new_run_dir(results, run_id)?;
    // The base first: the patched level then builds incrementally from it.
    let base = if compare_base && level > 0 {
        match level::build(&pipe, 0) {
            Ok(b) => Some(b),
            Err(LevelFailure::Compile(_)) => return Ok(Exit::Untestable),
            Err(LevelFailure::Error(e)) => return Err(e),
        }
    } else {
        None
    };
    let built = match level::build(&pipe, level) {
        Ok(b) => b,
        Err(LevelFailure::Error(e)) => return Err(e),
        Err(LevelFailure::Compile(message)) => {
            // The series does not build: a failed check in the results.
            let report = RunReport {
                run_id: id.clone(),
                started_at: suite::results::now_rfc3339(),
                properties: [("kernel.level".to_string(), pipe.level_label(level))]
                    .into_iter()
                    .chain(target.properties.iter().cloned())
                    .collect(),
                suites: vec![SuiteReport {
                    name: "kernel-build".into(),
                    properties: vec![],
                    results: vec![CaseResult {
                        case: "kernel-build".into(),
                        check: "build".into(),
                        outcome: Outcome::Failed {
                            message: message.lines().next().unwrap_or("").to_string(),
                            detail: message.clone(),
                        },
                        duration_s: 0.0,
                    }],
                    console_log: None,
                    reproduce: reproduce.without_accel(),
                }],
                reproduce: reproduce.without_accel(),
                interrupted: false,
            };
            suite::results::write_results(&dir, &report)?;
            println!("results: {}", dir.display());
            suite::page::write_and_print(&dir);
            return Ok(Exit::Untestable);
        }
    };
    pipeline::keep_build_files(&built, &dir.join("kernel"));
    let host = k.host_for(built.kernel.clone())?;
    print_host(&host);
    let with_target = |mut p: Vec<(String, String)>| {
        p.extend(target.properties.iter().cloned());
        p
    };
    let mut opts = reproduce.options(
        &host,
        cases,
        results,
        with_target(pipe.properties(level, &built)),
    );
    opts.parallel = parallel(jobs, &host);
    let Some(base) = base else {
        let report = suite::run_into(&host, cases, &opts, &id, &dir)?;
        return Ok(finish_run(&report, &dir));
    };
    // --compare-base: both kernels, then only regressions count.
    eprintln!(
        "lab: running on the patched kernel ({})",
        pipe.level_label(level)
    );
    let patched = suite::run_into(&host, cases, &opts, &id, &dir.join("patched"))?;
    pipeline::keep_build_files(&base, &dir.join("base/kernel"));
    let base_host = k.host_for(base.kernel.clone())?;
    eprintln!("lab: running on the base kernel");
    let mut base_opts = reproduce.options(
        &base_host,
        cases,
        results,
        with_target(pipe.properties(0, &base)),
    );
    base_opts.parallel = opts.parallel;
    let base_report = suite::run_into(&base_host, cases, &base_opts, &id, &dir.join("base"))?;
    let mut combined = regressions_only(&patched, &base_report);
    combined
        .properties
        .push(("compare_base".into(), "true".into()));
    combined.interrupted = patched.interrupted || base_report.interrupted;
    for s in &mut combined.suites {
        if let Some(c) = &mut s.console_log {
            *c = format!("patched/{c}");
        }
    }
    suite::results::write_results(&dir, &combined)?;
    Ok(finish_run(&combined, &dir))
}
