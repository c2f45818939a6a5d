//! `lab bench <what>`: runs one benchmark and writes its records to
//! results/bench/<what>.json.

use std::path::Path;

use crate::bench::{self, Measurement};
use crate::cmd::args::KernelArgs;
use crate::exit::{CmdError, Exit};
use crate::host::LabHost;
use crate::paths;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub k: KernelArgs,
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand, Clone)]
pub enum BenchWhat {
    /// Boot to SSH ready (median of N), against a bare kernel boot baseline.
    Boot {
        /// Boots per measurement.
        #[arg(short = 'n', long, default_value_t = 5)]
        runs: usize,
    },
    /// Guest write throughput through the crash disk against a plain raw
    /// file (4 KiB random, 1 MiB sequential, fio O_DIRECT), and crash
    /// states planned and materialised per second from a real cut.
    Disk {
        /// Rounds per measurement (the two backends alternate).
        #[arg(short = 'n', long, default_value_t = 3)]
        runs: usize,
    },
    /// Power cuts of a seeded 8-thread O_DIRECT generator on XFS (half
    /// RWF_ATOMIC) until at least N crash states were verified: states per
    /// minute, the time split, false positives, positive controls.
    /// Then sweeps (the generator O_DIRECT and buffered, a virtual cut
    /// before every disk event) until at least J (cut point, state) pairs
    /// were judged: contents scanned and judgements per minute, the dedupe
    /// ratio, false positives, one verifier VM against --verify-jobs.
    Verify {
        /// Crash states to verify at least (single cuts).
        #[arg(short = 'n', long, default_value_t = 500)]
        states: usize,
        /// Judgements to make at least (sweeps).
        #[arg(short = 'j', long, default_value_t = 5000)]
        judgements: usize,
    },
    /// Kernel builds: a full build of the lab config with a cold ccache,
    /// then the demo series bisected (incremental build per step, total
    /// time, number of builds against ceil(log2 N) + 2). About 20 minutes.
    Kernel {
        /// Then full builds with a cold ccache of the lab config before its
        /// I/O-path options, `--kconfig debug` and `--kconfig distro`, each
        /// against the lab config's. About 1.5 hours more on 2 cores.
        #[arg(long)]
        configs: bool,
    },
    /// The default testcases (or those the filters name) with a VM booted
    /// for every testcase one after another (`-j 1`), then with `-j N` and
    /// VM reuse: wall time of each, the speed-up, boots per testcase, the
    /// time split (boot, reset, workload, verification), and whether every
    /// check agrees. The two runs are kept in results/bench-run/.
    Run {
        /// Jobs of the parallel run (default: what `lab run` would use).
        #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(2..=64))]
        jobs: Option<u16>,
        /// Testcases whose name contains one of these (default: all).
        filters: Vec<String>,
    },
    /// Boots on the crash disk under load (CPU hogs, VMs booting at once),
    /// never retried: boot failures counted by the stage they stalled in,
    /// against a few unloaded boots measured first. Failed boots keep their
    /// console and diagnosis in results/bench/stress/.
    Stress {
        /// Boots under load.
        #[arg(short = 'n', long, default_value_t = 200)]
        boots: usize,
        /// VMs booting at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Busy threads in the lab process while the boots run.
        #[arg(long, default_value_t = 2)]
        hogs: usize,
        /// Appended to the guest kernel's command line (for a hunt:
        /// `ignore_loglevel` shows where a quiet boot stops).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// TCG's threading for these boots (the lab uses `single`; `multi`
        /// reproduces the boot failures it avoids).
        #[arg(long, value_enum, default_value_t = TcgThreadsArg::Single)]
        tcg_threads: TcgThreadsArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TcgThreadsArg {
    Single,
    Multi,
}

impl From<TcgThreadsArg> for lab_core::qemu::TcgThreads {
    fn from(a: TcgThreadsArg) -> Self {
        match a {
            TcgThreadsArg::Single => lab_core::qemu::TcgThreads::Single,
            TcgThreadsArg::Multi => lab_core::qemu::TcgThreads::Multi,
        }
    }
}

impl BenchWhat {
    /// The name of its results file, results/bench/<name>.json.
    pub fn name(&self) -> &'static str {
        match self {
            BenchWhat::Boot { .. } => "boot",
            BenchWhat::Disk { .. } => "disk",
            BenchWhat::Verify { .. } => "verify",
            BenchWhat::Kernel { .. } => "kernel",
            BenchWhat::Run { .. } => "run",
            BenchWhat::Stress { .. } => "stress",
        }
    }
}

pub fn run(args: BenchArgs) -> Result<Exit, CmdError> {
    let host = args.k.host()?;
    let name = args.what.name();
    let file = paths::results_dir(&host.root)
        .join("bench")
        .join(format!("{name}.json"));
    let records = measure(&host, args.what, &file)?;
    bench::write_records(&file, &records)?;
    for r in &records {
        println!("{:<40} {:>10.3} {}", r.metric, r.value, r.unit);
    }
    println!("written: {}", file.display());
    Ok(Exit::Passed)
}

fn measure(host: &LabHost, what: BenchWhat, file: &Path) -> anyhow::Result<Vec<Measurement>> {
    match what {
        BenchWhat::Boot { runs } => bench::boot::bench_boot(host, runs.max(1)),
        BenchWhat::Disk { runs } => bench::disk::bench_disk(host, runs.max(1)),
        BenchWhat::Verify { states, judgements } => {
            bench::verify::bench_verify(host, states.max(1), judgements.max(1))
        }
        BenchWhat::Kernel { configs } => bench::kernel::bench_kernel(host, configs, file),
        BenchWhat::Run { jobs, filters } => bench::run::bench_run(
            host,
            &bench::run::RunBenchPlan {
                filters,
                jobs: jobs.map(usize::from),
            },
        ),
        BenchWhat::Stress {
            boots,
            parallel,
            hogs,
            cmdline,
            tcg_threads,
        } => bench::stress::bench_stress(
            host,
            bench::stress::StressPlan {
                boots: boots.max(1),
                parallel: parallel.max(1),
                hogs,
                baseline: 5,
                extra_cmdline: cmdline,
                tcg_threads: tcg_threads.into(),
            },
            &paths::results_dir(&host.root).join("bench"),
        ),
    }
}
