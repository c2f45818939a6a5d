//! Integration tests on real parts: QEMU (TCG here), the Debian kernel the
//! set-up downloaded, the guest image, QMP and SSH. They need
//! `scripts/setup.sh` to have run; if it has not, they fail and say so.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lab_cli::host::accel::AccelChoice;
use lab_cli::host::launch::{Backing, LabVm, LaunchError};
use lab_cli::host::LabHost;
use lab_cli::vm::{BootStage, Vm, VmError};
use lab_core::device::DeviceParams;
use lab_core::qemu::Backend;
use lab_core::splat::SplatKind;
use lab_disk::Disk;

fn host() -> LabHost {
    LabHost::resolve(None, None, AccelChoice::Auto)
        .unwrap_or_else(|e| panic!("the lab host is not set up ({e:#}); run scripts/setup.sh"))
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

struct Booted {
    vm: LabVm,
    _console: tempfile::TempDir,
}

fn boot_with(host: &LabHost, boot_timeout: Duration) -> Result<Booted, VmError> {
    let console = tempfile::tempdir().unwrap();
    let vm = host
        .plan(console.path().join("console.log"))
        .disk(&DeviceParams::default(), Backing::Scratch)
        .boot_timeout(boot_timeout)
        .boot()
        .map_err(boot_error)?;
    Ok(Booted {
        vm,
        _console: console,
    })
}

/// The VM's own error from a failed launch; the lab failing to set up the
/// disks is a broken test host.
fn boot_error(e: LaunchError) -> VmError {
    match e {
        LaunchError::Boot { error, .. } => error,
        LaunchError::Setup { .. } => panic!("{e}"),
    }
}

/// A VM whose only namespace is a fresh crash disk, and that disk, to read
/// what reached it (also once the VM is gone).
fn boot_on_crash_disk(host: &LabHost, device: &DeviceParams) -> (Booted, Arc<Disk>) {
    let console = tempfile::tempdir().unwrap();
    let vm = host
        .plan(console.path().join("console.log"))
        .disk(device, Backing::CrashDisk)
        .boot_timeout(Duration::from_secs(180))
        .boot()
        .unwrap_or_else(|e| panic!("boot on the crash disk: {}", e.report()));
    let disk = vm
        .crash
        .as_ref()
        .expect("booted on the crash disk")
        .disk
        .clone();
    (
        Booted {
            vm,
            _console: console,
        },
        disk,
    )
}

fn boot(host: &LabHost) -> Booted {
    boot_with(host, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("boot failed: {}", e.report()))
}

/// O_DIRECT writes (offset, length, RWF_ATOMIC) on the guest's raw
/// namespace through the agent; every one must succeed.
fn direct_writes_on_nvme0n1(vm: &mut Vm, run: u64, writes: &[(u64, u64, bool)]) {
    use base64::Engine;
    use lab_core::steps::{Expect, Open, Plan, Pwrite, Step};
    let mut steps = vec![Step::Open(Open {
        file: "/dev/nvme0n1".into(),
        direct: true,
        sync: false,
        dsync: false,
        expect: Expect::Ok,
    })];
    steps.extend(
        writes
            .iter()
            .map(|&(offset, len, atomic)| Step::Pwrite(Pwrite::new(offset, len, atomic))),
    );
    let plan = Plan {
        run,
        root: "/".into(),
        steps,
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&plan).unwrap());
    let out = vm
        .exec(
            &format!("echo {b64} | base64 -d | lab-guest run"),
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        out.stdout.matches("\"errno\":null").count(),
        writes.len() + 1,
        "{}",
        out.stdout
    );
}

