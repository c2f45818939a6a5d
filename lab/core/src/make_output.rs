//! Reading the output of `make` on a kernel tree (Kbuild's quiet output).
//!
//! A kernel build under test prints thousands of `  CC      fs/...` lines
//! and, when it breaks, buries the reason among warnings, `In function`
//! context and make's cascade of `*** [...] Error 1` lines. A report wants
//! one line (the first real error and the make target that failed) and a
//! short tail of the log; a progress display wants the steps. Pure: the
//! caller captures the output.

use regex::Regex;
use serde::Serialize;
use std::sync::OnceLock;

/// One line of build output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildLine {
    /// A Kbuild quiet step, `  CC [M]  fs/xfs/xfs_buf.o`: `kind` as printed
    /// (`CC`, `CC [M]`, `LD`, `HOSTCC`, `ZSTD22`), `target` the path (empty
    /// for a step printed without one).
    Step {
        kind: String,
        target: String,
    },
    Other,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

/// Classifies a line. A step is two spaces, an upper-case word of 2 to 16
/// characters (letters, then letters, digits or `_`: `ZSTD22` and
/// `EXTRACT_CERTS` are real), an optional ` [M]`, then spaces and one
/// path. Kbuild cannot build paths with spaces, so a second word means it
/// is not a step (an `oldconfig` prompt such as `  DMA Engine support`).
pub fn classify(line: &str) -> BuildLine {
    static STEP: OnceLock<Regex> = OnceLock::new();
    let step = re(
        &STEP,
        r"^  ([A-Z][A-Z0-9_]{1,15}(?: \[M\])?)(?: +(\S+))?\s*$",
    );
    match step.captures(line) {
        Some(c) => BuildLine::Step {
            kind: c[1].to_string(),
            target: c.get(2).map_or("", |m| m.as_str()).to_string(),
        },
        None => BuildLine::Other,
    }
}

/// What broke a build, as far as the log tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildFailure {
    /// The source or object the first error names.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The error as the tool said it, from the severity on:
    /// `error: 'foo' undeclared ...`, `fatal error: linux/x.h: No such file
    /// or directory`, ``undefined reference to `foo'``.
    pub message: Option<String>,
    /// The make target that failed first (the innermost, as make reports
    /// it before the directories above it).
    pub target: Option<String>,
}

impl BuildFailure {
    /// One line for a report.
    pub fn summary(&self) -> String {
        match (&self.file, self.line, &self.message, &self.target) {
            (Some(f), Some(l), Some(m), _) => format!("{f}:{l}: {m}"),
            (Some(f), None, Some(m), _) => format!("{f}: {m}"),
            (None, _, Some(m), Some(t)) => format!("make target {t} failed: {m}"),
            (None, _, Some(m), None) => m.clone(),
            (_, _, None, Some(t)) => format!("make target {t} failed"),
            _ => "see the log".to_string(),
        }
    }
}

/// Colour escapes (`-fdiagnostics-color=always`) removed.
fn plain(line: &str) -> std::borrow::Cow<'_, str> {
    static ANSI: OnceLock<Regex> = OnceLock::new();
    re(&ANSI, r"\x1b\[[0-9;]*[mK]").replace_all(line, "")
}

