//! Flags several commands share: which kernel to boot, and which kernel to
//! build. Paths the user typed are checked here, so a typo is bad input
//! (exit 2) and not "the lab could not run".

use std::path::{Path, PathBuf};

use crate::exit::CmdError;
use crate::host::accel::AccelChoice;
use crate::host::LabHost;
use crate::kernel::pipeline::KernelRequest;
use crate::paths;

#[derive(clap::Args, Clone)]
pub struct KernelArgs {
    /// Kernel to boot: a bzImage, or a directory with vmlinuz/modules/release
    /// (default: the Debian cloud kernel the set-up downloaded).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Modules directory (lib/modules/<release>) for a bzImage given with --kernel.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// CPU accelerator: auto probes KVM with a real boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Verifier VMs checking crash states at once (default: one per core,
    /// at most 4).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub verify_jobs: Option<u16>,
    /// Mount every crash state in the verifier, never reading one through
    /// the extent map of a state already mounted (docs/power-cuts.md,
    /// "Reading states through an extent map"): slower, for comparison.
    #[arg(long)]
    pub verify_mount_all: bool,
}

impl KernelArgs {
    /// The host for these flags: QEMU, the kernel, the guest image and
    /// the accelerator.
    pub fn host(&self) -> Result<LabHost, CmdError> {
        self.check_paths()?;
        let host = LabHost::resolve(self.kernel.as_deref(), self.modules.as_deref(), self.accel)?;
        Ok(self.tuned(host))
    }

    /// The host for a kernel the lab built, with these flags.
    pub fn host_for(&self, kernel: crate::vm::kernel::Kernel) -> anyhow::Result<LabHost> {
        Ok(self.tuned(LabHost::with_kernel(kernel, self.accel)?))
    }

    fn tuned(&self, mut host: LabHost) -> LabHost {
        if let Some(j) = self.verify_jobs {
            host.verify_jobs = usize::from(j);
            host.verify_jobs_chosen = true;
        }
        host.verify_by_map = !self.verify_mount_all;
        host
    }
}

impl KernelArgs {
    /// --kernel and --modules, if given, name something.
    pub fn check_paths(&self) -> Result<(), CmdError> {
        exists("--kernel", self.kernel.as_deref())?;
        exists("--modules", self.modules.as_deref())
    }
}

/// A path flag that names nothing is the user's mistake.
fn exists(flag: &str, path: Option<&Path>) -> Result<(), CmdError> {
    match path {
        Some(p) if !p.exists() => Err(CmdError::bad_input(format!(
            "{flag} {}: no such file or directory",
            p.display()
        ))),
        _ => Ok(()),
    }
}

/// A kernel the lab builds: source, series, config fragments.
#[derive(clap::Args, Clone, Default)]
pub struct BuildArgs {
    /// Kernel source to build: a git work tree or a tarball (default with
    /// --series or --kconfig: Debian's linux-source-7.x the set-up fetched).
    #[arg(long, conflicts_with = "kernel")]
    pub kernel_tree: Option<PathBuf>,
    /// Patch series to apply (mbox as `b4 am` writes it, a directory of
    /// `git format-patch` files, or a quilt `series` file).
    #[arg(long, conflicts_with = "kernel")]
    pub series: Option<PathBuf>,
    /// Apply only the first N patches of the series (0: the base).
    #[arg(long, requires = "series")]
    pub upto: Option<usize>,
    /// Build this commit of the --kernel-tree git tree instead of its HEAD
    /// (a commit-range bisection's step says which).
    #[arg(long, requires = "kernel_tree")]
    pub rev: Option<String>,
    /// Extra kernel config fragment on top of vm-images/kconfig/lab.config:
    /// a name there (`debug`: KASAN, UBSAN, lockdep, XFS_DEBUG;
    /// `no-large-folios`: THP off; `distro`: the default kernel's own
    /// config as the base instead of tinyconfig) or a file.
    #[arg(long, conflicts_with = "kernel")]
    pub kconfig: Vec<String>,
}

impl BuildArgs {
    /// The kernel to build, its paths resolved as [`paths::user_path`]
    /// does, so `--series patches/x` works from anywhere in the checkout.
    pub fn request(&self, root: &Path) -> KernelRequest {
        let resolve = |p: &PathBuf| paths::user_path(root, p);
        KernelRequest {
            // Absolute, so a reproduce line works from anywhere (`git bisect
            // run` runs `--kernel-tree .` from inside the tree).
            tree: self.kernel_tree.as_ref().map(resolve).map(|p| {
                if p.is_dir() {
                    p.canonicalize().unwrap_or(p)
                } else {
                    p
                }
            }),
            series: self.series.as_ref().map(resolve),
            kconfig: self.kconfig.clone(),
            upto: self.upto,
            rev: self.rev.clone(),
            range: None,
        }
    }
}
