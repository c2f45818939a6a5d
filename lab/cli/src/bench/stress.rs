//! `lab bench stress`: boots many VMs on the crash disk while the host is
//! loaded (CPU hogs in this process and several VMs booting at once), and
//! counts the boots that failed by the stage they stalled in. Boots are
//! never retried here: the figure is how often a boot fails at all.
//!
//! A baseline of a few boots, one at a time on an idle host, is measured in
//! the same run, so the loaded boot times come with a ratio against it.
//! Every failed boot keeps its console and diagnosis under
//! `results/bench/stress/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use lab_core::device::DeviceParams;

use crate::bench::{median, rec, Measurement};
use crate::host::launch::{Backing, LaunchError};
use crate::host::LabHost;
use crate::vm::{BootStage, VmError};

/// How one boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BootEnd {
    /// SSH answered and `true` ran; the boot time.
    Ready(Duration),
    /// A stage ran out of time.
    Stalled(BootStage),
    /// QEMU exited, the kernel crashed, or anything else.
    Other(String),
}

/// The options of one stress run.
#[derive(Debug, Clone)]
pub struct StressPlan {
    pub boots: usize,
    pub parallel: usize,
    pub hogs: usize,
    /// Unloaded boots one at a time first, for the ratio.
    pub baseline: usize,
    /// Appended to the guest's kernel command line (`ignore_loglevel` makes
    /// a quiet boot's console say where it stopped).
    pub extra_cmdline: String,
    pub tcg_threads: lab_core::qemu::TcgThreads,
}

/// Busy threads until dropped.
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    fn start(n: usize) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..100_000u64 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One boot on a fresh crash disk; a failure keeps its console and
/// diagnosis in `keep`.
fn boot_once(host: &LabHost, plan: &StressPlan, scratch: &Path, keep: &Path, i: usize) -> BootEnd {
    let device = DeviceParams {
        size_mib: 256,
        ..DeviceParams::default()
    };
    let console = scratch.join(format!("boot-{i}.console.log"));
    let booted = host
        .plan(console.clone())
        .disk(&device, Backing::CrashDisk)
        .boot_timeout(Duration::from_secs(300))
        .cmdline(&plan.extra_cmdline)
        .tcg_threads(plan.tcg_threads)
        .boot();
    let end = match booted {
        Ok(mut vm) => {
            let t = vm.boot_time.unwrap_or_default();
            match vm.exec("true", Duration::from_secs(60)) {
                Ok(_) => {
                    let _ = vm.shutdown();
                    BootEnd::Ready(t)
                }
                Err(e) => BootEnd::Other(format!("first command: {e}")),
            }
        }
        Err(LaunchError::Boot {
            error: VmError::BootStalled { diagnosis, .. },
            ..
        }) => BootEnd::Stalled(diagnosis.stage),
        Err(e) => BootEnd::Other(e.to_string()),
    };
    if !matches!(end, BootEnd::Ready(_)) {
        let _ = std::fs::create_dir_all(keep);
        let _ = std::fs::copy(&console, keep.join(format!("boot-{i}.console.log")));
        let diag = crate::vm::diagnosis_path(&console);
        let _ = std::fs::copy(&diag, keep.join(format!("boot-{i}.diagnosis.txt")));
        let _ = std::fs::write(keep.join(format!("boot-{i}.end.txt")), format!("{end:?}\n"));
    }
    let _ = std::fs::remove_file(&console);
    end
}

fn run_boots(
    host: &LabHost,
    plan: &StressPlan,
    scratch: &Path,
    keep: &Path,
    first: usize,
    count: usize,
    parallel: usize,
) -> Vec<BootEnd> {
    let next = AtomicUsize::new(0);
    let ends = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                if crate::proc::reaper::interrupted() {
                    return;
                }
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= count {
                    return;
                }
                let end = boot_once(host, plan, scratch, keep, first + k);
                eprintln!("boot {}/{}: {end:?}", k + 1, count);
                ends.lock().unwrap_or_else(|e| e.into_inner()).push(end);
            });
        }
    });
    ends.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn times(ends: &[BootEnd]) -> Vec<f64> {
    ends.iter()
        .filter_map(|e| match e {
            BootEnd::Ready(t) => Some(t.as_secs_f64()),
            _ => None,
        })
        .collect()
}

pub fn bench_stress(host: &LabHost, plan: StressPlan, results: &Path) -> Result<Vec<Measurement>> {
    let scratch = crate::paths::PrivateDir::new("lab-bench-stress")?;
    let keep: PathBuf = results.join("stress");
    let _ = std::fs::remove_dir_all(&keep);
    let base = run_boots(host, &plan, scratch.path(), &keep, 0, plan.baseline, 1);
    let t = Instant::now();
    let loaded = {
        let _hogs = Hogs::start(plan.hogs);
        run_boots(
            host,
            &plan,
            scratch.path(),
            &keep,
            plan.baseline,
            plan.boots,
            plan.parallel,
        )
    };
    let wall = t.elapsed();
    if crate::proc::reaper::interrupted() {
        anyhow::bail!("interrupted");
    }
    let mut base_t = times(&base);
    let loaded_t = times(&loaded);
    let stalled = |st: BootStage| {
        loaded
            .iter()
            .filter(|e| **e == BootEnd::Stalled(st))
            .count() as f64
    };
    let other = loaded
        .iter()
        .filter(|e| matches!(e, BootEnd::Other(_)))
        .count() as f64;
    let base_median = median(&mut base_t);
    let loaded_median = median(&mut loaded_t.clone());
    let mut out = vec![
        crate::bench::accel_record(host),
        rec("boots", loaded.len() as f64, "count"),
        rec("parallel_vms", plan.parallel as f64, "count"),
        rec("cpu_hog_threads", plan.hogs as f64, "count"),
        rec(
            "tcg_multi_threaded",
            f64::from(u8::from(
                plan.tcg_threads == lab_core::qemu::TcgThreads::Multi,
            )),
            "bool",
        ),
        rec("host_cpus", num_cpus() as f64, "count"),
        rec("boots_ready", loaded_t.len() as f64, "count"),
        rec(
            "boot_failures",
            (loaded.len() - loaded_t.len()) as f64,
            "count",
        ),
    ];
    for st in BootStage::ALL {
        out.push(rec(
            &format!("boot_failures_stalled_{}", st.name().replace('-', "_")),
            stalled(st),
            "count",
        ));
    }
    out.extend([
        rec("boot_failures_other", other, "count"),
        rec("baseline_boots_unloaded", base_t.len() as f64, "count"),
        rec("baseline_boot_to_ssh_median", base_median, "s"),
        rec("loaded_boot_to_ssh_median", loaded_median, "s"),
        rec(
            "loaded_boot_to_ssh_max",
            loaded_t.iter().cloned().fold(0.0, f64::max),
            "s",
        ),
        rec(
            "ratio_loaded_vs_unloaded_boot_median",
            loaded_median / base_median,
            "ratio",
        ),
        rec("wall_time_loaded", wall.as_secs_f64(), "s"),
    ]);
    Ok(out)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