/// The first error and the first failed make target in a build log.
/// Errors, in whichever comes first: a compiler diagnostic
/// `path:line[:col]: [fatal ]error: ...`; a GNU ld undefined reference
/// (the object from `ld: path.o: in function ...` on the same or the
/// previous line); an `ld.lld: error:` (the object from its `>>>` lines);
/// `ERROR: modpost: ...`; a tool's own `gcc: fatal error: ...` or an
/// object's `vmlinux.o: error: objtool: ...`; make's `*** ...  Stop.`.
/// Warnings never count.
pub fn find_failure(log: &str) -> BuildFailure {
    static DIAG: OnceLock<Regex> = OnceLock::new();
    static LD_FN: OnceLock<Regex> = OnceLock::new();
    static LD_OBJ: OnceLock<Regex> = OnceLock::new();
    static LLD_REF: OnceLock<Regex> = OnceLock::new();
    static MODPOST: OnceLock<Regex> = OnceLock::new();
    static TOOL: OnceLock<Regex> = OnceLock::new();
    static MAKE_TARGET: OnceLock<Regex> = OnceLock::new();
    static MAKE_STOP: OnceLock<Regex> = OnceLock::new();
    let diag = re(&DIAG, r"^([^\s:]+):(\d+):(?:\d+:)? ((?:fatal )?error: .*)$");
    // `ld: fs/x.o: in function `f':` (GNU ld, any cross prefix).
    let ld_fn = re(
        &LD_FN,
        r"^(?:\S*[/-])?ld(?:\.bfd|\.gold)?: ([^:\s]+): in function ",
    );
    // `ld: fs/x.o:(.data+0x0): undefined reference to ...`
    let ld_obj = re(&LD_OBJ, r"^(?:\S*[/-])?ld(?:\.bfd|\.gold)?: ([^:\s]+):");
    let lld_ref = re(&LLD_REF, r"^>>>\s+([^:\s]+\.o):\(");
    let modpost = re(&MODPOST, r"^ERROR: (modpost: .*?)\s*$");
    let tool = re(&TOOL, r"^([^\s:]+): ((?:fatal )?error: .*)$");
    let make_target = re(&MAKE_TARGET, r"^g?make(?:\[\d+\])?: \*\*\* \[(.*)\] ");
    let make_stop = re(
        &MAKE_STOP,
        r"^(?:g?make(?:\[\d+\])?: )?(?:([^\s:]+):(\d+): )?\*\*\* (.*?)\s+Stop\.\s*$",
    );

    let lines: Vec<std::borrow::Cow<'_, str>> = log.lines().map(plain).collect();
    let mut out = BuildFailure::default();
    let mut ld_in_function: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim_end();
        if out.target.is_none() {
            if let Some(c) = make_target.captures(line) {
                let inner = &c[1];
                let t = inner.rsplit_once(": ").map_or(inner, |(_, t)| t);
                out.target = Some(t.to_string());
            }
        }
        if out.message.is_some() {
            if out.target.is_some() {
                break;
            }
            continue;
        }
        if line.contains(": warning:") || line.starts_with("WARNING:") {
            continue;
        }
        if let Some(c) = diag.captures(line) {
            out.file = Some(c[1].to_string());
            out.line = c[2].parse().ok();
            out.message = Some(c[3].to_string());
        } else if let Some(at) = line.find("undefined reference to ") {
            out.file = ld_fn
                .captures(line)
                .or_else(|| ld_obj.captures(line))
                .map(|c| c[1].to_string())
                .or_else(|| ld_in_function.clone());
            out.message = Some(line[at..].to_string());
        } else if let Some(c) = modpost.captures(line) {
            static KO: OnceLock<Regex> = OnceLock::new();
            out.file = re(&KO, r"\[([^\]\s]+\.ko)\]")
                .captures(&c[1])
                .map(|k| k[1].to_string());
            out.message = Some(c[1].to_string());
        } else if let Some(c) = tool.captures(line) {
            let who = &c[1];
            let is_file = who.contains('/') || [".o", ".ko", ".a"].iter().any(|e| who.ends_with(e));
            if is_file {
                out.file = Some(who.to_string());
                out.message = Some(c[2].to_string());
            } else {
                // A tool speaking (`gcc:`, `cc1:`, `ld.lld:`): keep its name.
                out.message = Some(line.to_string());
                out.file = lines[i + 1..]
                    .iter()
                    .take(4)
                    .find_map(|l| lld_ref.captures(l).map(|c| c[1].to_string()));
            }
        } else if let Some(c) = make_stop.captures(line) {
            out.file = c.get(1).map(|m| m.as_str().to_string());
            out.line = c.get(2).and_then(|m| m.as_str().parse().ok());
            out.message = Some(c[3].to_string());
        } else if let Some(c) = ld_fn.captures(line) {
            ld_in_function = Some(c[1].to_string());
        } else {
            ld_in_function = None;
        }
    }
    out
}

