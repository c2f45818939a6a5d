//! `lab`: the atomic-write lab's command line.
//!
//! Exit codes (stable, scripts rely on them): 0 passed, 1 a test failed,
//! 2 bad input, 3 the lab could not run, 130 interrupted (partial results kept).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lab_core::device::DeviceParams;

use lab_cli::cmd::doctor;
use lab_cli::host::{self, AccelChoice, LabHost};
use lab_cli::kernel::{bisect as bisectrun, pipeline as kpipe};
use lab_cli::proc::reaper;
use lab_cli::suite as run;
use lab_cli::{bench, paths, vm};
use lab_cli::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LAB};

#[derive(Parser)]
#[command(
    name = "lab",
    version,
    about = "QEMU-backed integration lab for Linux atomic writes (RWF_ATOMIC)"
)]
struct Cli {
    /// More logging (-v info, -vv debug); or set RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct KernelArgs {
    /// Kernel to boot: a bzImage, or a directory with vmlinuz/modules/release
    /// (default: the Debian cloud kernel the set-up downloaded).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Modules directory (lib/modules/<release>) for a bzImage given with --kernel.
    #[arg(long)]
    modules: Option<PathBuf>,
    /// CPU accelerator: auto probes KVM with a real boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
}

/// A kernel the lab builds: source, series, config fragments.
#[derive(clap::Args, Clone, Default)]
struct BuildArgs {
    /// Kernel source to build: a git work tree or a tarball (default with
    /// --series or --kconfig: Debian's linux-source-7.x the set-up fetched).
    #[arg(long, conflicts_with = "kernel")]
    kernel_tree: Option<PathBuf>,
    /// Patch series to apply (mbox as `b4 am` writes it, a directory of
    /// `git format-patch` files, or a quilt `series` file).
    #[arg(long, conflicts_with = "kernel")]
    series: Option<PathBuf>,
    /// Apply only the first N patches of the series (0: the base).
    #[arg(long, requires = "series")]
    upto: Option<usize>,
    /// Extra kernel config fragment on top of vm-images/kconfig/lab.config:
    /// a name there (`debug`: KASAN, UBSAN, lockdep, XFS_DEBUG) or a file.
    #[arg(long, conflicts_with = "kernel")]
    kconfig: Vec<String>,
}

