//! The host side of the lab: which QEMU, what it can do, which accelerator
//! really runs a guest (a probe boot, not a look at /dev/kvm), the kernel
//! and the guest image.

pub mod image;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab_core::qemu::Accel;
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::vm::kernel::Kernel;
use crate::vm::{Vm, VmOptions, READY_MARKER};
use image::GuestImage;

/// Where the QEMU the lab uses comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QemuSource {
    /// $LAB_QEMU.
    Env,
    /// The set-up's QEMU >= 10.2 in a private root (~/.cache/lab/qemu).
    Lab,
    /// qemu-system-x86_64 on PATH (Debian 12 + bookworm-backports: 10.0).
    System,
}

impl QemuSource {
    pub fn describe(self) -> &'static str {
        match self {
            QemuSource::Env => "from $LAB_QEMU",
            QemuSource::Lab => "the lab's own, set up by scripts/setup.sh",
            QemuSource::System => "the system's",
        }
    }
}

/// A QEMU binary and what it supports.
#[derive(Debug, Clone, Serialize)]
pub struct QemuInfo {
    pub path: PathBuf,
    pub version: String,
    pub major: u32,
    pub minor: u32,
    /// The controller has atomic.awun/atomic.awupf/atomic.dn (QEMU >= 10.0).
    pub controller_atomics: bool,
    /// nvme-ns has atomic.nawupf etc. (QEMU >= 10.2).
    pub namespace_atomics: bool,
    /// The nvme-ns `atomic.*` properties this QEMU lists.
    pub namespace_atomic_props: Vec<String>,
    pub source: QemuSource,
    /// Set when the lab fell back to a QEMU without namespace atomics: why,
    /// and what that means (also logged as a warning).
    pub notice: Option<String>,
}

/// The set-up's QEMU (a wrapper that runs it from its private root).
pub fn lab_qemu_path(cache: &Path) -> PathBuf {
    cache.join("qemu/current/qemu-system-x86_64")
}

/// The QEMU the lab uses: $LAB_QEMU when set; else the set-up's QEMU >=
/// 10.2 when it runs and has namespace atomics; else qemu-system-x86_64 on
/// PATH, with a notice (a warning, and `notice`) that namespace atomics are
/// unavailable.
pub fn find_qemu() -> Result<QemuInfo> {
    if let Some(p) = std::env::var_os("LAB_QEMU") {
        return probe_qemu(Path::new(&p), QemuSource::Env);
    }
    let lab = lab_qemu_path(&paths::cache_dir());
    let why_not_lab = if lab.exists() {
        match probe_qemu(&lab, QemuSource::Lab) {
            Ok(q) if q.namespace_atomics => return Ok(q),
            Ok(q) => format!(
                "the lab's QEMU {} ({}) has no nvme-ns atomic properties",
                q.version,
                lab.display()
            ),
            Err(e) => format!("the lab's QEMU ({}) does not run: {e:#}", lab.display()),
        }
    } else {
        format!(
            "the lab's QEMU >= 10.2 is not set up ({} is missing)",
            lab.display()
        )
    };
    let mut q = probe_qemu(Path::new("qemu-system-x86_64"), QemuSource::System)?;
    if !q.namespace_atomics {
        let notice = format!(
            "{why_not_lab}; using the system QEMU {}, which cannot set namespace atomics \
             (NAWUPF, NABSPF): guests see a one-LBA atomic unit and testcases that set \
             device.nawupf etc. fail. Run scripts/setup.sh to provision QEMU 11.",
            q.version
        );
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!("{notice}"));
        q.notice = Some(notice);
    }
    Ok(q)
}

