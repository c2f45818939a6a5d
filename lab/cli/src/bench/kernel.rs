//! `lab bench kernel`: what building kernels costs the lab.
//!
//! In a private cache (`<cache>/bench-kernel`, emptied first, sharing only
//! the unpacked source trees) so that nothing is cached from before:
//! 1. the demo series is bisected as a user would on a fresh machine: the
//!    base is a full build with a cold ccache (the baseline), the levels
//!    after it build incrementally from their nearest built neighbour;
//! 2. the last level tested is built once more in a fresh `O=` directory
//!    with the now warm ccache, to show what the incremental `O=` copy adds
//!    over ccache alone.
//!
//! Records: full build time, each step's incremental build time, their
//! ratio to the full build, the total bisect time, the number of builds
//! against ceil(log2 N) + 2.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{accel_record, rec, Measurement};
use crate::host::accel::AccelChoice;
use crate::host::LabHost;
use crate::kernel::bisect::{self, BisectOptions};
use crate::kernel::pipeline::{KernelRequest, Pipeline};
use crate::suite;

pub const DEMO_SERIES: &str = "patches/demo-atomic-align";
pub const DEMO_TESTCASE: &str = "atomic-misaligned-raw-64k";

pub fn bench_kernel(host: &LabHost) -> Result<Vec<Measurement>> {
    let main_cache = &host.cache;
    let cache = main_cache.join("bench-kernel");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(cache.join("kernel"))?;
    // The unpacked trees and the tarball are inputs, not build caches.
    std::os::unix::fs::symlink(main_cache.join("kernel/trees"), cache.join("kernel/trees"))?;
    std::os::unix::fs::symlink(main_cache.join("src"), cache.join("src"))?;

    let all = suite::load(&[host.root.join("testcases")])
        .map_err(|e| anyhow::anyhow!("loading testcases: {}", e.len()))?;
    let tc = all
        .into_iter()
        .find(|(_, t)| t.name == DEMO_TESTCASE)
        .with_context(|| format!("testcase {DEMO_TESTCASE}"))?;
    let request = KernelRequest {
        series: Some(host.root.join(DEMO_SERIES)),
        ..Default::default()
    };
    let results = cache.join("results");
    let opts = BisectOptions {
        request: request.clone(),
        testcase: tc,
        retries: 1,
        results: results.clone(),
        // The recorded figures are of the bisection alone.
        confirm: false,
        accel: match host.accel {
            lab_core::qemu::Accel::Kvm => AccelChoice::Kvm,
            lab_core::qemu::Accel::Tcg => AccelChoice::Tcg,
        },
    };
    eprintln!(
        "lab: bench kernel: bisecting {DEMO_SERIES} with a cold cache ({})",
        cache.display()
    );
    let t = Instant::now();
    let exit = bisect::bisect(&host.root, &cache, &opts)
        .map_err(|e| anyhow::anyhow!("the demo bisection could not run: {e}"))?;
    let total = t.elapsed().as_secs_f64();
    let bisect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("latest/bisect.json")).context("bisect.json")?,
    )?;
    if exit != crate::exit::Exit::Passed || bisect["outcome"] != "first_bad" {
        bail!(
            "the demo bisection did not name a patch (exit {}): {}",
            exit.code(),
            bisect["message"]
        );
    }
    let steps = bisect["steps"].as_array().context("steps")?;
    let full = steps
        .first()
        .and_then(|s| s["build_s"].as_f64())
        .context("base step")?;
    let mut records = vec![
        accel_record(host),
        rec("kernel_full_build_cold_ccache", full, "s"),
        rec("bisect_total", total, "s"),
        rec(
            "bisect_builds",
            bisect["builds"].as_f64().unwrap_or(0.0),
            "count",
        ),
        rec(
            "bisect_max_builds",
            bisect["max_builds"].as_f64().unwrap_or(0.0),
            "count",
        ),
        rec(
            "bisect_patches",
            bisect["patches"].as_array().map_or(0, |p| p.len()) as f64,
            "count",
        ),
        rec(
            "bisect_first_bad_is_planted_patch",
            f64::from(u8::from(bisect["first_bad"] == 3)),
            "bool",
        ),
    ];
    let mut incr = Vec::new();
    for s in steps.iter().skip(1) {
        let level = s["level"].as_u64().unwrap_or(0);
        let b = s["build_s"].as_f64().unwrap_or(0.0);
        incr.push(b);
        records.push(rec(
            &format!("bisect_step_level{level}_incremental_build"),
            b,
            "s",
        ));
        records.push(rec(
            &format!("bisect_step_level{level}_test"),
            s["test_s"].as_f64().unwrap_or(0.0),
            "s",
        ));
    }
    let mean_incr = incr.iter().sum::<f64>() / incr.len().max(1) as f64;
    records.push(rec("kernel_incremental_build_mean", mean_incr, "s"));
    records.push(rec(
        "ratio_incremental_to_full_build",
        mean_incr / full,
        "ratio",
    ));

    // ccache alone: the last level again, in a fresh O= directory (its
    // artifact and output directory removed), with the warm ccache.
    let pipe =
        Pipeline::prepare(&host.root, &cache, &request).map_err(|e| anyhow::anyhow!("{e}"))?;
    let last = steps.last().and_then(|s| s["level"].as_u64()).unwrap_or(0) as usize;
    let _ = std::fs::remove_dir_all(cache.join("kernel/out"));
    let _ = std::fs::remove_dir_all(cache.join("kernel/artifacts"));
    let t = Instant::now();
    pipe.build_level(last).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ccache_only = t.elapsed().as_secs_f64();
    drop(pipe);
    records.push(rec(
        "kernel_rebuild_fresh_dir_warm_ccache",
        ccache_only,
        "s",
    ));
    records.push(rec(
        "ratio_ccache_only_to_full_build",
        ccache_only / full,
        "ratio",
    ));
    records.push(rec(
        "ratio_incremental_to_ccache_only",
        mean_incr / ccache_only,
        "ratio",
    ));
    let _ = std::fs::remove_dir_all(cache.join("kernel/out"));
    Ok(records)
}
