//! `lab bench verify`: how fast crash states are verified, and that the
//! default kernel gives no false positives over many of them.
//!
//! First the baseline: single cuts of a seeded 8-thread O_DIRECT generator
//! on XFS (half RWF_ATOMIC, with fsyncs) at successive points until enough
//! states were verified. Then sweeps (`power_cut.sweep`), measured in the
//! same run: the seeded generator (O_DIRECT) and a buffered one, swept at
//! every disk event, until enough (cut point, state) pairs were judged; one
//! sweep again with a single verifier VM, for the `--verify-jobs` ratio.
//! Every cut and sweep is a real `lab run` testcase: workload VM, crash
//! disk, states, verifier VMs, model.

use std::path::Path;
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

pub fn bench_verify(host: &LabHost, want: usize, judgements: usize) -> Result<Vec<Measurement>> {
    let (mut records, single_per_min) = single_cuts(host, want)?;
    let sweep = sweeps(host, judgements)?;
    let sweep_per_min = sweep
        .iter()
        .find(|r| r.metric == "sweep_judgements_per_minute")
        .map_or(0.0, |r| r.value);
    records.extend(sweep);
    records.push(rec(
        "ratio_sweep_judgements_vs_single_cut_states_per_minute",
        sweep_per_min / single_per_min.max(1e-9),
        "ratio",
    ));
    Ok(records)
}

/// Sweeps of the seeded generator: O_DIRECT (half RWF_ATOMIC) or buffered
/// (plain writes: mainline refuses buffered RWF_ATOMIC), cut before every
/// disk event. `max_points` is the default (256), which covers every event
/// of these workloads (about 235): neighbouring points share contents, so
/// each content scanned is judged at more points than a sparse sample
/// would give it (3.8 judgements per content against 2.2 with 96 points).
const SWEEP_TEMPLATE: &str = "\
name: bench-sweep
device: { lba_size: 4096 }
mkfs: { block_size: 4096 }
power_cut:
  sweep: { every: write, seed: 1 }
  hold: { window: 8, ms: 40 }
  states: { max: 12, seed: 1 }
workload:
  generate:
    seed: 1
    threads: 4
    ops: 24
    atomic_ratio: 0.5
    sync_ratio: 0.15
    direct: true
    region_bytes: 1048576
";

fn sweep_case(i: usize, buffered: bool) -> Result<Testcase> {
    let mut text = SWEEP_TEMPLATE
        .replace("    seed: 1\n", &format!("    seed: {}\n", i + 1))
        .replace("seed: 1 }", &format!("seed: {} }}", i + 1));
    let kind = if buffered { "buffered" } else { "direct" };
    text = text.replace(
        "name: bench-sweep",
        &format!("name: bench-sweep-{kind}-{i}"),
    );
    if buffered {
        text = text
            .replace("atomic_ratio: 0.5", "atomic_ratio: 0.0")
            .replace("direct: true", "direct: false");
    }
    Ok(testcase::parse("bench-sweep", &text)?)
}

/// What one sweep testcase measured.
#[derive(Default, Clone, Copy)]
struct SweepFigures {
    points: f64,
    /// Distinct contents checked: mounted, or read through an extent map.
    contents: f64,
    mapped: f64,
    judged: f64,
    /// Of `judged`, those spread from the point that planned the content.
    spread: f64,
    generated: f64,
    verify_s: f64,
    wall_s: f64,
    failed: f64,
}

impl std::ops::AddAssign for SweepFigures {
    fn add_assign(&mut self, o: SweepFigures) {
        self.points += o.points;
        self.contents += o.contents;
        self.mapped += o.mapped;
        self.judged += o.judged;
        self.spread += o.spread;
        self.generated += o.generated;
        self.verify_s += o.verify_s;
        self.wall_s += o.wall_s;
        self.failed += o.failed;
    }
}

