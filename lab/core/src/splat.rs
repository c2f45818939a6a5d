//! Kernel splats in a console log, titled the way syzbot titles reports
//! ("KASAN: slab-out-of-bounds in __bitmap_clear", "WARNING in xfs_foo").
//!
//! Every console pattern the lab knows lives here: [`scan`] reads a whole
//! console text, [`ConsoleScan`] reads one as it arrives (a VM's console is
//! polled while it grows), and [`is_panic`] / [`Splat::is_fatal`] say
//! whether the kernel stopped. Both scanners are one state machine fed
//! line by line, so they cannot disagree; the golden corpus in
//! `tests/splats/` checks titles of real and kernel-format consoles.

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
    /// `irq N: nobody cared ... Disabling IRQ #N`: the kernel turned off an
    /// interrupt line a device needs; its I/O then completes only through
    /// timeout polls (30 s each for NVMe), so the guest crawls.
    IrqDisabled,
}

impl SplatKind {
    /// Every kind, so a test can check each one is covered.
    pub const ALL: [SplatKind; 13] = [
        SplatKind::Panic,
        SplatKind::Kasan,
        SplatKind::Ubsan,
        SplatKind::Bug,
        SplatKind::Oops,
        SplatKind::Warning,
        SplatKind::Lockdep,
        SplatKind::HungTask,
        SplatKind::SoftLockup,
        SplatKind::RcuStall,
        SplatKind::XfsCorruption,
        SplatKind::XfsLogRecovery,
        SplatKind::IrqDisabled,
    ];
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

impl Splat {
    /// The guest is gone or will not get anywhere: a panic, or an interrupt
    /// line disabled (every I/O on it then waits for a timeout poll, a
    /// crawl no check would notice). An Oops, BUG or KASAN report alone
    /// kills at most the task (unless panic_on_oops / panic_on_warn, and
    /// then the panic that follows is a splat of its own).
    pub fn is_fatal(&self) -> bool {
        matches!(self.kind, SplatKind::Panic | SplatKind::IrqDisabled)
    }
}

/// Whether a console line is the kernel's panic message (`Kernel panic -
/// not syncing: ...`), timestamp or not. The end marker that closes a panic
/// report (`---[ end Kernel panic - not syncing: ... ]---`) is not: it comes
/// after the panic line, never alone.
pub fn is_panic(line: &str) -> bool {
    line.contains("Kernel panic - not syncing") && !is_end_marker(line)
}

/// The most lines a report keeps (and reads for its title) when it has no
/// end marker; also what [`ConsoleScan`] holds at most.
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

/// A function name without the suffixes the compiler adds to clones
/// (`.part.0`, `.isra.0`, `.constprop.0`, `.cold`, ...): syzbot strips them
/// too, so one bug keeps one title whatever the compiler did.
fn clean_func(f: &str) -> &str {
    static SUFFIX: OnceLock<Regex> = OnceLock::new();
    let re = SUFFIX.get_or_init(|| {
        Regex::new(r"(?:\.(?:cold|part|isra|constprop|llvm|lto_priv)(?:\.\d+)?)+$").unwrap()
    });
    match re.find(f) {
        Some(m) if m.start() > 0 => &f[..m.start()],
        _ => f,
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
            // a report's later lines (up to its end marker) belong to it, so
            // the Oops line inside a "kernel BUG at" report is not a second
            // splat. A panic line always starts a splat of its own.
            p(SplatKind::Kasan, r"BUG: KASAN: ([\w-]+) in ([\w.]+)", |c, _| {
                format!("KASAN: {} in {}", &c[1], clean_func(&c[2]))
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
            // Two spellings: `WARNING: CPU: 1 PID: 230 at FILE:LINE func+0x..`
            // before Linux 6.19, `WARNING: FILE:LINE at func+0x.., CPU#1:
            // comm/pid` since (and `WARNING: at func+0x..` without a file).
            p(
                SplatKind::Warning,
                r"WARNING: (?:CPU: \d+ PID: \d+ at (?:\S+ )?|(?:\S+ )?at )([\w.]+)\+0x",
                |c, _| format!("WARNING in {}", clean_func(&c[1])),
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
            // Any other trap that dies (`Oops: int3: 0000 [#1] SMP PTI`,
            // `Oops: invalid opcode: 0000 [#1]`), titled as syzbot titles
            // "invalid opcode in f"; after a "BUG:" or "kernel BUG" line the
            // Oops line is part of that report and never gets here.
            p(
                SplatKind::Oops,
                r"Oops: (?:Oops: )?([\w ]+?): [0-9a-f]{4} \[#\d+\]",
                |c, f| {
                    let what = if &c[1] == "Oops" { "Oops" } else { &c[1] };
                    in_func(what, f)
                },
            ),
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
            // `Internal error XFS_IS_CORRUPT at line 1234 of file ... Caller
            // f+0x..`: the function is the caller, not the word after "at".
            p(
                SplatKind::XfsCorruption,
                r"XFS \(([^)]+)\): Internal error .*\bCaller ([\w.]+)",
                |c, _| format!("XFS: corruption in {}", clean_func(&c[2])),
            ),
            p(
                SplatKind::XfsCorruption,
                r"XFS \(([^)]+)\): (?:Metadata corruption detected|Metadata CRC error detected|Corruption of in-memory data|Corruption detected)[^\n]*? at ([\w.]+)\+0x",
                |c, _| format!("XFS: corruption in {}", clean_func(&c[2])),
            ),
            p(
                SplatKind::XfsCorruption,
                r"XFS \(([^)]+)\): (?:Metadata corruption detected|Metadata CRC error detected|Corruption detected|Corruption warning)",
                |c, _| format!("XFS: corruption on {}", &c[1]),
            ),
            // The handlers that did not claim the interrupt are listed after
            // the call trace; the title names the first (nvme_irq).
            p(SplatKind::IrqDisabled, r"irq (\d+): nobody cared", |c, f| {
                in_func(&format!("irq {}: nobody cared", &c[1]), f)
            }),
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

/// `---[ end trace ... ]---` and `---[ end Kernel panic ... ]---`: the last
/// line of an Oops, WARNING, UBSAN or panic report.
fn is_end_marker(line: &str) -> bool {
    line.contains("---[ end trace") || line.contains("---[ end Kernel panic")
}

/// The pattern a line starts a report with, if any. An end marker never
/// starts one (it closes a report that ran past [`EXCERPT_LINES`]).
/// A panic line is always a panic, whatever else it mentions, so that
/// [`ConsoleScan::saw_panic`] and [`Splat::is_fatal`] agree.
fn report_start(line: &str) -> Option<usize> {
    if is_end_marker(line) {
        return None;
    }
    let pats = patterns();
    if is_panic(line) {
        return pats.iter().position(|p| p.kind == SplatKind::Panic);
    }
    pats.iter().position(|p| p.re.is_match(line))
}

/// The function a report is about: lockdep's "at:" of the lock being
/// taken, else the RIP line if there is one, else the first frame of the
/// call trace that is neither a reporting helper nor a `? ` guess.
fn report_function(kind: SplatKind, lines: &[String]) -> Option<String> {
    static RIP: OnceLock<Regex> = OnceLock::new();
    static FRAME: OnceLock<Regex> = OnceLock::new();
    static AT: OnceLock<Regex> = OnceLock::new();
    let rip = RIP.get_or_init(|| Regex::new(r"RIP: \d+:([\w.]+)\+0x").unwrap());
    let frame = FRAME.get_or_init(|| Regex::new(r"^\s*([\w.]+)\+0x[0-9a-f]+/0x").unwrap());
    let at = AT.get_or_init(|| Regex::new(r", at: ([\w.]+)\+0x").unwrap());
    if kind == SplatKind::IrqDisabled {
        // "handlers:" then "[<00000000c2d8f6a1>] nvme_irq".
        static HANDLER: OnceLock<Regex> = OnceLock::new();
        let handler = HANDLER.get_or_init(|| Regex::new(r"^\[<[0-9a-f]+>\] ([\w.]+)").unwrap());
        let i = lines.iter().position(|l| l.trim() == "handlers:")?;
        return lines[i + 1..]
            .iter()
            .find_map(|l| handler.captures(l.trim()))
            .map(|c| clean_func(&c[1]).to_string());
    }
    if kind == SplatKind::Lockdep {
        // "is trying to acquire lock:" then the lock, ", at: f+0x..": the
        // call trace is often past the excerpt, and syzbot names this f.
        if let Some(i) = lines
            .iter()
            .position(|l| l.contains("is trying to acquire lock"))
        {
            if let Some(c) = lines[i + 1..].iter().take(2).find_map(|l| at.captures(l)) {
                return Some(clean_func(&c[1]).to_string());
            }
        }
    }
    for l in lines {
        if let Some(c) = rip.captures(l) {
            return Some(clean_func(&c[1]).to_string());
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
        "vpanic",
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
            // A frame the unwinder only guessed (`? f+0x..`) is stale stack
            // contents, not the path that got here.
            if let Some(c) = frame.captures(l) {
                let f = clean_func(&c[1]);
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
    let mut s = ConsoleScan::new();
    let mut out = s.feed(console.as_bytes());
    out.extend(s.finish());
    out
}

/// A report whose end has not been read yet.
#[derive(Debug, Clone)]
struct OpenReport {
    /// Index into [`patterns`] of the pattern its first line matched.
    pattern: usize,
    /// 1-based console line of its first line.
    line: usize,
    /// Its lines so far (timestamps stripped), at most [`EXCERPT_LINES`].
    body: Vec<String>,
}

impl OpenReport {
    fn splat(&self) -> Splat {
        let pat = &patterns()[self.pattern];
        let caps = pat
            .re
            .captures(&self.body[0])
            .expect("the first line matched this pattern");
        let func = report_function(pat.kind, &self.body);
        Splat {
            kind: pat.kind,
            title: (pat.title)(&caps, func.as_deref()),
            line: self.line,
            excerpt: self.body.join("\n"),
        }
    }
}

/// A console read as it arrives: feed it each new piece of output (cut
/// anywhere, even inside a line or a UTF-8 sequence) and it returns the
/// splats whose reports ended in it, with their console line numbers.
///
/// It holds only the unfinished last line and the report being read (at
/// most [`EXCERPT_LINES`] lines), so a VM poll reads just the new bytes.
/// Fed a text in any chunks and then [`finish`](Self::finish)ed, it finds
/// exactly what [`scan`] finds in the whole text (`scan` is this, fed once).
///
/// A report ends at its end marker, after [`EXCERPT_LINES`] lines, before a
/// panic line (a panic is always a splat of its own, so [`Splat::is_fatal`]
/// sees it), or at `finish`. Until then [`pending`](Self::pending) shows it
/// as read so far, and [`saw_panic`](Self::saw_panic) says at once that a
/// panic line went by.
#[derive(Debug, Clone, Default)]
pub struct ConsoleScan {
    /// Bytes after the last newline: the start of a line not yet ended.
    partial: Vec<u8>,
    /// Complete lines read so far.
    lines: usize,
    open: Option<OpenReport>,
    panicked: bool,
    /// An interrupt line was disabled (see [`SplatKind::IrqDisabled`]).
    irq_disabled: bool,
}

impl ConsoleScan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads more console output; returns the splats completed by it.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Splat> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            let line = if self.partial.is_empty() {
                decode_line(head, true)
            } else {
                self.partial.extend_from_slice(head);
                let l = decode_line(&self.partial, true);
                self.partial.clear();
                l
            };
            self.line(&line, &mut out);
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// The end of the console: an unfinished last line counts as a line
    /// and the report being read ends. Returns the splats that completes.
    pub fn finish(mut self) -> Vec<Splat> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = decode_line(&std::mem::take(&mut self.partial), false);
            self.line(&line, &mut out);
        }
        if let Some(r) = self.open.take() {
            out.push(r.splat());
        }
        out
    }

    /// The report being read, titled from its lines so far (a later line
    /// can still change its title or excerpt).
    pub fn pending(&self) -> Option<Splat> {
        self.open.as_ref().map(OpenReport::splat)
    }

    /// Whether a panic line has been read: the kernel stopped, whether or
    /// not its report has ended yet.
    pub fn saw_panic(&self) -> bool {
        self.panicked
    }

    /// Whether a line has been read that makes a splat [`Splat::is_fatal`]:
    /// a panic, or an interrupt line disabled. Said at once, before the
    /// report ends, so a command can stop waiting on a guest that will not
    /// get anywhere.
    pub fn saw_fatal(&self) -> bool {
        self.panicked || self.irq_disabled
    }

    /// Complete console lines read so far (the next line's number is one
    /// more).
    pub fn lines(&self) -> usize {
        self.lines
    }

    fn line(&mut self, raw: &str, out: &mut Vec<Splat>) {
        self.lines += 1;
        let line = strip_timestamp(raw);
        let panic = is_panic(line);
        self.panicked |= panic;
        self.irq_disabled |= line.contains(": nobody cared");
        if let Some(r) = &mut self.open {
            if panic {
                // The panic is a splat of its own: the report ends before it.
                out.push(r.splat());
                self.open = None;
            } else {
                let k = r.body.len();
                r.body.push(line.to_string());
                // The separator that opens a KASAN report closes it too, so
                // only one past the report's first lines counts.
                let closes = is_end_marker(line)
                    || (k >= 2 && line.starts_with(KASAN_RULE))
                    || r.body.len() == EXCERPT_LINES;
                if closes {
                    out.push(r.splat());
                    self.open = None;
                }
                return;
            }
        }
        if let Some(pattern) = report_start(line) {
            self.open = Some(OpenReport {
                pattern,
                line: self.lines,
                body: vec![line.to_string()],
            });
        }
    }
}

/// The line of `=` that opens and closes a KASAN report.
const KASAN_RULE: &str = "==================================================================";

/// One console line as text: invalid UTF-8 replaced as
/// `String::from_utf8_lossy` does on the whole console (a newline is never
/// part of a UTF-8 sequence, so line by line gives the same text), and the
/// `\r` of a `\r\n` ending dropped, as `str::lines` does.
fn decode_line(bytes: &[u8], ended: bool) -> String {
    let bytes = match (ended, bytes.last()) {
        (true, Some(b'\r')) => &bytes[..bytes.len() - 1],
        _ => bytes,
    };
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real console from the lab's guest after `echo c > /proc/sysrq-trigger`
    /// (Debian 7.2.13 cloud kernel under QEMU 10 TCG).
    #[test]
    fn real_sysrq_panic_console() {
        let log = include_str!("../tests/splats/panic-sysrq.log");
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
        // The panic that follows is its own splat: it is what says the
        // kernel stopped.
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            s[0].title,
            "BUG: unable to handle kernel NULL pointer dereference in xfs_buf_ioend"
        );
        assert!(!s[0].is_fatal());
        assert_eq!(s[1].title, "kernel panic: Fatal exception");
        assert!(s[1].is_fatal());
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

    #[test]
    fn warning_since_linux_6_19_spelling() {
        let log = "\
[   12.1] ------------[ cut here ]------------
[   12.1] WARNING: fs/iomap/direct-io.c:412 at iomap_dio_bio_iter.constprop.0+0x4a1/0x5a0, CPU#1: xfs_io/312
[   12.2] ---[ end trace 0000000000000000 ]---
[   12.3] WARNING: at xfs_trans_cancel+0x14e/0x180 [xfs], CPU#0: kworker/0:1/17
";
        let s = scan(log);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].title, "WARNING in iomap_dio_bio_iter");
        assert_eq!(s[1].title, "WARNING in xfs_trans_cancel");
        assert_eq!(s[1].line, 4);
    }

    #[test]
    fn compiler_suffixes_are_not_part_of_a_title() {
        assert_eq!(clean_func("xfs_dinode_verify.part.0"), "xfs_dinode_verify");
        assert_eq!(clean_func("__handle_sysrq.cold"), "__handle_sysrq");
        assert_eq!(clean_func("f.isra.0.cold"), "f");
        assert_eq!(clean_func("plain"), "plain");
        assert_eq!(clean_func(".cold"), ".cold", "never an empty name");
    }

    #[test]
    fn xfs_internal_error_names_the_caller() {
        let log = "XFS (nvme0n1): Internal error XFS_IS_CORRUPT(mp, !xfs_verify_agbno(pag, bno)) at line 2213 of file fs/xfs/libxfs/xfs_alloc.c.  Caller xfs_free_ag_extent+0x3b3/0x8e0 [xfs]\n";
        let s = scan(log);
        assert_eq!(s[0].kind, SplatKind::XfsCorruption);
        assert_eq!(s[0].title, "XFS: corruption in xfs_free_ag_extent");
    }

    #[test]
    fn panic_lines_and_their_end_marker() {
        assert!(is_panic(
            "[    9.4] Kernel panic - not syncing: sysrq triggered crash"
        ));
        assert!(!is_panic(
            "[    9.5] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---"
        ));
        assert!(!is_panic(
            "[    0.0] ..MP-BIOS bug: 8254 timer not connected to IO-APIC"
        ));
    }

    /// The scanner says a report ended as soon as its end marker arrives,
    /// and a panic at once, before its report is complete.
    #[test]
    fn incremental_scan_reports_as_the_console_grows() {
        let mut s = ConsoleScan::new();
        assert!(s.feed(b"boot\r\n------------[ cut here ]------------\r\nWARNING: CPU: 1 PID: 2 at fs/a.c:1 f_warn+0x1/0x2\r\nRIP: 0010:f_w").is_empty());
        assert_eq!(s.lines(), 3);
        assert_eq!(s.pending().unwrap().title, "WARNING in f_warn");
        let done = s.feed(b"arn+0x1/0x2\r\n---[ end trace 0000000000000000 ]---\r\n");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].line, 3);
        assert!(s.pending().is_none());
        assert!(!s.saw_panic());
        assert!(s
            .feed(b"[    9.4] Kernel panic - not syncing: Fatal exception\r\n")
            .is_empty());
        assert!(s.saw_panic());
        assert!(s.pending().unwrap().is_fatal());
        let rest = s.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].title, "kernel panic: Fatal exception");
        assert_eq!(rest[0].line, 6);
    }

