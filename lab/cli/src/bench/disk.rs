//! `lab bench disk`: what the crash disk costs a guest, and how fast crash
//! states come out of a real cut.
//!
//! Two VMs run side by side, idle in turn: one on a plain raw file as
//! ordinary testcases use it, one on the crash disk (no held completions,
//! write cache off) as power-cut runs use it.
//! fio (O_DIRECT) alternates between them, so drift in the host hits both.
//! Then the crash-disk VM runs a deep-queue mix with completions held and
//! the power is cut; the crash states are planned, materialised and read.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lab_core::device::DeviceParams;
use lab_core::powercut::{CutPolicy, HoldPolicy, StateLimits};
use lab_disk::{AtomicRules, Planner, StateStore};

use crate::bench::{median, rec, Measurement};
use crate::host::launch::Backing;
use crate::host::LabHost;
use crate::paths;
use crate::vm::Vm;

struct Workload {
    name: &'static str,
    fio: &'static str,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "randwrite_4k",
        fio: "--rw=randwrite --bs=4k --size=256m --io_size=24m",
    },
    Workload {
        name: "seqwrite_1m",
        fio: "--rw=write --bs=1m --size=256m --io_size=96m",
    },
];

/// Bytes per second of one fio run.
fn fio(vm: &mut Vm, args: &str) -> Result<f64> {
    let cmd = format!(
        "fio --name=b --filename=/dev/nvme0n1 --direct=1 --ioengine=psync {args} --output-format=json"
    );
    let out = vm.exec(&cmd, Duration::from_secs(600))?;
    if out.status != 0 {
        bail!("`{cmd}` exited with {}: {}", out.status, out.stderr.trim());
    }
    let json_start = out.stdout.find('{').context("fio printed no JSON")?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout[json_start..])
        .with_context(|| format!("fio output: {}", out.stdout))?;
    v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .filter(|b| *b > 0.0)
        .with_context(|| format!("no write bandwidth in fio output: {}", out.stdout))
}