/// The last `lines` lines of a log joined with `\n`, without a trailing
/// newline. A line a terminal would have overwritten (`\r` progress) is
/// shown as the terminal would: the text after its last `\r`.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(kind: &str, target: &str) -> BuildLine {
        BuildLine::Step {
            kind: kind.into(),
            target: target.into(),
        }
    }

    #[test]
    fn quiet_steps() {
        for (line, kind, target) in [
            ("  CC      fs/xfs/xfs_file.o", "CC", "fs/xfs/xfs_file.o"),
            ("  LD      vmlinux.o", "LD", "vmlinux.o"),
            ("  AR      fs/built-in.a", "AR", "fs/built-in.a"),
            (
                "  AS      arch/x86/entry/entry_64.o",
                "AS",
                "arch/x86/entry/entry_64.o",
            ),
            (
                "  HOSTCC  scripts/basic/fixdep",
                "HOSTCC",
                "scripts/basic/fixdep",
            ),
            ("  GEN     Makefile", "GEN", "Makefile"),
            (
                "  CHK     include/generated/compile.h",
                "CHK",
                "include/generated/compile.h",
            ),
            (
                "  OBJCOPY arch/x86/boot/setup.bin",
                "OBJCOPY",
                "arch/x86/boot/setup.bin",
            ),
            (
                "  BUILD   arch/x86/boot/bzImage",
                "BUILD",
                "arch/x86/boot/bzImage",
            ),
            ("  CC [M]  fs/xfs/xfs_buf.o", "CC [M]", "fs/xfs/xfs_buf.o"),
            ("  LD [M]  fs/xfs/xfs.ko", "LD [M]", "fs/xfs/xfs.ko"),
            ("  BTF [M] fs/xfs/xfs.ko", "BTF [M]", "fs/xfs/xfs.ko"),
            (
                "  SYNC    include/config/auto.conf.cmd",
                "SYNC",
                "include/config/auto.conf.cmd",
            ),
            (
                "  UPD     include/generated/package.h",
                "UPD",
                "include/generated/package.h",
            ),
            (
                "  LDS     arch/x86/kernel/vmlinux.lds",
                "LDS",
                "arch/x86/kernel/vmlinux.lds",
            ),
            ("  MODPOST Module.symvers", "MODPOST", "Module.symvers"),
            ("  KSYMS", "KSYMS", ""),
            (
                "  KSYMS   .tmp_vmlinux1.kallsyms.S",
                "KSYMS",
                ".tmp_vmlinux1.kallsyms.S",
            ),
            (
                "  ZSTD22  arch/x86/boot/compressed/vmlinux.bin.zst",
                "ZSTD22",
                "arch/x86/boot/compressed/vmlinux.bin.zst",
            ),
            (
                "  XZKERN  arch/x86/boot/compressed/vmlinux.bin.xz",
                "XZKERN",
                "arch/x86/boot/compressed/vmlinux.bin.xz",
            ),
            (
                "  GZIP    arch/x86/boot/compressed/vmlinux.bin.gz",
                "GZIP",
                "arch/x86/boot/compressed/vmlinux.bin.gz",
            ),
            (
                "  EXTRACT_CERTS   certs/signing_key.x509",
                "EXTRACT_CERTS",
                "certs/signing_key.x509",
            ),
            ("  DESCEND objtool", "DESCEND", "objtool"),
            ("  CC      fs/xfs/xfs_file.o\r", "CC", "fs/xfs/xfs_file.o"),
        ] {
            assert_eq!(classify(line), step(kind, target), "{line:?}");
        }
    }

    #[test]
    fn other_lines() {
        for line in [
            "make[1]: Entering directory '/work/linux/build'",
            "make[2]: *** [scripts/Makefile.build:243: fs/xfs/xfs_file.o] Error 1",
            "fs/xfs/xfs_file.c:12:5: warning: unused variable 'x' [-Wunused-variable]",
            "Kernel: arch/x86/boot/bzImage is ready  (#1)",
            "  DMA Engine support (DMADEVICES) [Y/n/?] y",
            "   CC      three/spaces.o",
            " CC      one/space.o",
            "  C       one/letter.o",
            "  Cc      mixed/case.o",
            "  NOTE: something",
            "  2045 |         foo = 1;",
            "       |         ^~~",
            "  CC      two words",
            "",
            "  ",
            "\tCC      tab.o",
        ] {
            assert_eq!(classify(line), BuildLine::Other, "{line:?}");
        }
    }

    const COMPILE_ERROR: &str = "\
  CC      drivers/nvme/host/pr.o
  CC      drivers/nvme/host/core.o
  CC      drivers/nvme/host/ioctl.o