#[test]
fn ssh_command_runs_and_returns_its_exit_status() {
    let host = host();
    let mut b = boot(&host);
    let pid = b.vm.pid().unwrap();
    let out =
        b.vm.exec("echo hello; echo oops >&2; exit 7", Duration::from_secs(30))
            .unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
    // The guest really is on an NVMe namespace of 4096-byte LBAs.
    let out =
        b.vm.exec(
            "cat /sys/block/nvme0n1/queue/logical_block_size",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(out.stdout.trim(), "4096");
    b.vm.shutdown().unwrap();
    assert!(gone(pid), "QEMU {pid} still running after shutdown");
}

#[test]
fn qmp_query_status_then_quit_ends_qemu() {
    let host = host();
    let mut b = boot(&host);
    let pid = b.vm.pid().unwrap();
    let mut qmp = b.vm.qmp().unwrap();
    assert_eq!(qmp.status().unwrap(), "running");
    assert!(qmp
        .version()
        .unwrap()
        .starts_with(&format!("{}.", host.qemu.major)));
    qmp.quit().unwrap();
    assert!(
        b.vm.wait_exit(Duration::from_secs(10)),
        "QEMU did not exit after QMP quit"
    );
    drop(b);
    assert!(gone(pid));
}

#[test]
fn private_dir_is_0700_and_holds_socket_and_keys() {
    let host = host();
    let b = boot(&host);
    let dir = b.vm.private_dir().to_path_buf();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    assert!(b.vm.qmp_socket().starts_with(&dir));
    assert!(dir.join("id_ed25519").is_file());
    drop(b);
    assert!(!dir.exists(), "private dir left behind: {}", dir.display());
}

/// WARN() and lockdep print at KERN_WARNING: the guest's console level
/// must let them through, or the lab never sees them. A warning-level
/// report written to /dev/kmsg takes the same way to the console as a
/// kernel's WARN(), and the VM's incremental console scan must title it.
#[test]
fn a_warning_level_report_reaches_the_console_and_is_titled() {
    let host = host();
    let mut b = boot(&host);
    let lines = [
        "------------[ cut here ]------------",
        "WARNING: fs/xfs/xfs_lab.c:12 at xfs_lab_check+0x1d/0x30, CPU#1: lab-guest/77",
        "Modules linked in: xfs",
        "Call Trace:",
        " <TASK>",
        " xfs_lab_write+0x10/0x20",
        " </TASK>",
        "---[ end trace 0000000000000000 ]---",
    ];
    let cmd: String = lines
        .iter()
        .map(|l| format!("echo '<4>{l}' > /dev/kmsg; "))
        .collect();
    b.vm.exec(&format!("{cmd} sleep 1"), Duration::from_secs(60))
        .unwrap();
    let splats = b.vm.splats();
    assert!(
        splats
            .iter()
            .any(|s| s.kind == SplatKind::Warning && s.title == "WARNING in xfs_lab_check"),
        "no titled warning in {splats:?}; console tail:\n{}",
        b.vm.console_tail()
    );
}

#[test]
fn guest_panic_is_detected_titled_and_qemu_is_gone() {
    let host = host();
    let mut b = boot(&host);
    let pid = b.vm.pid().unwrap();
    let err =
        b.vm.exec(
            "echo c > /proc/sysrq-trigger; sleep 60",
            Duration::from_secs(60),
        )
        .unwrap_err();
    match &err {
        VmError::Crashed {
            splat,
            console_tail,
            ..
        } => {
            assert_eq!(splat.kind, SplatKind::Panic);
            assert_eq!(splat.title, "kernel panic: sysrq triggered crash");
            assert!(console_tail.contains("sysrq"), "{console_tail}");
        }
        other => panic!("expected a crash, got {other}"),
    }
    drop(b);
    assert!(gone(pid));
}

#[test]
fn hung_command_hits_its_timeout() {
    let host = host();
    let mut b = boot(&host);
    let pid = b.vm.pid().unwrap();
    let t = std::time::Instant::now();
    let err =
        b.vm.exec("echo started; sleep 600", Duration::from_secs(3))
            .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "timeout not enforced: {:?}",
        t.elapsed()
    );
    match &err {
        VmError::Timeout { stage, secs, .. } => {
            assert_eq!(*secs, 3);
            assert!(stage.contains("sleep 600"), "{stage}");
            assert!(stage.contains("started"), "partial output kept: {stage}");
        }
        other => panic!("expected a timeout, got {other}"),
    }
    drop(b);
    assert!(gone(pid));
}

