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
//! 3. with `--configs`, the other configurations a user can build, each a
//!    full build of the same base tree with the ccache emptied first: the
//!    lab config as it was before it took a distribution's I/O path
//!    (`PRE_IO_PATH`), `--kconfig debug` and `--kconfig distro`, each
//!    against stage 1's full build of the lab config, measured in the same
//!    run.
//!
//! Records: full build time, each step's incremental build time, their
//! ratio to the full build, the total bisect time, the number of builds
//! against ceil(log2 N) + 2; with `--configs`, each configuration's full
//! build time, Kbuild steps and ratio to the lab config's.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{accel_record, rec, write_records, Measurement};
use crate::host::accel::AccelChoice;
use crate::host::LabHost;
use crate::kernel::bisect::{self, BisectOptions};
use crate::kernel::pipeline::{KernelRequest, Pipeline};
use crate::suite;

pub const DEMO_SERIES: &str = "patches/demo-atomic-align";
pub const DEMO_TESTCASE: &str = "atomic-misaligned-raw-64k";

/// The lab config before commit 0f7c583 ("lab.config takes the I/O path
/// of a distribution kernel"): what that commit added, turned back off on
/// top of today's lab.config. tinyconfig has every one of these off (and
/// SLUB_TINY on), so the result is the old config; a unit test keeps the
/// list in step with lab.config.
pub const PRE_IO_PATH: &str = "\
# The lab config before it took a distribution kernel's I/O path
# (written by `lab bench kernel --configs`).
CONFIG_TRANSPARENT_HUGEPAGE=n
CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS=n
CONFIG_PROC_PAGE_MONITOR=n
CONFIG_SLUB_TINY=y
CONFIG_CGROUPS=n
CONFIG_MEMCG=n
CONFIG_BLK_CGROUP=n
CONFIG_CGROUP_WRITEBACK=n
CONFIG_BLK_WBT=n
CONFIG_BLK_WBT_MQ=n
CONFIG_PCI_MSI=n
";

/// The configurations `--configs` builds after the lab config: the name in
/// the records, and the `--kconfig` arguments (a path is written into the
/// bench's cache).
const CONFIGS: [(&str, &str); 3] = [
    ("pre_io_path", "pre-io-path.config"),
    ("debug", "debug"),
    ("distro", "distro"),
];

/// `file` gets the records after each stage and each configuration built,
/// so a bench stopped during its hours of builds keeps what it measured.
pub fn bench_kernel(host: &LabHost, configs: bool, file: &Path) -> Result<Vec<Measurement>> {
    let main_cache = &host.cache;
    let cache = main_cache.join("bench-kernel");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(cache.join("kernel"))?;
    // The unpacked trees, the tarball and the default kernel (whose config
    // `--kconfig distro` starts from) are inputs, not build caches.
    std::os::unix::fs::symlink(main_cache.join("kernel/trees"), cache.join("kernel/trees"))?;
    std::os::unix::fs::symlink(main_cache.join("src"), cache.join("src"))?;
    std::os::unix::fs::symlink(main_cache.join("kernels"), cache.join("kernels"))?;

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
    let rebuilt = pipe.build_level(last).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ccache_only = t.elapsed().as_secs_f64();
    drop(pipe);
    records.push(rec(
        "kernel_rebuild_fresh_dir_warm_ccache",
        ccache_only,
        "s",
    ));
    // A fresh O= directory runs every Kbuild step a full build runs.
    records.push(rec(
        "kernel_full_build_kbuild_steps",
        rebuilt.meta.steps as f64,
        "count",
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
    if configs {
        write_records(file, &records)?;
        bench_configs(host, &cache, full, &mut records, file)?;
    }
    Ok(records)
}

/// Stage 3: each of `CONFIGS` built in full from the base tree with an
/// empty ccache, like stage 1's lab config.
fn bench_configs(
    host: &LabHost,
    cache: &Path,
    lab_full: f64,
    records: &mut Vec<Measurement>,
    file: &Path,
) -> Result<()> {
    let pre_io_path = cache.join("pre-io-path.config");
    std::fs::write(&pre_io_path, PRE_IO_PATH)?;
    for (name, kconfig) in CONFIGS {
        let kconfig = if kconfig.ends_with(".config") {
            cache.join(kconfig).display().to_string()
        } else {
            kconfig.to_string()
        };
        for dir in ["ccache", "kernel/out", "kernel/artifacts"] {
            let _ = std::fs::remove_dir_all(cache.join(dir));
        }
        let request = KernelRequest {
            series: Some(host.root.join(DEMO_SERIES)),
            kconfig: vec![kconfig.clone()],
            ..Default::default()
        };
        eprintln!("lab: bench kernel: a full build with --kconfig {kconfig} and a cold ccache");
        let pipe =
            Pipeline::prepare(&host.root, cache, &request).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        let built = pipe
            .build_level(0)
            .map_err(|e| anyhow::anyhow!("--kconfig {kconfig}: {e}"))?;
        let secs = t.elapsed().as_secs_f64();
        records.push(rec(
            &format!("kernel_full_build_cold_ccache_{name}"),
            secs,
            "s",
        ));
        records.push(rec(
            &format!("kernel_full_build_kbuild_steps_{name}"),
            built.meta.steps as f64,
            "count",
        ));
        records.push(rec(
            &format!("ratio_{name}_to_lab_config_full_build"),
            secs / lab_full,
            "ratio",
        ));
        write_records(file, records)?;
    }
    for dir in ["kernel/out", "ccache"] {
        let _ = std::fs::remove_dir_all(cache.join(dir));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option `PRE_IO_PATH` turns back is one lab.config sets the
    /// other way: if lab.config drops or renames one, this says so.
    #[test]
    fn pre_io_path_undoes_options_lab_config_sets() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let lab = std::fs::read_to_string(root.join("vm-images/kconfig/lab.config")).unwrap();
        let lab = lab_core::kconfig::parse_fragment("lab.config", &lab).unwrap();
        let pre = lab_core::kconfig::parse_fragment("pre", PRE_IO_PATH).unwrap();
        assert_eq!(pre.len(), 11);
        for o in &pre {
            let set = lab
                .iter()
                .find(|l| l.name == o.name)
                .unwrap_or_else(|| panic!("{} is not in lab.config", o.name));
            assert_ne!(set.value, o.value, "{}", o.name);
        }
    }
}
