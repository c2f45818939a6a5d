//! `lab bench boot`: boot to SSH ready (median of N) against a bare kernel
//! boot that powers off from init, with the boot's phases from the guest's
//! own timestamps.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bench::{median, rec, Measurement};
use crate::host::LabHost;
use crate::paths;

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

pub fn bench_boot(host: &LabHost, runs: usize) -> Result<Vec<Measurement>> {
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
        let t = Instant::now();
        let mut vm = host
            .plan(dir.path().join(format!("bare-{i}.log")))
            .cmdline("lab.mode=poweroff")
            .start()?;
        if !vm.wait_exit(Duration::from_secs(120)) {
            anyhow::bail!("baseline VM did not power off in 120 s");
        }
        bare.push(t.elapsed().as_secs_f64());
        drop(vm);

        let vm = host
            .plan(dir.path().join(format!("boot-{i}.log")))
            .boot()
            .context("boot for the benchmark")?;
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
