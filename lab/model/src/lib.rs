//! The reference model: given the guest's operation log as the host saw it
//! at the power cut and a scan of one crash state (what every 512-byte
//! sector of every file holds), decide whether the state is one the kernel
//! was allowed to leave, and if not, say which rule it broke in words a
//! kernel developer would put in a bug report. Pure: no I/O.
//!
//! ## What the model allows
//!
//! Versions of a sector are "zeroes" (never written: a hole or an unwritten
//! extent) and the writes that covered it, in log order. For each sector:
//!
//! - **Durability.** A write is durable when it completed and either it was
//!   synchronous (O_SYNC/O_DSYNC, RWF_SYNC/RWF_DSYNC) or an fsync/fdatasync
//!   of the file started after it completed and itself completed. The newest
//!   durable write covering a sector is its floor: the sector must hold the
//!   floor or a write newer than it. A completed range sync (msync(MS_SYNC)
//!   at the end of an `mmap_write`: vfs_fsync_range with datasync over the
//!   mapped pages) does the same for what lies inside its range: its own
//!   stores, and every write of the file that completed before it started
//!   (an RWF_ATOMIC write only if the range holds all of it: the model does
//!   not promise a whole atomic write from a sync of part of it).
//!   sync(2) is an fsync of every file. Nothing else makes data durable:
//!   not a completed O_DIRECT write (its extent conversion may be in the
//!   unflushed log), not sync_file_range, not background writeback (a short
//!   dirty expiry, memory pressure, dropped caches: writeback that nothing
//!   waited for promises nothing, so those steps are no operations here).
//! - **Punch and zero range.** fallocate PUNCH_HOLE and ZERO_RANGE are a
//!   non-atomic write of zeroes over their range: until a completed fsync,
//!   fdatasync or sync(2) after them a sector of the range holds what it
//!   could hold before or zeroes, after one zeroes (or newer data). They
//!   do not lift an earlier atomic write's all-or-nothing: where any
//!   sector shows the atomic write, the others show it or the punch's
//!   zeroes (a sector outside the punched range: it or newer data). A
//!   truncate, unlike a punch, voids the guarantee over what it cuts.
//! - **Atomicity.** An RWF_ATOMIC write is all or nothing over its range: if
//!   one sector shows it, every sector of its range shows it or something
//!   newer. A later non-atomic write over the range removes that guarantee
//!   until the atomic write was made durable before it.
//! - **Failed writes.** A write refused before any I/O (EINVAL,
//!   EOPNOTSUPP) wrote nothing: its data anywhere in the file is its own
//!   finding ("returned EINVAL but 4 of its 8 sectors reached the file").
//!   A write that failed otherwise (EFAULT, EIO) may have written part of
//!   its range, unless it was atomic.
//! - **No garbage, nothing misplaced.** A sector holds zeroes or a stamp of
//!   a write that covered exactly that place in that file (or, where a
//!   write could not be stamped, anything). Stores through a shared mapping
//!   are the exception: writeback may copy a page out while the CPU is
//!   still storing into it, so until a store is durable a sector it covers
//!   may hold part old and part new bytes (garbage).
//! - **Lag.** The host's copy of the log may lag the guest: an operation
//!   whose end the host did not see may or may not have happened (its
//!   writes are possible, its syncs give no durability), and operations the
//!   host never saw start are treated the same. Only what the host saw
//!   complete makes a promise, so lag never causes a false positive.
//! - **Size.** A file is at least as long as its size at the start of the
//!   last completed fsync/fdatasync (or synchronous write), unless a
//!   truncate that may have happened later shrank it. A range sync promises
//!   no size: it writes back only its range.
//!
//! Each rule can be switched off (`Rules`), so tests can show that a model
//! without it misses a broken state.

pub mod steps_log;

use std::collections::BTreeMap;
use std::fmt;

use lab_core::stamp::{Sector, Stamp, SECTOR};
use serde::{Deserialize, Serialize};

const S: u64 = SECTOR as u64;

