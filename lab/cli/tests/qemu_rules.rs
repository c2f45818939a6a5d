//! The lab's namespace-atomic validation against the real QEMU (>= 10.2)
//! the set-up provisions: for many parameter sets, QEMU starts exactly when
//! `DeviceParams::validate` accepts, and when it refuses, the lab's message
//! quotes the same rule QEMU names. No guest boots: QEMU realizes the
//! devices with the CPU stopped (`-S`) and is told to quit.

use std::io::Write;
use std::process::{Command, Stdio};

use lab_cli::host::qemu::{find_qemu, QemuInfo};
use lab_core::device::DeviceParams;
use lab_core::qemu::{nvme_controller, nvme_namespace, Backend, NvmeDisk, NvmeIds};

fn qemu() -> QemuInfo {
    let q = find_qemu().unwrap_or_else(|e| panic!("no QEMU ({e:#}); run scripts/setup.sh"));
    assert!(
        q.namespace_atomics,
        "{} {} has no nvme-ns atomic properties; scripts/setup.sh provisions QEMU 11",
        q.path.display(),
        q.version
    );
    q
}

/// QEMU's verdict: Ok, or its error message (the text after the last ": ").
fn qemu_accepts(q: &QemuInfo, d: &DeviceParams) -> Result<(), String> {
    let disk = NvmeDisk {
        backend: Backend::File(String::new()),
        extra_namespaces: vec![],
        device: d.clone(),
        write_cache: None,
    };
    // The lab's own property strings, on a null block node.
    let ns = nvme_namespace(&disk, 1, NvmeIds::default()).opts();
    let mut child = Command::new(&q.path)
        .args([
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-monitor",
            "stdio",
            "-blockdev",
            "driver=null-co,node-name=disk0,size=67108864",
            "-device",
            &nvme_controller(d, NvmeIds::default()).opts(),
            "-device",
            &ns,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("QEMU starts");
    let _ = child.stdin.take().unwrap().write_all(b"quit\n");
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(line.rsplit(": ").next().unwrap_or(line).trim().to_string())
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn namespace_atomic_rules_match_qemu() {
    let q = qemu();
    const VALUES: [u16; 6] = [0, 1, 2, 3, 7, 15];
    let mut cases: Vec<DeviceParams> = Vec::new();
    // Hand-picked: one per rule, and the sets the testcases use.
    for (awun, awupf, nawun, nawupf, nabsn, nabspf, nabo) in [
        (0, 0, 0, 15, 0, 31, 0),
        (0, 0, 3, 7, 0, 0, 0),
        (7, 7, 3, 3, 0, 0, 0),
        (7, 7, 7, 3, 0, 0, 0),
        (0, 0, 0, 15, 0, 7, 0),
        (0, 0, 15, 0, 7, 0, 0),
        (3, 0, 0, 0, 1, 0, 0),
        (3, 3, 0, 0, 0, 1, 0),
        (0, 0, 0, 3, 0, 7, 2),
        (0, 0, 0, 3, 7, 7, 1),
        (0, 0, 0, 3, 0, 11, 0),
        (0, 0, 0, 255, 0, 255, 0),
    ] {
        cases.push(DeviceParams {
            awun,
            awupf,
            nawun,
            nawupf,
            nabsn,
            nabspf,
            nabo,
            ..DeviceParams::default()
        });
    }
    // Seeded random sets of small values (the rules are comparisons).
    let mut seed = 7u64;
    let pick = |s: &mut u64| VALUES[(splitmix(s) % VALUES.len() as u64) as usize];
    for _ in 0..100 {
        let awun = pick(&mut seed);
        let awupf = pick(&mut seed).min(awun); // AWUPF > AWUN: QEMU silently zeroes it
        cases.push(DeviceParams {
            awun,
            awupf,
            nawun: pick(&mut seed),
            nawupf: pick(&mut seed),
            nabsn: pick(&mut seed),
            nabspf: pick(&mut seed),
            nabo: if splitmix(&mut seed).is_multiple_of(3) {
                pick(&mut seed)
            } else {
                0
            },
            ..DeviceParams::default()
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    let mut mismatches = Vec::new();
    for d in &cases {
        let ours = d.validate();
        let theirs = qemu_accepts(&q, d);
        match (&ours, &theirs) {
            (Ok(()), Ok(())) => accepted += 1,
            (Err(e), Err(msg)) if e.message.contains(&format!("QEMU: \"{msg}\"")) => refused += 1,
            _ => mismatches.push(format!(
                "awun={} awupf={} nawun={} nawupf={} nabsn={} nabspf={} nabo={}: lab {:?}, QEMU {:?}",
                d.awun, d.awupf, d.nawun, d.nawupf, d.nabsn, d.nabspf, d.nabo, ours, theirs
            )),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} parameter sets judged differently from QEMU {}:\n{}",
        mismatches.len(),
        cases.len(),
        q.version,
        mismatches.join("\n")
    );
    // Both outcomes were exercised.
    assert!(
        accepted >= 10 && refused >= 10,
        "{accepted} accepted, {refused} refused"
    );
    eprintln!(
        "QEMU {}: {accepted} accepted, {refused} refused, all as the lab judges",
        q.version
    );
}