/// Runs `path --version` and `-device nvme,help`/`nvme-ns,help`.
pub fn probe_qemu(path: &Path, source: QemuSource) -> Result<QemuInfo> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "{} not found: run scripts/setup.sh (installs QEMU 10 from bookworm-backports)",
                path.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`{} --version` failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .context("cannot parse `qemu --version`")?
        .to_string();
    let mut nums = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    let help = |dev: &str| -> String {
        Command::new(path)
            .args([
                "-nodefaults",
                "-machine",
                "none",
                "-device",
                &format!("{dev},help"),
            ])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default()
    };
    let ns_help = help("nvme-ns");
    let namespace_atomic_props: Vec<String> = ns_help
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|w| w.split('=').next())
        .filter(|w| w.starts_with("atomic."))
        .map(str::to_string)
        .collect();
    Ok(QemuInfo {
        controller_atomics: help("nvme").contains("atomic.awupf"),
        namespace_atomics: namespace_atomic_props.iter().any(|p| p == "atomic.nawupf"),
        namespace_atomic_props,
        path: path.to_path_buf(),
        version,
        major,
        minor,
        source,
        notice: None,
    })
}

impl QemuInfo {
    /// A device that sets namespace atomic fields needs a QEMU with them:
    /// without, the guest would see other limits than the testcase says.
    /// The error names the fields and the QEMU.
    pub fn check_device(&self, device: &lab_core::device::DeviceParams) -> Result<()> {
        let fields = device.namespace_atomic_fields();
        if fields.is_empty() || self.namespace_atomics {
            return Ok(());
        }
        bail!(
            "device.{} need{} QEMU >= 10.2 (nvme-ns atomic.* properties), but the lab's QEMU is \
             {} {} ({}), which has none; run scripts/setup.sh (it provisions QEMU 11 in \
             ~/.cache/lab/qemu) or point LAB_QEMU at a QEMU >= 10.2",
            fields.join(", device."),
            if fields.len() == 1 { "s" } else { "" },
            self.path.display(),
            self.version,
            self.source.describe()
        )
    }
}

/// Accelerator choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when a probe boot works, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccelProbe {
    pub key: String,
    pub kvm_works: bool,
    pub reason: String,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Boots the kernel under KVM and waits for the guest's ready marker. The
/// answer is cached per host boot, QEMU and kernel: a KVM that fails here
/// (as nested KVM does on these machines) fails the same way until reboot.
pub fn probe_kvm(cache: &Path, qemu: &QemuInfo, kernel: &Kernel, image: &GuestImage) -> AccelProbe {
    let key = format!("{}/{}/{}", boot_id(), qemu.version, kernel.release);
    // One file per QEMU version, so runs with different QEMUs (the lab's,
    // the system's) do not keep invalidating each other's answer.
    let file = cache.join(format!("accel-probe-qemu-{}.json", qemu.version));
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(p) = serde_json::from_str::<AccelProbe>(&text) {
            if p.key == key {
                return p;
            }
        }
    }
    let (kvm_works, reason) = run_kvm_probe(qemu, kernel, image);
    let p = AccelProbe {
        key,
        kvm_works,
        reason,
    };
    let _ = std::fs::write(&file, serde_json::to_string_pretty(&p).unwrap_or_default());
    p
}