/// One operation of the workload as planned, and how far the host saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the log (plan order for steps).
    pub index: usize,
    /// For reports: `step 4 pwritev2(off=0 len=16384 RWF_ATOMIC)`.
    pub describe: String,
    pub kind: OpKind,
    /// Position of the start and end events in the stream the host received
    /// (None: not seen).
    pub started: Option<u64>,
    pub ended: Option<u64>,
    /// How it ended, when seen.
    pub result: Option<OpResult>,
    /// The errno it returned, when it failed (for findings about a write
    /// that failed and still reached the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    Ok,
    /// Refused before any I/O (EINVAL, EOPNOTSUPP): wrote nothing.
    Refused,
    /// Failed in some other way: may have written part of its range.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Write(Write),
    Fsync {
        file: String,
    },
    Fdatasync {
        file: String,
    },
    /// Starts writeback; durability comes from nothing but fsync.
    SyncFileRange {
        file: String,
    },
    Ftruncate {
        file: String,
        len: u64,
    },
    /// fallocate PUNCH_HOLE (KEEP_SIZE) or ZERO_RANGE over `[offset,
    /// offset + len)`: a non-atomic write of zeroes as far as crash states
    /// go (see the crate docs); ZERO_RANGE also grows the file to its end.
    Zero {
        file: String,
        offset: u64,
        len: u64,
        /// ZERO_RANGE without KEEP_SIZE: the size becomes at least
        /// `offset + len`.
        #[serde(default, skip_serializing_if = "is_false")]
        extends: bool,
    },
    /// sync(2): a durability point for every file.
    Sync,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub file: String,
    pub offset: u64,
    pub len: u64,
    pub atomic: bool,
    /// O_SYNC/O_DSYNC on the open file, or RWF_SYNC/RWF_DSYNC.
    pub sync: bool,
    /// The stamp its sectors carry (None: not stamped, e.g. not sector
    /// aligned; its sectors may then hold anything).
    pub stamp: Option<StampKey>,
    /// Stores through a shared mapping (`mmap_write`), not a syscall:
    /// writeback may catch a sector half stored, so until the store is
    /// durable its sectors may hold a mix of old and new bytes (garbage).
    #[serde(default, skip_serializing_if = "is_false")]
    pub store: bool,
    /// A range sync after the op's own writing, over bytes `[from, to)`:
    /// msync(MS_SYNC) of the mapped pages, which is vfs_fsync_range with
    /// datasync. Once the op completed, its own data and that of every
    /// write of the file that completed before the op started are durable
    /// inside the range (not outside it, and not the file's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_sync: Option<(u64, u64)>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What identifies a write's stamp (the offset is per sector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StampKey {
    pub run: u64,
    pub file: u32,
    pub write: u32,
}

/// One file of a crash state as the scan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileScan {
    pub file: String,
    /// None: the file does not exist in this state.
    pub size: Option<u64>,
    /// Sector i covers bytes [512 i, 512 (i + 1)).
    pub sectors: Vec<Sector>,
}

/// The rules, each of which can be switched off for mutation tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub durability: bool,
    pub atomicity: bool,
    pub no_garbage: bool,
    pub size: bool,
    /// A later non-atomic write over an atomic range removes the guarantee.
    pub overwrite_voids_atomicity: bool,
    /// A completed range sync (msync(MS_SYNC)) makes what was written
    /// before it durable inside its range.
    pub range_sync: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            durability: true,
            atomicity: true,
            no_garbage: true,
            size: true,
            overwrite_voids_atomicity: true,
            range_sync: true,
        }
    }
}

/// Which rule a state broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    DurableDataLost,
    TornAtomicWrite,
    Garbage,
    Misplaced,
    FileSizeLost,
    FileLost,
    FailedWriteLanded,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::DurableDataLost => "data made durable by a completed sync was lost",
            Rule::TornAtomicWrite => "an atomic write was torn",
            Rule::Garbage => "a block holds data no write put there",
            Rule::Misplaced => "a block holds data written to another place",
            Rule::FileSizeLost => "the file is shorter than a completed sync made it",
            Rule::FileLost => "a file made durable by a completed sync is missing",
            Rule::FailedWriteLanded => "a write that returned an error reached the file",
        })
    }
}

