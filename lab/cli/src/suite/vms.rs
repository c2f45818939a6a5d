//! Where a testcase's VM comes from: booted for it, or, under `lab run -j N`
//! with reuse, the VM its worker booted for an earlier testcase of the same
//! class (`Testcase::vm_class`), brought back to a clean slate.
//!
//! A VM is kept for the next testcase only when the one it ran was clean
//! (no failed check, no error, no splat, QEMU still running) and its class
//! allows sharing (never a power cut, never `isolation: boot`). Before the
//! next testcase its console is pointed at that testcase's log and
//! `lab-guest reset` undoes what the last one left (processes, mounts,
//! tunables, files, page cache, the namespaces' contents). When the next
//! testcase's device differs, its NVMe controller is then replaced over
//! QMP (hot-plug, on fresh scratch files), if the guest's kernel can
//! hot-plug PCI devices; else the VM is shut down and one booted. A reset
//! or a swap that fails costs a fresh boot, never a verdict.
//!
//! The worker's verifier VMs are kept too, in a [`VerifierPool`]: a
//! power-cut testcase's own VM is never reused, but the verifier that
//! checked its crash states can check the next one's.

use std::path::Path;
use std::time::{Duration, Instant};

use lab_core::device::DeviceParams;
use lab_core::schedule::HeldVm;
use lab_core::testcase::Testcase;

use crate::host::launch::{Backing, DeviceSwap, LabVm, LaunchError};
use crate::host::LabHost;
use crate::powercut::verifier::VerifierPool;
use crate::vm::agent;

/// A worker's source of VMs.
pub struct Vms {
    reuse: bool,
    held: Option<Held>,
    /// Verifier VMs kept for the power-cut testcases (only with reuse).
    verifiers: VerifierPool,
}

/// A VM kept between testcases.
struct Held {
    class: String,
    /// Its NVMe device (`Testcase::device_key`).
    device: String,
    /// Its kernel can hot-plug the NVMe controller (`lab-guest baseline`
    /// found PCI hotplug slots).
    hotplug: bool,
    vm: LabVm,
    /// Testcases it has run, oldest first.
    served: Vec<String>,
}

/// The VM a testcase runs in.
pub struct Lease {
    pub vm: LabVm,
    /// Booted for this testcase (its boot times are this testcase's).
    pub booted: bool,
    /// The class it may be kept for; `None`: shut down after the testcase.
    class: Option<String>,
    device: String,
    hotplug: bool,
    served: Vec<String>,
    /// What `lab-guest reset` printed, on a reused VM.
    pub reset: Option<String>,
    pub reset_time: Option<Duration>,
    /// Why a held VM could not be reused (a fresh one was booted).
    pub reset_failed: Option<String>,
    /// The NVMe controller was replaced for this testcase's device.
    pub swap: Option<DeviceSwap>,
}

impl Lease {
    /// Testcases this VM ran before this one.
    pub fn served_before(&self) -> &[String] {
        &self.served
    }
}