#[test]
fn boot_timeout_reports_console_and_kills_qemu() {
    let host = host();
    let err = match boot_with(&host, Duration::from_millis(500)) {
        Ok(_) => panic!("a 0.5 s boot timeout cannot be met"),
        Err(e) => e,
    };
    let VmError::BootStalled { diagnosis, .. } = &err else {
        panic!("expected a stalled boot, got {err}");
    };
    // 0.5 s ends in one of the first two stages, and the report says which.
    assert!(
        matches!(diagnosis.stage, BootStage::QemuStart | BootStage::Kernel),
        "{diagnosis}"
    );
    assert!(err.to_string().contains(diagnosis.stage.name()), "{err}");
    assert!(diagnosis.qemu.contains("alive"), "{diagnosis}");
    // Vm::boot dropped the VM on the error path: this test's QEMU is gone
    // (other tests' VMs in this process are none of its business).
    let pid = diagnosis.qemu_pid.expect("QEMU was running when diagnosed");
    assert!(gone(pid), "QEMU {pid} left running after a boot timeout");
}

/// A QEMU stuck opening its disk (an NBD server that accepts and never
/// answers, as a wedged crash disk would) stalls in stage qemu-start: the
/// monitor does not answer, QEMU is killed, and the diagnosis says so.
#[test]
fn qemu_stuck_on_its_nbd_disk_stalls_in_qemu_start() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // Accept and hold every connection, never writing the greeting.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let mute = Backend::Nbd {
        socket: sock.to_string_lossy().into_owned(),
        export: "lab".into(),
    };
    let console = dir.path().join("console.log");
    let err = match host
        .plan(console.clone())
        .disk(&DeviceParams::default(), Backing::Attached(mute))
        .write_cache(false)
        .boot_timeout(Duration::from_secs(6))
        .boot()
    {
        Ok(_) => panic!("QEMU cannot boot on a disk that never answers"),
        Err(e) => boot_error(e),
    };
    let VmError::BootStalled { diagnosis, .. } = &err else {
        panic!("expected a stalled boot, got {err}");
    };
    assert_eq!(diagnosis.stage, BootStage::QemuStart, "{diagnosis}");
    assert!(
        diagnosis.monitor.starts_with("did not answer"),
        "{diagnosis}"
    );
    assert_eq!(diagnosis.console_bytes, 0);
    assert!(!held.lock().unwrap().is_empty(), "QEMU never connected");
    let written = std::fs::read_to_string(lab_cli::vm::diagnosis_path(&console)).unwrap();
    assert!(written.contains("stage qemu-start"), "{written}");
    assert!(gone(diagnosis.qemu_pid.unwrap()));
}

/// How QEMU 10 maps NVMe writes onto the crash disk (the model depends on
/// it): with the namespace's write cache off, a direct write in the guest
/// arrives as one NBD write of the same offset and length, with FUA.
#[test]
fn guest_nvme_writes_reach_the_crash_disk_one_request_each_with_fua() {
    use lab_disk::WriteKind;

    let host = host();
    let device = DeviceParams {
        size_mib: 256,
        ..DeviceParams::default()
    };
    let (mut b, disk) = boot_on_crash_disk(&host, &device);
    direct_writes_on_nvme0n1(
        &mut b.vm,
        7,
        &[(1 << 20, 16384, false), (2 << 20, 4096, true)],
    );
    b.vm.shutdown().unwrap();

    let rec = disk.record().writes;
    let at = |off: u64| {
        rec.iter()
            .filter(|w| w.kind == WriteKind::Data && w.offset == off)
            .collect::<Vec<_>>()
    };
    let big = at(1 << 20);
    assert_eq!(big.len(), 1, "one request for the 16 KiB write: {rec:?}");
    assert_eq!((big[0].len, big[0].fua), (16384, true));
    let atomic = at(2 << 20);
    assert_eq!(atomic.len(), 1, "{rec:?}");
    assert_eq!((atomic[0].len, atomic[0].fua), (4096, true));
    // The data is the agent's stamped sectors.
    assert_eq!(&atomic[0].data[..8], b"LABSTAMP");
}

