//! The `lab` command line: one module per command, each with its flags
//! (a clap `Args` struct) and a `run` that returns the exit or the error
//! that ends it; `crate::exit` turns either into the process's exit code.

pub mod args;
pub mod bench;
pub mod bisect;
pub mod boot;
pub mod build;
pub mod doctor;
pub mod level;
pub mod report;
pub mod run;
pub mod verify;

use clap::{Parser, Subcommand};

use crate::exit::{CmdError, Convention, Exit};

#[derive(Parser)]
#[command(
    name = "lab",
    version,
    about = "QEMU-backed integration lab for Linux atomic writes (RWF_ATOMIC)"
)]
pub struct Cli {
    /// More logging (-v info, -vv debug); or set RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Check the host: QEMU and its NVMe atomic properties, KVM, kernel, guest image.
    Doctor {
        #[command(flatten)]
        k: args::KernelArgs,
    },
    /// Boot a VM on an NVMe device; run CMD over SSH (exit with its status) or open a shell.
    Boot(boot::BootArgs),
    /// Build a kernel as `lab run --series` does and write a kernel
    /// directory (`--out DIR`) that `lab run --kernel DIR` boots anywhere.
    Build(build::BuildCmdArgs),
    /// Run YAML testcases (default: all of testcases/); results go to results/<run-id>/.
    Run(run::RunArgs),
    /// Find the first patch of a series whose kernel fails a testcase:
    /// both ends first, then binary search; levels that do not apply or
    /// build are skipped. Exit 0 when it names the patch (or the range).
    Bisect(bisect::BisectArgs),
    /// Judge a kept crash state again (a directory a failing power-cut run
    /// printed): rebuild it, mount, scan, xfs_repair -n, model.
    Verify(verify::VerifyArgs),
    /// Benchmarks; results go to results/bench/<what>.json.
    Bench(bench::BenchArgs),
    /// The HTML page of a results directory (`lab report DIR`), or several
    /// runs as one (`merge` joins a run's shards).
    Report(report::ReportArgs),
}

impl Cmd {
    /// How the exit is written: `lab run --bisect-exit` speaks `git bisect
    /// run`'s convention, everything else the lab's.
    pub fn convention(&self) -> Convention {
        match self {
            Cmd::Run(a) if a.bisect_exit => Convention::GitBisect,
            _ => Convention::Lab,
        }
    }

    pub fn run(self) -> Result<Exit, CmdError> {
        match self {
            Cmd::Doctor { k } => {
                k.check_paths()?;
                Ok(doctor::doctor(k.kernel.as_deref(), k.modules.as_deref()))
            }
            Cmd::Boot(a) => boot::run(a),
            Cmd::Build(a) => build::run(a),
            Cmd::Run(a) => run::run(a),
            Cmd::Bisect(a) => bisect::run(a),
            Cmd::Verify(a) => verify::run(a),
            Cmd::Bench(a) => bench::run(a),
            Cmd::Report(a) => report::run(a),
        }
    }
}
