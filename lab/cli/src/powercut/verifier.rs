//! The verifier: one VM whose NVMe namespace is the crash disk's switch
//! export. For each crash state the lab selects it behind the same device
//! and the guest mounts it (log recovery), scans the workload's files,
//! unmounts and runs `xfs_repair -n`; the block cache is dropped between
//! states (BLKFLSBUF) so nothing of one state leaks into the next.
//!
//! Swapping states behind one export was chosen over QMP hot-plug and over
//! a boot per state: no device appears or disappears in the guest, and a
//! boot costs 6-8 s under TCG against well under that per state here
//! (`lab bench verify` has the split).
//!
//! Under `lab run -j N` with reuse, a worker keeps its verifier VMs for
//! the next power-cut testcase whose device matches ([`VerifierPool`]):
//! the switch is pointed at that testcase's crash states and the console
//! at its log. A verifier boot costs 10-20 s with two workers under TCG,
//! and the default run booted 26 of them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lab_core::device::DeviceParams;
use lab_core::filemap::MapExtent;
use lab_core::stamp::Sector;
use lab_disk::cow::Switch;
use lab_disk::StateStore;
use lab_model::FileScan;

use crate::host::launch::{Backing, LabVm};
use crate::host::LabHost;
use crate::vm::{agent, Vm, VmError};

const EXPORT: &str = "verify";

/// What the guest found in one state.
#[derive(Debug, Clone)]
pub struct StateCheck {
    /// None: mounted; Some: why not (mount's error and the kernel's log).
    pub mount_error: Option<String>,
    /// None: `xfs_repair -n` found nothing; Some: its exit status and tail.
    pub repair_error: Option<String>,
    pub files: Vec<FileScan>,
    /// Each scanned file's extent map, in `files`' order; None for a file
    /// that is missing or has an extent the host cannot read through.
    pub maps: Vec<Option<Vec<MapExtent>>>,
    pub times: PhaseTimes,
}

/// Where the time of one state went (seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimes {
    /// Selecting the state and dropping the guest's block cache.
    pub attach: f64,
    /// Mount, including log recovery.
    pub mount: f64,
    pub scan: f64,
    pub repair: f64,
    /// The lab's share: SSH round trip and parsing.
    pub overhead: f64,
}

impl PhaseTimes {
    /// Seconds the state took in all.
    pub fn total(&self) -> f64 {
        self.attach + self.mount + self.scan + self.repair + self.overhead
    }
}

pub struct Verifier {
    /// The VM with the server of the switch export it runs on.
    vm: LabVm,
    switch: Arc<Switch>,
    /// The device it was booted with: a store is shown only on the same.
    device: DeviceParams,
    boot_s: f64,
}

/// The device a verifier VM gets for a testcase's: one namespace, the
/// crash states', whatever the workload had.
fn verifier_device(testcase: &DeviceParams) -> DeviceParams {
    DeviceParams {
        namespaces: 1,
        ..testcase.clone()
    }
}

impl Verifier {
    /// Boots the verifier VM on the store's switch export.
    pub fn start(
        host: &LabHost,
        store: Arc<StateStore>,
        device: &DeviceParams,
        console: PathBuf,
    ) -> Result<Verifier> {
        let switch = Switch::new(store);
        let t = Instant::now();
        let device = verifier_device(device);
        let backing = Backing::Export {
            name: EXPORT.into(),
            export: switch.clone(),
        };
        // A verifier boot that stalls is the lab's hiccup, not a verdict (no
        // workload runs in this VM): retried once, on a fresh server.
        let mut vm = host
            .plan(console)
            .disk(&device, backing)
            .boot_retrying("verifier-boot-1")
            .map_err(|e| anyhow::Error::from(e).context("booting the verifier VM"))?;
        vm.wait_modules(Duration::from_secs(120))
            .context("the verifier VM's modules")?;
        Ok(Verifier {
            vm,
            switch,
            device: device.clone(),
            boot_s: t.elapsed().as_secs_f64(),
        })
    }

    pub fn boot_seconds(&self) -> f64 {
        self.boot_s
    }

