//! `lab bench verify`: how fast crash states are verified, and that the
//! default kernel gives no false positives over many of them.
//!
//! Cuts a seeded 8-thread O_DIRECT generator on XFS (half RWF_ATOMIC, with
//! fsyncs) at successive points until enough states were verified. Every
//! cut is a real `lab run` testcase: workload VM, crash disk, states,
//! verifier VM, model.

use std::time::Instant;

use anyhow::{bail, Result};
use lab_core::report::Outcome;
use lab_core::testcase::{self, Testcase};

use crate::bench::{rec, Measurement};
use crate::host::LabHost;
use crate::paths;

const TEMPLATE: &str = "\
name: bench-verify
device: { lba_size: 4096 }
mkfs: { block_size: 4096 }
power_cut:
  at: { write: 60 }
  hold: { window: 12, ms: 60 }
  states: { max: 100, seed: 1 }
workload:
  generate:
    seed: 1
    threads: 8
    ops: 24
    atomic_ratio: 0.5
    sync_ratio: 0.1
    direct: true
    region_bytes: 1048576
";

/// The testcase of cut `i`: a different cut point and seed each time.
fn cut_case(i: usize) -> Result<Testcase> {
    let text = TEMPLATE
        .replace("write: 60", &format!("write: {}", 40 + 17 * i))
        .replace("    seed: 1\n", &format!("    seed: {}\n", i + 1))
        .replace("name: bench-verify", &format!("name: bench-verify-{i}"));
    Ok(testcase::parse("bench-verify", &text)?)
}

pub fn bench_verify(host: &LabHost, want: usize) -> Result<Vec<Measurement>> {
    let dir = paths::PrivateDir::new("lab-bench-verify")?;
    let pb = indicatif::ProgressBar::hidden();
    let t = Instant::now();
    let (mut states, mut failed, mut cuts) = (0usize, 0usize, 0usize);
    let (mut control_possible, mut control_seen) = (0usize, 0usize);
    let mut split = [0.0f64; 5];
    let mut verify_s = 0.0;
    let mut boots = Vec::new();
    let mut failures = Vec::new();
    while states < want {
        if cuts >= 40 {
            bail!("only {states} states after {cuts} cuts");
        }
        let tc = cut_case(cuts)?;
        let case_dir = dir.path().join(&tc.name);
        std::fs::create_dir_all(&case_dir)?;
        let suite = crate::suite::run_case(host, &tc, &tc.name, &case_dir, &pb);
        cuts += 1;
        let prop = |k: &str| {
            suite
                .properties
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let num = |k: &str| prop(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let n = num("verify.states") as usize;
        states += n;
        for (i, k) in [
            "verify.per_state_attach_s",
            "verify.per_state_mount_s",
            "verify.per_state_scan_s",
            "verify.per_state_repair_s",
            "verify.per_state_overhead_s",
        ]
        .iter()
        .enumerate()
        {
            split[i] += num(k) * n as f64;
        }
        verify_s += num("verify.total_s") - num("verify.boot_0_s");
        boots.push(num("verify.boot_0_s"));
        for r in &suite.results {
            if let Outcome::Failed { message, .. } | Outcome::Error { message, .. } = &r.outcome {
                if r.check.starts_with("state.") {
                    failed += 1;
                }
                failures.push(format!("{}: {}: {message}", tc.name, r.check));
            }
            // Present only when tearing was possible at this cut.
            if r.check == "power_cut.positive_control" {
                control_possible += 1;
                control_seen += usize::from(r.outcome == Outcome::Passed);
            }
        }
        eprintln!(
            "cut {cuts} ({}): {n} states verified, {} so far, {} failures",
            prop("power_cut.cut").unwrap_or_default(),
            states,
            failures.len()
        );
    }
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    let total = t.elapsed().as_secs_f64();
    let s = states.max(1) as f64;
    let boot = crate::bench::median(&mut boots.clone());
    let per_state = verify_s / s;
    Ok(vec![
        crate::bench::accel_record(host),
        rec("cuts", cuts as f64, "count"),
        rec("states_verified", states as f64, "count"),
        rec("states_failed_false_positives", failed as f64, "count"),
        rec("other_failures", (failures.len() - failed) as f64, "count"),
        rec(
            "positive_controls_applicable",
            control_possible as f64,
            "count",
        ),
        rec("positive_controls_detected", control_seen as f64, "count"),
        rec(
            "states_verified_per_minute",
            60.0 / per_state.max(1e-9),
            "states/min",
        ),
        rec(
            "states_per_minute_end_to_end",
            60.0 * s / total.max(1e-9),
            "states/min",
        ),
        rec("per_state_s", per_state, "s"),
        rec("per_state_attach_s", split[0] / s, "s"),
        rec("per_state_mount_s", split[1] / s, "s"),
        rec("per_state_scan_s", split[2] / s, "s"),
        rec("per_state_repair_s", split[3] / s, "s"),
        rec("per_state_lab_overhead_s", split[4] / s, "s"),
        rec("verifier_boot_median_s", boot, "s"),
        // The alternative: a fresh verifier boot per state.
        rec(
            "ratio_boot_per_state_vs_swap",
            (boot + per_state) / per_state.max(1e-9),
            "ratio",
        ),
    ])
}