    /// A disabled interrupt line is fatal as soon as it is read: the guest
    /// keeps running, but its I/O now crawls through timeout polls.
    #[test]
    fn a_disabled_irq_line_is_fatal_at_once() {
        let mut s = ConsoleScan::new();
        s.feed(b"[   1.0] XFS (nvme0n1): Ending clean mount\n");
        assert!(!s.saw_fatal());
        s.feed(b"[  52.8] irq 11: nobody cared (try booting with the \"irqpoll\" option)\n");
        assert!(s.saw_fatal() && !s.saw_panic());
        let p = s.pending().unwrap();
        assert!(p.is_fatal());
        assert_eq!(p.kind, SplatKind::IrqDisabled);
        s.feed(b"[  52.9] handlers:\n[  52.9] [<00000000c2d8f6a1>] nvme_irq\n");
        assert_eq!(
            s.pending().unwrap().title,
            "irq 11: nobody cared in nvme_irq"
        );
    }

    /// Lines that start, continue and end reports, and noise.
    fn console() -> impl Strategy<Value = Vec<u8>> {
        const LINES: &[&str] = &[
            "BUG: KASAN: slab-out-of-bounds in f_kasan+0x1/0x2",
            "==================================================================",
            "------------[ cut here ]------------",
            "WARNING: fs/a.c:1 at f_warn+0x1/0x2, CPU#0: t/1",
            "WARNING: possible circular locking dependency detected",
            "xfs_io/1 is trying to acquire lock:",
            "ffff8880 (&l){+.+.}-{3:3}, at: f_lock+0x1/0x2",
            "---[ end trace 0000000000000000 ]---",
            "Kernel panic - not syncing: Fatal exception",
            "---[ end Kernel panic - not syncing: Fatal exception ]---",
            "Oops: int3: 0000 [#1] SMP PTI",
            "INFO: task a:1 blocked for more than 120 seconds.",
            "XFS (nvme0n1): Metadata corruption detected at f_xfs+0x1/0x2 [xfs], inode 0x83",
            "RIP: 0010:f_rip+0x1/0x2",
            "Call Trace:",
            " f_frame.part.0+0x1/0x2",
            " ? f_guess+0x1/0x2",
            "",
        ];
        let known = proptest::sample::select(LINES).prop_map(|l| l.as_bytes().to_vec());
        // Arbitrary bytes: invalid UTF-8, stray \r, and newlines of their own.
        let noise = proptest::collection::vec(any::<u8>(), 0..10);
        let line = (
            prop_oneof![3 => known, 1 => noise],
            proptest::sample::select(&["", "[   12.345678] ", "[    1.000000][    T1] "][..]),
            proptest::sample::select(&["\n", "\r\n"][..]),
        )
            .prop_map(|(text, ts, nl)| [ts.as_bytes(), &text, nl.as_bytes()].concat());
        (proptest::collection::vec(line, 0..120), any::<bool>()).prop_map(|(lines, ended)| {
            let mut v = lines.concat();
            if !ended && v.last() == Some(&b'\n') {
                v.pop();
            }
            v
        })
    }

    proptest! {
        /// Fed in any chunks, the scanner finds what a scan of the whole
        /// (lossily decoded) console finds: same splats, lines, excerpts.
        #[test]
        fn chunked_feeding_finds_what_a_whole_scan_finds(
            text in console(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let whole = scan(&String::from_utf8_lossy(&text));
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            at.sort_unstable();
            let mut s = ConsoleScan::new();
            let mut found = Vec::new();
            let mut from = 0;
            for to in at.into_iter().chain([text.len()]) {
                found.extend(s.feed(&text[from..to]));
                from = to;
            }
            found.extend(s.finish());
            prop_assert_eq!(found, whole);
        }
    }
}