fn run_kvm_probe(qemu: &QemuInfo, kernel: &Kernel, image: &GuestImage) -> (bool, String) {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return (false, format!("/dev/kvm cannot be opened: {e}"));
    }
    let dir = match paths::PrivateDir::new("lab-kvm-probe") {
        Ok(d) => d,
        Err(e) => return (false, format!("probe failed to start: {e}")),
    };
    let opts = VmOptions {
        qemu: qemu.path.clone(),
        accel: Accel::Kvm,
        tcg_threads: Default::default(),
        kernel: kernel.clone(),
        initrd: image.path.clone(),
        memory_mib: 512,
        cpus: 1,
        nvme: None,
        console_log: dir.path().join("console.log"),
        boot_timeout: Duration::from_secs(20),
        extra_cmdline: String::new(),
        nbd_activity: None,
    };
    let mut vm = match Vm::start(&opts) {
        Ok(vm) => vm,
        Err(e) => return (false, format!("QEMU with -accel kvm did not start: {e}")),
    };
    let deadline = std::time::Instant::now() + opts.boot_timeout;
    loop {
        let console = std::fs::read_to_string(vm.console_log()).unwrap_or_default();
        if console.contains(READY_MARKER) {
            return (true, "a probe guest booted to userspace under KVM".into());
        }
        // A broken nested KVM either kills QEMU or leaves the guest paused
        // after "KVM internal error": both are seen here, so watch stderr too.
        let exited = vm.wait_exit(Duration::from_millis(100));
        let stderr =
            std::fs::read_to_string(vm.private_dir().join("qemu.stderr")).unwrap_or_default();
        if exited || stderr.contains("KVM internal error") || stderr.contains("kvm run failed") {
            // QEMU's own warnings (a deprecated option, say) are not why.
            let first = stderr
                .lines()
                .find(|l| l.contains("KVM internal error") || l.contains("kvm run failed"))
                .or_else(|| {
                    stderr
                        .lines()
                        .find(|l| !l.trim().is_empty() && !l.contains("warning:"))
                })
                .unwrap_or("no message");
            return (false, format!("a KVM guest died before userspace: {first}"));
        }
        if std::time::Instant::now() > deadline {
            return (
                false,
                format!(
                    "a KVM guest did not reach userspace in {} s",
                    opts.boot_timeout.as_secs()
                ),
            );
        }
    }
}

/// Everything a run needs from the host, resolved once.
pub struct LabHost {
    pub root: PathBuf,
    pub cache: PathBuf,
    pub qemu: QemuInfo,
    pub kernel: Kernel,
    pub image: GuestImage,
    pub accel: Accel,
    /// Why this accelerator (probe result or the user's choice).
    pub accel_reason: String,
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
        })
    }

    /// The guest image with these optional tools (the plain one when none).
    pub fn image_with(&self, tools: &[String]) -> Result<PathBuf> {
        if tools.is_empty() {
            return Ok(self.image.path.clone());
        }
        Ok(image::ensure_image_with(&self.root, &self.cache, &self.kernel, tools)?.path)
    }

    /// VM options for this host with the given console log and disk.
    pub fn vm_options(
        &self,
        console_log: PathBuf,
        nvme: Option<lab_core::qemu::NvmeDisk>,
        boot_timeout: Duration,
    ) -> VmOptions {
        VmOptions {
            qemu: self.qemu.path.clone(),
            accel: self.accel,
            tcg_threads: Default::default(),
            kernel: self.kernel.clone(),
            initrd: self.image.path.clone(),
            memory_mib: 1024,
            cpus: 2,
            nvme,
            console_log,
            boot_timeout,
            extra_cmdline: String::new(),
            nbd_activity: None,
        }
    }

    pub fn properties(&self) -> Vec<(String, String)> {
        vec![
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
        ]
    }
}

/// Sparse files for every namespace of `device` and the NVMe disk over them;
/// the files live as long as the returned ScratchDisks.
pub fn scratch_nvme(
    device: &lab_core::device::DeviceParams,
) -> Result<(Vec<ScratchDisk>, lab_core::qemu::NvmeDisk)> {
    use lab_core::qemu::{Backend, NvmeDisk};
    let disks = (0..device.namespaces.max(1))
        .map(|_| ScratchDisk::new(device.size_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let mut backends = disks
        .iter()
        .map(|d| Backend::File(d.path.to_string_lossy().into_owned()));
    let nvme = NvmeDisk {
        backend: backends.next().expect("at least one namespace"),
        extra_namespaces: backends.collect(),
        device: device.clone(),
        write_cache: None,
    };
    Ok((disks, nvme))
}

/// A sparse raw disk image in a private directory, removed on drop.
pub struct ScratchDisk {
    _dir: paths::PrivateDir,
    pub path: PathBuf,
}

impl ScratchDisk {
    pub fn new(size_bytes: u64) -> Result<ScratchDisk> {
        let dir = paths::PrivateDir::new("lab-disk")?;
        let path = dir.path().join("nvme0n1.raw");
        let f = std::fs::File::create(&path)?;
        f.set_len(size_bytes)?;
        Ok(ScratchDisk { _dir: dir, path })
    }
}