/// The set-up's QEMU (>= 10.2) sets the namespace's NAWUPF and NABSPF, and
/// a Linux 7.x guest reads them: a 64 KiB atomic unit and a 128 KiB
/// boundary on 4 KiB LBAs (QEMU 10.0 could only give one LBA). On the crash
/// disk a 64 KiB RWF_ATOMIC write arrives as one NBD write, so the unit the
/// model uses is a unit the backend really sees whole.
#[test]
fn guest_under_lab_qemu_sees_the_namespace_atomic_unit_and_boundary() {
    use lab_cli::host::qemu::QemuSource;
    use lab_core::limits::{expected_block_limits, LimitsReport};
    use lab_disk::WriteKind;

    let host = host();
    if std::env::var_os("LAB_QEMU").is_none() {
        assert_eq!(
            host.qemu.source,
            QemuSource::Lab,
            "the lab's QEMU is not used: {:?}",
            host.qemu.notice
        );
    }
    assert!(
        host.qemu.namespace_atomics,
        "{} {} has no nvme-ns atomic properties; run scripts/setup.sh",
        host.qemu.path.display(),
        host.qemu.version
    );
    let device = DeviceParams {
        size_mib: 256,
        nawupf: 15,
        nabspf: 31,
        ..DeviceParams::default()
    };
    assert_eq!(
        (device.atomic_unit_lbas(), device.atomic_boundary_lbas()),
        (16, Some(32))
    );
    let (mut b, disk) = boot_on_crash_disk(&host, &device);
    let sysfs =
        b.vm.exec(
            "cd /sys/block/nvme0n1/queue && cat atomic_write_unit_min_bytes \
             atomic_write_unit_max_bytes atomic_write_max_bytes atomic_write_boundary_bytes",
            Duration::from_secs(30),
        )
        .unwrap();
    let got: Vec<&str> = sysfs.stdout.split_whitespace().collect();
    assert_eq!(got, ["4096", "65536", "65536", "131072"], "{sysfs:?}");
    let report: LimitsReport = serde_json::from_str(
        b.vm.exec("lab-guest limits /dev/nvme0n1", Duration::from_secs(30))
            .unwrap()
            .stdout
            .trim(),
    )
    .unwrap();
    assert_eq!(
        report.sysfs.unwrap(),
        expected_block_limits(&device, device.identify_namespace())
    );
    assert_eq!(
        (report.statx.unit_min, report.statx.unit_max),
        (4096, 65536)
    );

    direct_writes_on_nvme0n1(
        &mut b.vm,
        9,
        &[(1 << 20, 65536, true), (2 << 20, 65536, false)],
    );
    b.vm.shutdown().unwrap();
    let rec = disk.record().writes;
    for off in [1u64 << 20, 2 << 20] {
        let w: Vec<_> = rec
            .iter()
            .filter(|w| w.kind == WriteKind::Data && w.offset == off)
            .collect();
        assert_eq!(
            w.len(),
            1,
            "one NBD write for the 64 KiB write at {off}: {rec:?}"
        );
        assert_eq!((w[0].len, w[0].fua), (65536, true));
    }
    // The model's reading of those writes: the first is one unit inside a
    // boundary, so all or nothing.
    assert!(device.write_is_atomic((1 << 20) / 4096, 16));
}
