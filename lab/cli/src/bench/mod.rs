//! `lab bench <what>`: measured figures written to results/bench/<what>.json
//! as a list of {"metric", "value", "unit"} records, ratios included.

pub mod disk;
pub mod heap;
pub mod kernel;
pub mod stress;
pub mod verify;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::host::LabHost;
use crate::paths;
use crate::vm::Vm;

#[derive(clap::Subcommand, Clone)]
pub enum BenchWhat {
    /// Boot to SSH ready (median of N), against a bare kernel boot baseline.
    Boot {
        /// Boots per measurement.
        #[arg(short = 'n', long, default_value_t = 5)]
        runs: usize,
    },
    /// Guest write throughput through the crash disk against a plain raw
    /// file (4 KiB random, 1 MiB sequential, fio O_DIRECT), and crash
    /// states planned and materialised per second from a real cut.
    Disk {
        /// Rounds per measurement (the two backends alternate).
        #[arg(short = 'n', long, default_value_t = 3)]
        runs: usize,
    },
    /// Power cuts of a seeded 8-thread O_DIRECT generator on XFS (half
    /// RWF_ATOMIC) until at least N crash states were verified: states per
    /// minute, the time split, false positives, positive controls.
    Verify {
        /// Crash states to verify at least.
        #[arg(short = 'n', long, default_value_t = 500)]
        states: usize,
    },
    /// Kernel builds: a full build of the lab config with a cold ccache,
    /// then the demo series bisected (incremental build per step, total
    /// time, number of builds against ceil(log2 N) + 2). About 15 minutes.
    Kernel,
    /// Boots on the crash disk under load (CPU hogs, VMs booting at once),
    /// never retried: boot failures counted by the stage they stalled in,
    /// against a few unloaded boots measured first. Failed boots keep their
    /// console and diagnosis in results/bench/stress/.
    Stress {
        /// Boots under load.
        #[arg(short = 'n', long, default_value_t = 200)]
        boots: usize,
        /// VMs booting at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Busy threads in the lab process while the boots run.
        #[arg(long, default_value_t = 2)]
        hogs: usize,
        /// Appended to the guest kernel's command line (for a hunt:
        /// `ignore_loglevel` shows where a quiet boot stops).
        #[arg(long, default_value = "")]
        cmdline: String,
        /// TCG's threading for these boots (the lab uses `single`; `multi`
        /// reproduces the boot failures it avoids).
        #[arg(long, value_enum, default_value_t = TcgThreadsArg::Single)]
        tcg_threads: TcgThreadsArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TcgThreadsArg {
    Single,
    Multi,
}

impl From<TcgThreadsArg> for lab_core::qemu::TcgThreads {
    fn from(a: TcgThreadsArg) -> Self {
        match a {
            TcgThreadsArg::Single => lab_core::qemu::TcgThreads::Single,
            TcgThreadsArg::Multi => lab_core::qemu::TcgThreads::Multi,
        }
    }
}

impl BenchWhat {
    /// The name of its results file, results/bench/<name>.json.
    pub fn name(&self) -> &'static str {
        match self {
            BenchWhat::Boot { .. } => "boot",
            BenchWhat::Disk { .. } => "disk",
            BenchWhat::Verify { .. } => "verify",
            BenchWhat::Kernel => "kernel",
            BenchWhat::Stress { .. } => "stress",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Record {
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

pub(crate) fn rec(metric: &str, value: f64, unit: &str) -> Record {
    Record {
        metric: metric.into(),
        value: (value * 1000.0).round() / 1000.0,
        unit: unit.into(),
    }
}

/// Whether the figures were measured under KVM (1) or TCG (0): every
/// benchmark file starts with it.
pub(crate) fn accel_record(host: &LabHost) -> Record {
    rec(
        "accel_is_kvm",
        f64::from(u8::from(host.accel == lab_core::qemu::Accel::Kvm)),
        "bool",
    )
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(host: &LabHost, what: BenchWhat) -> u8 {
    let name = what.name();
    let r = match what {
        BenchWhat::Boot { runs } => bench_boot(host, runs.max(1)),
        BenchWhat::Disk { runs } => crate::bench::disk::bench_disk(host, runs.max(1)),
        BenchWhat::Verify { states } => crate::bench::verify::bench_verify(host, states.max(1)),
        BenchWhat::Kernel => crate::bench::kernel::bench_kernel(host),
        BenchWhat::Stress {
            boots,
            parallel,
            hogs,
            cmdline,
            tcg_threads,
        } => crate::bench::stress::bench_stress(
            host,
            crate::bench::stress::StressPlan {
                boots: boots.max(1),
                parallel: parallel.max(1),
                hogs,
                baseline: 5,
                extra_cmdline: cmdline,
                tcg_threads: tcg_threads.into(),
            },
            &paths::results_dir(&host.root).join("bench"),
        ),
    };
    match r {
        Ok(records) => {
            let dir = paths::results_dir(&host.root).join("bench");
            let file = dir.join(format!("{name}.json"));
            let write = std::fs::create_dir_all(&dir).and_then(|_| {
                std::fs::write(
                    &file,
                    serde_json::to_string_pretty(&records).unwrap_or_default(),
                )
            });
            if let Err(e) = write {
                eprintln!("lab: error: writing {}: {e}", file.display());
                return crate::EXIT_LAB;
            }
            for r in &records {
                println!("{:<40} {:>10.3} {}", r.metric, r.value, r.unit);
            }
            println!("written: {}", file.display());
            0
        }
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            crate::EXIT_LAB
        }
    }
}

/// Guest-side timestamps the init script prints (`LAB-T <event> <uptime>`).
fn guest_marks(console: &str) -> (Option<f64>, Option<f64>) {
    let find = |ev: &str| {
        console.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("LAB-T ")?;
            let (e, t) = rest.split_once(' ')?;
            (e == ev).then(|| t.trim().parse().ok()).flatten()
        })
    };
    (find("init"), find("sshd"))
}

fn bench_boot(host: &LabHost, runs: usize) -> Result<Vec<Record>> {
    let dir = paths::PrivateDir::new("lab-bench")?;
    let mut total = Vec::new();
    let mut kernel = Vec::new();
    let mut userspace = Vec::new();
    let mut handshake = Vec::new();
    let mut before_kernel = Vec::new();
    let mut bare = Vec::new();
    for i in 0..runs {
        // Baseline: the same kernel and image, init powers off at once; QEMU
        // start to exit is firmware + kernel boot + teardown.
        let mut opts = host.vm_options(
            dir.path().join(format!("bare-{i}.log")),
            None,
            Duration::from_secs(120),
        );
        opts.extra_cmdline = "lab.mode=poweroff".into();
        let t = Instant::now();
        let mut vm = Vm::start(&opts)?;
        if !vm.wait_exit(Duration::from_secs(120)) {
            anyhow::bail!("baseline VM did not power off in 120 s");
        }
        bare.push(t.elapsed().as_secs_f64());
        drop(vm);

        let opts = host.vm_options(
            dir.path().join(format!("boot-{i}.log")),
            None,
            Duration::from_secs(120),
        );
        let vm = Vm::boot(&opts).context("boot for the benchmark")?;
        let boot = vm.boot_time.unwrap_or_default().as_secs_f64();
        let console = std::fs::read_to_string(vm.console_log()).unwrap_or_default();
        let (init, ready) = guest_marks(&console);
        total.push(boot);
        if let (Some(init), Some(ready), Some(marker)) = (init, ready, vm.marker_time) {
            let marker = marker.as_secs_f64();
            kernel.push(init);
            userspace.push(ready - init);
            // Host time to the marker minus guest uptime at sshd start: QEMU
            // start, firmware and kernel decompression (plus console lag).
            before_kernel.push(marker - ready);
            // Marker to authenticated session: SSH key exchange, host key
            // check and public-key authentication (and the lab's polling).
            handshake.push(boot - marker);
        }
        vm.shutdown()?;
        eprintln!(
            "boot {}/{runs}: {boot:.2} s to SSH (baseline {:.2} s)",
            i + 1,
            bare[i]
        );
    }
    let ratio: Vec<f64> = total.iter().zip(&bare).map(|(t, b)| t / b).collect();
    let mut out = vec![
        crate::bench::accel_record(host),
        rec("runs", runs as f64, "count"),
        rec("boot_to_ssh_median", median(&mut total.clone()), "s"),
        rec(
            "boot_to_ssh_min",
            total.iter().cloned().fold(f64::INFINITY, f64::min),
            "s",
        ),
        rec(
            "boot_to_ssh_max",
            total.iter().cloned().fold(0.0, f64::max),
            "s",
        ),
        rec(
            "baseline_kernel_boot_poweroff_median",
            median(&mut bare.clone()),
            "s",
        ),
        rec(
            "ratio_boot_to_ssh_vs_baseline",
            median(&mut ratio.clone()),
            "ratio",
        ),
    ];
    if !kernel.is_empty() {
        for (name, v) in [
            ("phase_qemu_firmware_decompress_median", &mut before_kernel),
            ("phase_kernel_to_init_median", &mut kernel),
            ("phase_init_to_sshd_median", &mut userspace),
            ("phase_ssh_handshake_and_auth_median", &mut handshake),
        ] {
            out.push(rec(name, median(v), "s"));
        }
    }
    Ok(out)
}