    /// Console of the verifier VM (splats during verification).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Checks state `i`: the workload's `files` (absolute guest paths under
    /// /mnt) are scanned after mounting.
    pub fn check(
        &mut self,
        i: usize,
        files: &[String],
        timeout: Duration,
    ) -> Result<StateCheck, VmError> {
        let t0 = Instant::now();
        self.switch.select(i);
        let dev = "/dev/nvme0n1";
        // A repair failure reports what repair found (`agf_freeblks 32748,
        // counted 32747 in ag 0`), not its phase banners and progress lines,
        // which are all its last 15 lines hold.
        // `xfs_repair -P`: no prefetch threads. They only reorder reads
        // (the checks are the same); a TCG guest runs its vCPUs on one
        // host thread, so the threads cost more than they hide: 0.27 s
        // per state against 0.35 s with them (docs/power-cuts.md).
        let cmd = format!(
            "t() {{ read up _ < /proc/uptime; echo \"LAB-T $1 $up\"; }}; t start; \
             blockdev --flushbufs {dev}; t attached; \
             if mount -t xfs {dev} /mnt 2>/tmp/mount.err; then t mounted; \
               {scan}; t scanned; umount /mnt || echo 'LAB-UMOUNT-FAILED'; \
             else echo \"LAB-MOUNT-FAILED $?\"; cat /tmp/mount.err; dmesg | tail -n 15; t mounted; t scanned; fi; \
             blockdev --flushbufs {dev}; \
             xfs_repair -n -P {dev} >/tmp/repair.out 2>&1; r=$?; t repaired; \
             if [ $r != 0 ]; then echo \"LAB-REPAIR-FAILED $r\"; \
               f=$(grep -v -e '^Phase [0-9]' -e '^        - ' -e '^No modify flag set' /tmp/repair.out | head -n 15); \
               if [ -n \"$f\" ]; then echo \"$f\"; else tail -n 15 /tmp/repair.out; fi; fi",
            scan = agent::scan(files)
        );
        let out = self.vm.exec(&cmd, timeout)?;
        let mut marks = std::collections::HashMap::new();
        let mut mount_error = None;
        let mut repair_error = None;
        // A failure's block: its tag line and what the guest printed after
        // it, up to the next timing mark. (A fixed count of lines cut the
        // mount's block before the kernel's last lines, the ones that say
        // why.)
        let tail_of = |tag: &str| -> Option<String> {
            let pos = out.stdout.find(tag)?;
            let mut lines = out.stdout[pos..].lines();
            let first = lines.next()?;
            Some(
                std::iter::once(first)
                    .chain(lines.take_while(|l| !l.starts_with("LAB-T ")).take(40))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        if out.stdout.contains("LAB-MOUNT-FAILED") {
            mount_error = tail_of("LAB-MOUNT-FAILED");
        }
        if out.stdout.contains("LAB-REPAIR-FAILED") {
            repair_error = tail_of("LAB-REPAIR-FAILED");
        }
        if out.stdout.contains("LAB-UMOUNT-FAILED") && mount_error.is_none() {
            mount_error = Some("umount failed after a successful mount".into());
        }
        let mut scans: Vec<FileScan> = Vec::new();
        let mut maps: Vec<Option<Vec<MapExtent>>> = Vec::new();
        let mut runs: Vec<(u64, u64, Sector)> = Vec::new();
        let flush = |scans: &mut Vec<FileScan>, runs: &mut Vec<(u64, u64, Sector)>| {
            if let Some(f) = scans.last_mut() {
                f.sectors = lab_model::sectors_from_runs(runs);
            }
            runs.clear();
        };
        for line in out.stdout.lines() {
            if let Some(rest) = line.strip_prefix("LAB-T ") {
                if let Some((k, v)) = rest.split_once(' ') {
                    marks.insert(k.to_string(), v.trim().parse::<f64>().unwrap_or(0.0));
                }
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(name), true) = (
                v.get("file").and_then(|f| f.as_str()),
                v.get("size").is_some() || v.get("missing").is_some(),
            ) {
                flush(&mut scans, &mut runs);
                maps.push(
                    v.get("extents")
                        .and_then(|e| serde_json::from_value::<Vec<MapExtent>>(e.clone()).ok()),
                );
                scans.push(FileScan {
                    file: name.to_string(),
                    size: v.get("size").and_then(serde_json::Value::as_u64),
                    sectors: Vec::new(),
                });
            } else if let (Some(from), Some(to)) = (
                v.get("from").and_then(serde_json::Value::as_u64),
                v.get("to").and_then(serde_json::Value::as_u64),
            ) {
                if let Ok(s) = serde_json::from_value::<Sector>(v.clone()) {
                    runs.push((from, to, s));
                }
            }
        }
        flush(&mut scans, &mut runs);
        let at = |k: &str| marks.get(k).copied().unwrap_or(0.0);
        let guest = at("repaired") - at("start");
        let times = PhaseTimes {
            attach: at("attached") - at("start"),
            mount: at("mounted") - at("attached"),
            scan: at("scanned") - at("mounted"),
            repair: at("repaired") - at("scanned"),
            overhead: (t0.elapsed().as_secs_f64() - guest).max(0.0),
        };
        Ok(StateCheck {
            mount_error,
            repair_error,
            files: scans,
            maps,
            times,
        })
    }

    pub fn shutdown(self) {
        let _ = self.vm.shutdown();
    }

    /// Points this verifier at another testcase's crash states, its console
    /// at that testcase's log; `Err` says why it cannot serve them.
    fn retarget(
        &mut self,
        store: Arc<StateStore>,
        console: &Path,
        timeout: Duration,
    ) -> Result<(), String> {
        self.switch.retarget(store).map_err(|e| e.to_string())?;
        self.vm
            .redirect_console(console)
            .map_err(|e| format!("console: {e}"))?;
        // Each state is unmounted after its check; one still mounted means
        // the last check did not finish, and the kernel's log starts afresh
        // for the next testcase's mount failures.
        let out = self
            .vm
            .exec(
                "if grep -qs ' /mnt ' /proc/mounts; then grep ' /mnt ' /proc/mounts; exit 1; fi; \
                 dmesg -C >/dev/null 2>&1 || true",
                timeout,
            )
            .map_err(|e| e.to_string())?;
        if out.status != 0 {
            return Err(format!("/mnt is still mounted: {}", out.stdout.trim()));
        }
        Ok(())
    }
}

/// A worker's verifier VMs kept between its testcases (`lab run -j N`
/// with reuse; never under `-j 1`). A verifier is kept only when its
/// testcase's checks left it sound: QEMU running and no splat on its
/// console (a crawl, a hang or a failed guest already ended it). Only a
/// verifier started on the worker's own thread can be kept: QEMU gets
/// PR_SET_PDEATHSIG, which fires when the thread that started it ends.
pub struct VerifierPool {
    keep: bool,
    idle: Mutex<Vec<Verifier>>,
}

impl VerifierPool {
    /// Every verifier is booted for its testcase and shut down after it.
    pub fn none() -> VerifierPool {
        VerifierPool {
            keep: false,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn keeping() -> VerifierPool {
        VerifierPool {
            keep: true,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Verifier>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept verifier booted with `device`, showing `store` with its
    /// console at `console`; None when there is none (boot one).
    pub fn take(
        &self,
        store: &Arc<StateStore>,
        device: &DeviceParams,
        console: &Path,
        timeout: Duration,
    ) -> Option<Verifier> {
        let want = verifier_device(device);
        let mut v = {
            let mut idle = self.idle();
            let at = idle.iter().position(|v| v.device == want)?;
            idle.swap_remove(at)
        };
        match v.retarget(store.clone(), console, timeout) {
            Ok(()) => Some(v),
            Err(why) => {
                tracing::warn!("not reusing a verifier VM: {why}");
                v.shutdown();
                None
            }
        }
    }

    /// Keeps `v` for a later testcase when this pool keeps verifiers and it
    /// is sound; shuts it down otherwise.
    pub fn give_back(&self, mut v: Verifier) {
        if self.keep && v.vm.is_running() && v.vm.splats().is_empty() {
            self.idle().push(v);
        } else {
            v.shutdown();
        }
    }

    /// Shuts every kept verifier down (the worker is done).
    pub fn shut_down(&self) {
        for v in self.idle().drain(..) {
            v.shutdown();
        }
    }
}
