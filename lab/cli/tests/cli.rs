//! The `lab` binary as users and CI run it: exit codes, results layout,
//! input errors, Ctrl-C. Real QEMU and kernels, as in tests/vm.rs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{
    lab, outcome, output, prop, qemu_children_of, read, root, run_prop, suite_of, suite_results,
    summary_in, summary_of, wait_for, LabRun,
};

#[test]
fn run_limits_for_4096_and_512_lbas_writes_junit_and_summary() {
    let run = LabRun::new(&["limits-4k", "limits-512"], &[]);
    run.expect_exit(0);
    let stdout = &run.stdout;
    assert!(
        stdout.contains("PASS  limits-4k (15/15 checks passed, boot "),
        "{stdout}"
    );
    // One VM class: the 512-byte testcase runs in limits-4k's VM with its
    // NVMe controller swapped (the guest's limits below are the 512-byte
    // device's).
    assert!(
        stdout.contains("PASS  limits-512 (15/15 checks passed, reused VM, device swapped in "),
        "{stdout}"
    );
    assert!(
        stdout.contains("30 passed, 0 failed, 0 skipped, 0 errors"),
        "{stdout}"
    );

    let run = run.dir();
    let junit = read(&run.join("junit.xml"));
    for needle in [
        "<testsuite name=\"limits-4k\"",
        "<testsuite name=\"limits-512\"",
        "<property name=\"kernel.release\"",
        "<property name=\"qemu.version\"",
        "<property name=\"accel\"",
        "<property name=\"device.lba_size\" value=\"512\"/>",
        "<property name=\"guest.atomic_write_unit_max_bytes\" value=\"512\"/>",
        "<testcase name=\"bdev.statx.unit_min\"",
    ] {
        assert!(junit.contains(needle), "junit.xml lacks {needle}:\n{junit}");
    }
    assert!(!junit.contains("<failure"), "{junit}");
    let summary = summary_in(&run);
    let counts = summary.counts();
    assert_eq!((counts.failed, counts.errors), (0, 0), "{counts:?}");
    assert!(counts.passed >= 20, "{counts:?}");
    assert!(summary.reproduce.contains("lab run"));
    assert!(read(&run.join("limits-4k/console.log")).contains("LAB-READY"));
    assert!(run.join("limits-512/console.log").is_file());
    let limits: serde_json::Value =
        serde_json::from_str(&read(&run.join("limits-512/limits.json"))).unwrap();
    assert_eq!(limits["bdev"]["sysfs"]["unit_max"], 512);
    // Mainline: no buffered limits, and the pair asked for in one call
    // gives the direct-I/O bit alone (no combined-request check then).
    let limits: serde_json::Value =
        serde_json::from_str(&read(&run.join("limits-4k/limits.json"))).unwrap();
    assert_eq!(limits["xfs_file"]["statx_buf"]["abi"], "none");
    assert_eq!(limits["xfs_file"]["combined"]["direct"], true);
    assert_eq!(limits["xfs_file"]["combined"]["buffered"], false);
    assert!(junit.contains("<property name=\"guest.xfs.statx_buf.abi\" value=\"none\"/>"));
    assert!(!junit.contains("combined_request"));
}

