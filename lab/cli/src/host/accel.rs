//! Which accelerator really runs a guest: KVM when a probe guest boots to
//! userspace under it (a look at /dev/kvm is not enough: nested KVM on
//! these machines opens and then kills the guest), else TCG.

use std::path::Path;
use std::time::Duration;

use lab_core::qemu::Accel;
use serde::{Deserialize, Serialize};

use crate::host::image::GuestImage;
use crate::host::qemu::QemuInfo;
use crate::paths;
use crate::vm::kernel::Kernel;
use crate::vm::{Vm, VmOptions, READY_MARKER};

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
