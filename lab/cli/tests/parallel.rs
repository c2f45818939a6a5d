//! `lab run -j N` with VM reuse against `-j 1` (a VM booted for every
//! testcase): the same verdicts and op logs, a reused VM that was wiped,
//! and Ctrl-C or SIGKILL with several VMs up leaving nothing behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{lab, qemu_children_of, read, run_prop, wait_for, LabRun};

/// One VM class on two devices: a limits check, atomic errors, a seeded
/// generator and the clean-slate control's three runs (each litters the VM
/// for whoever comes next) on 4096-byte LBAs, then its twin's two runs on
/// 512-byte LBAs, which a reused VM gets by swapping its NVMe controller
/// (given after the 4k ones, they come after them in the class). And a
/// power cut (always a VM of its own).
const SUBSET: [&str; 6] = [
    "limits-4k",
    "atomic-errors-xfs-4k",
    "generate-direct-xfs-4k",
    "powercut-raw-atomic-4k",
    "clean-slate-xfs-4k",
    "clean-slate-xfs-512",
];

fn run_with(jobs: &str) -> LabRun {
    let mut args = vec![
        "-j",
        jobs,
        "--testcases",
        "testcases",
        "--testcases",
        "testcases/controls/clean-slate-xfs-4k.yaml",
        "--testcases",
        "testcases/controls/clean-slate-xfs-512.yaml",
    ];
    args.extend(SUBSET);
    let run = LabRun::new(&args, &[]);
    run.expect_exit(0);
    run
}

/// Each generator thread's operations and results, in the thread's order
/// (threads interleave differently from run to run; a thread's own
/// sequence is the seed's).
fn ops_by_thread(oplog: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut by = BTreeMap::<u64, Vec<String>>::new();
    for line in read(oplog).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(t) = v.get("thread").and_then(|t| t.as_u64()) {
            by.entry(t)
                .or_default()
                .push(format!("{} -> {}", v["step"], v["result"]));
        }
    }
    by
}

#[test]
fn two_jobs_with_reuse_give_the_verdicts_of_one_boot_per_testcase() {
    let serial = run_with("1");
    let parallel = run_with("2");
    let (s, p) = (serial.summary(), parallel.summary());
    assert_eq!(run_prop(&s, "run.reuse"), "false");
    assert_eq!(
        (run_prop(&p, "run.jobs"), run_prop(&p, "run.reuse")),
        ("2".into(), "true".into())
    );

    // The same testcases in the same order, whatever order they finished in.
    let names = |r: &lab_core::report::RunReport| -> Vec<String> {
        r.suites.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names(&s), names(&p));
    assert_eq!(s.suites.len(), 9, "{:?}", names(&s));
    for (a, b) in s.suites.iter().zip(&p.suites) {
        if let Some(why) = lab_core::report::verdict_difference(a, b) {
            panic!("-j 1 and -j 2 with reuse disagree: {why}");
        }
    }
    let (so, po) = (
        ops_by_thread(&serial.dir().join("generate-direct-xfs-4k/oplog.jsonl")),
        ops_by_thread(&parallel.dir().join("generate-direct-xfs-4k/oplog.jsonl")),
    );
    assert!(!so.is_empty());
    assert_eq!(so, po, "the seeded generator's operations differ");

    // -j 1 boots a VM for every testcase; -j 2 reuses them within a class.
    assert!(s
        .suites
        .iter()
        .all(|x| x.property("boot_to_ssh_s").is_some() && x.property("vm.reused_after").is_none()));
    let booted = p
        .suites
        .iter()
        .filter(|x| x.property("boot_to_ssh_s").is_some())
        .count();
    let reused: Vec<_> = p
        .suites
        .iter()
        .filter(|x| x.property("vm.reused_after").is_some())
        .collect();
    assert_eq!(booted + reused.len(), 9);
    assert!(reused.len() >= 2, "{:?}", names(&p));
    // The 512-byte runs came in a reused VM by a swap of its NVMe
    // controller (their command checks the LBA size the guest sees); a
    // swap is never needed with -j 1.
    let swapped: Vec<_> = reused
        .iter()
        .filter(|x| x.property("vm.device_swap_s").is_some())
        .map(|x| x.name.clone())
        .collect();
    assert!(
        swapped.iter().any(|n| n.starts_with("clean-slate-xfs-512")),
        "no swap to the 512-byte device: {swapped:?} of {:?}",
        names(&p)
    );
    assert!(s
        .suites
        .iter()
        .all(|x| x.property("vm.device_swap_s").is_none()));
    assert!(p
        .suites
        .iter()
        .find(|x| x.name == "powercut-raw-atomic-4k")
        .is_some_and(|x| x.property("vm.reused_after").is_none()));
    // Whoever ran after a clean-slate control found its litter undone.
    let after_litter = reused
        .iter()
        .filter(|x| {
            x.property("vm.reused_after")
                .unwrap()
                .split(' ')
                .next_back()
                .is_some_and(|prev| prev.starts_with("clean-slate"))
        })
        .collect::<Vec<_>>();
    for x in &after_litter {
        let reset = x.property("vm.reset").unwrap();
        for undone in [
            "sleep",
            "/mnt/litter",
            "dirty_expire_centisecs",
            "read_ahead_kb",
            "/tmp/litter",
        ] {
            assert!(reset.contains(undone), "{}: {reset}", x.name);
        }
    }
    // A reused VM's testcase has its own console log.
    for x in &reused {
        assert!(parallel.dir().join(&x.name).join("console.log").is_file());
    }
}