#[test]
fn invalid_testcase_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "name: bad\ndevice:\n  lba_size: 4096\n  awpuf: 1\nmkfs: { block_size: 4096 }\nworkload: limits\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("small.yaml"),
        "name: small\ndevice:\n  lba_size: 4096\nmkfs:\n  block_size: 1024\nworkload: limits\n",
    )
    .unwrap();
    let out = lab()
        .args(["run", "--testcases"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let bad = dir.path().join("bad.yaml");
    assert!(
        stderr.contains(&format!(
            "{}:4:3: device.awpuf: unknown field `awpuf`",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: did you mean `awupf`?"), "{stderr}");
    assert!(
        stderr.contains(
            "small.yaml:5:3: mkfs.block_size: block size 1024 is below the device's LBA size 4096"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 testcase file(s) are invalid; nothing was run"),
        "{stderr}"
    );
}

#[test]
fn list_shows_the_testcase_library() {
    let out = lab().args(["run", "--list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    for name in ["limits-4k ", "limits-512 ", "limits-4k-reflink "] {
        assert!(s.contains(name), "{s}");
    }
}

/// `--shard M/N` splits the selection into N disjoint shards that cover
/// it, by a stable hash of each name; mistakes in the form are exit 2; a
/// shard the split left empty is an empty run that still writes results
/// under the shared `--run-id`, booting nothing.
#[test]
fn shards_split_the_selection_disjointly_and_cover_it() {
    let names = |args: &[&str]| -> Vec<String> {
        let (code, stdout, stderr) = output(lab().args(["run", "--list"]).args(args));
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        stdout
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let all = names(&[]);
    let mut union = Vec::new();
    for m in 1..=3 {
        let shard = names(&["--shard", &format!("{m}/3")]);
        assert!(!shard.is_empty(), "shard {m}/3 is empty");
        union.extend(shard);
    }
    union.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        union, sorted,
        "the shards are not a partition of the selection"
    );
    for bad in ["0/3", "4/3", "x/y"] {
        let (code, _, stderr) = output(lab().args(["run", "--list", "--shard", bad]));
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("the form is M/N"), "{bad}: {stderr}");
    }
    let (code, _, stderr) = output(lab().args(["run", "--list", "--run-id", "../x"]));
    assert_eq!(code, Some(2), "{stderr}");

    // limits-4k alone, split in two: one shard holds it, the other is empty.
    let tmp = tempfile::tempdir().unwrap();
    let empty_index = if names(&["--shard", "1/2", "limits-4k"]).is_empty() {
        1
    } else {
        2
    };
    let empty = format!("{empty_index}/2");
    // The same run twice: the first takes the id, the second is refused.
    let empty_shard_run = || {
        output(
            lab()
                .args([
                    "run",
                    "--shard",
                    &empty,
                    "--run-id",
                    "pipeline-7",
                    "--results",
                ])
                .arg(tmp.path())
                .arg("limits-4k"),
        )
    };
    let (code, stdout, stderr) = empty_shard_run();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("shard {empty}: 0 of the 1 selected")),
        "{stderr}"
    );
    let v = summary_in(&tmp.path().join("pipeline-7"));
    assert!(v.suites.is_empty());
    assert_eq!(run_prop(&v, "run.shard"), empty);
    // The id is taken once: a second run with it would mix two runs.
    let (code, _, stderr) = empty_shard_run();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("already holds a run with id pipeline-7"),
        "{stderr}"
    );
}

/// Three shards of a fixed set, run as three concurrent `lab run --shard`
/// processes (no kernel build: the default kernel), merge into one run
/// that holds every testcase of the set once, with the outcome of every
/// check the same as in a plain run of the set. A lost shard is named and
/// is not a pass (exit 3); a testcase in two shards or a shard of another
/// kernel is refused (exit 2).
#[test]
fn three_concurrent_shards_merge_into_the_plain_run() {
    let set = [
        "atomic-errors-raw-4k",
        "limits-2k",
        "limits-4k",
        "limits-4k-reflink",
        "limits-512",
    ];
    let tmp = tempfile::tempdir().unwrap();
    let plain_dir = tmp.path().join("plain");
    let (code, stdout, stderr) = output(lab().args(["run", "--results"]).arg(&plain_dir).args(set));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let plain = summary_of(&plain_dir);

    let shards: Vec<_> = (1..=3)
        .map(|m| {
            let results = tmp.path().join(format!("job{m}"));
            let child = lab()
                .args([
                    "run",
                    "--shard",
                    &format!("{m}/3"),
                    "--run-id",
                    "p-3",
                    "--results",
                ])
                .arg(&results)
                .args(set)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (results.join("p-3"), child)
        })
        .collect();
    let mut runs = Vec::new();
    for (run, child) in shards {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        runs.push(run);
    }
    let merged = tmp.path().join("merged");
    let (code, stdout, stderr) = output(
        lab()
            .args(["report", "merge"])
            .args(&runs)
            .arg("--out")
            .arg(&merged),
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let v = summary_in(&merged);
    let names: Vec<&str> = v.suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, set, "each testcase of the set exactly once");
    assert_eq!(v.run_id, "p-3");
    let outcomes = |r: &lab_core::report::RunReport| -> Vec<(String, String, String)> {
        let mut o: Vec<_> = r
            .suites
            .iter()
            .flat_map(|s| s.results.iter())
            .map(|c| {
                (
                    c.case.clone(),
                    c.check.clone(),
                    c.outcome.label().to_string(),
                )
            })
            .collect();
        o.sort();
        o
    };
    assert_eq!(
        outcomes(&v),
        outcomes(&plain),
        "the shards disagree with the plain run"
    );
    let junit = read(&merged.join("junit.xml"));
    for name in set {
        assert_eq!(
            junit
                .matches(&format!("<testsuite name=\"{name}\""))
                .count(),
            1,
            "{junit}"
        );
    }

    // Shard 3 lost: its testcases are named, and the merge is not a pass.
    let (code, stdout, _) = output(
        lab()
            .args(["report", "merge"])
            .args(&runs[..2])
            .arg("--out")
            .arg(tmp.path().join("partial")),
    );
    assert_eq!(code, Some(3), "{stdout}");
    assert!(
        stdout.contains("missing: no results from shard(s) 3/3"),
        "{stdout}"
    );
    let third = summary_in(&runs[2]);
    for s in &third.suites {
        assert!(stdout.contains(&s.name), "{} not named: {stdout}", s.name);
    }

    // A shard given twice: its testcases were run by two shards.
    let (code, _, stderr) = output(
        lab()
            .args(["report", "merge"])
            .args(&runs)
            .arg(&runs[1])
            .arg("--out")
            .arg(tmp.path().join("dup")),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("was run by more than one shard"),
        "{stderr}"
    );

    // One shard from another kernel.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let release = run_prop(&v, "kernel.release");
    let text = read(&runs[0].join("summary.json"));
    std::fs::write(
        other.join("summary.json"),
        text.replace(&format!("\"{release}\""), "\"9.9.9-other\""),
    )
    .unwrap();
    let (code, _, stderr) = output(
        lab()
            .args(["report", "merge"])
            .arg(&other)
            .args(&runs[1..])
            .arg("--out")
            .arg(tmp.path().join("mixed")),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("kernel.release differs"), "{stderr}");
}

#[test]
fn boot_runs_a_command_and_exits_with_its_status() {
    let out = lab()
        .args([
            "boot",
            "--lba-size",
            "512",
            "--",
            "cat /sys/block/nvme0n1/queue/logical_block_size; exit 5",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "512");
    assert!(stderr.contains("guest ready in"), "{stderr}");
}

#[test]
fn boot_rejects_bad_device_parameters_with_exit_2() {
    let out = lab()
        .args(["boot", "--lba-size", "3000", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--lba-size: 3000 is not a supported LBA size"));
}

/// The namespace flags come from lab-core's table of the atomic fields:
/// each is a flag, and a bad combination names the flag.
#[test]
fn boot_takes_every_namespace_atomic_field_as_a_flag() {
    let out = lab().args(["boot", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for f in lab_core::device::NAMESPACE_ATOMIC_FIELDS {
        assert!(help.contains(&format!("--{}", f.name)), "{help}");
    }
    let out = lab()
        .args(["boot", "--nawupf", "3", "--nabo", "1", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lab: error: --"), "{stderr}");
}

/// A path the user typed that does not exist is bad input (2), not "the
/// lab could not run" (3); a YAML file given as a filter is that testcase.
#[test]
fn run_takes_paths_as_typed() {
    let out = lab()
        .args(["run", "--kernel", "/nonexistent/bzImage", "limits-4k"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--kernel /nonexistent/bzImage: no such file or directory"),
        "{stderr}"
    );
    let out = lab()
        .current_dir(root())
        .args(["run", "--list", "testcases/limits-4k.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, ["limits-4k"], "{stdout}");
}

#[test]
fn doctor_passes_on_a_set_up_host() {
    let out = lab().arg("doctor").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok       nvme atomic properties"),
        "{stdout}"
    );
    assert!(stdout.contains("ok       boot to SSH"), "{stdout}");
    assert!(stdout.contains("accelerator"), "{stdout}");
    // Debian's kernel caches a 2 MiB buffered XFS write in one large folio;
    // doctor measures it on the kernel it boots.
    assert!(
        stdout.contains("ok       large folios: yes: a 2 MiB buffered write to XFS: 512 of 512 pages cached, in 1 folio"),
        "{stdout}"
    );
    // The set-up provisions a QEMU with namespace atomics; doctor names it.
    assert!(
        stdout.contains("ok       nvme-ns atomic properties: atomic.nabo, atomic.nabsn, atomic.nabspf, atomic.nawun, atomic.nawupf"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(the lab's own, set up by scripts/setup.sh)"),
        "{stdout}"
    );
}

/// With only QEMU 10.0 (no nvme-ns atomic properties) a testcase that sets
/// namespace atomics must not pass and must not be skipped: it ends in an
/// error that names the fields, the QEMU and the fix, and nothing boots.
/// Without namespace fields the same QEMU still runs testcases.
#[test]
fn namespace_atomics_on_qemu_10_fail_naming_what_is_missing() {
    let run = LabRun::new(
        &["limits-4k-nawupf64k"],
        &[("LAB_QEMU", "/usr/bin/qemu-system-x86_64")],
    );
    run.expect_exit(3);
    let stdout = &run.stdout;
    assert!(stdout.contains("ERROR limits-4k-nawupf64k"), "{stdout}");
    assert!(
        stdout.contains("device.nawupf, device.nabspf need QEMU >= 10.2 (nvme-ns atomic.* properties), but the lab's QEMU is /usr/bin/qemu-system-x86_64 10.0"),
        "{stdout}"
    );
    assert!(stdout.contains("run scripts/setup.sh"), "{stdout}");
    assert!(
        stdout.contains("0 passed, 0 failed, 0 skipped, 1 errors"),
        "{stdout}"
    );
    assert!(
        !run.dir().join("limits-4k-nawupf64k/console.log").exists(),
        "a VM was started"
    );
}

/// LAB_QEMU unset and the set-up's QEMU missing: the system QEMU is used
/// and both `lab doctor` and the log say what that means.
#[test]
fn missing_lab_qemu_falls_back_to_the_system_one_with_a_notice() {
    let cache = tempfile::tempdir().unwrap();
    let out = lab()
        .env_remove("LAB_QEMU")
        .env("LAB_CACHE", cache.path())
        .args(["doctor"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("ok       QEMU: qemu-system-x86_64 10.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("note     nvme-ns atomic properties: the lab's QEMU >= 10.2 is not set up"),
        "{stdout}"
    );
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("cannot set namespace atomics"), "{stderr}");
}

#[test]
fn ctrl_c_stops_qemu_and_keeps_partial_results() {
    let results = tempfile::tempdir().unwrap();
    let child = lab()
        .args(["run", "limits-4k", "--results"])
        .arg(results.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let console: PathBuf = results.path().join("latest/limits-4k/console.log");
    // Interrupt while the guest is booting: QEMU is up, results not yet written.
    wait_for(
        "the guest to start booting",
        Duration::from_secs(120),
        || std::fs::read_to_string(&console).is_ok_and(|c| c.contains("LAB-T init")),
    );
    let qemus = qemu_children_of(pid);
    assert_eq!(qemus.len(), 1, "expected one QEMU child of lab");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for q in qemus {
        assert!(
            !Path::new(&format!("/proc/{q}")).exists(),
            "QEMU {q} outlived Ctrl-C"
        );
    }
    let run = std::fs::canonicalize(results.path().join("latest")).unwrap();
    assert!(summary_in(&run).interrupted);
    assert!(run.join("junit.xml").is_file());
    assert!(
        console.is_file(),
        "the console log of the interrupted case is kept"
    );
}

#[test]
fn steps_workloads_pass_refuse_and_skip_as_the_kernel_does() {
    let lab_run = LabRun::new(
        &[
            "atomic-errors-raw-4k",
            "direct-atomic-xfs-4k",
            "buffered-atomic-xfs-4k",
        ],
        &[],
    );
    lab_run.expect_exit(0);
    let stdout = &lab_run.stdout;
    let results = &lab_run.results;
    // The negative case: every refusal came with the errno the testcase names.
    assert!(
        stdout.contains("PASS  atomic-errors-raw-4k (11/11 checks passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  direct-atomic-xfs-4k (9/9 checks passed"),
        "{stdout}"
    );
    // Mainline 7.x refuses buffered RWF_ATOMIC: skipped with the reason, never passed.
    assert!(stdout.contains("SKIP  buffered-atomic-xfs-4k"), "{stdout}");
    let run = std::fs::canonicalize(results.path().join("latest")).unwrap();
    let junit = read(&run.join("junit.xml"));
    assert!(
        junit.contains("<skipped message=\"pwritev2(off=0 len=4096 RWF_ATOMIC) is not supported by this kernel (EOPNOTSUPP)\"/>"),
        "{junit}"
    );
    let counts = summary_in(&run).counts();
    assert_eq!((counts.skipped, counts.failed), (2, 0), "{counts:?}");
    // The data written with O_DIRECT atomic writes was read back sector by sector.
    let steps = read(&run.join("direct-atomic-xfs-4k/steps.jsonl"));
    assert!(
        steps.contains("{\"index\":7,\"op\":\"verify\",\"ret\":24,\"errno\":null}"),
        "{steps}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_the_step_and_both_results() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong.yaml"),
        "name: wrong\ndevice: { lba_size: 4096 }\nworkload:\n  steps:\n    - open: { file: /dev/nvme0n1, direct: true }\n    - pwrite: { offset: 0, len: 8192, atomic: true }\n",
    )
    .unwrap();
    let results = tempfile::tempdir().unwrap();
    let out = lab()
        .args(["run", "--testcases"])
        .arg(dir.path())
        .arg("--results")
        .arg(results.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  step02.pwrite: pwritev2(off=0 len=8192 RWF_ATOMIC): expected success, got EINVAL"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(" --testcases {} wrong", dir.path().display())),
        "the reproduce command names the testcase source: {stdout}"
    );
    // Under the failing testcase: the command that runs just that one again.
    assert!(
        stdout.contains("      reproduce: lab run --accel "),
        "{stdout}"
    );
    let run = std::fs::canonicalize(results.path().join("latest")).unwrap();
    let junit = read(&run.join("junit.xml"));
    assert!(junit.contains("reproduce: lab run --accel"), "{junit}");
}

#[test]
fn generator_page_fault_and_fio_cases_run_in_a_vm() {
    let lab_run = LabRun::new(
        &[
            "generate-direct-xfs-4k",
            "atomic-page-fault-xfs-4k",
            "fio-atomic-xfs-4k",
            "fio-atomic-too-big-xfs-4k",
        ],
        &[],
    );
    lab_run.expect_exit(0);
    let stdout = &lab_run.stdout;
    let results = &lab_run.results;
    assert!(
        stdout.contains("PASS  generate-direct-xfs-4k (3/3 checks passed"),
        "{stdout}"
    );
    // Direct: EFAULT, nothing written; buffered atomic: unsupported on mainline.
    assert!(
        stdout.contains("SKIP  atomic-page-fault-xfs-4k (11/12 checks passed"),
        "{stdout}"
    );
    // fio 3.39 (from trixie, with its own libraries) writes with RWF_ATOMIC
    // and verifies; 8 KiB atomic writes above the unit are refused.
    assert!(
        stdout.contains("PASS  fio-atomic-xfs-4k (3/3 checks passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  fio-atomic-too-big-xfs-4k (3/3 checks passed"),
        "{stdout}"
    );
    let run = std::fs::canonicalize(results.path().join("latest")).unwrap();
    let fio = read(&run.join("fio-atomic-xfs-4k/command.log"));
    assert!(fio.contains("fio-3.39") && fio.contains("err= 0"), "{fio}");
    let oplog = read(&run.join("generate-direct-xfs-4k/oplog.jsonl"));
    let ops = oplog
        .lines()
        .filter(|l| l.starts_with("{\"thread\""))
        .count();
    assert!(
        ops >= 4 * 64,
        "every operation of the 4 threads is logged: {ops}"
    );
    assert!(
        oplog.lines().next().unwrap().starts_with("{\"limits\""),
        "limits come first"
    );
    let summary = summary_in(&run);
    let gen = suite_of(&summary, "generate-direct-xfs-4k");
    assert_eq!(prop(gen, "generate.seed"), "1");
    assert!(
        prop(gen, "generate.atomic_writes_ok")
            .parse::<u32>()
            .unwrap()
            > 50
    );
}

/// The power-cut loop on real QEMU: the crash disk cuts at the chosen
/// write, the crash states are planned and read back through their
/// exports; a 16 KiB non-atomic write in flight is torn in some state (the
/// positive control) and a 4 KiB RWF_ATOMIC write never is.
#[test]
fn power_cut_tears_plain_writes_and_never_atomic_ones() {
    let run = LabRun::new(
        &[
            "powercut-raw-torn-4k",
            "powercut-raw-atomic-4k",
            "powercut-raw-torn-64k",
            "powercut-raw-atomic-64k",
        ],
        &[],
    );
    run.expect_exit(0);
    let latest = run.dir();
    let summary = run.summary();
    let suite = |name: &str| suite_of(&summary, name);

    let torn = suite("powercut-raw-torn-4k");
    assert_eq!(outcome(torn, "power_cut.cut"), "passed");
    assert_eq!(outcome(torn, "power_cut.positive_control"), "passed");
    assert_eq!(prop(torn, "power_cut.cut"), "write 3");
    assert_eq!(prop(torn, "power_cut.in_flight"), "1");
    assert!(prop(torn, "power_cut.during").starts_with("step 5 pwritev2(off=131072 len=16384"));
    // Two subsets, three tear points with head and tail, the mark's prefix.
    assert_eq!(prop(torn, "power_cut.states"), "9");
    let states = read(&latest.join("powercut-raw-torn-4k/crash/states.jsonl"));
    let torn_states = states
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            !v["torn"].as_array().unwrap().is_empty()
        })
        .count();
    assert_eq!(torn_states, 6, "{states}");
    // The steps that finished before the cut are judged.
    assert_eq!(outcome(torn, "step02.pwrite"), "passed");

    let atomic = suite("powercut-raw-atomic-4k");
    assert_eq!(outcome(atomic, "power_cut.atomic_writes_whole"), "passed");
    assert!(
        prop(atomic, "power_cut.positive_control").starts_with("not applicable: no write larger")
    );
    assert_eq!(prop(atomic, "power_cut.in_flight"), "1");
    assert!(prop(atomic, "power_cut.cut").starts_with("write 3 touched LBAs 18-18"));

    // At a 64 KiB unit (namespace atomics): a 64 KiB write crossing the
    // 128 KiB boundary is not atomic and tears; a 64 KiB RWF_ATOMIC one
    // inside it never does.
    let torn64 = suite("powercut-raw-torn-64k");
    assert_eq!(outcome(torn64, "power_cut.positive_control"), "passed");
    assert_eq!(prop(torn64, "power_cut.atomic_unit_bytes"), "65536");
    let atomic64 = suite("powercut-raw-atomic-64k");
    assert_eq!(outcome(atomic64, "power_cut.atomic_writes_whole"), "passed");
    assert_eq!(prop(atomic64, "power_cut.in_flight"), "1");
}

/// XFS under power cuts: every crash state is mounted, scanned, repaired
/// and judged by the model, and passes on the default kernel; a disk that
/// loses acknowledged writes makes the same verifier report the fsync'd
/// data lost (so a pass means something).
#[test]
fn xfs_crash_states_are_verified_and_a_lying_disk_is_caught() {
    let run = LabRun::new(&["powercut-direct-atomic-xfs-4k"], &[]);
    run.expect_exit(0);
    let results = &run.results;
    let summary = run.summary();
    let r = suite_results(&summary, "powercut-direct-atomic-xfs-4k");
    let states: Vec<_> = r
        .iter()
        .filter(|(c, _, _)| c.starts_with("state.state-"))
        .collect();
    assert!(!states.is_empty(), "{r:?}");
    assert!(states.iter().all(|(_, o, _)| o == "passed"), "{states:?}");
    let num = |k: &str| -> usize { prop(&summary.suites[0], k).parse().unwrap() };
    assert_eq!(
        num("verify.states") + num("verify.states_mapped"),
        states.len()
    );
    assert_eq!(num("verify.map_audit_mismatches"), 0);
    let oplog = read(
        &results
            .path()
            .join("latest/powercut-direct-atomic-xfs-4k/crash/oplog.json"),
    );
    assert!(oplog.contains("\"atomic\": true"), "{oplog}");

    let lying = LabRun::new(
        &["--testcases", "testcases/controls/lying-disk-xfs-4k.yaml"],
        &[],
    );
    lying.expect_exit(1);
    let r = suite_results(&lying.summary(), "lying-disk-xfs-4k");
    let lost: Vec<_> = r
        .iter()
        .filter(|(c, o, m)| {
            c.starts_with("state.")
                && o == "failed"
                && (m.starts_with("data made durable by a completed sync was lost")
                    || m.starts_with("a file made durable by a completed sync is missing"))
        })
        .collect();
    assert!(!lost.is_empty(), "no state caught: {r:?}");
    assert!(
        lost.iter().any(|(_, _, m)| m.contains("step 3 fsync()")),
        "the failure names the fsync: {lost:?}"
    );

    // The failing state was kept; `lab verify` rebuilds it from the base
    // and its delta and judges it the same way.
    lab_verify_fails_the_same_way(&lost[0].2);
    let out = lab()
        .args(["verify", "/nonexistent/state-0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Power-cut sweeps on real QEMU: with no hand-placed cut, the workload
/// runs to its end and a virtual cut just before every disk event (or
/// after every sync the host saw end) is judged; each distinct content is
/// verified once and judged at every point that leaves it. On the default
/// kernel every judgement passes; the lying disk fails at a cut point named
/// by the sync it followed, with the same rule as its single cut, and the
/// kept judgement is reproduced by `lab verify`.
#[test]
fn a_sweep_judges_every_cut_point_and_catches_the_lying_disk() {
    let run = LabRun::new(
        &[
            "--testcases",
            "testcases",
            "--testcases",
            "testcases/controls/lying-disk-sweep-xfs-4k.yaml",
            "powercut-sweep-direct-xfs-4k",
            "lying-disk-sweep-xfs-4k",
        ],
        &[],
    );
    run.expect_exit(1);
    let summary = run.summary();
    let num = |suite: &lab_core::report::SuiteReport, key: &str| -> usize {
        prop(suite, key).parse().unwrap_or_else(|_| panic!("{key}"))
    };

    let direct = suite_of(&summary, "powercut-sweep-direct-xfs-4k");
    let r = suite_results(&summary, "powercut-sweep-direct-xfs-4k");
    assert!(r.iter().all(|(_, o, _)| o == "passed"), "{r:?}");
    assert_eq!(outcome(direct, "sweep.verdicts"), "passed");
    assert_eq!(prop(direct, "power_cut.policy"), "none");
    // Arrivals and acknowledgements of the workload's writes: many points,
    // every one judged, each content verified once.
    let (points, contents, judgements) = (
        num(direct, "sweep.cut_points"),
        num(direct, "sweep.contents"),
        num(direct, "sweep.judgements"),
    );
    assert!(points >= 10, "{points} cut points");
    assert!(
        judgements > contents,
        "{judgements} judgements of {contents} contents: dedupe"
    );
    assert_eq!(num(direct, "sweep.judged"), judgements);
    // Each content mounted once, or read through the extent map of a
    // mounted state with the same metadata; audits mount those too and
    // must agree.
    let (mounted, mapped, audits) = (
        num(direct, "verify.states"),
        num(direct, "verify.states_mapped"),
        num(direct, "verify.map_audits"),
    );
    assert_eq!(
        mounted + mapped,
        contents,
        "{mounted} mounted, {mapped} mapped"
    );
    assert!(
        mapped + audits >= 1,
        "tears of one data write share their metadata: some state is read through a map"
    );
    assert_eq!(num(direct, "verify.map_audit_mismatches"), 0);
    let sweep = read(
        &run.dir()
            .join("powercut-sweep-direct-xfs-4k/crash/sweep.jsonl"),
    );
    assert_eq!(sweep.lines().count(), points, "{sweep}");
    assert!(sweep.contains("just before device write"), "{sweep}");

    let lying = suite_of(&summary, "lying-disk-sweep-xfs-4k");
    let failed: Vec<_> = suite_results(&summary, "lying-disk-sweep-xfs-4k")
        .into_iter()
        .filter(|(c, o, _)| c.starts_with("sweep.cut-") && o == "failed")
        .collect();
    assert!(!failed.is_empty(), "{lying:?}");
    assert_eq!(num(lying, "sweep.cut_points_failed"), failed.len());
    let (_, _, msg) = &failed[0];
    assert!(
        msg.starts_with("a file made durable by a completed sync is missing")
            || msg.starts_with("data made durable by a completed sync was lost"),
        "the single cut's rule: {msg}"
    );
    // The first failing point follows the first fsync: usually "after
    // `step 3 fsync()` ended"; when the agent's line saying so reached the
    // host after step 4's write reached the disk (a loaded host), the host
    // could not yet hold the kernel to it there, and the first failing
    // point is a later one, still naming the fsync's promise.
    assert!(
        msg.contains("but step 3 fsync() completed") && msg.contains("(cut at "),
        "the promise and the point in words: {msg}"
    );
    assert!(
        failed
            .iter()
            .any(|(_, _, m)| m.contains("after `step 3 fsync()` ended")
                || m.contains("after `step 4 pwritev2(")),
        "a point right after the fsync: {failed:?}"
    );
    lab_verify_fails_the_same_way(msg);
}

/// `xfs_repair -n` is a check of its own. A state whose metadata the mount
/// accepts but repair does not (AG 0's free-block count one more than its
/// free-space btrees hold, with a valid CRC) fails as corruption, and the
/// failure shows what repair found, not its progress lines. Nothing else
/// plants damage only repair can see: without this, a repair step that found
/// nothing would pass every state. The state is made on the host (mkfs.xfs
/// and xfs_db, as the set-up installs them) and kept by `keep_state`, as a
/// run keeps one, so `lab verify` runs the verifier a run uses.
#[test]
fn xfs_repair_finds_damage_the_mount_accepts() {
    use lab_cli::powercut::kept::{keep_state, KeptCase};
    use lab_disk::states::{Delta, State};
    use lab_disk::{Record, StateStore};

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let device = lab_core::device::DeviceParams {
        lba_size: 4096,
        ..Default::default()
    };
    std::fs::File::create(&base)
        .unwrap()
        .set_len(device.size_bytes())
        .unwrap();
    let run = |prog: &str, args: &[&str]| {
        let out = std::process::Command::new(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        assert!(out.status.success(), "{prog} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let b = base.to_str().unwrap();
    // Debian's paths, as vm-images/guest.yaml has them (/usr/sbin is not on
    // a user's PATH). 4096-byte sectors, as mkfs in the guest picks on a
    // 4096-byte LBA.
    run(
        "/usr/sbin/mkfs.xfs",
        &["-q", "-f", "-s", "size=4096", "-b", "size=4096", b],
    );
    let free: u64 = run(
        "/usr/sbin/xfs_db",
        &["-r", "-c", "agf 0", "-c", "print freeblks", b],
    )
    .trim()
    .strip_prefix("freeblks = ")
    .and_then(|n| n.parse().ok())
    .expect("freeblks");
    let wrong = format!("write freeblks {}", free + 1);
    run("/usr/sbin/xfs_db", &["-x", "-c", "agf 0", "-c", &wrong, b]);

    // Kept as a run keeps a failing state: the damaged disk as the base, an
    // empty delta.
    let st = State {
        recipe: "cut@0".parse().unwrap(),
        delta: Delta::new(),
        torn: Vec::new(),
    };
    let record = Record {
        lba: device.lba_size,
        size: device.size_bytes(),
        ..Record::default()
    };
    let store = StateStore::new(
        &std::fs::File::open(&base).unwrap(),
        record,
        std::slice::from_ref(&st),
    )
    .unwrap();
    let case = KeptCase {
        testcase: "planted-agf-damage".into(),
        device,
        files: Vec::new(),
        ops: Vec::new(),
        recipe: st.recipe.to_string(),
        timeout_s: 300,
    };
    let crash = dir.path().join("crash");
    let state = keep_state(&crash, &base, &store, 0, &st, "state-0", &case).unwrap();

    let (code, stdout, stderr) = output(lab().args(["verify", state.to_str().unwrap()]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("FAIL  XFS: xfs_repair -n found corruption"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "agf_freeblks {}, counted {free} in ag 0",
            free + 1
        )),
        "what repair found: {stdout}"
    );
    assert!(!stdout.contains("Phase "), "no progress lines: {stdout}");
}

/// A failure message ends `(reproduce: lab verify DIR)`: `lab verify DIR`
/// rebuilds the kept state and fails it with the same first rule.
fn lab_verify_fails_the_same_way(msg: &str) {
    let kept = msg
        .split("reproduce: lab verify ")
        .nth(1)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no reproduce command in {msg:?}"));
    let out = lab().args(["verify", kept]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first_rule = msg.split(':').next().unwrap();
    assert!(stdout.contains(&format!("FAIL  {first_rule}")), "{stdout}");
}

/// A boot that stalls before any workload is the lab's problem: retried once
/// with a fresh VM (said in a property and on the terminal, the first
/// attempt's console and diagnosis kept), and when the retry stalls too the
/// case is a lab error (exit 3), never a failure of the kernel.
#[test]
fn a_stalled_boot_is_retried_once_then_reported_as_a_lab_error() {
    // On the crash disk, where both sightings of the boot hang were.
    let run = LabRun::new(
        &["powercut-raw-atomic-4k"],
        &[("LAB_INJECT_BOOT_STALLS", "1")],
    );
    run.expect_exit(0);
    assert!(
        run.stdout.contains("retried once with a fresh VM"),
        "{}",
        run.stdout
    );
    let summary = run.summary();
    let suite = suite_of(&summary, "powercut-raw-atomic-4k");
    assert!(
        prop(suite, "boot.retried_after").contains("boot stalled in stage"),
        "{suite:?}"
    );
    let case = run.dir().join("powercut-raw-atomic-4k");
    let diagnosis = read(&case.join("boot-1.diagnosis.txt"));
    assert!(diagnosis.contains("nbd server:"), "{diagnosis}");
    assert!(case.join("boot-1.console.log").is_file());
    assert!(read(&case.join("console.log")).contains("LAB-READY"));

    let run = LabRun::new(&["limits-4k"], &[("LAB_INJECT_BOOT_STALLS", "2")]);
    run.expect_exit(3);
    let summary = run.summary();
    let suite = suite_of(&summary, "limits-4k");
    assert_eq!(outcome(suite, "boot"), "error", "{suite:?}");
    assert!(prop(suite, "boot.retried_after").contains("stalled"));
}