impl BuildArgs {
    /// Relative paths that do not exist from the current directory are
    /// taken from the repository root (as `--testcases` is), so
    /// `--series patches/x` works from anywhere in the checkout.
    fn request(&self, root: &std::path::Path) -> kpipe::KernelRequest {
        let resolve = |p: &PathBuf| {
            if p.is_relative() && !p.exists() && root.join(p).exists() {
                root.join(p)
            } else {
                p.clone()
            }
        };
        kpipe::KernelRequest {
            tree: self.kernel_tree.as_ref().map(resolve),
            series: self.series.as_ref().map(resolve),
            kconfig: self.kconfig.clone(),
            upto: self.upto,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the host: QEMU and its NVMe atomic properties, KVM, kernel, guest image.
    Doctor {
        #[command(flatten)]
        k: KernelArgs,
    },
    /// Boot a VM on an NVMe device; run CMD over SSH (exit with its status) or open a shell.
    Boot {
        #[command(flatten)]
        k: KernelArgs,
        /// Logical block size of the namespace.
        #[arg(long, default_value_t = 4096)]
        lba_size: u32,
        /// Controller AWUN (0's based LBA count).
        #[arg(long, default_value_t = 0)]
        awun: u16,
        /// Controller AWUPF (0's based LBA count).
        #[arg(long, default_value_t = 0)]
        awupf: u16,
        /// Controller atomic.dn (disable normal).
        #[arg(long)]
        dn: bool,
        /// Namespace size in MiB.
        #[arg(long, default_value_t = 512)]
        size_mib: u64,
        /// Namespaces (nvme0n1, nvme0n2, ...), 1 to 4.
        #[arg(long, default_value_t = 1)]
        namespaces: u8,
        /// Namespace NAWUN (0's based LBA count; needs QEMU >= 10.2).
        #[arg(long, default_value_t = 0)]
        nawun: u16,
        /// Namespace NAWUPF, the atomic unit Linux reads (0's based).
        #[arg(long, default_value_t = 0)]
        nawupf: u16,
        /// Namespace NABSN (0's based; 0: no boundary).
        #[arg(long, default_value_t = 0)]
        nabsn: u16,
        /// Namespace NABSPF, the atomic boundary Linux reads (0's based).
        #[arg(long, default_value_t = 0)]
        nabspf: u16,
        /// Namespace NABO (Linux ignores every namespace limit when it is not 0).
        #[arg(long, default_value_t = 0)]
        nabo: u16,
        /// Seconds to wait for SSH.
        #[arg(long, default_value_t = 120)]
        boot_timeout: u64,
        /// Seconds the command may run.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Where to write the serial console (default: results/boot/console.log).
        #[arg(long)]
        console: Option<PathBuf>,
        /// Command to run in the guest (after `--`).
        #[arg(last = true)]
        cmd: Vec<String>,
    },
    /// Run YAML testcases (default: all of testcases/); results go to results/<run-id>/.
    Run {
        #[command(flatten)]
        k: KernelArgs,
        #[command(flatten)]
        b: BuildArgs,
        /// Also run the testcases on the unpatched base and report only
        /// regressions (fails with the series, passes without).
        #[arg(long, requires = "series")]
        compare_base: bool,
        /// List the testcases and exit.
        #[arg(long)]
        list: bool,
        /// Testcase files or directories.
        #[arg(long = "testcases", default_value = "testcases")]
        testcases: Vec<PathBuf>,
        /// Results directory (default: results/ in the repo).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Run only testcases whose name contains one of these.
        filters: Vec<String>,
    },
    /// Find the first patch of a series whose kernel fails a testcase:
    /// both ends first, then binary search; levels that do not apply or
    /// build are skipped. Exit 0 when it names the patch (or the range).
    Bisect {
        #[command(flatten)]
        b: BuildArgs,
        /// The testcase: a name in testcases/ or a YAML file.
        #[arg(long)]
        testcase: String,
        /// Extra passing runs before a level is called good (flaky bugs).
        #[arg(long, default_value_t = 1)]
        retries: u32,
        /// CPU accelerator: auto probes KVM with a real boot and falls back to TCG.
        #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
        accel: AccelChoice,
        /// Results directory (default: results/ in the repo).
        #[arg(long)]
        results: Option<PathBuf>,
    },
    /// Judge a kept crash state again (a directory a failing power-cut run
    /// printed): rebuild it, mount, scan, xfs_repair -n, model.
    Verify {
        #[command(flatten)]
        k: KernelArgs,
        /// results/<run>/<testcase>/crash/state-N
        state: PathBuf,
    },
    /// Benchmarks; results go to results/bench/<what>.json.
    Bench {
        #[command(flatten)]
        k: KernelArgs,
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[global_allocator]
static HEAP: lab_cli::bench::heap::Counting = lab_cli::bench::heap::Counting;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    reaper::install_signal_handler();
    let code = match cli.command {
        Cmd::Doctor { k } => doctor::doctor(k.kernel.as_deref(), k.modules.as_deref()),
        Cmd::Boot {
            k,
            lba_size,
            awun,
            awupf,
            dn,
            size_mib,
            namespaces,
            nawun,
            nawupf,
            nabsn,
            nabspf,
            nabo,
            boot_timeout,
            timeout,
            console,
            cmd,
        } => {
            let device = DeviceParams {
                lba_size,
                awun,
                awupf,
                dn,
                size_mib,
                namespaces,
                nawun,
                nawupf,
                nabsn,
                nabspf,
                nabo,
            };
            boot(&k, device, boot_timeout, timeout, console, &cmd)
        }
        Cmd::Run {
            k,
            b,
            compare_base,
            list,
            testcases,
            results,
            filters,
        } => run_cmd(&k, &b, compare_base, list, &testcases, results, &filters),
        Cmd::Bisect {
            b,
            testcase,
            retries,
            accel,
            results,
        } => bisect_cmd(&b, &testcase, retries, accel, results),
        Cmd::Verify { k, state } if !state.join("case.json").is_file() => {
            let _ = k;
            eprintln!(
                "lab: error: {}: not a kept crash state (expected results/<run>/<testcase>/crash/state-N with case.json)",
                state.display()
            );
            EXIT_BAD_INPUT
        }
        Cmd::Verify { k, state } => {
            match LabHost::resolve(k.kernel.as_deref(), k.modules.as_deref(), k.accel) {
                Ok(host) => match lab_cli::powercut::kept::verify_kept(&host, &state) {
                    Ok(code) => code,
                    Err(e) => lab_error(e),
                },
                Err(e) => lab_error(e),
            }
        }
        Cmd::Bench { k, what } => {
            match LabHost::resolve(k.kernel.as_deref(), k.modules.as_deref(), k.accel) {
                Ok(host) => bench::bench(&host, what),
                Err(e) => lab_error(e),
            }
        }
    };
    if reaper::interrupted() {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    ExitCode::from(code)
}

fn lab_error(e: anyhow::Error) -> u8 {
    eprintln!("lab: error: {e:#}");
    EXIT_LAB
}

fn boot(
    k: &KernelArgs,
    device: DeviceParams,
    boot_timeout: u64,
    timeout: u64,
    console: Option<PathBuf>,
    cmd: &[String],
) -> u8 {
    if let Err(e) = device.validate() {
        eprintln!("lab: error: --{}: {}", e.field.replace('_', "-"), e.message);
        return EXIT_BAD_INPUT;
    }
    let host = match LabHost::resolve(k.kernel.as_deref(), k.modules.as_deref(), k.accel) {
        Ok(h) => h,
        Err(e) => return lab_error(e),
    };
    if let Err(e) = host.qemu.check_device(&device) {
        return lab_error(e);
    }
    let (_disks, nvme) = match host::scratch_nvme(&device) {
        Ok(d) => d,
        Err(e) => return lab_error(e),
    };
    // The console outlives the VM (it is what you read when a boot goes
    // wrong): by default results/boot/console.log, overwritten by each boot.
    let console =
        console.unwrap_or_else(|| paths::results_dir(&host.root).join("boot/console.log"));
    eprintln!(
        "lab: booting {} ({}; {}), console: {}",
        host.kernel.release,
        host.accel.as_str(),
        host.accel_reason,
        console.display()
    );
    let opts = host.vm_options(
        console.clone(),
        Some(nvme),
        Duration::from_secs(boot_timeout),
    );
    let mut vm = match vm::Vm::boot(&opts) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("lab: error: {}", e.report());
            return EXIT_LAB;
        }
    };
    eprintln!(
        "lab: guest ready in {:.1} s (ssh on 127.0.0.1:{}, qmp {})",
        vm.boot_time.unwrap_or_default().as_secs_f64(),
        vm.ssh_port(),
        vm.qmp_socket().display()
    );
    let status = if cmd.is_empty() {
        vm.shell().map(|s| s.clamp(0, 255) as u8)
    } else {
        let line = cmd.join(" ");
        vm.exec(&line, Duration::from_secs(timeout)).map(|o| {
            print!("{}", o.stdout);
            eprint!("{}", o.stderr);
            o.status.clamp(0, 255) as u8
        })
    };
    let splats = vm.splats();
    for s in &splats {
        eprintln!("lab: kernel splat: {} (console line {})", s.title, s.line);
    }
    let code = match status {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lab: error: {e}");
            if let Some(t) = e.console_tail() {
                eprintln!("--- console tail ---\n{t}");
            }
            // A crashed or hung guest is the kernel's failure, not the lab's.
            match e {
                vm::VmError::Crashed { .. } | vm::VmError::Timeout { .. } => EXIT_FAILED,
                _ => EXIT_LAB,
            }
        }
    };
    if let Err(e) = vm.shutdown() {
        eprintln!("lab: error at shutdown: {e}");
    }
    if cmd.is_empty() {
        return code;
    }
    if !splats.is_empty() && code == 0 {
        return EXIT_FAILED;
    }
    code
}

fn run_cmd(
    k: &KernelArgs,
    b: &BuildArgs,
    compare_base: bool,
    list: bool,
    testcases: &[PathBuf],
    results: Option<PathBuf>,
    filters: &[String],
) -> u8 {
    let root = match paths::repo_root() {
        Ok(r) => r,
        Err(e) => return lab_error(e),
    };
    let tc_paths: Vec<PathBuf> = testcases
        .iter()
        .map(|p| {
            if p.is_relative() && !p.exists() {
                root.join(p)
            } else {
                p.clone()
            }
        })
        .collect();
    let all = match run::load(&tc_paths) {
        Ok(v) => v,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!(
                "lab: {} testcase file(s) are invalid; nothing was run",
                errs.len()
            );
            return EXIT_BAD_INPUT;
        }
    };
    let cases = run::select(all, filters);
    if cases.is_empty() {
        eprintln!("lab: no testcase matches {filters:?} (see `lab run --list`)");
        return EXIT_BAD_INPUT;
    }
    if list {
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
        return 0;
    }
    let results = results.unwrap_or_else(|| paths::results_dir(&root));
    let req = b.request(&root);
    // The reproduce line: everything that chose the kernel and testcases.
    let mut reproduce = String::from("lab run");
    if let Some(kp) = &k.kernel {
        reproduce.push_str(&format!(" --kernel {}", kp.display()));
    }
    reproduce.push_str(&req.reproduce_args());
    if compare_base {
        reproduce.push_str(" --compare-base");
    }
    // After --accel, which the run knows only once the host is resolved.
    let mut tc_args = String::new();
    if testcases != [PathBuf::from("testcases")] {
        for t in testcases {
            tc_args.push_str(&format!(" --testcases {}", t.display()));
        }
    }
    let reproduce = (reproduce.as_str(), tc_args.as_str());
    if !req.wanted() {
        let host = match LabHost::resolve(k.kernel.as_deref(), k.modules.as_deref(), k.accel) {
            Ok(h) => h,
            Err(e) => return lab_error(e),
        };
        print_host(&host);
        let (id, dir) = match run::new_run_dir(&results) {
            Ok(x) => x,
            Err(e) => return lab_error(e),
        };
        let opts = run_options(reproduce, &host, &cases, &results, Vec::new());
        return finish_run(run::run_into(&host, &cases, &opts, &id, &dir), &dir);
    }
    built_run(
        &root,
        &req,
        k.accel,
        compare_base,
        &cases,
        reproduce,
        &results,
    )
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

/// `reproduce` is (the flags that chose the kernel, the testcase sources):
/// the line reads `lab run <kernel flags> --accel X <sources> <names>`.
fn run_options(
    reproduce: (&str, &str),
    host: &LabHost,
    cases: &[(PathBuf, lab_core::testcase::Testcase)],
    results: &std::path::Path,
    properties: Vec<(String, String)>,
) -> run::RunOptions {
    let reproduce_prefix = format!(
        "{} --accel {}{}",
        reproduce.0,
        host.accel.as_str(),
        reproduce.1
    );
    let mut full = reproduce_prefix.clone();
    for (_, tc) in cases {
        full.push(' ');
        full.push_str(&tc.name);
    }
    run::RunOptions {
        results: results.to_path_buf(),
        reproduce: full,
        reproduce_prefix,
        properties,
    }
}

fn finish_run(r: anyhow::Result<lab_core::report::RunReport>, dir: &std::path::Path) -> u8 {
    match r {
        Ok(report) => {
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
            report.exit_code() as u8
        }
        Err(e) => lab_error(e),
    }
}

/// Builds a level, printing what happened. A compile failure is the
/// series' failure: recorded as a failed `kernel-build` check.
fn build_level(
    pipe: &kpipe::Pipeline,
    level: usize,
) -> Result<lab_cli::kernel::build::Built, (u8, Option<String>)> {
    use lab_cli::kernel::build::BuildError;
    match pipe.build_level(level) {
        Ok(b) => {
            eprintln!("{}", kpipe::describe_build(&pipe.level_short(level), &b));
            Ok(b)
        }
        Err(e @ BuildError::Compile { .. }) => {
            eprintln!("lab: kernel {}: {e}", pipe.level_label(level));
            Err((EXIT_FAILED, Some(e.to_string())))
        }
        Err(e @ (BuildError::Dropped { .. } | BuildError::Fragment(_))) => {
            eprintln!("lab: error: {e}");
            Err((EXIT_BAD_INPUT, None))
        }
        Err(BuildError::Interrupted) => Err((lab_cli::EXIT_INTERRUPTED, None)),
        Err(e) => {
            eprintln!("lab: error: {e}");
            Err((EXIT_LAB, None))
        }
    }
}

fn built_run(
    root: &std::path::Path,
    req: &kpipe::KernelRequest,
    accel: AccelChoice,
    compare_base: bool,
    cases: &[(PathBuf, lab_core::testcase::Testcase)],
    reproduce: (&str, &str),
    results: &std::path::Path,
) -> u8 {
    use lab_core::report::{CaseResult, Outcome, RunReport, SuiteReport};
    let cache = paths::cache_dir();
    let pipe = match kpipe::Pipeline::prepare(root, &cache, req) {
        Ok(p) => p,
        Err(kpipe::PipelineError::BadInput(m)) => {
            eprintln!("lab: error: {m}");
            return EXIT_BAD_INPUT;
        }
        Err(kpipe::PipelineError::Lab(e)) => return lab_error(e),
    };
    let level = pipe.run_level();
    if let Some(f) = &pipe.levels.failure {
        if f.patch <= level {
            eprintln!("lab: error: {f}");
            eprintln!("lab: base: {}", pipe.tree.describe);
            return EXIT_BAD_INPUT;
        }
    }
    let (id, dir) = match run::new_run_dir(results) {
        Ok(x) => x,
        Err(e) => return lab_error(e),
    };
    // The base first: the patched level then builds incrementally from it.
    let base = if compare_base && level > 0 {
        match build_level(&pipe, 0) {
            Ok(b) => Some(b),
            Err((code, _)) => return code,
        }
    } else {
        None
    };
    let built = match build_level(&pipe, level) {
        Ok(b) => b,
        Err((code, Some(message))) => {
            // The series does not build: a failed check in the results.
            let report = RunReport {
                run_id: id.clone(),
                started_at: run::now_rfc3339(),
                properties: vec![("kernel.level".into(), pipe.level_label(level))],
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
                    reproduce: format!("{}{}", reproduce.0, reproduce.1),
                }],
                reproduce: format!("{}{}", reproduce.0, reproduce.1),
                interrupted: false,
            };
            if let Err(e) = run::write_results(&dir, &report) {
                return lab_error(e);
            }
            println!("results: {}", dir.display());
            return code;
        }
        Err((code, None)) => return code,
    };
    kpipe::keep_build_files(&built, &dir.join("kernel"));
    let host = match LabHost::with_kernel(built.kernel.clone(), accel) {
        Ok(h) => h,
        Err(e) => return lab_error(e),
    };
    print_host(&host);
    let opts = run_options(
        reproduce,
        &host,
        cases,
        results,
        pipe.properties(level, &built),
    );
    let Some(base) = base else {
        return finish_run(run::run_into(&host, cases, &opts, &id, &dir), &dir);
    };
    // --compare-base: both kernels, then only regressions count.
    eprintln!(
        "lab: running on the patched kernel ({})",
        pipe.level_label(level)
    );
    let patched = match run::run_into(&host, cases, &opts, &id, &dir.join("patched")) {
        Ok(r) => r,
        Err(e) => return lab_error(e),
    };
    kpipe::keep_build_files(&base, &dir.join("base/kernel"));
    let base_host = match LabHost::with_kernel(base.kernel.clone(), accel) {
        Ok(h) => h,
        Err(e) => return lab_error(e),
    };
    eprintln!("lab: running on the base kernel");
    let base_opts = run_options(
        reproduce,
        &base_host,
        cases,
        results,
        pipe.properties(0, &base),
    );
    let base_report = match run::run_into(&base_host, cases, &base_opts, &id, &dir.join("base")) {
        Ok(r) => r,
        Err(e) => return lab_error(e),
    };
    let mut combined = lab_core::report::regressions_only(&patched, &base_report);
    combined
        .properties
        .push(("compare_base".into(), "true".into()));
    combined.interrupted = patched.interrupted || base_report.interrupted;
    for s in &mut combined.suites {
        if let Some(c) = &mut s.console_log {
            *c = format!("patched/{c}");
        }
    }
    if let Err(e) = run::write_results(&dir, &combined) {
        return lab_error(e);
    }
    finish_run(Ok(combined), &dir)
}

