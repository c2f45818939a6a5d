//! Kernel splats in a console log, titled the way syzbot titles reports
//! ("KASAN: slab-out-of-bounds in __bitmap_clear", "WARNING in xfs_foo").

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    Panic,
    Kasan,
    Ubsan,
    Bug,
    Oops,
    Warning,
    Lockdep,
    HungTask,
    SoftLockup,
    RcuStall,
    XfsCorruption,
    XfsLogRecovery,
}

/// One splat found in a console log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    pub kind: SplatKind,
    /// syzbot-style one-line title.
    pub title: String,
    /// 1-based line of the console log where it starts.
    pub line: usize,
    /// The lines of the report (timestamps stripped), bounded.
    pub excerpt: String,
}

const EXCERPT_LINES: usize = 40;

struct Pattern {
    kind: SplatKind,
    re: Regex,
    /// Builds the title from the captures and the function the report is in.
    title: fn(&regex::Captures, Option<&str>) -> String,
}

fn in_func(prefix: &str, func: Option<&str>) -> String {
    match func {
        Some(f) => format!("{prefix} in {f}"),
        None => prefix.to_string(),
    }
}

fn patterns() -> &'static [Pattern] {
    static P: OnceLock<Vec<Pattern>> = OnceLock::new();
    P.get_or_init(|| {
        let p = |kind, re: &str, title| Pattern {
            kind,
            re: Regex::new(re).unwrap(),
            title,
        };
        vec![
            // Order matters: the first pattern that matches a line wins, and
            // a report's later lines (e.g. the panic that ends a KASAN report
            // with panic_on_warn) are folded into the first splat's excerpt.
            p(SplatKind::Kasan, r"BUG: KASAN: ([\w-]+) in ([\w.]+)", |c, _| {
                format!("KASAN: {} in {}", &c[1], &c[2])
            }),
            p(SplatKind::Ubsan, r"UBSAN: ([\w-]+(?: [\w-]+)*) in (\S+)", |c, _| {
                format!("UBSAN: {} in {}", &c[1], &c[2])
            }),
            p(
                SplatKind::Lockdep,
                r"WARNING: (possible circular locking dependency|possible recursive locking|inconsistent lock state|suspicious RCU usage)",
                |c, f| {
                    let what = match &c[1] {
                        "possible circular locking dependency" | "possible recursive locking" => {
                            "possible deadlock"
                        }
                        other => other,
                    };
                    in_func(what, f)
                },
            ),
            p(
                SplatKind::Warning,
                r"WARNING: CPU: \d+ PID: \d+ at \S+ ([\w.]+)\+0x",
                |c, _| format!("WARNING in {}", &c[1]),
            ),
            p(SplatKind::Bug, r"kernel BUG at ([^:\s]+):\d+!", |_, f| {
                in_func("kernel BUG", f)
            }),
            p(
                SplatKind::Oops,
                r"BUG: (kernel NULL pointer dereference|unable to handle page fault)",
                |c, f| {
                    let what = if c[1].starts_with("kernel NULL") {
                        "BUG: unable to handle kernel NULL pointer dereference"
                    } else {
                        "BUG: unable to handle kernel paging request"
                    };
                    in_func(what, f)
                },
            ),
            p(SplatKind::Oops, r"general protection fault", |_, f| {
                in_func("general protection fault", f)
            }),
            p(
                SplatKind::SoftLockup,
                r"watchdog: BUG: soft lockup - CPU#\d+ stuck",
                |_, f| in_func("BUG: soft lockup", f),
            ),
            p(
                SplatKind::HungTask,
                r"INFO: task (\S+):\d+ blocked for more than \d+ seconds",
                |_, f| in_func("INFO: task hung", f),
            ),
            p(SplatKind::RcuStall, r"rcu: INFO: \S+ (?:self-)?detected stall", |_, f| {
                in_func("INFO: rcu detected stall", f)
            }),
            p(
                SplatKind::XfsLogRecovery,
                r"XFS \(([^)]+)\): log mount/recovery failed: error (-?\d+)",
                |c, _| format!("XFS: log recovery failed on {} (error {})", &c[1], &c[2]),
            ),
            p(
                SplatKind::XfsCorruption,
                r"XFS \(([^)]+)\): (?:Metadata corruption detected|Corruption of in-memory data|Corruption detected|Internal error)[^\n]*? at ([\w.]+)",
                |c, _| format!("XFS: corruption in {}", &c[2]),
            ),
            p(
                SplatKind::XfsCorruption,
                r"XFS \(([^)]+)\): (?:Metadata corruption detected|Corruption detected|Corruption warning)",
                |c, _| format!("XFS: corruption on {}", &c[1]),
            ),
            p(SplatKind::Panic, r"Kernel panic - not syncing: (.*)", |c, _| {
                format!("kernel panic: {}", c[1].trim())
            }),
        ]
    })
}

