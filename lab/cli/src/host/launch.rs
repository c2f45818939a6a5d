//! The one way the lab starts a VM: a [`VmPlan`] says what the guest runs
//! on (the host's kernel and image, which disk behind its NVMe controller,
//! the device's parameters, extra guest tools) and boots it; the disks are
//! made fresh for every boot and live exactly as long as the [`LabVm`].
//!
//! Testcases, the verifier, `lab boot`, `lab doctor` and the benchmarks all
//! start their VMs here, so a boot everywhere gets the same disks, the same
//! write-cache rule on the crash disk, and the same one retry for a boot
//! that failed for the lab's reasons.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lab_core::device::DeviceParams;
use lab_core::qemu::{Backend, NvmeDisk, TcgThreads};
use lab_disk::server::Export;

use crate::host::disks::{CrashDisk, NbdServer, ScratchDisk};
use crate::host::LabHost;
use crate::paths::PrivateDir;
use crate::vm::{Vm, VmError, VmOptions};

/// What the VM's NVMe namespaces run on.
#[derive(Clone)]
pub enum Backing {
    /// No NVMe controller at all.
    None,
    /// A fresh sparse file per namespace.
    Scratch,
    /// A fresh crash disk as the (only) namespace, with the write cache off
    /// so every write is FUA, durable when acknowledged: what the model's
    /// power-cut rules assume.
    CrashDisk,
    /// An export the caller owns (the verifier's state switch), served
    /// afresh for each boot under `name`.
    Export {
        name: String,
        export: Arc<dyn Export>,
    },
    /// A backend the caller serves itself (tests that misbehave on purpose).
    Attached(Backend),
}

/// How to start one VM on a [`LabHost`]. Built with [`LabHost::plan`].
#[derive(Clone)]
pub struct VmPlan<'h> {
    host: &'h LabHost,
    console: PathBuf,
    boot_timeout: Duration,
    device: DeviceParams,
    backing: Backing,
    write_cache: Option<bool>,
    tools: Vec<String>,
    extra_cmdline: String,
    tcg_threads: TcgThreads,
    /// Test hook: this many first boots are cut short at once.
    stall_first: u32,
}

/// Why a VM could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The lab could not prepare what the VM runs on (disk, image).
    #[error("{stage}: {error:#}")]
    Setup {
        stage: &'static str,
        error: anyhow::Error,
    },
    /// The VM did not boot (after the one retry, where it applies).
    #[error("{error}")]
    Boot {
        error: VmError,
        /// Why the first boot failed, when it was retried.
        retried_after: Option<String>,
    },
}

impl LaunchError {
    /// The message with what the lab knows of a failed boot: diagnosis and
    /// console tail.
    pub fn report(&self) -> String {
        match self {
            LaunchError::Setup { .. } => self.to_string(),
            LaunchError::Boot {
                error,
                retried_after: None,
            } => error.report(),
            LaunchError::Boot {
                error,
                retried_after: Some(first),
            } => format!("{}\n(the first boot failed too: {first})", error.report()),
        }
    }
}

/// A booted (or started) VM with the disks it runs on. Dereferences to the
/// [`Vm`]; dropping it kills QEMU first, then stops the disks.
pub struct LabVm {
    // Field order is drop order: QEMU goes before its disks.
    pub vm: Vm,
    /// The crash disk, for [`Backing::CrashDisk`].
    pub crash: Option<CrashDisk>,
    /// Why the first boot failed, when [`VmPlan::boot_retrying`] retried.
    pub retried_after: Option<String>,
    _server: Option<NbdServer>,
    /// The scratch files behind the namespaces, those of a swapped-out
    /// device included (QEMU keeps them open until it ends).
    scratch: Vec<ScratchDisk>,
    _dir: Option<PrivateDir>,
}

/// What a device swap took ([`LabVm::swap_device`]).
#[derive(Debug, Clone)]
pub struct DeviceSwap {
    /// From `device_del` until the guest released the old controller.
    pub unplug: Duration,
    /// From `device_del` until the guest saw the new namespaces.
    pub total: Duration,
}

impl LabVm {
    /// Ends the VM (QMP `quit`, then kill), then stops its disks.
    pub fn shutdown(self) -> Result<(), VmError> {
        self.vm.shutdown()
    }

