//! Where a testcase's VM comes from: booted for it, or, under `lab run -j N`
//! with reuse, the VM its worker booted for an earlier testcase of the same
//! class (`Testcase::vm_class`), brought back to a clean slate.
//!
//! A VM is kept for the next testcase only when the one it ran was clean
//! (no failed check, no error, no splat, QEMU still running) and its class
//! allows sharing (never a power cut, never `isolation: boot`). Before the
//! next testcase its console is pointed at that testcase's log and
//! `lab-guest reset` undoes what the last one left (processes, mounts,
//! tunables, files, page cache, the namespaces' contents). A reset that
//! fails costs a fresh boot, never a verdict.
//!
//! The worker's verifier VMs are kept too, in a [`VerifierPool`]: a
//! power-cut testcase's own VM is never reused, but the verifier that
//! checked its crash states can check the next one's.

use std::path::Path;
use std::time::{Duration, Instant};

use lab_core::testcase::Testcase;

use crate::host::launch::{Backing, LabVm, LaunchError};
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
    served: Vec<String>,
    /// What `lab-guest reset` printed, on a reused VM.
    pub reset: Option<String>,
    pub reset_time: Option<Duration>,
    /// Why a held VM could not be reused (a fresh one was booted).
    pub reset_failed: Option<String>,
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

    /// The class of the VM held, if any: the queue gives its worker more of
    /// that class first.
    pub fn held_class(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.class.as_str())
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
    /// one, reset, when its class matches; else a fresh boot (the held one,
    /// if any, is shut down first).
    pub fn acquire(
        &mut self,
        host: &LabHost,
        tc: &Testcase,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Lease, LaunchError> {
        let class = if self.reuse { tc.vm_class() } else { None };
        let mut reset_failed = None;
        if let Some(held) = self.held.take() {
            if class.as_deref() == Some(held.class.as_str()) {
                match reset(held, &dir.join("console.log"), timeout) {
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
            served: Vec::new(),
            reset: None,
            reset_time: None,
            reset_failed,
        })
    }

    /// Records the booted guest for later resets (after its modules are
    /// loaded). A guest that cannot be recorded is simply not kept.
    pub fn baseline(&self, lease: &mut Lease, timeout: Duration) {
        if lease.class.is_none() {
            return;
        }
        match lease.vm.exec(&agent::baseline(), timeout) {
            Ok(out) if out.status == 0 => {}
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
                    vm: lease.vm,
                    served: lease.served,
                });
                Ok(())
            }
            None => lease.vm.shutdown(),
        }
    }
}

/// Points the held VM's console at the next testcase's log and runs
/// `lab-guest reset`; `Err` says why the VM cannot be reused (it is shut
/// down).
fn reset(mut held: Held, console: &Path, timeout: Duration) -> Result<Lease, String> {
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
        })
        .and_then(|report| match held.vm.splats().first() {
            Some(s) => Err(format!("the reset left a splat: {}", s.title)),
            None => Ok(report),
        });
    match outcome {
        Ok(report) => Ok(Lease {
            vm: held.vm,
            booted: false,
            class: Some(held.class),
            served: held.served,
            reset: Some(report),
            reset_time: Some(started.elapsed()),
            reset_failed: None,
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