fn strip_timestamp(line: &str) -> &str {
    static TS: OnceLock<Regex> = OnceLock::new();
    let ts = TS.get_or_init(|| Regex::new(r"^\[\s*\d+\.\d+\]\s?(?:\[\s*[CT]\d+\]\s?)?").unwrap());
    match ts.find(line) {
        Some(m) => &line[m.end()..],
        None => line,
    }
}

/// The function a report is about: the RIP line if there is one, else the
/// first frame of the call trace that is not a reporting helper.
fn report_function(lines: &[&str]) -> Option<String> {
    static RIP: OnceLock<Regex> = OnceLock::new();
    static FRAME: OnceLock<Regex> = OnceLock::new();
    let rip = RIP.get_or_init(|| Regex::new(r"RIP: \d+:([\w.]+)\+0x").unwrap());
    let frame = FRAME.get_or_init(|| Regex::new(r"^\s*(?:\? )?([\w.]+)\+0x[0-9a-f]+/0x").unwrap());
    for l in lines {
        if let Some(c) = rip.captures(l) {
            return Some(c[1].to_string());
        }
    }
    const HELPERS: &[&str] = &[
        "dump_stack",
        "dump_stack_lvl",
        "__schedule",
        "schedule",
        "schedule_timeout",
        "io_schedule",
        "panic",
        "__warn",
        "report_bug",
        "print_report",
        "kasan_report",
        "__lock_acquire",
        "lock_acquire",
        "validate_chain",
        "check_noncircular",
        "print_circular_bug",
    ];
    let mut in_trace = false;
    for l in lines {
        if l.contains("Call Trace:") {
            in_trace = true;
            continue;
        }
        if in_trace {
            if let Some(c) = frame.captures(l) {
                let f = &c[1];
                if !HELPERS.contains(&f) && !f.starts_with("__might") {
                    return Some(f.to_string());
                }
            }
        }
    }
    None
}

/// Finds the splats in a console log, in order. A report's continuation lines
/// are not reported again as separate splats.
pub fn scan(console: &str) -> Vec<Splat> {
    let lines: Vec<&str> = console.lines().map(strip_timestamp).collect();
    let mut out = Vec::new();
    let mut skip_until = 0usize;
    for (i, line) in lines.iter().enumerate() {
        if i < skip_until {
            continue;
        }
        for pat in patterns() {
            if let Some(caps) = pat.re.captures(line) {
                let end = report_end(&lines, i);
                let body = &lines[i..end];
                let func = report_function(body);
                out.push(Splat {
                    kind: pat.kind,
                    title: (pat.title)(&caps, func.as_deref()),
                    line: i + 1,
                    excerpt: body.join("\n"),
                });
                // A panic report ends the log; other reports end at their
                // end marker: skip their body so a "Kernel panic" that closes
                // an Oops is part of that Oops, not a second finding.
                skip_until = end;
                break;
            }
        }
    }
    out
}