drivers/nvme/host/core.c: In function 'nvme_update_disk_info':
drivers/nvme/host/core.c:2031:13: warning: unused variable 'bs' [-Wunused-variable]
 2031 |         u32 bs = 1U << ns->head->lba_shift;
      |             ^~
drivers/nvme/host/core.c: In function 'nvme_configure_atomic_write':
drivers/nvme/host/core.c:2045:17: error: 'foo' undeclared (first use in this function)
 2045 |                 foo = le16_to_cpu(id->nawupf);
      |                 ^~~
drivers/nvme/host/core.c:2045:17: note: each undeclared identifier is reported only once for each function it appears in
drivers/nvme/host/core.c:2050:9: error: implicit declaration of function 'bar' [-Wimplicit-function-declaration]
 2050 |         bar();
      |         ^~~
make[5]: *** [scripts/Makefile.build:243: drivers/nvme/host/core.o] Error 1
make[5]: *** Waiting for unfinished jobs....
  CC      drivers/nvme/host/sysfs.o
make[4]: *** [scripts/Makefile.build:480: drivers/nvme/host] Error 2
make[3]: *** [scripts/Makefile.build:480: drivers/nvme] Error 2
make[2]: *** [scripts/Makefile.build:480: drivers] Error 2
make[1]: *** [/work/linux/Makefile:1989: .] Error 2
make: *** [Makefile:251: __sub-make] Error 2
";

    #[test]
    fn a_compile_error() {
        let f = find_failure(COMPILE_ERROR);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.c"));
        assert_eq!(f.line, Some(2045));
        assert_eq!(
            f.message.as_deref(),
            Some("error: 'foo' undeclared (first use in this function)")
        );
        assert_eq!(f.target.as_deref(), Some("drivers/nvme/host/core.o"));
        assert_eq!(
            f.summary(),
            "drivers/nvme/host/core.c:2045: error: 'foo' undeclared (first use in this function)"
        );
    }

    #[test]
    fn a_missing_header_and_a_coloured_error() {
        let log = "\
  CC [M]  fs/xfs/xfs_file.o
In file included from fs/xfs/xfs_file.c:7:
fs/xfs/xfs_linux.h:26:10: fatal error: linux/atomic_write.h: No such file or directory
   26 | #include <linux/atomic_write.h>
      |          ^~~~~~~~~~~~~~~~~~~~~~
compilation terminated.
make[4]: *** [scripts/Makefile.build:243: fs/xfs/xfs_file.o] Error 1
";
        let f = find_failure(log);
        assert_eq!(
            f.summary(),
            "fs/xfs/xfs_linux.h:26: fatal error: linux/atomic_write.h: No such file or directory"
        );
        assert_eq!(f.target.as_deref(), Some("fs/xfs/xfs_file.o"));

        let log = "fs/x.c:\x1b[01m\x1b[K3:1:\x1b[m\x1b[K \x1b[01;31m\x1b[Kerror: \x1b[m\x1b[Kexpected ';'\n";
        let f = find_failure(log);
        assert_eq!(f.summary(), "fs/x.c:3: error: expected ';'");
    }

    #[test]
    fn an_error_without_a_column_and_werror() {
        let log = "\
fs/xfs/xfs_file.c: In function 'xfs_file_write_iter':
fs/xfs/xfs_file.c:812:6: error: unused variable 'ret' [-Werror=unused-variable]
cc1: all warnings being treated as errors
";
        let f = find_failure(log);
        assert_eq!(f.line, Some(812));
        assert!(f.message.unwrap().ends_with("[-Werror=unused-variable]"));
        let f = find_failure("arch/x86/kernel/head_64.S:12: error: bad register name `%rax3'\n");
        assert_eq!(f.file.as_deref(), Some("arch/x86/kernel/head_64.S"));
        assert_eq!(f.line, Some(12));
        assert_eq!(f.target, None);
    }

    #[test]
    fn warnings_alone_are_not_a_failure() {
        let log = "\
  CC      fs/xfs/xfs_file.o
fs/xfs/xfs_file.c: In function 'xfs_file_write_iter':
fs/xfs/xfs_file.c:812:6: warning: unused variable 'ret' [-Wunused-variable]
  812 |  int ret;
      |      ^~~
ld: warning: arch/x86/boot/compressed/vmlinux has a LOAD segment with RWX permissions
WARNING: modpost: vmlinux: section mismatch in reference: foo+0x0 (section: .text) -> bar (section: .init.text)
vmlinux.o: warning: objtool: foo+0x12: call to bar() leaves .noinstr.text section
Kernel: arch/x86/boot/bzImage is ready  (#1)
";
        let f = find_failure(log);
        assert_eq!(f, BuildFailure::default());
        assert_eq!(f.summary(), "see the log");
    }

    #[test]
    fn linker_errors() {
        // Newer binutils: the function on one line, the reference on the next.
        let log = "\
  LD      .tmp_vmlinux1
ld: vmlinux.o: in function `nvme_update_ns_info_block':
core.c:(.text+0x5a3b2): undefined reference to `blk_atomic_write_limits'
ld: core.c:(.text+0x5a3f0): undefined reference to `blk_atomic_write_limits'
make[2]: *** [scripts/Makefile.vmlinux:34: vmlinux] Error 1
make[1]: *** [/work/linux/Makefile:1242: vmlinux] Error 2
";
        let f = find_failure(log);
        assert_eq!(f.file.as_deref(), Some("vmlinux.o"));
        assert_eq!(f.line, None);
        assert_eq!(
            f.message.as_deref(),
            Some("undefined reference to `blk_atomic_write_limits'")
        );
        assert_eq!(f.target.as_deref(), Some("vmlinux"));
        assert_eq!(
            f.summary(),
            "vmlinux.o: undefined reference to `blk_atomic_write_limits'"
        );

        // Everything on one line, cross prefix.
        let log = "x86_64-linux-gnu-ld: drivers/nvme/host/core.o: in function `nvme_x': core.c:(.text+0x12): undefined reference to `nvme_y'\n";
        let f = find_failure(log);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.o"));
        assert_eq!(
            f.message.as_deref(),
            Some("undefined reference to `nvme_y'")
        );

        // A data reference names the object directly.
        let f =
            find_failure("ld: fs/xfs/xfs_super.o:(.data+0x40): undefined reference to `xfs_ops'\n");
        assert_eq!(f.file.as_deref(), Some("fs/xfs/xfs_super.o"));

        // A host program linked through gcc.
        let log = "\
  HOSTLD  scripts/sign-file
/usr/bin/ld: scripts/sign-file.o: in function `main':
sign-file.c:(.text.startup+0x2c1): undefined reference to `OSSL_STORE_open'
collect2: error: ld returned 1 exit status
make[2]: *** [scripts/Makefile.host:116: scripts/sign-file] Error 1
";
        let f = find_failure(log);
        assert_eq!(
            f.summary(),
            "scripts/sign-file.o: undefined reference to `OSSL_STORE_open'"
        );
        assert_eq!(f.target.as_deref(), Some("scripts/sign-file"));

        // No object to be found.
        let f = find_failure("core.c:(.text+0x1): undefined reference to `z'\n");
        assert_eq!(f.file, None);
        assert_eq!(f.summary(), "undefined reference to `z'");
    }

    #[test]
    fn lld_modpost_objtool_and_tools() {
        let log = "\
ld.lld: error: undefined symbol: blk_atomic_write_limits
>>> referenced by core.c:2045 (drivers/nvme/host/core.c:2045)
>>>               drivers/nvme/host/core.o:(nvme_update_ns_info_block) in archive vmlinux.a
make[2]: *** [scripts/Makefile.vmlinux_o:61: vmlinux.o] Error 1
";
        let f = find_failure(log);
        assert_eq!(f.file.as_deref(), Some("drivers/nvme/host/core.o"));
        assert_eq!(
            f.message.as_deref(),
            Some("ld.lld: error: undefined symbol: blk_atomic_write_limits")
        );
        assert_eq!(f.target.as_deref(), Some("vmlinux.o"));

        let log = "\
  MODPOST Module.symvers
ERROR: modpost: \"iomap_dio_atomic\" [fs/xfs/xfs.ko] undefined!
make[2]: *** [scripts/Makefile.modpost:145: Module.symvers] Error 1
";
        let f = find_failure(log);
        assert_eq!(
            f.summary(),
            "fs/xfs/xfs.ko: modpost: \"iomap_dio_atomic\" [fs/xfs/xfs.ko] undefined!"
        );
        assert_eq!(f.target.as_deref(), Some("Module.symvers"));

        let f =
            find_failure("vmlinux.o: error: objtool: nvme_x+0x12: call without frame pointer\n");
        assert_eq!(f.file.as_deref(), Some("vmlinux.o"));
        assert_eq!(
            f.summary(),
            "vmlinux.o: error: objtool: nvme_x+0x12: call without frame pointer"
        );

        // The OOM killer took the compiler.
        let log = "\
  CC      drivers/gpu/drm/amd/amdgpu/amdgpu_drv.o
gcc: fatal error: Killed signal terminated program cc1
compilation terminated.
make[6]: *** [scripts/Makefile.build:243: drivers/gpu/drm/amd/amdgpu/amdgpu_drv.o] Error 1
";
        let f = find_failure(log);
        assert_eq!(
            f.summary(),
            "make target drivers/gpu/drm/amd/amdgpu/amdgpu_drv.o failed: gcc: fatal error: Killed signal terminated program cc1"
        );
    }

    #[test]
    fn make_alone() {
        let f = find_failure("make[2]: *** [drivers/nvme/host/core.o] Error 1\n");
        assert_eq!(f.target.as_deref(), Some("drivers/nvme/host/core.o"));
        assert_eq!(f.summary(), "make target drivers/nvme/host/core.o failed");

        let f = find_failure("make[3]: *** [scripts/Makefile.build:243: fs/x.o] Killed\n");
        assert_eq!(f.target.as_deref(), Some("fs/x.o"));

        let f = find_failure("make[1]: *** No rule to make target 'drivers/nvme/host/atomic.o', needed by 'drivers/nvme/host/built-in.a'.  Stop.\n");
        assert_eq!(
            f.summary(),
            "No rule to make target 'drivers/nvme/host/atomic.o', needed by 'drivers/nvme/host/built-in.a'."
        );

        let f = find_failure("drivers/nvme/host/Makefile:12: *** missing separator.  Stop.\n");
        assert_eq!(
            f.summary(),
            "drivers/nvme/host/Makefile:12: missing separator."
        );

        // The make line ignoring an error is not a failure.
        let f = find_failure("make: [Makefile:12: clean] Error 1 (ignored)\n");
        assert_eq!(f, BuildFailure::default());
        assert_eq!(find_failure("").summary(), "see the log");
    }

    #[test]
    fn summary_forms() {
        let f = BuildFailure {
            file: Some("a.c".into()),
            line: None,
            message: Some("error: x".into()),
            target: Some("a.o".into()),
        };
        assert_eq!(f.summary(), "a.c: error: x");
        let f = BuildFailure { message: None, ..f };
        assert_eq!(f.summary(), "make target a.o failed");
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\r\nb\r\n", 5), "a\nb");
        assert_eq!(tail("a\nb\n", 0), "");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("x\n  CC  10%\r  CC  50%\r  CC 100%\n", 1), "  CC 100%");
        assert_eq!(tail("a\n\nb\n", 2), "\nb");
    }

    proptest! {
        #[test]
        fn tail_is_the_end_of_the_log(lines in prop::collection::vec("[^\r\n]{0,8}", 0..20),
                                      n in 0usize..25, newline in any::<bool>()) {
            let mut log = lines.join("\n");
            let mut model = lines.clone();
            if newline && !lines.is_empty() {
                log.push('\n');
            } else if model.last().is_some_and(|l| l.is_empty()) {
                // An empty unterminated last line is no line.
                model.pop();
            }
            let t = tail(&log, n);
            prop_assert_eq!(&t, &model[model.len() - n.min(model.len())..].join("\n"));
            let body = log.strip_suffix('\n').unwrap_or(&log);
            prop_assert!(body.ends_with(&t));
        }

        #[test]
        fn steps_round_trip(kind in "[A-Z][A-Z0-9_]{1,15}", module in any::<bool>(),
                            target in "[a-z0-9_./-]{1,30}", pad in 1usize..9) {
            let kind = if module { format!("{kind} [M]") } else { kind };
            let line = format!("  {kind}{}{target}", " ".repeat(pad));
            prop_assert_eq!(classify(&line), step(&kind, &target));
        }
    }
}