fn bisect_cmd(
    b: &BuildArgs,
    testcase: &str,
    retries: u32,
    accel: AccelChoice,
    results: Option<PathBuf>,
) -> u8 {
    let root = match paths::repo_root() {
        Ok(r) => r,
        Err(e) => return lab_error(e),
    };
    let req = b.request(&root);
    if req.series.is_none() {
        eprintln!("lab: error: lab bisect needs --series");
        return EXIT_BAD_INPUT;
    }
    if req.upto.is_some() {
        eprintln!("lab: error: --upto does not apply to lab bisect (it tries the levels itself)");
        return EXIT_BAD_INPUT;
    }
    // A testcase by name (in testcases/ and testcases/controls/) or a file.
    let as_file = PathBuf::from(testcase);
    let paths_to_load = if as_file.is_file() {
        vec![as_file]
    } else {
        vec![root.join("testcases"), root.join("testcases/controls")]
    };
    let all = match run::load(&paths_to_load) {
        Ok(v) => v,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            return EXIT_BAD_INPUT;
        }
    };
    let found = if paths_to_load.len() == 1 {
        all.into_iter().next()
    } else {
        all.into_iter().find(|(_, tc)| tc.name == testcase)
    };
    let Some(tc) = found else {
        eprintln!("lab: error: --testcase {testcase}: no such testcase (see `lab run --list`) and no such file");
        return EXIT_BAD_INPUT;
    };
    let opts = bisectrun::BisectOptions {
        request: req,
        testcase: tc,
        retries,
        results: results.unwrap_or_else(|| paths::results_dir(&root)),
        accel,
    };
    bisectrun::bisect(&root, &paths::cache_dir(), &opts)
}