/// Where a report starting at `start` ends: after its end-of-trace marker, or
/// after a bounded number of lines.
fn report_end(lines: &[&str], start: usize) -> usize {
    let limit = (start + EXCERPT_LINES).min(lines.len());
    for (j, l) in lines.iter().enumerate().take(limit).skip(start + 1) {
        if l.contains("---[ end trace") || l.contains("---[ end Kernel panic") {
            return j + 1;
        }
        if l.starts_with("==================================================================")
            && j > start + 1
        {
            return j + 1;
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real console from the lab's guest after `echo c > /proc/sysrq-trigger`
    /// (Debian 7.2.13 cloud kernel under QEMU 10 TCG).
    #[test]
    fn real_sysrq_panic_console() {
        let log = include_str!("../tests/fixtures/console-sysrq-panic.log");
        let s = scan(log);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].kind, SplatKind::Panic);
        assert_eq!(s[0].title, "kernel panic: sysrq triggered crash");
        assert_eq!(s[0].line, 10);
        assert!(s[0].excerpt.contains("sysrq_handle_crash"));
    }

    #[test]
    fn clean_boot_has_no_splat() {
        let log = "[    0.000000] Linux version 7.2.13\n[    1.2] XFS (nvme0n1): Mounting V5 Filesystem\n[    1.3] XFS (nvme0n1): Ending clean mount\n";
        assert!(scan(log).is_empty());
    }

    #[test]
    fn warning_title_uses_function() {
        let log = "\
[   12.1] ------------[ cut here ]------------
[   12.1] WARNING: CPU: 1 PID: 230 at fs/iomap/buffered-io.c:1234 iomap_writepage_map+0x3c1/0x4e0
[   12.1] Modules linked in: xfs
[   12.1] RIP: 0010:iomap_writepage_map+0x3c1/0x4e0
[   12.2] ---[ end trace 0000000000000000 ]---
[   12.3] something else
";
        let s = scan(log);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, SplatKind::Warning);
        assert_eq!(s[0].title, "WARNING in iomap_writepage_map");
        assert_eq!(s[0].line, 2);
        assert!(s[0]
            .excerpt
            .ends_with("---[ end trace 0000000000000000 ]---"));
    }

    #[test]
    fn kasan_title_like_syzbot() {
        let log = "\
==================================================================
BUG: KASAN: slab-out-of-bounds in __bitmap_clear+0x1f4/0x220
Write of size 8 at addr ffff888012345678 by task kworker/u8:3/123
Call Trace:
 <TASK>
 dump_stack_lvl+0x82/0xd0
 __bitmap_clear+0x1f4/0x220
 ifs_clear_range_atomic+0x90/0x120
==================================================================
";
        let s = scan(log);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].title, "KASAN: slab-out-of-bounds in __bitmap_clear");
    }

    #[test]
    fn null_deref_uses_rip() {
        let log = "\
BUG: kernel NULL pointer dereference, address: 0000000000000008
#PF: supervisor read access in kernel mode
Oops: Oops: 0000 [#1] SMP NOPTI
RIP: 0010:xfs_buf_ioend+0x12/0x200 [xfs]
Kernel panic - not syncing: Fatal exception
";
        let s = scan(log);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            s[0].title,
            "BUG: unable to handle kernel NULL pointer dereference in xfs_buf_ioend"
        );
    }

    #[test]
    fn hung_task_uses_first_real_frame() {
        let log = "\
INFO: task xfs_io:312 blocked for more than 120 seconds.
      Not tainted 7.2.13 #1
Call Trace:
 <TASK>
 __schedule+0x2a0/0x8f0
 schedule+0x27/0x80
 io_schedule+0x46/0x70
 folio_wait_bit_common+0x13e/0x340
 filemap_fdatawait_range+0x20/0x30
";
        let s = scan(log);
        assert_eq!(s[0].kind, SplatKind::HungTask);
        assert_eq!(s[0].title, "INFO: task hung in folio_wait_bit_common");
    }

    #[test]
    fn xfs_log_recovery_failure() {
        let log = "[ 3.1] XFS (nvme0n1): log mount/recovery failed: error -117\n";
        let s = scan(log);
        assert_eq!(s[0].kind, SplatKind::XfsLogRecovery);
        assert_eq!(
            s[0].title,
            "XFS: log recovery failed on nvme0n1 (error -117)"
        );
    }

    #[test]
    fn xfs_metadata_corruption() {
        let log = "XFS (nvme0n1): Metadata corruption detected at xfs_dinode_verify+0x1a/0x60 [xfs], inode 0x83 dinode\n";
        let s = scan(log);
        assert_eq!(s[0].title, "XFS: corruption in xfs_dinode_verify");
    }

    #[test]
    fn lockdep_is_possible_deadlock() {
        let log = "\
======================================================
WARNING: possible circular locking dependency detected
7.2.13 Not tainted
------------------------------------------------------
Call Trace:
 dump_stack_lvl+0x82/0xd0
 check_noncircular+0x10/0x20
 __lock_acquire+0x100/0x200
 lock_acquire+0x10/0x20
 xfs_ilock+0x10/0x90
";
        let s = scan(log);
        assert_eq!(s[0].kind, SplatKind::Lockdep);
        assert_eq!(s[0].title, "possible deadlock in xfs_ilock");
    }
}