    /// Replaces the guest's NVMe controller with one of `device`'s
    /// parameters on fresh scratch files (QMP hot-plug,
    /// [`Vm::replug_nvme`]) and waits until the guest sees its namespaces
    /// and has made their tunables its baseline (`lab-guest plugged`).
    /// Only for a VM on scratch files whose guest has nothing mounted on
    /// the old disk. The old files stay until the VM ends: QEMU keeps a
    /// deleted controller's block nodes open.
    pub fn swap_device(
        &mut self,
        device: &DeviceParams,
        timeout: Duration,
    ) -> Result<DeviceSwap, VmError> {
        let started = std::time::Instant::now();
        let write_cache = match self.vm.nvme() {
            Some(d) if !self.scratch.is_empty() => d.write_cache,
            _ => {
                return Err(VmError::Other(anyhow::anyhow!(
                    "only a VM on scratch files can swap its NVMe device"
                )))
            }
        };
        let mut fresh = Vec::new();
        for _ in 0..device.namespaces.max(1) {
            fresh.push(ScratchDisk::new(device.size_bytes())?);
        }
        let mut backends = fresh.iter().map(ScratchDisk::backend);
        let disk = NvmeDisk {
            backend: backends.next().expect("at least one namespace"),
            extra_namespaces: backends.collect(),
            device: device.clone(),
            write_cache,
        };
        self.scratch.extend(fresh);
        let unplug = self.vm.replug_nvme(disk, timeout)?;
        let out = self.vm.exec(
            &crate::vm::agent::plugged(
                device.namespaces.max(1),
                device.lba_size,
                device.size_bytes(),
            ),
            timeout,
        )?;
        if out.status != 0 {
            return Err(VmError::Other(anyhow::anyhow!(
                "lab-guest plugged exited with {}: {}",
                out.status,
                out.stderr.trim()
            )));
        }
        Ok(DeviceSwap {
            unplug,
            total: started.elapsed(),
        })
    }
}

impl Deref for LabVm {
    type Target = Vm;
    fn deref(&self) -> &Vm {
        &self.vm
    }
}

impl DerefMut for LabVm {
    fn deref_mut(&mut self) -> &mut Vm {
        &mut self.vm
    }
}

impl LabHost {
    /// A plan for a VM on this host's kernel and image, its console written
    /// to `console`: no disk, the default device, a 120 s boot bound.
    pub fn plan(&self, console: PathBuf) -> VmPlan<'_> {
        VmPlan {
            host: self,
            console,
            boot_timeout: Duration::from_secs(120),
            device: DeviceParams::default(),
            backing: Backing::None,
            write_cache: None,
            tools: Vec::new(),
            extra_cmdline: String::new(),
            tcg_threads: TcgThreads::default(),
            stall_first: 0,
        }
    }
}

impl<'h> VmPlan<'h> {
    /// The NVMe device's parameters and what its namespaces run on.
    pub fn disk(mut self, device: &DeviceParams, backing: Backing) -> Self {
        self.device = device.clone();
        self.backing = backing;
        self
    }

    /// Overrides the namespace's volatile write cache (QEMU's default, on,
    /// unless the backing says otherwise).
    pub fn write_cache(mut self, on: bool) -> Self {
        self.write_cache = Some(on);
        self
    }

    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Optional guest tools the image must carry (fio, ...).
    pub fn tools(mut self, tools: &[String]) -> Self {
        self.tools = tools.to_vec();
        self
    }

    /// Words appended to the kernel command line.
    pub fn cmdline(mut self, extra: &str) -> Self {
        self.extra_cmdline = extra.to_string();
        self
    }

    pub fn tcg_threads(mut self, threads: TcgThreads) -> Self {
        self.tcg_threads = threads;
        self
    }

    /// Test hook: the first `n` boots of [`VmPlan::boot_retrying`] are cut
    /// short at once (a real QEMU, diagnosed and killed like any stalled
    /// boot), so the retry and the lab-error report run end to end.
    #[doc(hidden)]
    pub fn stall_first_boots(mut self, n: u32) -> Self {
        self.stall_first = n;
        self
    }

    /// Starts QEMU on fresh disks without waiting for the guest.
    pub fn start(&self) -> Result<LabVm, LaunchError> {
        self.launch(false, self.boot_timeout)
    }

    /// Starts QEMU on fresh disks and waits until SSH is ready.
    pub fn boot(&self) -> Result<LabVm, LaunchError> {
        self.launch(true, self.boot_timeout)
    }