fn run_sweep(
    host: &LabHost,
    dir: &Path,
    tc: &Testcase,
    failures: &mut Vec<String>,
) -> SweepFigures {
    let case_dir = dir.join(&tc.name);
    let _ = std::fs::create_dir_all(&case_dir);
    let t = Instant::now();
    let suite = crate::suite::run_case(
        host,
        tc,
        &tc.name,
        &case_dir,
        &indicatif::ProgressBar::hidden(),
    );
    let num = |k: &str| {
        suite
            .property(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for r in &suite.results {
        if let Outcome::Failed { message, .. } | Outcome::Error { message, .. } = &r.outcome {
            failures.push(format!("{}: {}: {message}", tc.name, r.check));
        }
    }
    let f = SweepFigures {
        points: num("sweep.cut_points"),
        contents: num("verify.states") + num("verify.states_mapped"),
        mapped: num("verify.states_mapped"),
        judged: num("sweep.judged"),
        spread: num("sweep.judgements_spread"),
        generated: num("sweep.states_generated"),
        verify_s: num("verify.total_s"),
        wall_s: t.elapsed().as_secs_f64(),
        failed: num("sweep.judgements_failed"),
    };
    eprintln!(
        "{} (verify jobs {}): {} points, {} contents, {} judged, {} failed, verify {:.0} s",
        tc.name, host.verify_jobs, f.points, f.contents, f.judged, f.failed, f.verify_s
    );
    f
}

fn sweeps(host: &LabHost, want: usize) -> Result<Vec<Measurement>> {
    let dir = paths::PrivateDir::new("lab-bench-sweep")?;
    let mut failures = Vec::new();
    let (mut direct, mut buffered) = (SweepFigures::default(), SweepFigures::default());
    let mut i = 0;
    while ((direct.judged + buffered.judged) as usize) < want {
        if i >= 60 {
            bail!(
                "only {} judgements after {i} sweeps",
                direct.judged + buffered.judged
            );
        }
        let is_buffered = i % 2 == 1;
        let f = run_sweep(
            host,
            dir.path(),
            &sweep_case(i, is_buffered)?,
            &mut failures,
        );
        if is_buffered {
            buffered += f;
        } else {
            direct += f;
        }
        i += 1;
    }
    // The same first sweep with one verifier VM: what `--verify-jobs` buys.
    let mut one = host.clone();
    one.verify_jobs = 1;
    let single_job = run_sweep(&one, dir.path(), &sweep_case(0, false)?, &mut failures);
    // And with every state mounted: what reading through extent maps buys.
    let mut mount_all = host.clone();
    mount_all.verify_by_map = false;
    let mounted = run_sweep(
        &mount_all,
        dir.path(),
        &sweep_case(0, false)?,
        &mut failures,
    );
    for f in &failures {
        eprintln!("FAILED {f}");
    }
    let mut all = direct;
    all += buffered;
    let per_min = |n: f64, s: f64| 60.0 * n / s.max(1e-9);
    let mut out = vec![
        rec("sweeps", i as f64, "count"),
        rec("sweep_verify_jobs", host.verify_jobs as f64, "count"),
        rec("sweep_cut_points", all.points, "count"),
        rec("sweep_states_generated", all.generated, "count"),
        rec("sweep_contents_scanned", all.contents, "count"),
        rec("sweep_contents_read_through_map", all.mapped, "count"),
        rec("sweep_judgements", all.judged, "count"),
        rec("sweep_judgements_spread", all.spread, "count"),
        rec(
            "sweep_judgements_failed_false_positives",
            all.failed,
            "count",
        ),
        rec(
            "sweep_other_failures",
            failures.len() as f64 - all.failed.min(failures.len() as f64),
            "count",
        ),
        rec(
            "sweep_dedupe_ratio",
            all.judged / all.contents.max(1.0),
            "ratio",
        ),
        rec(
            "sweep_contents_per_minute",
            per_min(all.contents, all.verify_s),
            "contents/min",
        ),
        rec(
            "sweep_judgements_per_minute",
            per_min(all.judged, all.verify_s),
            "judgements/min",
        ),
        rec(
            "sweep_judgements_per_minute_end_to_end",
            per_min(all.judged, all.wall_s),
            "judgements/min",
        ),
    ];
    for (name, f) in [("direct", direct), ("buffered", buffered)] {
        out.extend([
            rec(&format!("sweep_{name}_judgements"), f.judged, "count"),
            rec(
                &format!("sweep_{name}_contents_per_minute"),
                per_min(f.contents, f.verify_s),
                "contents/min",
            ),
            rec(
                &format!("sweep_{name}_judgements_per_minute"),
                per_min(f.judged, f.verify_s),
                "judgements/min",
            ),
            rec(
                &format!("sweep_{name}_dedupe_ratio"),
                f.judged / f.contents.max(1.0),
                "ratio",
            ),
        ]);
    }
    // The first direct sweep against itself with one verifier VM, and with
    // every state mounted; each absent when that run did not happen
    // (interrupted).
    for (baseline, rate, ratio) in [
        (
            single_job,
            "sweep_one_verifier_contents_per_minute",
            "ratio_verify_jobs_vs_one_contents_per_minute",
        ),
        (
            mounted,
            "sweep_mount_all_contents_per_minute",
            "ratio_map_reads_vs_mount_all_contents_per_minute",
        ),
    ] {
        if baseline.contents > 0.0 {
            let base_rate = per_min(baseline.contents, baseline.verify_s);
            out.extend([
                rec(rate, base_rate, "contents/min"),
                rec(
                    ratio,
                    per_min(direct.contents, direct.verify_s) / base_rate,
                    "ratio",
                ),
            ]);
        }
    }
    Ok(out)
}

/// The single-cut baseline, and its states per minute with the verifier's
/// boots counted (as the sweeps' figures count them).
fn single_cuts(host: &LabHost, want: usize) -> Result<(Vec<Measurement>, f64)> {
    let dir = paths::PrivateDir::new("lab-bench-verify")?;
    let pb = indicatif::ProgressBar::hidden();
    let t = Instant::now();
    let (mut states, mut failed, mut cuts) = (0usize, 0usize, 0usize);
    let (mut control_possible, mut control_seen) = (0usize, 0usize);
    let mut split = [0.0f64; 5];
    let mut verify_s = 0.0;
    let mut verify_with_boot_s = 0.0;
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
        let prop = |k: &str| suite.property(k).map(str::to_string);
        let num = |k: &str| {
            suite
                .property(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // The per-state split is of states mounted; states read through
        // an extent map were verified too.
        let n = num("verify.states") as usize;
        states += n + num("verify.states_mapped") as usize;
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
        verify_with_boot_s += num("verify.total_s");
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
    let with_boot = 60.0 * s / f64::max(verify_with_boot_s, 1e-9);
    let records = vec![
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
        rec(
            "single_cut_states_per_minute_with_boot",
            with_boot,
            "states/min",
        ),
    ];
    Ok((records, with_boot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_core::powercut::SweepEvery;
    use lab_core::testcase::Workload;

    /// The bench's testcases parse, and each run is its own: the sweeps cut
    /// at every disk event up to the default cap (a user's sweep), alternate
    /// O_DIRECT and buffered, and take a different seed each time.
    #[test]
    fn bench_testcases_parse_with_their_own_seeds() {
        let (direct, buffered) = (sweep_case(0, false).unwrap(), sweep_case(1, true).unwrap());
        for (tc, want_direct, seed) in [(&direct, true, 1), (&buffered, false, 2)] {
            let pc = tc.power_cut.as_ref().unwrap();
            let sw = pc.sweep.as_ref().unwrap();
            assert_eq!(sw.every, SweepEvery::Write);
            assert_eq!(sw.max_points, 256, "the default cap");
            assert_eq!((sw.seed, pc.states.seed, pc.states.max), (seed, seed, 12));
            let Workload::Generate(g) = &tc.workload else {
                panic!("{:?}", tc.workload);
            };
            assert_eq!((g.direct, g.seed), (want_direct, seed));
        }
        assert_eq!(buffered.name, "bench-sweep-buffered-1");
        let cut = cut_case(2).unwrap();
        assert_eq!(cut.name, "bench-verify-2");
        assert!(cut.power_cut.unwrap().sweep.is_none());
    }
}