pub fn bench_disk(host: &LabHost, runs: usize) -> Result<Vec<Measurement>> {
    let dir = paths::PrivateDir::new("lab-bench-disk")?;
    let device = DeviceParams {
        size_mib: 512,
        ..DeviceParams::default()
    };

    // Baselines on a raw file: as ordinary testcases run it (QEMU's default
    // cache) and with the write cache off, the device setting power-cut
    // runs need (every write FUA, which QEMU turns into a host fdatasync).
    // The crash disk runs with the write cache off, holding nothing back.
    let tools = ["fio".to_string()];
    let plan = |log: &str, backing| {
        host.plan(dir.path().join(log))
            .disk(&device, backing)
            .tools(&tools)
    };
    let mut plain = plan("plain.log", Backing::Scratch)
        .boot()
        .context("booting the raw-file VM")?;
    let mut fua = plan("plain-fua.log", Backing::Scratch)
        .write_cache(false)
        .boot()
        .context("booting the raw-file write-cache-off VM")?;
    let mut crashvm = plan("crash.log", Backing::CrashDisk)
        .boot()
        .context("booting the crash-disk VM")?;
    let crash = crashvm
        .crash
        .take()
        .expect("a crash-disk VM has its crash disk");
    crate::suite::powercut::kill_on_cut(&crash, &crashvm);

    let mut out = vec![
        crate::bench::accel_record(host),
        rec("rounds", runs as f64, "count"),
    ];
    for w in &WORKLOADS {
        let (mut p, mut f, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ratio_p, mut ratio_f) = (Vec::new(), Vec::new());
        for i in 0..runs {
            // Rotate which backend goes first.
            let mut got = [0.0f64; 3];
            for k in 0..3 {
                let which = (i + k) % 3;
                let vm = match which {
                    0 => &mut plain,
                    1 => &mut fua,
                    _ => &mut crashvm,
                };
                got[which] = fio(vm, w.fio)? / 1e6;
            }
            eprintln!(
                "{} round {}/{runs}: raw file {:.1} MB/s, raw file write-cache off {:.1} MB/s, crash disk {:.1} MB/s",
                w.name,
                i + 1,
                got[0],
                got[1],
                got[2]
            );
            p.push(got[0]);
            f.push(got[1]);
            c.push(got[2]);
            ratio_p.push(got[2] / got[0]);
            ratio_f.push(got[2] / got[1]);
        }
        out.push(rec(
            &format!("{}_raw_file_median", w.name),
            median(&mut p),
            "MB/s",
        ));
        out.push(rec(
            &format!("{}_raw_file_write_cache_off_median", w.name),
            median(&mut f),
            "MB/s",
        ));
        out.push(rec(
            &format!("{}_crash_disk_median", w.name),
            median(&mut c),
            "MB/s",
        ));
        out.push(rec(
            &format!(
                "ratio_{}_crash_disk_vs_raw_file_same_device_settings",
                w.name
            ),
            median(&mut ratio_f),
            "ratio",
        ));
        out.push(rec(
            &format!("ratio_{}_crash_disk_vs_raw_file_default_cache", w.name),
            median(&mut ratio_p),
            "ratio",
        ));
    }
    plain.shutdown()?;
    fua.shutdown()?;
    let recorded = crash.disk.record();
    out.push(rec(
        "record_bytes_per_written_byte",
        recorded.data_bytes() as f64
            / recorded
                .writes
                .iter()
                .map(|w| f64::from(w.len))
                .sum::<f64>()
                .max(1.0),
        "ratio",
    ));

    // A real cut with a deep queue: up to 12 completions held.
    let before = recorded.writes.len() as u64;
    crash.arm(
        Some(CutPolicy::Write(400)),
        HoldPolicy {
            window: 12,
            ms: 2000,
        },
    );
    let _ = crashvm.exec(
        "fio --name=cut --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio --iodepth=16 \
         --rw=randwrite --bssplit=4k/50:16k/25:64k/25 --size=256m --io_size=64m",
        Duration::from_secs(300),
    );
    if crash.disk.cut_info().is_none() {
        bail!(
            "the cut at write 400 never fired ({} writes before arming)",
            before
        );
    }
    let _ = crashvm.wait_exit(Duration::from_secs(10));
    drop(crashvm);
    let record = crash.disk.record();
    let rules = AtomicRules::of_device(&device);
    let heap0 = crate::bench::heap::live_bytes();
    let t = Instant::now();
    let planner = Planner::new(&record, rules);
    let plan = planner.plan(&StateLimits::default());
    let store = StateStore::new(crash.disk.file(), record.clone(), &plan.states)?;
    let planned = t.elapsed().as_secs_f64();
    let heap1 = crate::bench::heap::live_bytes();
    // Materialise: read every LBA each state changes, through the export
    // code path.
    let t = Instant::now();
    let mut buf = vec![0u8; device.lba_size as usize];
    let mut bytes = 0u64;
    for (i, st) in plan.states.iter().enumerate() {
        for &l in st.delta.keys() {
            store.read(i, l * u64::from(device.lba_size), &mut buf)?;
            bytes += buf.len() as u64;
        }
    }
    let read = t.elapsed().as_secs_f64();
    let n = plan.states.len().max(1) as f64;
    eprintln!(
        "cut: {} in flight, {} states ({} generated) planned in {planned:.2} s, read in {read:.2} s",
        plan.in_flight_at_cut,
        plan.states.len(),
        plan.generated
    );
    out.extend([
        rec(
            "cut_in_flight_writes",
            plan.in_flight_at_cut as f64,
            "count",
        ),
        rec("cut_states_generated", plan.generated as f64, "count"),
        rec("cut_states_distinct", plan.states.len() as f64, "count"),
        rec("states_planned_per_s", n / planned.max(1e-9), "states/s"),
        rec(
            "states_planned_and_read_per_s",
            n / (planned + read).max(1e-9),
            "states/s",
        ),
        rec("state_bytes_read_per_state", bytes as f64 / n, "bytes"),
        // Heap held by the planner, the plan and the exports (the record
        // and the backing file are shared by all states, not counted).
        rec(
            "memory_per_state",
            heap1.saturating_sub(heap0) as f64 / n,
            "bytes",
        ),
    ]);
    Ok(out)
}
