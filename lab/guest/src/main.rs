//! lab-guest: the in-guest agent. It is linked statically (no NSS, no shared
//! libraries) so the busybox initramfs can run it, and it speaks JSON lines on
//! stdout so the host parses one format.
//!
//! Subcommands:
//!   limits PATH...   statx(STATX_WRITE_ATOMIC) (+ sysfs queue limits for a
//!                    block device) for each path, one JSON object per line.
//!   run [--plan FILE] [--sync-marks]
//!                    a Plan of steps (JSON in FILE, else on stdin): one
//!                    StepResult per step, as JSON lines; a mark step
//!                    prints {"mark":NAME} first and, with --sync-marks,
//!                    waits for a line on stdin from the lab.
//!   generate         a seeded generator (JSON on stdin): limits, every
//!                    operation of every writer thread, a final read-back.
//!   scan FILE...     per file a header {"file","size"} (or "missing"), then
//!                    what every 512-byte sector holds (zeroes, a stamp, or
//!                    garbage), as runs: one JSON object per run.
//!   baseline         record the guest as booted (/run/lab-baseline.json).
//!   reset            back to the baseline before the next testcase in a
//!                    reused VM: one JSON object saying what it undid.
//!   plugged COUNT LBA BYTES
//!                    after the lab swapped the NVMe controller: waits for
//!                    nvme0n1..nvme0nCOUNT of that LBA size and length,
//!                    then makes their queue tunables the baseline's.

mod fiemap;
mod folios;
mod plan;
mod slate;
mod statx;

use std::process::ExitCode;

use lab_core::limits::{LimitsReport, SysfsAtomicLimits};

fn run_args(args: &[String]) -> Result<(), String> {
    let mut plan = None;
    let mut sync = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--plan" => plan = Some(it.next().ok_or("--plan needs a FILE")?.as_str()),
            "--sync-marks" => sync = true,
            other => return Err(format!("run: unknown argument {other}")),
        }
    }
    plan::run(plan, sync)
}

fn plugged(args: &[String]) -> Result<(), String> {
    let num = |i: usize| -> Result<u64, String> {
        args[i]
            .parse()
            .map_err(|e| format!("plugged: {:?}: {e}", args[i]))
    };
    let lba = u32::try_from(num(1)?).map_err(|e| format!("plugged: LBA: {e}"))?;
    slate::plugged(num(0)? as usize, lba, num(2)?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("limits") if args.len() > 1 => limits(&args[1..]),
        Some("run") => run_args(&args[1..]),
        Some("generate") => plan::generate(),
        Some("scan") if args.len() >= 2 => scan_files(&args[1..]),
        Some("baseline") => slate::baseline(),
        Some("reset") => slate::reset(),
        Some("plugged") if args.len() == 4 => plugged(&args[1..]),
        Some("version") => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        _ => {
            Err("usage: lab-guest limits PATH... | run [--plan FILE] [--sync-marks] | generate (generator JSON on stdin) | scan FILE... | baseline | reset | plugged COUNT LBA BYTES | version".to_string())
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
            statx_buf: sx.buffered,
            combined: Some(sx.combined),
            sysfs,
            blksize: sx.blksize,
        };
        println!("{}", serde_json::to_string(&report).expect("serialises"));
    }
    Ok(())
}

/// Each file: a header line `{"file": PATH, "size": N, "extents": [...]}`
/// (or `"missing": true`), then its runs. `extents` is the file's FIEMAP
/// as [`lab_core::filemap::MapExtent`]s, or null when the kernel reported
/// an extent the host cannot read through (delalloc, inline, encoded...)
/// or has no FIEMAP: the host then never reads that state through a map.
fn scan_files(paths: &[String]) -> Result<(), String> {
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) => {
                // A filesystem without FIEMAP (tmpfs) or any failure of it
                // only means the host mounts every state: no map.
                let extents = fiemap::extents(p).ok().flatten();
                println!(
                    "{}",
                    serde_json::json!({ "file": p, "size": m.len(), "extents": extents })
                );
                scan(p)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("{}", serde_json::json!({ "file": p, "missing": true }));
            }
            Err(e) => return Err(format!("{p}: {e}")),
        }
    }
    Ok(())
}

fn scan(path: &str) -> Result<(), String> {
    use lab_core::filemap::RunBuilder;
    use lab_core::stamp::SECTOR;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    let mut runs = RunBuilder::default();
    let print =
        |r: &lab_core::filemap::Run| println!("{}", serde_json::to_string(r).expect("serialises"));
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(SECTOR) {
            if let Some(r) = runs.push(off, chunk) {
                print(&r);
            }
            off += chunk.len() as u64;
        }
    }
    if let Some(r) = runs.finish() {
        print(&r);
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
