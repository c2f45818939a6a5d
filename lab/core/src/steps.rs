//! Explicit workload steps: what the guest agent does, one operation at a
//! time, and what each operation is expected to return. The host sends a
//! `Plan` (JSON) to `lab-guest run`; the agent answers one `StepResult` per
//! step (JSON lines).

use serde::{Deserialize, Serialize};

use crate::folio::FolioCensus;

/// What a step is expected to return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Success (the full length for writes).
    #[default]
    Ok,
    /// Success, or EOPNOTSUPP which makes the testcase "skipped" with the
    /// reason: for features a kernel may lack (buffered RWF_ATOMIC).
    SupportedOrSkip,
    /// Any failure (nothing written), or EOPNOTSUPP which skips: for a
    /// write that cannot complete (its buffer faults) on a kernel that may
    /// not support the operation at all.
    RefusedOrSkip,
    /// Failure with this errno name (EINVAL, EOPNOTSUPP, ...).
    #[serde(untagged)]
    Errno(String),
}

/// Known errno names (Linux x86_64), for validation and for the agent.
pub const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EIO", 5),
    ("EBADF", 9),
    ("EAGAIN", 11),
    ("ENOMEM", 12),
    ("EFAULT", 14),
    ("EBUSY", 16),
    ("EEXIST", 17),
    ("EINVAL", 22),
    ("EFBIG", 27),
    ("ENOSPC", 28),
    ("ESPIPE", 29),
    ("EROFS", 30),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
];

pub fn errno_name(e: i32) -> String {
    ERRNOS
        .iter()
        .find(|(_, n)| *n == e)
        .map_or_else(|| format!("errno {e}"), |(s, _)| s.to_string())
}

/// Where the user buffer of a write sits in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BufferPlacement {
    /// Page aligned (what O_DIRECT wants).
    #[default]
    Aligned,
    /// Starts `len/2` bytes before a page boundary: the buffer spans two
    /// pages (the short-copy hazard of buffered atomic writes).
    PageCrossing,
    /// Off by 1 byte from any alignment (O_DIRECT must refuse it).
    Misaligned,
    /// Crosses a page boundary like `page_crossing`, and the page after the
    /// boundary is made inaccessible (PROT_NONE) just before the call: the
    /// copy or pin faults midway. An atomic write must then fail whole.
    PageFault,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// One operation. Files are named relative to the filesystem under test
/// (mounted at /mnt) or as an absolute path (`/dev/nvme0n1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Open(Open),
    Pwrite(Pwrite),
    /// Stores into a shared mapping of the file (not a syscall write),
    /// then msync(MS_SYNC) of the mapped pages: see `MmapWrite`.
    MmapWrite(MmapWrite),
    Fsync(FileOnly),
    Fdatasync(FileOnly),
    Ftruncate(Ftruncate),
    Fallocate(Range),
    /// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the range
    /// reads back as zeroes, the size stays.
    PunchHole(Range),
    /// fallocate(FALLOC_FL_ZERO_RANGE): the range reads back as zeroes; the
    /// file grows to its end if it was shorter.
    ZeroRange(Range),
    SyncFileRange(Range),
    /// sync(2): every dirty inode of every filesystem written back and the
    /// logs forced; a durability point for every file.
    Sync(Global),
    /// Writes `value` to /proc/sys/vm/...: only `vm.*` sysctls (the knobs
    /// of writeback and reclaim, which a reused VM's clean slate restores).
    Sysctl(Sysctl),
    /// Waits, so background writeback (a short `vm.dirty_expire_centisecs`)
    /// has time to run. Promises nothing about what it writes.
    Sleep(Sleep),
    /// Touches `mb` MiB of anonymous memory (at most what the guest has
    /// available less a margin), then frees it: reclaim pushes clean page
    /// cache out and dirty page cache to writeback.
    MemoryPressure(MemoryPressure),
    /// Read the file back and compare every sector written by this plan
    /// with what the agent wrote there last.
    Verify(FileOnly),
    /// Make `file` share all of `from`'s extents (FICLONE, a reflink copy):
    /// later writes to either go through copy-on-write.
    Clone(CloneFrom),
    Close(FileOnly),
    /// A named point in the workload. The agent reports it to the lab
    /// before going on (and waits for the lab under a power cut), so the
    /// crash disk knows exactly where it fell in the write sequence.
    Mark(MarkStep),
    /// Count the page-cache folios behind a range of the file (read-only:
    /// nothing is read in that is not cached already). Passes when a folio
    /// of several pages is there; `expect: supported_or_skip` skips the
    /// testcase instead on a kernel whose page cache uses none.
    Folios(Folios),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folios {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Page aligned.
    #[serde(default)]
    pub offset: u64,
    /// Page aligned; default: to the end of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    #[serde(default)]
    pub expect: Expect,
}