/// Three XFS power cuts on the same device, two workers: the worker that
/// finishes first takes the third and checks its crash states with the
/// verifier VM it kept, pointed at the new states and the new console; the
/// verdicts are those of `-j 1`, which boots every verifier.
const VERIFIED: [&str; 3] = [
    "powercut-buffered-atomic-xfs-4k",
    "matrix-buffered-atomic-4k-extending",
    "matrix-buffered-atomic-4k-truncate-fallocate",
];

#[test]
fn a_kept_verifier_vm_checks_the_next_testcases_states_with_the_same_verdicts() {
    let run = |jobs: &str| {
        let mut args = vec!["-j", jobs];
        args.extend(VERIFIED);
        let r = LabRun::new(&args, &[]);
        r.expect_exit(0);
        r
    };
    let (serial, parallel) = (run("1"), run("2"));
    let (s, p) = (serial.summary(), parallel.summary());
    assert_eq!(s.suites.len(), 3);
    for (a, b) in s.suites.iter().zip(&p.suites) {
        if let Some(why) = lab_core::report::verdict_difference(a, b) {
            panic!("-j 1 and -j 2 with a kept verifier disagree: {why}");
        }
    }
    let reused = |r: &lab_core::report::RunReport| -> Vec<(String, u32)> {
        r.suites
            .iter()
            .map(|x| {
                let n = x.property("verify.reused").unwrap_or_else(|| {
                    panic!("{}: no verify.reused in {:?}", x.name, x.properties)
                });
                (x.name.clone(), n.parse().unwrap())
            })
            .collect()
    };
    assert!(reused(&s).iter().all(|(_, n)| *n == 0), "{:?}", reused(&s));
    let kept: Vec<(String, u32)> = reused(&p).into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(kept.len(), 1, "{:?}", reused(&p));
    let (name, _) = &kept[0];
    let x = p.suites.iter().find(|x| &x.name == name).unwrap();
    // It booted no verifier, and the states were checked in it.
    assert!(
        x.property("verify.boot_0_s").is_none(),
        "{:?}",
        x.properties
    );
    assert!(
        x.property("verify.states").is_some_and(|n| n != "0"),
        "{:?}",
        x.properties
    );
    assert!(parallel
        .dir()
        .join(name)
        .join("verifier-0.console.log")
        .is_file());
}

/// The private directories (keys, sockets) of lab process `pid`.
fn private_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mid = format!("-{pid}-");
    std::fs::read_dir(base)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("lab-") && n.contains(&mid)
        })
        .map(|e| e.path())
        .collect()
}

/// Two VMs at once: a power cut (a VM of its own, on the crash disk and
/// its NBD server) and a limits check. (Two limits checks would share one
/// VM now, their devices swapped.)
fn start_two_vms(results: &Path) -> (std::process::Child, Vec<u32>) {
    let child = lab()
        .args([
            "run",
            "-j",
            "2",
            "limits-4k",
            "powercut-raw-atomic-4k",
            "--results",
        ])
        .arg(results)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("two QEMUs", Duration::from_secs(120), || {
        qemu_children_of(pid).len() == 2
    });
    let qemus = qemu_children_of(pid);
    (child, qemus)
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn ctrl_c_or_sigkill_with_two_vms_up_leaves_nothing_behind() {
    // Ctrl-C: both VMs stop, the partial results are written, exit 130.
    let results = tempfile::tempdir().unwrap();
    let (child, qemus) = start_two_vms(results.path());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    for q in qemus {
        assert!(gone(q), "QEMU {q} outlived Ctrl-C");
    }
    let run = std::fs::canonicalize(results.path().join("latest")).unwrap();
    assert!(common::summary_in(&run).interrupted);
    assert!(run.join("junit.xml").is_file());

    // SIGKILL: the QEMUs die with lab (PR_SET_PDEATHSIG); its private
    // directories stay until the next lab starts and removes them.
    let results = tempfile::tempdir().unwrap();
    let (mut child, qemus) = start_two_vms(results.path());
    let pid = child.id();
    let dirs = private_dirs_of(pid);
    assert!(dirs.len() >= 2, "{dirs:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("QEMU to die with lab", Duration::from_secs(10), || {
        qemus.iter().all(|q| gone(*q))
    });
    assert!(dirs.iter().all(|d| d.exists()), "nothing removes them yet");
    let (code, _, stderr) = common::output(lab().args(["run", "--list"]));
    assert_eq!(code, Some(0), "{stderr}");
    for d in &dirs {
        assert!(!d.exists(), "{} was left behind", d.display());
    }
}