/// One broken rule, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: Rule,
    pub file: String,
    /// Byte range of the file concerned.
    pub from: u64,
    pub to: u64,
    /// The operations involved, as described in the log.
    pub ops: Vec<String>,
    /// The whole story in one paragraph.
    pub message: String,
}

/// The verdict on one crash state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Operations the host saw start and not end.
    pub in_flight: usize,
    /// Atomic writes seen whole in this state (for the summary).
    pub atomic_whole: usize,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The log, indexed for judging.
pub struct Model<'a> {
    ops: &'a [Op],
    rules: Rules,
}

/// A sector's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Zero,
    /// Op index of the write (or truncate, which writes zeroes).
    Op(usize),
}

impl<'a> Model<'a> {
    pub fn new(ops: &'a [Op]) -> Model<'a> {
        Model {
            ops,
            rules: Rules::default(),
        }
    }

    pub fn with_rules(ops: &'a [Op], rules: Rules) -> Model<'a> {
        Model { ops, rules }
    }

    fn ok_done(op: &Op) -> bool {
        op.ended.is_some() && op.result == Some(OpResult::Ok)
    }

    /// Whether a write never wrote anything (refused before any I/O).
    fn refused(op: &Op) -> bool {
        op.result == Some(OpResult::Refused)
    }

    /// Whether the sync op `s` makes file data durable for `file`: an
    /// fsync/fdatasync of it, or sync(2) (every dirty inode written back,
    /// every log forced).
    fn is_sync_of(s: &Op, file: &str) -> bool {
        match &s.kind {
            OpKind::Fsync { file: f } | OpKind::Fdatasync { file: f } => f == file,
            OpKind::Sync => true,
            _ => false,
        }
    }

    /// Whether op `o` leaves zeroes where it reaches (a truncate past its
    /// length, a punched or zeroed range).
    fn zeroes(o: &Op) -> bool {
        matches!(o.kind, OpKind::Ftruncate { .. } | OpKind::Zero { .. })
    }

    /// Whether op `s` ends with a range sync of `file` that covers bytes
    /// `[a, b)`.
    fn range_syncs(&self, s: &Op, file: &str, (a, b): (u64, u64)) -> bool {
        self.rules.range_sync
            && matches!(&s.kind, OpKind::Write(w)
                if w.file == file && w.range_sync.is_some_and(|(from, to)| from <= a && b <= to))
    }

    /// The completed sync that made op `w` durable, if any: `w` itself when
    /// synchronous, or when its own range sync covers `span`; else the
    /// first fsync/fdatasync of the file, or range sync covering `span`,
    /// that started after `w` ended and completed. `span` is the part of
    /// `w` in question (None: all of it, where no range sync counts).
    fn made_durable_by(
        &self,
        w: &Op,
        file: &str,
        sync: bool,
        span: Option<(u64, u64)>,
    ) -> Option<&'a Op> {
        if !Self::ok_done(w) {
            return None;
        }
        let end = w.ended?;
        let covered = |s: &Op| span.is_some_and(|sp| self.range_syncs(s, file, sp));
        if sync || covered(w) {
            return self.ops.iter().find(|o| o.index == w.index);
        }
        self.ops.iter().find(|s| {
            (Self::is_sync_of(s, file) || covered(s))
                && Self::ok_done(s)
                && s.started.is_some_and(|st| st > end)
        })
    }

    /// Writes (and truncates, as zero writes) of `file`, in log order, that
    /// may have changed data.
    fn data_ops(&self, file: &str) -> Vec<&'a Op> {
        self.ops
            .iter()
            .filter(|o| !Self::refused(o))
            .filter(|o| match &o.kind {
                OpKind::Write(w) => w.file == file,
                OpKind::Ftruncate { file: f, .. } | OpKind::Zero { file: f, .. } => f == file,
                _ => false,
            })
            .collect()
    }