    /// [`VmPlan::boot`], with one retry on fresh disks when the boot failed
    /// for the lab's reasons before the guest ran anything (a stalled stage,
    /// QEMU gone without a splat). A splat during boot is the kernel's and is
    /// never retried. The first attempt's console and diagnosis are kept as
    /// `<set_aside>.console.log` and `<set_aside>.diagnosis.txt`.
    pub fn boot_retrying(&self, set_aside: &str) -> Result<LabVm, LaunchError> {
        let first = match self.launch(true, self.attempt_timeout(1)) {
            Ok(vm) => return Ok(vm),
            Err(LaunchError::Boot { error, .. })
                if error.is_infrastructure() && !crate::proc::reaper::interrupted() =>
            {
                error
            }
            Err(e) => return Err(e),
        };
        crate::vm::set_aside_failed_boot(&self.console, set_aside);
        let why = first.to_string();
        tracing::warn!(
            "{}: first boot failed ({why}); retrying once",
            self.console.display()
        );
        match self.launch(true, self.attempt_timeout(2)) {
            Ok(mut vm) => {
                vm.retried_after = Some(why);
                Ok(vm)
            }
            Err(LaunchError::Boot { error, .. }) => Err(LaunchError::Boot {
                error,
                retried_after: Some(why),
            }),
            Err(e) => Err(e),
        }
    }

    fn attempt_timeout(&self, attempt: u32) -> Duration {
        if attempt <= self.stall_first {
            Duration::from_millis(1)
        } else {
            self.boot_timeout
        }
    }

    fn launch(&self, wait: bool, boot_timeout: Duration) -> Result<LabVm, LaunchError> {
        let setup =
            |stage: &'static str| move |error: anyhow::Error| LaunchError::Setup { stage, error };
        // Declared so that a failed boot drops the server before its directory.
        let mut dir = None;
        let mut server = None;
        let mut crash = None;
        let mut scratch = Vec::new();
        let mut nbd_activity = None;
        let (backend, extra_namespaces, write_cache) = match &self.backing {
            Backing::None => (None, Vec::new(), None),
            Backing::Scratch => {
                for _ in 0..self.device.namespaces.max(1) {
                    scratch
                        .push(ScratchDisk::new(self.device.size_bytes()).map_err(setup("disk"))?);
                }
                let mut backends = scratch.iter().map(ScratchDisk::backend);
                let first = backends.next();
                (first, backends.collect(), None)
            }
            Backing::CrashDisk => {
                let c = CrashDisk::start(self.device.size_bytes(), self.device.lba_size)
                    .map_err(setup("crash-disk"))?;
                nbd_activity = Some(c.activity());
                let backend = c.backend();
                crash = Some(c);
                (Some(backend), Vec::new(), Some(false))
            }
            Backing::Export { name, export } => {
                let d = PrivateDir::new("lab-export").map_err(setup("export"))?;
                let s =
                    NbdServer::start(d.path(), name, export.clone()).map_err(setup("export"))?;
                nbd_activity = Some(s.activity());
                let backend = s.backend();
                server = Some(s);
                dir = Some(d);
                (Some(backend), Vec::new(), None)
            }
            Backing::Attached(b) => (Some(b.clone()), Vec::new(), None),
        };
        let nvme = backend.map(|backend| NvmeDisk {
            backend,
            extra_namespaces,
            device: self.device.clone(),
            write_cache: self.write_cache.or(write_cache),
        });
        let opts = VmOptions {
            qemu: self.host.qemu.path.clone(),
            accel: self.host.accel,
            tcg_threads: self.tcg_threads,
            kernel: self.host.kernel.clone(),
            initrd: self.host.image_with(&self.tools).map_err(setup("image"))?,
            memory_mib: 1024,
            cpus: 2,
            nvme,
            console_log: self.console.clone(),
            boot_timeout,
            extra_cmdline: self.extra_cmdline.clone(),
            nbd_activity,
        };
        let started = if wait {
            Vm::boot(&opts)
        } else {
            Vm::start(&opts)
        };
        let boot_error = |error| LaunchError::Boot {
            error,
            retried_after: None,
        };
        Ok(LabVm {
            vm: started.map_err(boot_error)?,
            crash,
            retried_after: None,
            _server: server,
            scratch,
            _dir: dir,
        })
    }
}
