//! `lab doctor`: what the host has, what is missing, and how to fix it.
//! Exit 0 only when a run can work; the last check is a real boot to SSH.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lab_core::device::DeviceParams;
use lab_core::folio::FolioCensus;
use lab_core::steps::{Expect, Folios, Open, Plan, Pwrite, Step, StepResult};
use lab_core::testcase::{Mkfs, Mount};

use crate::exit::Exit;
use crate::host::accel::AccelChoice;
use crate::host::image;
use crate::host::launch::Backing;
use crate::host::qemu;
use crate::host::LabHost;
use crate::paths;
use crate::suite::mount_fresh_xfs;
use crate::vm::agent;
use crate::vm::kernel::Kernel;

struct Report {
    problems: usize,
}

impl Report {
    fn ok(&self, what: &str, detail: &str) {
        println!("  ok       {what}: {detail}");
    }
    fn note(&self, what: &str, detail: &str) {
        println!("  note     {what}: {detail}");
    }
    fn missing(&mut self, what: &str, detail: &str, fix: &str) {
        self.problems += 1;
        println!("  MISSING  {what}: {detail}\n           fix: {fix}");
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Exit 0 when a run can work; 3 (the lab cannot run) with what to fix.
pub fn doctor(kernel_arg: Option<&Path>, modules_arg: Option<&Path>) -> Exit {
    let mut r = Report { problems: 0 };
    const SETUP: &str = "scripts/setup.sh";
    println!("lab doctor");

    // QEMU and its NVMe atomic properties.
    match qemu::find_qemu() {
        Ok(q) => {
            let what = format!(
                "{} {} ({})",
                q.path.display(),
                q.version,
                q.source.describe()
            );
            if q.major >= 10 {
                r.ok("QEMU", &what);
            } else {
                r.missing(
                    "QEMU >= 10",
                    &what,
                    &format!("{SETUP} installs qemu-system-x86 from bookworm-backports"),
                );
            }
            if q.controller_atomics {
                r.ok(
                    "nvme atomic properties",
                    "atomic.awun, atomic.awupf, atomic.dn",
                );
            } else {
                r.missing(
                    "nvme atomic properties",
                    "-device nvme has no atomic.awupf",
                    &format!("{SETUP} (QEMU 10)"),
                );
            }
            if q.namespace_atomics {
                r.ok(
                    "nvme-ns atomic properties",
                    &format!(
                        "{} (multi-LBA units and boundaries)",
                        q.namespace_atomic_props.join(", ")
                    ),
                );
            } else {
                r.note(
                    "nvme-ns atomic properties",
                    q.notice.as_deref().unwrap_or(
                        "absent (QEMU < 10.2): Linux 7.x reads only NAWUPF, so guests see a \
                         one-LBA atomic unit and testcases with device.nawupf etc. fail",
                    ),
                );
            }
            if q.source != qemu::QemuSource::System {
                // The system QEMU stays installed; say which it is.
                if let Ok(sys) =
                    qemu::probe_qemu(Path::new("qemu-system-x86_64"), qemu::QemuSource::System)
                {
                    r.note(
                        "system QEMU",
                        &format!("qemu-system-x86_64 {} (not used by the lab)", sys.version),
                    );
                }
            }
        }
        Err(e) => r.missing("QEMU", &format!("{e:#}"), SETUP),
    }

    // Host tools the lab calls.
    for (tool, why) in [
        ("ssh-keygen", "per-VM SSH keys"),
        ("dropbearkey", "guest host keys"),
        ("ldd", "guest image libraries"),
        ("xz", "kernel module decompression"),
    ] {
        if have(tool) {
            r.ok(tool, why);
        } else {
            r.missing(tool, &format!("not found ({why})"), SETUP);
        }
    }

    // Kernel builds (lab run --series, lab bisect): the toolchain and the
    // default source. Not needed to boot a prebuilt kernel, so notes.
    let build_tools = ["make", "gcc", "flex", "bison", "bc", "git", "ccache"];
    let absent: Vec<&str> = build_tools.iter().copied().filter(|t| !have(t)).collect();
    if absent.is_empty() {
        r.ok("kernel build tools", &build_tools.join(", "));
    } else {
        r.note(
            "kernel build tools",
            &format!(
                "missing {} (lab run --series and lab bisect need them; {SETUP} installs them)",
                absent.join(", ")
            ),
        );
    }
    match crate::kernel::tree::default_tarball(&paths::cache_dir()) {
        Ok((tar, describe)) => r.ok("kernel source", &format!("{describe} ({})", tar.display())),
        Err(e) => r.note("kernel source", &format!("{e:#}")),
    }

    // Kernel.
    let cache = paths::cache_dir();
    let kernel = match kernel_arg {
        Some(p) => Kernel::from_arg(p, modules_arg),
        None => Kernel::default_kernel(&cache),
    };
    let kernel = match kernel {
        Ok(k) => {
            r.ok(
                "kernel",
                &format!("{} ({})", k.release, k.vmlinuz.display()),
            );
            Some(k)
        }
        Err(e) => {
            r.missing("kernel", &format!("{e:#}"), SETUP);
            None
        }
    };

    // Optional guest tools (fio, xfs_io from trixie) for the testcases that use them.
    let tools = cache.join("tools/trixie/root");
    if tools.join("usr/bin/fio").is_file() && tools.join("usr/sbin/xfs_io").is_file() {
        r.ok(
            "guest tools",
            &format!("fio, xfs_io from Debian trixie ({})", tools.display()),
        );
    } else {
        r.missing(
            "guest tools",
            "fio and xfs_io from Debian trixie are not unpacked (testcases with `guest_tools:` need them)",
            SETUP,
        );
    }

    // Guest image.
    let root = paths::repo_root();
    let image = match (&root, &kernel) {
        (Ok(root), Some(k)) => match image::ensure_image(root, &cache, k) {
            Ok(img) => {
                r.ok(
                    "guest image",
                    &format!(
                        "{} ({})",
                        img.path.display(),
                        if img.built { "built now" } else { "cached" }
                    ),
                );
                true
            }
            Err(e) => {
                r.missing("guest image", &format!("{e:#}"), SETUP);
                false
            }
        },
        (Err(e), _) => {
            r.missing(
                "repository",
                &format!("{e:#}"),
                "run lab from the repository or set LAB_ROOT",
            );
            false
        }
        _ => false,
    };

    if r.problems > 0 || !image {
        println!("\n{} problem(s): a run cannot work yet.", r.problems.max(1));
        return Exit::LabError;
    }

    // Accelerator (a real KVM probe boot) and a boot to SSH with it.
    let host = match LabHost::resolve(kernel_arg, modules_arg, AccelChoice::Auto) {
        Ok(h) => h,
        Err(e) => {
            r.missing("lab host", &format!("{e:#}"), SETUP);
            return Exit::LabError;
        }
    };
    match host.accel {
        lab_core::qemu::Accel::Kvm => r.ok("accelerator", &format!("KVM ({})", host.accel_reason)),
        lab_core::qemu::Accel::Tcg => r.note("accelerator", &host.accel_reason),
    }
    let dir = match paths::PrivateDir::new("lab-doctor") {
        Ok(d) => d,
        Err(e) => {
            r.missing("private dir", &format!("{e:#}"), "check /tmp permissions");
            return Exit::LabError;
        }
    };
    // The boot carries an NVMe namespace so the same VM can show how the
    // kernel's page cache holds an XFS file.
    let booted = host
        .plan(dir.path().join("console.log"))
        .disk(&DeviceParams::default(), Backing::Scratch)
        .boot();
    match booted.map_err(|e| e.report()).and_then(|mut vm| {
        let out = vm
            .exec("uname -r", Duration::from_secs(30))
            .map_err(|e| e.report())?;
        let t = vm.boot_time.unwrap_or_default();
        let folios = large_folio_probe(&mut vm);
        vm.shutdown().map_err(|e| e.report())?;
        Ok((out.stdout.trim().to_string(), t, folios))
    }) {
        Ok((uname, t, folios)) => {
            r.ok(
                "boot to SSH",
                &format!(
                    "guest runs {uname}, SSH ready in {:.1} s ({})",
                    t.as_secs_f64(),
                    host.accel.as_str()
                ),
            );
            // Not a problem either way: testcases that need large folios
            // skip on a kernel without them, saying so.
            match folios {
                Ok(c) if c.has_large_folios() => r.ok(
                    "large folios",
                    &format!("yes: a 2 MiB buffered write to XFS: {}", c.describe()),
                ),
                Ok(c) => r.note(
                    "large folios",
                    &format!(
                        "no: a 2 MiB buffered write to XFS: {} (CONFIG_TRANSPARENT_HUGEPAGE off?); testcases that need them skip",
                        c.describe()
                    ),
                ),
                Err(e) => r.note("large folios", &format!("could not tell: {e}")),
            }
        }
        Err(report) => r.missing(
            "boot to SSH",
            &report,
            "see the console tail above; `lab boot -v` shows more",
        ),
    }
    if r.problems > 0 {
        println!("\n{} problem(s): a run cannot work yet.", r.problems);
        return Exit::LabError;
    }
    println!("\nall good: `lab run` can work.");
    Exit::Passed
}

/// Writes 2 MiB at offset 0 of a file on a fresh XFS (4 KiB blocks) with
/// one buffered write and counts the page-cache folios that hold it, the
/// way a testcase's `folios` step does.
fn large_folio_probe(vm: &mut crate::vm::Vm) -> Result<FolioCensus, String> {
    let t = Duration::from_secs(60);
    // XFS is a late module on distribution kernels.
    vm.wait_modules(t).map_err(|e| e.report())?;
    let xfs = Mkfs {
        block_size: 4096,
        reflink: false,
    };
    mount_fresh_xfs(vm, &xfs, &Mount::default(), t)
        .map_err(|e| format!("{}: {}", e.stage, e.error.report()))?;
    let plan = Plan {
        run: 1,
        root: "/mnt".into(),
        steps: vec![
            Step::Open(Open {
                file: "folio-probe".into(),
                direct: false,
                sync: false,
                dsync: false,
                expect: Expect::Ok,
            }),
            Step::Pwrite(Pwrite::new(0, 2 << 20, false)),
            Step::Folios(Folios {
                file: None,
                offset: 0,
                len: None,
                expect: Expect::Ok,
            }),
        ],
    };
    let out = vm.exec(&agent::run(&plan), t).map_err(|e| e.report())?;
    let results: Vec<StepResult> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    match results.iter().find(|r| r.index == 2) {
        Some(StepResult {
            folios: Some(c), ..
        }) => Ok(*c),
        Some(r) => Err(format!(
            "{}{}",
            r.errno.clone().unwrap_or_default(),
            r.detail
        )),
        None => Err(format!("the agent said: {}", out.stderr.trim())),
    }
}