    /// Whether op `o` covers byte range [a, b) (a truncate covers all bytes
    /// from its length on).
    fn covers(o: &Op, a: u64, b: u64) -> bool {
        match &o.kind {
            OpKind::Write(w) => w.offset < b && a < w.offset + w.len,
            OpKind::Ftruncate { len, .. } => b > *len,
            OpKind::Zero { offset, len, .. } => *offset < b && a < offset + len,
            _ => false,
        }
    }

    /// Judges one crash state.
    pub fn judge(&self, files: &[FileScan]) -> Verdict {
        let mut v = Verdict {
            in_flight: self
                .ops
                .iter()
                .filter(|o| o.started.is_some() && o.ended.is_none())
                .count(),
            ..Verdict::default()
        };
        let mut names: Vec<&str> = self
            .ops
            .iter()
            .filter_map(|o| match &o.kind {
                OpKind::Write(w) => Some(w.file.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let scan = files.iter().find(|f| f.file == name);
            self.judge_file(name, scan, &mut v);
        }
        v
    }

    fn judge_file(&self, file: &str, scan: Option<&FileScan>, v: &mut Verdict) {
        let ops = self.data_ops(file);
        let durable_size = self.durable_size(file);
        let Some(scan) = scan.filter(|s| s.size.is_some()) else {
            if self.rules.durability {
                if let Some((size, by)) = durable_size.filter(|(s, _)| *s > 0) {
                    v.violations.push(Violation {
                        rule: Rule::FileLost,
                        file: file.into(),
                        from: 0,
                        to: size,
                        ops: vec![by.describe.clone()],
                        message: format!(
                            "{file} is missing, but {} completed after {size} bytes were written to it",
                            by.describe
                        ),
                    });
                }
            }
            return;
        };
        let size = scan.size.unwrap_or(0);
        if self.rules.size {
            if let Some((want, by)) = durable_size {
                if size < want {
                    v.violations.push(Violation {
                        rule: Rule::FileSizeLost,
                        file: file.into(),
                        from: size,
                        to: want,
                        ops: vec![by.describe.clone()],
                        message: format!(
                            "{file} is {size} bytes long, but it was {want} bytes when {} started, and that sync completed",
                            by.describe
                        ),
                    });
                }
            }
        }
        // Refused writes (by op index) and how many of their sectors hold
        // their data.
        let mut landed: BTreeMap<usize, u64> = BTreeMap::new();
        // Per sector: its version, or a violation.
        let mut shown: Vec<Option<Version>> = Vec::with_capacity(scan.sectors.len());
        for (i, sector) in scan.sectors.iter().enumerate() {
            let (a, b) = (i as u64 * S, (i as u64 + 1) * S);
            let covering: Vec<&Op> = ops
                .iter()
                .copied()
                .filter(|o| Self::covers(o, a, b))
                .collect();
            let floor = covering.iter().rev().find_map(|o| match &o.kind {
                // An atomic write is one unit: a range sync makes it
                // durable only if it covers all of it.
                OpKind::Write(w) => self
                    .made_durable_by(
                        o,
                        file,
                        w.sync,
                        Some(if w.atomic {
                            (w.offset, w.offset + w.len)
                        } else {
                            (a, b)
                        }),
                    )
                    .map(|by| (*o, by)),
                OpKind::Ftruncate { .. } | OpKind::Zero { .. } => self
                    .made_durable_by(o, file, false, None)
                    .map(|by| (*o, by)),
                _ => None,
            });
            let floor_index = if self.rules.durability {
                floor.map(|(o, _)| o.index)
            } else {
                None
            };
            let allowed = |ver: Version| match (ver, floor_index) {
                (_, None) => true,
                (Version::Zero, Some(_)) => false,
                (Version::Op(i), Some(f)) => i >= f,
            };
            let version = match sector {
                Sector::Zero => {
                    // Zeroes: never written, or the zeroes of a truncate,
                    // punch or zero range (the newest, as the most
                    // favourable reading).
                    let z = covering
                        .iter()
                        .rev()
                        .find(|o| Self::zeroes(o))
                        .map_or(Version::Zero, |o| Version::Op(o.index));
                    let ok = allowed(z)
                        || covering
                            .iter()
                            .any(|o| Self::zeroes(o) && allowed(Version::Op(o.index)));
                    if ok {
                        Some(z)
                    } else {
                        None
                    }
                }
                Sector::Stamped(st) => {
                    match covering.iter().find(|o| stamp_matches(o, st, a)) {
                        Some(o) if allowed(Version::Op(o.index)) => Some(Version::Op(o.index)),
                        Some(_) => None,
                        None if self.rules.no_garbage
                            && self.refused_here(file, st, a).is_some() =>
                        {
                            // A write that returned an error and whose data
                            // is here anyway: its own finding, counted per
                            // write after the sectors.
                            let o = self.refused_here(file, st, a).expect("just found");
                            *landed.entry(o.index).or_default() += 1;
                            shown.push(None);
                            continue;
                        }
                        None => {
                            if self.rules.no_garbage {
                                let elsewhere = self.ops.iter().find(|o| match &o.kind {
                                    OpKind::Write(w) => w.stamp.is_some_and(|k| {
                                        k.run == st.run && k.file == st.file && k.write == st.write
                                    }),
                                    _ => false,
                                });
                                v.violations.push(Violation {
                                    rule: Rule::Misplaced,
                                    file: file.into(),
                                    from: a,
                                    to: b,
                                    ops: elsewhere.map(|o| o.describe.clone()).into_iter().collect(),
                                    message: format!(
                                        "{file} bytes {a}-{b} hold data stamped for {} at offset {}{}",
                                        elsewhere.map_or("an unknown write".to_string(), |o| o.describe.clone()),
                                        st.offset,
                                        if elsewhere.is_some() { ", which never wrote here" } else { "" }
                                    ),
                                });
                            }
                            shown.push(None);
                            continue;
                        }
                    }
                }
                Sector::Garbage => {
                    // A write that could not stamp the sector may leave
                    // anything there; a store newer than the floor may have
                    // been caught half done by writeback (a durable store
                    // was written back whole after its last store).
                    let explains = covering.iter().rev().find(|o| match &o.kind {
                        OpKind::Write(w)
                            if w.stamp.is_none()
                                || w.offset % S != 0
                                || w.len % S != 0
                                || w.offset > a
                                || w.offset + w.len < b =>
                        {
                            allowed(Version::Op(o.index))
                        }
                        OpKind::Write(w) if w.store => floor_index.is_none_or(|f| o.index > f),
                        _ => false,
                    });
                    match explains {
                        Some(o) => Some(Version::Op(o.index)),
                        _ if !self.rules.no_garbage => {
                            shown.push(None);
                            continue;
                        }
                        _ => {
                            v.violations.push(Violation {
                                rule: Rule::Garbage,
                                file: file.into(),
                                from: a,
                                to: b,
                                ops: vec![],
                                message: format!(
                                    "{file} bytes {a}-{b} hold neither zeroes nor any write's stamp"
                                ),
                            });
                            shown.push(None);
                            continue;
                        }
                    }
                }
            };
            match version {
                Some(ver) => shown.push(Some(ver)),
                None => {
                    let (f, by) = floor.expect("only a floor makes a version not allowed");
                    let what = match sector {
                        Sector::Zero => "zeroes".to_string(),
                        Sector::Stamped(st) => covering
                            .iter()
                            .find(|o| stamp_matches(o, st, a))
                            .map_or("older data".into(), |o| format!("the older {}", o.describe)),
                        Sector::Garbage => "garbage".into(),
                    };
                    let by_text = if by.index != f.index {
                        format!("{}, which completed", by.describe)
                    } else if matches!(&f.kind, OpKind::Write(w) if !w.sync && w.range_sync.is_some())
                    {
                        "its own msync(MS_SYNC), which completed".to_string()
                    } else {
                        "a synchronous write".to_string()
                    };
                    push_merged(
                        v,
                        Violation {
                            rule: Rule::DurableDataLost,
                            file: file.into(),
                            from: a,
                            to: b,
                            ops: vec![f.describe.clone(), by.describe.clone()],
                            message: format!(
                                "{file} bytes {{from}}-{{to}} hold {what}, but {} was made durable by {by_text}",
                                f.describe
                            ),
                        },
                    );
                    shown.push(None);
                }
            }
        }
        for (index, count) in landed {
            let o = &self.ops[index];
            let OpKind::Write(w) = &o.kind else { continue };
            v.violations.push(Violation {
                rule: Rule::FailedWriteLanded,
                file: file.into(),
                from: w.offset,
                to: w.offset + w.len,
                ops: vec![o.describe.clone()],
                message: format!(
                    "{} returned {} but {count} of its {} sectors reached {file}",
                    o.describe,
                    o.errno.as_deref().unwrap_or("an error"),
                    w.len.div_ceil(S)
                ),
            });
        }
        if self.rules.atomicity {
            self.check_atomic(file, &ops, &shown, v);
        }
        for viol in &mut v.violations {
            viol.message = viol
                .message
                .replace("{from}", &viol.from.to_string())
                .replace("{to}", &viol.to.to_string());
        }
    }

    /// The write of `file` refused before any I/O (EINVAL, EOPNOTSUPP) whose
    /// stamp for this place sector `st` holds.
    fn refused_here(&self, file: &str, st: &Stamp, at: u64) -> Option<&'a Op> {
        self.ops.iter().find(|o| {
            Self::refused(o)
                && matches!(&o.kind, OpKind::Write(w) if w.file == file)
                && Self::covers(o, at, at + S)
                && stamp_matches(o, st, at)
        })
    }

    /// All or nothing: a sector showing the atomic write, another showing
    /// something older.
    fn check_atomic(&self, file: &str, ops: &[&'a Op], shown: &[Option<Version>], v: &mut Verdict) {
        for a in ops {
            let OpKind::Write(w) = &a.kind else { continue };
            if !w.atomic {
                continue;
            }
            let first = (w.offset / S) as usize;
            let last = (w.offset + w.len).div_ceil(S) as usize;
            if last > shown.len() {
                // Past the end of the file as scanned: the size rule speaks
                // for what is missing; judge what is there.
            }
            let range = first..last.min(shown.len());
            let sees = |ver: &Option<Version>| matches!(ver, Some(Version::Op(i)) if *i == a.index);
            if !range.clone().any(|i| sees(&shown[i])) {
                continue;
            }
            if self.rules.overwrite_voids_atomicity && self.guarantee_voided(a, w, ops) {
                continue;
            }
            let older: Vec<usize> = range
                .clone()
                .filter(|&i| match shown[i] {
                    Some(Version::Zero) => true,
                    Some(Version::Op(j)) => j < a.index,
                    None => false,
                })
                .collect();
            // Sectors past EOF never show the write either.
            let beyond = last.saturating_sub(shown.len());
            if older.is_empty() && beyond == 0 {
                v.atomic_whole += 1;
                continue;
            }
            let showing = range.clone().filter(|&i| sees(&shown[i])).count();
            let (fa, fb) = older
                .first()
                .map_or((shown.len() as u64 * S, (w.offset + w.len)), |&i| {
                    (i as u64 * S, (i as u64 + 1) * S)
                });
            v.violations.push(Violation {
                rule: Rule::TornAtomicWrite,
                file: file.into(),
                from: w.offset,
                to: w.offset + w.len,
                ops: vec![a.describe.clone()],
                message: format!(
                    "{}{} to {file} is torn: {showing} of its {} sectors hold its data, but bytes {fa}-{fb} hold older data{}",
                    a.describe,
                    match (&a.result, &a.errno) {
                        (Some(OpResult::Failed), Some(e)) => format!(", which returned {e},"),
                        (Some(OpResult::Failed), None) => ", which failed,".to_string(),
                        _ => String::new(),
                    },
                    last - first,
                    if beyond > 0 { " (or lie past the end of the file)" } else { "" }
                ),
            });
        }
    }

    /// A later non-atomic write over the atomic write's range, started
    /// before the atomic write was made durable.
    fn guarantee_voided(&self, a: &Op, w: &Write, ops: &[&'a Op]) -> bool {
        let durable_at = self
            .made_durable_by(a, &w.file, w.sync, Some((w.offset, w.offset + w.len)))
            .and_then(|by| by.ended);
        ops.iter().any(|n| {
            n.index > a.index
                && match &n.kind {
                    OpKind::Write(nw) => !nw.atomic && Self::covers(n, w.offset, w.offset + w.len),
                    OpKind::Ftruncate { .. } => Self::covers(n, w.offset, w.offset + w.len),
                    _ => false,
                }
                && match (durable_at, n.started) {
                    (Some(d), Some(s)) => s < d,
                    _ => true,
                }
        })
    }

    /// The size the file had when the last completed sync of it started
    /// (or when the last completed synchronous write ended), unless a
    /// truncate that may have run after it could have shrunk it.
    fn durable_size(&self, file: &str) -> Option<(u64, &'a Op)> {
        let mut best: Option<(u64, &Op)> = None;
        for s in self.ops {
            let sync_write = matches!(&s.kind, OpKind::Write(w) if w.file == file && w.sync);
            if !(Self::is_sync_of(s, file) || sync_write) || !Self::ok_done(s) {
                continue;
            }
            let at = if sync_write { s.ended } else { s.started };
            let Some(at) = at else { continue };
            // Size from the operations that ended before `at` (and the
            // synchronous write itself).
            let mut size = 0u64;
            for o in self.ops {
                let done_before =
                    o.ended.is_some_and(|e| e <= at) && o.result == Some(OpResult::Ok);
                if !done_before {
                    continue;
                }
                match &o.kind {
                    OpKind::Write(w) if w.file == file => size = size.max(w.offset + w.len),
                    OpKind::Ftruncate { file: f, len } if f == file => size = *len,
                    OpKind::Zero {
                        file: f,
                        offset,
                        len,
                        extends: true,
                    } if f == file => size = size.max(offset + len),
                    _ => {}
                }
            }
            if best.is_none_or(|(_, b)| b.index < s.index) {
                best = Some((size, s));
            }
        }
        let (size, by) = best?;
        // A truncate that may have happened after the sync can shrink it.
        let shrink = self
            .ops
            .iter()
            .filter(|o| o.index > by.index && !Self::refused(o))
            .filter_map(|o| match &o.kind {
                OpKind::Ftruncate { file: f, len } if f == file => Some(*len),
                _ => None,
            })
            .min();
        Some((shrink.map_or(size, |l| l.min(size)), by))
    }
}

fn stamp_matches(o: &Op, st: &Stamp, sector_offset: u64) -> bool {
    match &o.kind {
        OpKind::Write(w) => w.stamp.is_some_and(|k| {
            k.run == st.run
                && k.file == st.file
                && k.write == st.write
                && st.offset == sector_offset
        }),
        _ => false,
    }
}

/// Adjacent sectors breaking the same rule for the same writes are one
/// violation.
fn push_merged(v: &mut Verdict, new: Violation) {
    if let Some(last) = v.violations.last_mut() {
        if last.rule == new.rule
            && last.file == new.file
            && last.ops == new.ops
            && last.to == new.from
        {
            last.to = new.to;
            return;
        }
    }
    v.violations.push(new);
}

/// Builds per-sector scans from the agent's `scan` runs.
pub fn sectors_from_runs(runs: &[(u64, u64, Sector)]) -> Vec<Sector> {
    let mut out = Vec::new();
    for &(from, to, sector) in runs {
        let mut off = from;
        while off < to {
            out.push(match sector {
                Sector::Stamped(st) => Sector::Stamped(Stamp {
                    offset: st.offset + (off - from),
                    ..st
                }),
                other => other,
            });
            off += S;
        }
    }
    out
}

/// Counts, for summaries: ops by progress.
pub fn progress_counts(ops: &[Op]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for o in ops {
        let k = match (o.started, o.ended) {
            (_, Some(_)) => "ended",
            (Some(_), None) => "in_flight",
            (None, None) => "not_seen",
        };
        *m.entry(k).or_default() += 1;
    }
    m
}