/// A step with no argument but its expectation (`sync: {}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Global {
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    /// `vm.dirty_expire_centisecs`: dotted, under `vm.`.
    pub name: String,
    /// What is written to the file (YAML numbers are taken as written).
    #[serde(deserialize_with = "string_or_number")]
    pub value: String,
    #[serde(default)]
    pub expect: Expect,
}

impl Sysctl {
    /// The file under /proc/sys the sysctl lives in.
    pub fn path(&self) -> String {
        format!("/proc/sys/{}", self.name.replace('.', "/"))
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        U(u64),
        I(i64),
    }
    Ok(match V::deserialize(d)? {
        V::S(s) => s,
        V::U(n) => n.to_string(),
        V::I(n) => n.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    pub ms: u64,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPressure {
    pub mb: u64,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkStep {
    pub name: String,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open {
    pub file: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub direct: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dsync: bool,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pwrite {
    /// Defaults to the file opened last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub offset: u64,
    pub len: u64,
    /// RWF_ATOMIC.
    #[serde(default, skip_serializing_if = "is_false")]
    pub atomic: bool,
    /// RWF_DSYNC.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dsync: bool,
    /// RWF_SYNC.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync: bool,
    /// Number of iovecs the buffer is split into (atomic writes take one).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub iovecs: u32,
    #[serde(default)]
    pub buffer: BufferPlacement,
    #[serde(default)]
    pub expect: Expect,
}

/// `mmap_write`: the agent maps the pages holding `[offset, offset+len)`
/// MAP_SHARED, stores the bytes a `pwrite` of that range would write (the
/// same stamps, so `verify` and the model know them), msyncs the mapped
/// pages with MS_SYNC when `msync` is true, and unmaps. The file must
/// already be at least `offset + len` long: a store past its end faults.
/// Not atomic: a power cut may leave the stores torn at any granularity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmapWrite {
    /// Defaults to the file opened last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub offset: u64,
    pub len: u64,
    /// msync(MS_SYNC) of the mapped pages after the stores.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub msync: bool,
    #[serde(default)]
    pub expect: Expect,
}

impl MmapWrite {
    /// The bytes the mapping covers and msync(MS_SYNC) writes back: the
    /// range rounded out to whole pages (mmap maps from a page-aligned
    /// offset; msync rounds its length up to pages).
    pub fn pages(&self) -> (u64, u64) {
        let page = crate::folio::PAGE;
        (
            self.offset / page * page,
            (self.offset + self.len).div_ceil(page) * page,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileOnly {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ftruncate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub len: u64,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneFrom {
    /// The destination (default: the file opened last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The source; opened for the clone if it is not open.
    pub from: String,
    #[serde(default)]
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub offset: u64,
    pub len: u64,
    #[serde(default)]
    pub expect: Expect,
}

impl Pwrite {
    /// A write of `len` bytes at `offset` to the file opened last, from an
    /// aligned buffer in one iovec, expected to succeed.
    pub fn new(offset: u64, len: u64, atomic: bool) -> Pwrite {
        Pwrite {
            file: None,
            offset,
            len,
            atomic,
            dsync: false,
            sync: false,
            iovecs: 1,
            buffer: BufferPlacement::Aligned,
            expect: Expect::Ok,
        }
    }
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Open(_) => "open",
            Step::Pwrite(_) => "pwrite",
            Step::MmapWrite(_) => "mmap_write",
            Step::Fsync(_) => "fsync",
            Step::Fdatasync(_) => "fdatasync",
            Step::Ftruncate(_) => "ftruncate",
            Step::Fallocate(_) => "fallocate",
            Step::PunchHole(_) => "punch_hole",
            Step::ZeroRange(_) => "zero_range",
            Step::SyncFileRange(_) => "sync_file_range",
            Step::Sync(_) => "sync",
            Step::Sysctl(_) => "sysctl",
            Step::Sleep(_) => "sleep",
            Step::MemoryPressure(_) => "memory_pressure",
            Step::Verify(_) => "verify",
            Step::Clone(_) => "clone",
            Step::Close(_) => "close",
            Step::Mark(_) => "mark",
            Step::Folios(_) => "folios",
        }
    }

    /// The byte offset the step works at, for the steps that have one
    /// (what a `repeat`'s `offset_step` moves).
    pub fn offset(&self) -> Option<u64> {
        self.clone().offset_mut().map(|o| *o)
    }

    pub fn offset_mut(&mut self) -> Option<&mut u64> {
        match self {
            Step::Pwrite(Pwrite { offset, .. })
            | Step::MmapWrite(MmapWrite { offset, .. })
            | Step::Fallocate(Range { offset, .. })
            | Step::PunchHole(Range { offset, .. })
            | Step::ZeroRange(Range { offset, .. })
            | Step::SyncFileRange(Range { offset, .. })
            | Step::Folios(Folios { offset, .. }) => Some(offset),
            Step::Open(_)
            | Step::Fsync(_)
            | Step::Fdatasync(_)
            | Step::Ftruncate(_)
            | Step::Verify(_)
            | Step::Clone(_)
            | Step::Close(_)
            | Step::Sync(_)
            | Step::Sysctl(_)
            | Step::Sleep(_)
            | Step::MemoryPressure(_)
            | Step::Mark(_) => None,
        }
    }

    pub fn expect(&self) -> &Expect {
        match self {
            Step::Open(o) => &o.expect,
            Step::Pwrite(p) => &p.expect,
            Step::MmapWrite(m) => &m.expect,
            Step::Fsync(f) | Step::Fdatasync(f) | Step::Verify(f) | Step::Close(f) => &f.expect,
            Step::Ftruncate(t) => &t.expect,
            Step::Clone(c) => &c.expect,
            Step::Fallocate(r)
            | Step::PunchHole(r)
            | Step::ZeroRange(r)
            | Step::SyncFileRange(r) => &r.expect,
            Step::Sync(g) => &g.expect,
            Step::Sysctl(s) => &s.expect,
            Step::Sleep(s) => &s.expect,
            Step::MemoryPressure(m) => &m.expect,
            Step::Mark(m) => &m.expect,
            Step::Folios(f) => &f.expect,
        }
    }

    /// A short description for reports: `pwrite(off=4096 len=4096 atomic)`.
    pub fn describe(&self) -> String {
        match self {
            Step::Open(o) => {
                let mut flags = vec![];
                if o.direct {
                    flags.push("O_DIRECT");
                }
                if o.sync {
                    flags.push("O_SYNC");
                }
                if o.dsync {
                    flags.push("O_DSYNC");
                }
                format!("open({} {})", o.file, flags.join("|"))
            }
            Step::Pwrite(p) => {
                let mut f = vec![];
                if p.atomic {
                    f.push("RWF_ATOMIC".to_string());
                }
                if p.dsync {
                    f.push("RWF_DSYNC".into());
                }
                if p.sync {
                    f.push("RWF_SYNC".into());
                }
                if p.iovecs != 1 {
                    f.push(format!("iovecs={}", p.iovecs));
                }
                match p.buffer {
                    BufferPlacement::Aligned => {}
                    BufferPlacement::PageCrossing => f.push("buffer=page_crossing".into()),
                    BufferPlacement::Misaligned => f.push("buffer=misaligned".into()),
                    BufferPlacement::PageFault => f.push("buffer=page_fault".into()),
                }
                format!("pwritev2(off={} len={} {})", p.offset, p.len, f.join(" "))
            }
            Step::MmapWrite(m) => format!(
                "mmap_write(off={} len={} {})",
                m.offset,
                m.len,
                if m.msync { "msync=MS_SYNC" } else { "no msync" }
            ),
            Step::Ftruncate(t) => format!("ftruncate({})", t.len),
            Step::Clone(c) => format!("ioctl(FICLONE from {})", c.from),
            Step::Fallocate(r) => format!("fallocate(off={} len={})", r.offset, r.len),
            Step::PunchHole(r) => format!(
                "fallocate(PUNCH_HOLE|KEEP_SIZE off={} len={})",
                r.offset, r.len
            ),
            Step::ZeroRange(r) => format!("fallocate(ZERO_RANGE off={} len={})", r.offset, r.len),
            Step::SyncFileRange(r) => format!("sync_file_range(off={} len={})", r.offset, r.len),
            Step::Sysctl(s) => format!("sysctl({}={})", s.name, s.value),
            Step::Sleep(s) => format!("sleep({} ms)", s.ms),
            Step::MemoryPressure(m) => format!("memory_pressure({} MiB)", m.mb),
            Step::Mark(m) => format!("mark({})", m.name),
            Step::Folios(f) => match f.len {
                Some(len) => format!("folios(off={} len={len})", f.offset),
                None => format!("folios(off={})", f.offset),
            },
            other => format!("{}()", other.name()),
        }
    }
}

/// What the host sends the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Stamps carry it, so data from another run is never mistaken.
    pub run: u64,
    /// Directory relative file names resolve against.
    pub root: String,
    pub steps: Vec<Step>,
}

/// What the agent reports for one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    pub op: String,
    /// Return value on success (bytes for writes).
    pub ret: Option<i64>,
    /// errno name on failure.
    pub errno: Option<String>,
    /// Extra facts (a short write, verify mismatches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// A `folios` step's census of the page cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folios: Option<FolioCensus>,
}

/// The verdict on one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepVerdict {
    Pass,
    Fail(String),
    Skip(String),
}

/// Judges one step's result against its expectation.
pub fn judge(step: &Step, r: &StepResult) -> StepVerdict {
    let got = match (&r.errno, r.ret) {
        (Some(e), _) => e.to_string(),
        (None, Some(n)) => format!("success ({n})"),
        (None, None) => "no result".into(),
    };
    // A write that succeeds short is never a pass: an atomic write must be
    // all or nothing, and the lab's plans always expect the full length.
    let short = match (step, r.ret, &r.errno) {
        (Step::Pwrite(p), Some(n), None) => (n as u64) < p.len,
        (Step::MmapWrite(m), Some(n), None) => (n as u64) < m.len,
        _ => false,
    };
    // A short count from RWF_ATOMIC is the atomicity violation itself,
    // whatever the step expected: part of the write landed and the rest did
    // not. Said as such, not as a success with a note.
    if let (Step::Pwrite(p), Some(n), None, true) = (step, r.ret, &r.errno, short) {
        if p.atomic {
            return StepVerdict::Fail(format!(
                "{}: a short atomic write: {n} of {} bytes written (RWF_ATOMIC writes all or nothing)",
                step.describe(),
                p.len
            ));
        }
    }
    // A read-back that found something says what: the differing sectors,
    // or a failed write whose data is in the file anyway.
    if let (Step::Verify(_), None, false) = (step, &r.errno, r.detail.is_empty()) {
        return StepVerdict::Fail(format!("{}: {}", step.describe(), r.detail));
    }
    let ok = r.errno.is_none() && !short && r.detail.is_empty();
    if let (Step::Folios(_), true) = (step, ok) {
        return judge_folios(step, r.folios.as_ref());
    }
    match step.expect() {
        Expect::Ok | Expect::SupportedOrSkip if ok => StepVerdict::Pass,
        Expect::SupportedOrSkip if r.errno.as_deref() == Some("EOPNOTSUPP") => {
            StepVerdict::Skip(format!(
                "{} is not supported by this kernel (EOPNOTSUPP)",
                step.describe()
            ))
        }
        Expect::Ok | Expect::SupportedOrSkip => StepVerdict::Fail(format!(
            "{}: expected success, got {got}{}{}",
            step.describe(),
            if short { " (short write)" } else { "" },
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", r.detail)
            }
        )),
        Expect::RefusedOrSkip => match r.errno.as_deref() {
            Some("EOPNOTSUPP") => StepVerdict::Skip(format!(
                "{} is not supported by this kernel (EOPNOTSUPP)",
                step.describe()
            )),
            Some(_) => StepVerdict::Pass,
            None => StepVerdict::Fail(format!(
                "{}: expected a failure with nothing written, got {got}{}",
                step.describe(),
                if short {
                    " (a short write: part of an atomic write landed)"
                } else {
                    ""
                }
            )),
        },
        Expect::Errno(want) => {
            if r.errno.as_deref() == Some(want.as_str()) {
                StepVerdict::Pass
            } else {
                StepVerdict::Fail(format!("{}: expected {want}, got {got}", step.describe()))
            }
        }
    }
}

/// A `folios` step the agent carried out: large folios pass; none fail, or
/// skip under `supported_or_skip` (the kernel's page cache does not use
/// them: the feature is absent, not broken).
fn judge_folios(step: &Step, census: Option<&FolioCensus>) -> StepVerdict {
    let Some(c) = census else {
        return StepVerdict::Fail(format!("{}: the agent sent no census", step.describe()));
    };
    if c.cached == 0 {
        return StepVerdict::Fail(format!(
            "{}: no page of the range is in the page cache ({})",
            step.describe(),
            c.describe()
        ));
    }
    if c.has_large_folios() {
        return StepVerdict::Pass;
    }
    let why = format!(
        "the page cache holds the range in single-page folios only ({})",
        c.describe()
    );
    match step.expect() {
        Expect::SupportedOrSkip => StepVerdict::Skip(format!("no large folios: {why}")),
        _ => StepVerdict::Fail(format!("{}: {why}", step.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(expect: Expect) -> Step {
        Step::Pwrite(Pwrite {
            expect,
            ..Pwrite::new(0, 4096, true)
        })
    }

    fn res(ret: Option<i64>, errno: Option<&str>) -> StepResult {
        StepResult {
            index: 0,
            op: "pwrite".into(),
            ret,
            errno: errno.map(str::to_string),
            detail: String::new(),
            folios: None,
        }
    }

    #[test]
    fn folios_pass_when_large_and_skip_or_fail_when_not() {
        let step = |expect| {
            Step::Folios(Folios {
                file: None,
                offset: 0,
                len: None,
                expect,
            })
        };
        let with = |largest: u64, folios: u64| StepResult {
            folios: Some(FolioCensus {
                pages: 512,
                cached: 512,
                folios,
                large: u64::from(largest > 1),
                largest,
            }),
            ..res(Some(0), None)
        };
        assert_eq!(judge(&step(Expect::Ok), &with(512, 1)), StepVerdict::Pass);
        match judge(&step(Expect::SupportedOrSkip), &with(1, 512)) {
            StepVerdict::Skip(m) => assert!(m.contains("single-page folios"), "{m}"),
            v => panic!("{v:?}"),
        }
        match judge(&step(Expect::Ok), &with(1, 512)) {
            StepVerdict::Fail(m) => assert!(m.contains("single-page folios"), "{m}"),
            v => panic!("{v:?}"),
        }
        // Nothing cached is never a pass or a skip.
        let none = StepResult {
            folios: Some(FolioCensus {
                pages: 4,
                ..FolioCensus::default()
            }),
            ..res(Some(0), None)
        };
        assert!(matches!(
            judge(&step(Expect::SupportedOrSkip), &none),
            StepVerdict::Fail(_)
        ));
    }

    #[test]
    fn expected_errno_passes_other_errno_fails() {
        let s = pw(Expect::Errno("EINVAL".into()));
        assert_eq!(judge(&s, &res(None, Some("EINVAL"))), StepVerdict::Pass);
        match judge(&s, &res(None, Some("EOPNOTSUPP"))) {
            StepVerdict::Fail(m) => assert!(m.contains("expected EINVAL, got EOPNOTSUPP"), "{m}"),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            judge(&s, &res(Some(4096), None)),
            StepVerdict::Fail(_)
        ));
    }

    #[test]
    fn short_atomic_write_is_a_failure() {
        // Whatever was expected, a short count from RWF_ATOMIC reads as the
        // atomicity violation it is, with the counts.
        for expect in [
            Expect::Ok,
            Expect::SupportedOrSkip,
            Expect::RefusedOrSkip,
            Expect::Errno("EINVAL".into()),
        ] {
            for n in [0, 2048] {
                match judge(&pw(expect.clone()), &res(Some(n), None)) {
                    StepVerdict::Fail(m) => assert!(
                        m.contains(&format!("a short atomic write: {n} of 4096 bytes written")),
                        "{m}"
                    ),
                    v => panic!("{v:?}"),
                }
            }
        }
        // A short plain write is still a failure, said the old way.
        let plain = Step::Pwrite(Pwrite::new(0, 4096, false));
        match judge(&plain, &res(Some(2048), None)) {
            StepVerdict::Fail(m) => {
                assert!(m.contains("short write") && !m.contains("atomic"), "{m}")
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn supported_or_skip() {
        let s = pw(Expect::SupportedOrSkip);
        assert_eq!(judge(&s, &res(Some(4096), None)), StepVerdict::Pass);
        assert!(matches!(
            judge(&s, &res(None, Some("EOPNOTSUPP"))),
            StepVerdict::Skip(_)
        ));
        assert!(matches!(
            judge(&s, &res(None, Some("EINVAL"))),
            StepVerdict::Fail(_)
        ));
    }

    #[test]
    fn refused_or_skip() {
        let s = pw(Expect::RefusedOrSkip);
        assert_eq!(judge(&s, &res(None, Some("EFAULT"))), StepVerdict::Pass);
        assert!(matches!(
            judge(&s, &res(None, Some("EOPNOTSUPP"))),
            StepVerdict::Skip(_)
        ));
        match judge(&s, &res(Some(2048), None)) {
            StepVerdict::Fail(m) => assert!(m.contains("a short atomic write"), "{m}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_verify_finding_is_said_in_its_own_words() {
        let r = StepResult {
            detail: "step 5 pwritev2(off=0 len=4096 RWF_ATOMIC) returned EINVAL but 4 of its 8 sectors reached the file".into(),
            ..res(None, None)
        };
        assert_eq!(
            judge(&Step::Verify(FileOnly::default()), &r),
            StepVerdict::Fail("verify(): step 5 pwritev2(off=0 len=4096 RWF_ATOMIC) returned EINVAL but 4 of its 8 sectors reached the file".into())
        );
    }

    #[test]
    fn errno_names_round_trip() {
        for (name, n) in ERRNOS {
            assert_eq!(errno_name(*n), *name);
        }
        assert_eq!(errno_name(1000), "errno 1000");
    }

    #[derive(Deserialize)]
    struct W {
        #[serde(with = "serde_yaml::with::singleton_map_recursive")]
        steps: Vec<Step>,
    }

    #[test]
    fn mmap_write_parses_with_msync_on_by_default() {
        let w: W = serde_yaml::from_str(
            "steps:\n  - mmap_write: { offset: 4096, len: 1024 }\n  - mmap_write: { file: g, offset: 0, len: 512, msync: false, expect: EIO }\n",
        )
        .unwrap();
        let Step::MmapWrite(m) = &w.steps[0] else {
            panic!("{:?}", w.steps[0])
        };
        assert_eq!(
            (m.file.as_deref(), m.offset, m.len, m.msync),
            (None, 4096, 1024, true)
        );
        assert_eq!(w.steps[0].name(), "mmap_write");
        assert_eq!(
            w.steps[0].describe(),
            "mmap_write(off=4096 len=1024 msync=MS_SYNC)"
        );
        assert_eq!(w.steps[1].describe(), "mmap_write(off=0 len=512 no msync)");
        assert_eq!(w.steps[1].expect(), &Expect::Errno("EIO".into()));
        // The plan the host sends round-trips, msync: true left implicit.
        let json = serde_json::to_string(&w.steps[0]).unwrap();
        assert_eq!(
            json,
            r#"{"mmap_write":{"offset":4096,"len":1024,"expect":"ok"}}"#
        );
        assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), w.steps[0]);
        let json = serde_json::to_string(&w.steps[1]).unwrap();
        assert_eq!(serde_json::from_str::<Step>(&json).unwrap(), w.steps[1]);
        // A misspelt field is an error, not a silently synced store.
        assert!(serde_yaml::from_str::<W>(
            "steps:\n  - mmap_write: { offset: 0, len: 512, msynk: false }\n"
        )
        .is_err());
    }

    #[test]
    fn a_short_mmap_write_result_is_a_failure() {
        let step = Step::MmapWrite(MmapWrite {
            file: None,
            offset: 0,
            len: 8192,
            msync: true,
            expect: Expect::Ok,
        });
        assert_eq!(judge(&step, &res(Some(8192), None)), StepVerdict::Pass);
        match judge(&step, &res(Some(4096), None)) {
            StepVerdict::Fail(m) => assert!(m.contains("short write"), "{m}"),
            v => panic!("{v:?}"),
        }
    }

    proptest::proptest! {
        /// The mapped pages are the fewest whole pages that hold the range.
        #[test]
        fn mmap_pages_are_the_least_page_range_covering_the_write(
            offset in 0u64..1 << 24,
            len in 1u64..1 << 22,
        ) {
            let m = MmapWrite { file: None, offset, len, msync: true, expect: Expect::Ok };
            let (from, to) = m.pages();
            let page = crate::folio::PAGE;
            proptest::prop_assert!(from % page == 0 && to % page == 0);
            proptest::prop_assert!(from <= offset && offset + len <= to);
            proptest::prop_assert!(offset - from < page && to - (offset + len) < page);
        }
    }

    #[test]
    fn yaml_steps_parse() {
        let w: W = serde_yaml::from_str(
            "steps:\n  - open: { file: f, direct: true }\n  - pwrite: { offset: 0, len: 4096, atomic: true, expect: EINVAL }\n  - fsync: {}\n  - pwrite: { offset: 0, len: 4096, expect: supported_or_skip }\n",
        )
        .unwrap();
        assert_eq!(w.steps.len(), 4);
        assert_eq!(w.steps[1].expect(), &Expect::Errno("EINVAL".into()));
        assert_eq!(w.steps[3].expect(), &Expect::SupportedOrSkip);
        assert_eq!(w.steps[1].describe(), "pwritev2(off=0 len=4096 RWF_ATOMIC)");
    }
}
