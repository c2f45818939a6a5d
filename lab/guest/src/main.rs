//! lab-guest: the in-guest agent. It is linked statically (no NSS, no shared
//! libraries) so the busybox initramfs can run it, and it speaks JSON lines on
//! stdout so the host parses one format.
//!
//! Subcommands:
//!   limits PATH...   statx(STATX_WRITE_ATOMIC) (+ sysfs queue limits for a
//!                    block device) for each path, one JSON object per line.
//!   run              a Plan of steps (JSON on stdin): one StepResult per
//!                    step, as JSON lines.
//!   generate         a seeded generator (JSON on stdin): limits, every
//!                    operation of every writer thread, a final read-back.

mod plan;
mod statx;

use std::process::ExitCode;

use lab_core::limits::{LimitsReport, SysfsAtomicLimits};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("limits") if args.len() > 1 => limits(&args[1..]),
        Some("run") => plan::run(),
        Some("generate") => plan::generate(),
        Some("version") => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => {
            Err("usage: lab-guest limits PATH... | run (plan JSON on stdin) | generate (generator JSON on stdin) | version".to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-guest: {e}");
            ExitCode::from(2)
        }
    }
}

fn limits(paths: &[String]) -> Result<(), String> {
    for path in paths {
        let sx = statx::statx_atomic(path).map_err(|e| format!("statx {path}: {e}"))?;
        let sysfs = if sx.is_block_device {
            Some(sysfs_limits(path)?)
        } else {
            None
        };
        let report = LimitsReport {
            path: path.clone(),
            statx: sx.atomic,
            sysfs,
            blksize: sx.blksize,
        };
        println!("{}", serde_json::to_string(&report).expect("serialises"));
    }
    Ok(())
}

fn sysfs_limits(dev_path: &str) -> Result<SysfsAtomicLimits, String> {
    let name = dev_path.rsplit('/').next().unwrap_or(dev_path);
    let read = |f: &str| -> Result<u32, String> {
        let p = format!("/sys/block/{name}/queue/atomic_write_{f}_bytes");
        let s = std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"))?;
        s.trim().parse().map_err(|e| format!("{p}: {e}"))
    };
    Ok(SysfsAtomicLimits {
        unit_min: read("unit_min")?,
        unit_max: read("unit_max")?,
        max: read("max")?,
        boundary: read("boundary")?,
    })
}