/// Test hook (`LAB_INJECT_BOOT_STALLS=N`): the first N boot attempts of
/// every testcase stall at once. Lets the tests prove the retry and the
/// lab-error report on real VMs; never set in normal use.
fn injected_boot_stalls() -> u32 {
    std::env::var("LAB_INJECT_BOOT_STALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Vms {
    /// One VM per testcase (`-j 1`, the verifier bench, ...).
    pub fn one_each() -> Vms {
        Vms {
            reuse: false,
            held: None,
            verifiers: VerifierPool::none(),
        }
    }

    /// A VM kept across testcases of one class when it can be.
    pub fn reusing() -> Vms {
        Vms {
            reuse: true,
            held: None,
            verifiers: VerifierPool::keeping(),
        }
    }

    /// The VM held, if any: the queue gives its worker more of its class
    /// (and device) first.
    pub fn held(&self) -> Option<HeldVm<'_>> {
        self.held.as_ref().map(|h| HeldVm {
            class: &h.class,
            device: &h.device,
        })
    }

    /// The verifier VMs this worker keeps between testcases.
    pub fn verifiers(&self) -> &VerifierPool {
        &self.verifiers
    }

    /// Shuts the held VM down (its class has no testcase left, or the
    /// worker is done).
    pub fn let_go(&mut self) {
        if let Some(h) = self.held.take() {
            if let Err(e) = h.vm.shutdown() {
                tracing::warn!("shutting down a reused VM: {e}");
            }
        }
    }

    /// The VM for `tc`, its console written to `dir/console.log`: the held
    /// one, reset, when its class matches and it has `tc`'s device or can
    /// swap to it; else a fresh boot (the held one, if any, is shut down
    /// first).
    pub fn acquire(
        &mut self,
        host: &LabHost,
        tc: &Testcase,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Lease, LaunchError> {
        let class = if self.reuse { tc.vm_class() } else { None };
        let device = tc.device_key();
        let mut reset_failed = None;
        if let Some(held) = self.held.take() {
            let same_device = held.device == device;
            if class.as_deref() == Some(held.class.as_str()) && (same_device || held.hotplug) {
                let swap_to = (!same_device).then_some(&tc.device);
                match reuse(
                    held,
                    &dir.join("console.log"),
                    timeout,
                    swap_to,
                    device.clone(),
                ) {
                    Ok(lease) => return Ok(lease),
                    Err(why) => reset_failed = Some(why),
                }
            } else if let Err(e) = held.vm.shutdown() {
                tracing::warn!("shutting down a reused VM: {e}");
            }
        }
        let backing = match tc.power_cut {
            None => Backing::Scratch,
            Some(_) => Backing::CrashDisk,
        };
        let vm = host
            .plan(dir.join("console.log"))
            .disk(&tc.device, backing)
            .boot_timeout(Duration::from_secs(tc.timeouts.boot_s))
            .tools(&tc.guest_tools)
            .stall_first_boots(injected_boot_stalls())
            .boot_retrying("boot-1")?;
        Ok(Lease {
            vm,
            booted: true,
            class,
            device,
            hotplug: false,
            served: Vec::new(),
            reset: None,
            reset_time: None,
            reset_failed,
            swap: None,
        })
    }

    /// Records the booted guest for later resets (after its modules are
    /// loaded). A guest that cannot be recorded is simply not kept.
    pub fn baseline(&self, lease: &mut Lease, timeout: Duration) {
        if lease.class.is_none() {
            return;
        }
        match lease.vm.exec(&agent::baseline(), timeout) {
            Ok(out) if out.status == 0 => {
                lease.hotplug = serde_json::from_str::<serde_json::Value>(out.stdout.trim())
                    .ok()
                    .and_then(|v| v["hotplug"].as_u64())
                    .is_some_and(|slots| slots > 0);
            }
            Ok(out) => {
                tracing::warn!("lab-guest baseline failed: {}", out.stderr.trim());
                lease.class = None;
            }
            Err(e) => {
                tracing::warn!("lab-guest baseline: {e}");
                lease.class = None;
            }
        }
    }

    /// After the testcase named `name`: keeps the VM for the next testcase
    /// of its class when the testcase was `clean`, else shuts it down.
    pub fn release(
        &mut self,
        mut lease: Lease,
        name: &str,
        clean: bool,
    ) -> Result<(), crate::vm::VmError> {
        let keep = match lease.class.take() {
            Some(class) if clean && lease.vm.is_running() => Some(class),
            _ => None,
        };
        match keep {
            Some(class) => {
                lease.served.push(name.to_string());
                self.held = Some(Held {
                    class,
                    device: lease.device,
                    hotplug: lease.hotplug,
                    vm: lease.vm,
                    served: lease.served,
                });
                Ok(())
            }
            None => lease.vm.shutdown(),
        }
    }
}

/// Points the held VM's console at the next testcase's log, runs
/// `lab-guest reset` and, with `swap_to`, replaces the NVMe controller with
/// one of those parameters; `Err` says why the VM cannot be reused (it is
/// shut down).
fn reuse(
    mut held: Held,
    console: &Path,
    timeout: Duration,
    swap_to: Option<&DeviceParams>,
    device: String,
) -> Result<Lease, String> {
    let started = Instant::now();
    let outcome = held
        .vm
        .redirect_console(console)
        .map_err(|e| format!("console: {e}"))
        .and_then(|()| {
            held.vm
                .exec(&agent::reset(), timeout)
                .map_err(|e| format!("lab-guest reset: {e}"))
        })
        .and_then(|out| {
            if out.status == 0 {
                Ok(out.stdout.trim().to_string())
            } else {
                Err(format!(
                    "lab-guest reset exited with {}: {}",
                    out.status,
                    out.stderr.trim()
                ))
            }
        });
    let reset_time = started.elapsed();
    let outcome = outcome
        .and_then(|report| match swap_to {
            None => Ok((report, None)),
            Some(params) => held
                .vm
                .swap_device(params, timeout)
                .map(|swap| (report, Some(swap)))
                .map_err(|e| format!("swapping the NVMe device: {e}")),
        })
        .and_then(|done| match held.vm.splats().first() {
            Some(s) => Err(format!(
                "the reset{} left a splat: {}",
                if swap_to.is_some() {
                    " or the device swap"
                } else {
                    ""
                },
                s.title
            )),
            None => Ok(done),
        });
    match outcome {
        Ok((report, swap)) => Ok(Lease {
            vm: held.vm,
            booted: false,
            class: Some(held.class),
            device,
            hotplug: held.hotplug,
            served: held.served,
            reset: Some(report),
            reset_time: Some(reset_time),
            reset_failed: None,
            swap,
        }),
        Err(why) => {
            tracing::warn!("not reusing the VM: {why}");
            if let Err(e) = held.vm.shutdown() {
                tracing::warn!("shutting down a reused VM: {e}");
            }
            Err(why)
        }
    }
}
