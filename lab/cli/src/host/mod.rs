//! The host as a run sees it ([`LabHost`]): which QEMU and what it can do
//! (`qemu`), which accelerator really runs a guest (`accel`), the kernel
//! and the guest image (`image`), resolved once; the disks a VM runs on
//! (`disks`), and the one way to start a VM on all of that (`launch`).

pub mod accel;
pub mod disks;
pub mod image;
pub mod launch;
pub mod qemu;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use lab_core::qemu::Accel;

use crate::paths;
use crate::vm::kernel::Kernel;
use accel::{probe_kvm, AccelChoice};
use image::GuestImage;
use qemu::{find_qemu, QemuInfo};

/// Everything a run needs from the host, resolved once.
#[derive(Clone)]
pub struct LabHost {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub qemu: QemuInfo,
    pub kernel: Kernel,
    pub image: GuestImage,
    pub accel: Accel,
    /// Why this accelerator (probe result or the user's choice).
    pub accel_reason: String,
    /// Verifier VMs that check crash states at once (`--verify-jobs`).
    pub verify_jobs: usize,
    /// `--verify-jobs` was given: kept as it is when testcases run in
    /// parallel (otherwise the jobs share the default).
    pub verify_jobs_chosen: bool,
    /// Read a crash state through the extent map of a mounted state whose
    /// bytes it shares outside the files' data (`--verify-mount-all`: no).
    pub verify_by_map: bool,
}

/// One verifier VM per core, at most 4: each guest has one vCPU (one TCG
/// thread), the lab's NBD serving is light, and memory is not the limit
/// (a verifier guest takes 1 GiB).
pub fn default_verify_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
}

/// `lab run`'s default `-j` on this host (lab_core::schedule::default_jobs
/// from its cores and MemAvailable).
pub fn default_jobs(accel: Accel) -> lab_core::schedule::Jobs {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(4096, |kib| kib / 1024);
    lab_core::schedule::default_jobs(accel, cores, available_mib)
}

impl LabHost {
    pub fn resolve(
        kernel_arg: Option<&Path>,
        modules_arg: Option<&Path>,
        accel: AccelChoice,
    ) -> Result<LabHost> {
        let cache = paths::cache_dir();
        let kernel = match kernel_arg {
            Some(p) => Kernel::from_arg(p, modules_arg)?,
            None => Kernel::default_kernel(&cache)?,
        };
        Self::with_kernel(kernel, accel)
    }

    /// The host for a given kernel (one the lab built, say).
    pub fn with_kernel(kernel: Kernel, accel: AccelChoice) -> Result<LabHost> {
        let root = paths::repo_root()?;
        let cache = paths::cache_dir();
        std::fs::create_dir_all(&cache)?;
        let qemu = find_qemu()?;
        let image = image::ensure_image(&root, &cache, &kernel)?;
        let (accel, accel_reason) = match accel {
            AccelChoice::Tcg => (Accel::Tcg, "--accel tcg".to_string()),
            AccelChoice::Kvm => (Accel::Kvm, "--accel kvm".to_string()),
            AccelChoice::Auto => {
                let p = probe_kvm(&cache, &qemu, &kernel, &image);
                if p.kvm_works {
                    (Accel::Kvm, p.reason)
                } else {
                    (Accel::Tcg, format!("TCG, because {}", p.reason))
                }
            }
        };
        if accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
            bail!("--accel kvm but /dev/kvm does not exist");
        }
        Ok(LabHost {
            root,
            cache,
            qemu,
            kernel,
            image,
            accel,
            accel_reason,
            verify_jobs: default_verify_jobs(),
            verify_jobs_chosen: false,
            verify_by_map: true,
        })
    }

    /// The guest image with these optional tools (the plain one when none).
    pub fn image_with(&self, tools: &[String]) -> Result<PathBuf> {
        if tools.is_empty() {
            return Ok(self.image.path.clone());
        }
        Ok(image::ensure_image_with(&self.root, &self.cache, &self.kernel, tools)?.path)
    }

    pub fn properties(&self) -> Vec<(String, String)> {
        let built_by = self.kernel.provenance.iter().cloned();
        let mut v = vec![
            ("kernel.release".into(), self.kernel.release.clone()),
            (
                "kernel.path".into(),
                self.kernel.vmlinuz.display().to_string(),
            ),
            ("qemu.version".into(), self.qemu.version.clone()),
            ("qemu.path".into(), self.qemu.path.display().to_string()),
            (
                "qemu.source".into(),
                self.qemu.source.describe().to_string(),
            ),
            (
                "qemu.namespace_atomics".into(),
                self.qemu.namespace_atomics.to_string(),
            ),
            ("accel".into(), self.accel.as_str().into()),
            ("accel.reason".into(), self.accel_reason.clone()),
            ("image.hash".into(), self.image.hash.clone()),
        ];
        v.extend(built_by);
        v
    }
}
