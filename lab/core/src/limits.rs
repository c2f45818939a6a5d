//! Atomic-write limits: what the guest reports (sysfs, statx) and what the
//! device parameters and Linux 7.x's rules say it should report.
//!
//! The expectations encode the kernel's reading of the device, so that a
//! kernel that reads it differently shows up as a failed check that names the
//! rule, not as a silent change in numbers.

use serde::{Deserialize, Serialize};

use crate::device::DeviceParams;

/// `/sys/block/<dev>/queue/atomic_write_*_bytes` as the guest reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SysfsAtomicLimits {
    pub unit_min: u32,
    pub unit_max: u32,
    pub max: u32,
    pub boundary: u32,
}

/// The atomic-write part of `statx(STATX_WRITE_ATOMIC)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatxAtomic {
    /// The kernel set STATX_WRITE_ATOMIC in stx_mask (it understood the request).
    pub mask_write_atomic: bool,
    /// STATX_ATTR_WRITE_ATOMIC is set in stx_attributes (atomic writes possible).
    pub attr_write_atomic: bool,
    pub unit_min: u32,
    pub unit_max: u32,
    /// stx_atomic_write_unit_max_opt (Linux 6.16+; 0 when not reported).
    pub unit_max_opt: u32,
    pub segments_max: u32,
}

/// Buffered atomic-write limits, `statx(STATX_WRITE_ATOMIC_BUF)`, through
/// whichever interface the kernel speaks (`BufferedAbi`). Mainline 7.x
/// does not know the bit and leaves it clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatxBuffered {
    /// The kernel set STATX_WRITE_ATOMIC_BUF in stx_mask.
    pub reported: bool,
    pub unit_min: u32,
    pub unit_max: u32,
    /// Which fields held them (absent in reports from older agents).
    #[serde(default)]
    pub abi: BufferedAbi,
}

/// How a kernel reports buffered atomic-write limits. Implementations
/// disagree, and both use the bit value 0x40000 for STATX_WRITE_ATOMIC_BUF:
/// the lab's own series (patches/xfs-buffered-atomic 2/4) adds fields of
/// their own, `stx_atomic_write_unit_{min,max}_buf`; the seed RFC reports
/// the buffered limits in the direct-I/O fields, `stx_atomic_write_unit_*`,
/// when only STATX_WRITE_ATOMIC_BUF is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BufferedAbi {
    /// STATX_WRITE_ATOMIC_BUF not set: the kernel reports no buffered
    /// atomic-write limits.
    #[default]
    None,
    /// Fields of their own (the lab's series).
    SeparateFields,
    /// The direct-I/O fields (the seed RFC).
    SharedFields,
    /// The bit is set but every field is 0: no buffered atomic write is
    /// possible on this file, and nothing tells the two interfaces apart.
    NoLimits,
}

impl BufferedAbi {
    pub fn as_str(self) -> &'static str {
        match self {
            BufferedAbi::None => "none",
            BufferedAbi::SeparateFields => "separate_fields",
            BufferedAbi::SharedFields => "shared_fields",
            BufferedAbi::NoLimits => "no_limits",
        }
    }
}

/// What `statx` returned when asked for STATX_WRITE_ATOMIC_BUF alone: its
/// mask bit, the direct-I/O atomic fields and the lab series' `_buf`
/// fields. Read raw, so that the interface is decided here, not guessed in
/// the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferedProbe {
    pub mask_buf: bool,
    pub unit_min: u32,
    pub unit_max: u32,
    pub unit_min_buf: u32,
    pub unit_max_buf: u32,
}

impl BufferedProbe {
    /// The buffered limits and the interface they came through. The lab's
    /// own fields win when set: a kernel speaking that interface may also
    /// fill the shared fields, the RFC never fills the `_buf` ones (spare
    /// space, zero).
    pub fn limits(&self) -> StatxBuffered {
        let (abi, unit_min, unit_max) = if !self.mask_buf {
            (BufferedAbi::None, 0, 0)
        } else if self.unit_min_buf != 0 || self.unit_max_buf != 0 {
            (
                BufferedAbi::SeparateFields,
                self.unit_min_buf,
                self.unit_max_buf,
            )
        } else if self.unit_min != 0 || self.unit_max != 0 {
            (BufferedAbi::SharedFields, self.unit_min, self.unit_max)
        } else {
            (BufferedAbi::NoLimits, 0, 0)
        };
        StatxBuffered {
            reported: self.mask_buf,
            unit_min,
            unit_max,
            abi,
        }
    }
}

/// Which of the two bits came back when STATX_WRITE_ATOMIC and
/// STATX_WRITE_ATOMIC_BUF were asked for in one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CombinedRequest {
    pub direct: bool,
    pub buffered: bool,
}

/// `STATX_WRITE_ATOMIC_BUF` (patches/xfs-buffered-atomic 2/4).
pub const STATX_WRITE_ATOMIC_BUF: u32 = 0x0004_0000;

/// What the guest agent reports for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsReport {
    pub path: String,
    pub statx: StatxAtomic,
    /// Buffered limits (absent in reports from older agents).
    #[serde(default)]
    pub statx_buf: StatxBuffered,
    /// Both bits asked for in one call (absent in reports from older
    /// agents). `statx` and `statx_buf` each come from a call asking for
    /// its bit alone, so a kernel that refuses the pair loses neither.
    #[serde(default)]
    pub combined: Option<CombinedRequest>,
    /// Present when the path is a block device.
    pub sysfs: Option<SysfsAtomicLimits>,
    /// stx_blksize, for files: the filesystem block size.
    pub blksize: u32,
}

/// Largest power of two not above `x` (0 for 0).
pub fn rounddown_pow2(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

pub use crate::device::IdentifyNamespace;

/// What the guest's NVMe driver puts in the queue limits besides the
/// namespace's atomic fields: the largest transfer (from the controller's
/// MDTS) and the segment count. Linux caps atomic writes by both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCaps {
    /// queue/max_hw_sectors_kb in bytes.
    pub max_hw_bytes: u32,
    /// queue/max_segments.
    pub max_segments: u32,
}

/// QEMU's NVMe controller (default `mdts=7`, 4 KiB pages: 512 KiB) under
/// Linux 7.x's nvme-pci, measured in a guest: max_hw_sectors_kb 512,
/// max_segments 129 (max_hw_sectors / 8 + 1).
pub const QEMU_NVME_QUEUE: QueueCaps = QueueCaps {
    max_hw_bytes: 512 * 1024,
    max_segments: 129,
};

/// The atomic limits Linux 7.x derives from an NVMe namespace on QEMU's
/// controller (see `linux_block_limits`).
pub fn expected_block_limits(dev: &DeviceParams, ns: IdentifyNamespace) -> SysfsAtomicLimits {
    linux_block_limits(dev.lba_size, &ns, &QEMU_NVME_QUEUE)
}

/// No atomic writes: BLK_FEAT_ATOMIC_WRITES clear, every limit 0.
const UNSUPPORTED: SysfsAtomicLimits = SysfsAtomicLimits {
    unit_min: 0,
    unit_max: 0,
    max: 0,
    boundary: 0,
};

/// Block-layer atomic limits Linux 7.x derives from a namespace's Identify
/// data, in the kernel's order:
///
/// drivers/nvme/host/core.c `nvme_configure_atomic_write`: NABO != 0 turns
/// atomic writes off ("we do not support an offset"); with NSFEAT bit 1 and
/// a non-zero NAWUPF the hardware unit is (NAWUPF + 1) LBAs and the boundary
/// (NABSPF + 1) LBAs (0: none); otherwise one LBA and no boundary, whatever
/// the controller's AWUPF ("AWUPF ignored, only NAWUPF accepted").
/// hw_unit_min is one LBA, hw_unit_max the unit rounded down to a power of
/// two.
///
/// block/blk-settings.c `blk_validate_atomic_write_limits`: a boundary
/// smaller than the unit, or not a power of two (in sectors), turns atomic
/// writes off. `blk_atomic_writes_update_limits`: unit_min and unit_max are
/// capped by the largest bio the queue always takes in one piece
/// (min(max_hw_sectors, 2 LBAs + (segments - 2) pages), rounded down to a
/// power of two); atomic_write_max is min(hw unit, max_hw_sectors).
pub fn linux_block_limits(lba: u32, ns: &IdentifyNamespace, q: &QueueCaps) -> SysfsAtomicLimits {
    if ns.nabo != 0 {
        return UNSUPPORTED;
    }
    let lba64 = u64::from(lba);
    let hw_max = u64::from(ns.linux_unit_lbas()) * lba64;
    let boundary = ns.linux_boundary_lbas().map_or(0, |b| u64::from(b) * lba64);
    let hw_unit_max = rounddown_pow2_u64(hw_max);
    if boundary != 0 && (hw_max > boundary || !(boundary / 512).is_power_of_two()) {
        return UNSUPPORTED;
    }
    let segs = u64::from(q.max_segments.min(256)); // BIO_MAX_VECS
    let guaranteed_bio = segs.min(2) * lba64 + segs.saturating_sub(2) * 4096;
    let unit_limit = rounddown_pow2_u64(u64::from(q.max_hw_bytes).min(guaranteed_bio));
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    SysfsAtomicLimits {
        unit_min: clamp(lba64.min(unit_limit)),
        unit_max: clamp(hw_unit_max.min(unit_limit)),
        max: clamp(hw_max.min(u64::from(q.max_hw_bytes))),
        boundary: clamp(boundary),
    }
}

fn rounddown_pow2_u64(x: u64) -> u64 {
    if x == 0 {
        0
    } else {
        1 << (63 - x.leading_zeros())
    }
}

/// statx on the raw block device mirrors the queue limits.
pub fn expected_bdev_statx(q: &SysfsAtomicLimits) -> StatxAtomic {
    let capable = q.unit_min > 0 && q.unit_max >= q.unit_min;
    // bdev_statx fills the atomic fields (and STATX_WRITE_ATOMIC in the
    // mask) only when the queue can do atomic writes.
    StatxAtomic {
        mask_write_atomic: capable,
        attr_write_atomic: capable,
        unit_min: if capable { q.unit_min } else { 0 },
        unit_max: if capable { q.unit_max } else { 0 },
        unit_max_opt: 0,
        segments_max: if capable { 1 } else { 0 },
    }
}

/// What a fresh XFS file should advertise, given the device's queue limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfsAtomicExpectation {
    /// Exactly these values (no reflink: hardware atomics or nothing).
    Exact(StatxAtomic),
    /// Reflink makes software (copy-on-write) atomic writes possible: unit_min
    /// is one block, unit_max is a power of two >= one block decided by the
    /// filesystem geometry, and unit_max_opt is min(unit_max, device unit_max)
    /// when unit_max is above one block and hardware atomics are usable.
    SoftwareCapable { block: u32, hw_unit_max: u32 },
}

/// fs/xfs: hardware atomic writes are usable when the device's atomic unit
/// range covers exactly one filesystem block (unit_min <= bs <= unit_max);
/// without reflink that is the only way, and one block is the limit.
pub fn expected_xfs_statx(
    q: &SysfsAtomicLimits,
    block_size: u32,
    reflink: bool,
) -> XfsAtomicExpectation {
    let hw = q.unit_min > 0 && q.unit_min <= block_size && block_size <= q.unit_max;
    if reflink {
        return XfsAtomicExpectation::SoftwareCapable {
            block: block_size,
            hw_unit_max: if hw { q.unit_max } else { 0 },
        };
    }
    XfsAtomicExpectation::Exact(StatxAtomic {
        mask_write_atomic: true,
        attr_write_atomic: hw,
        unit_min: if hw { block_size } else { 0 },
        unit_max: if hw { block_size } else { 0 },
        unit_max_opt: 0,
        segments_max: if hw { 1 } else { 0 },
    })
}

/// One comparison of an observed value against the rule's expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Short machine-friendly name, e.g. `bdev.sysfs.unit_max`.
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub passed: bool,
    /// The rule the expectation comes from, in words.
    pub rule: String,
}

impl Check {
    fn eq<T: PartialEq + std::fmt::Display>(
        name: &str,
        expected: T,
        actual: T,
        rule: &str,
    ) -> Self {
        Check {
            name: name.to_string(),
            passed: expected == actual,
            expected: expected.to_string(),
            actual: actual.to_string(),
            rule: rule.to_string(),
        }
    }
    fn holds(name: &str, expected: &str, actual: String, passed: bool, rule: &str) -> Self {
        Check {
            name: name.to_string(),
            expected: expected.to_string(),
            actual,
            passed,
            rule: rule.to_string(),
        }
    }
}

/// Compare a block-device report against the expected queue limits.
pub fn check_bdev(report: &LimitsReport, want: &SysfsAtomicLimits) -> Vec<Check> {
    const RULE: &str = "Linux 7.x NVMe: unit = (NAWUPF+1) LBAs if the namespace reports it (NSFEAT bit 1), \
                        else 1 LBA, AWUPF ignored; unit_max = unit rounded down to a power of two, at most \
                        512 KiB (MDTS); boundary = (NABSPF+1) LBAs; NABO != 0, or a boundary below the unit \
                        or not a power of two, disables atomic writes";
    let mut out = Vec::new();
    match &report.sysfs {
        Some(got) => {
            out.push(Check::eq(
                "bdev.sysfs.unit_min",
                want.unit_min,
                got.unit_min,
                RULE,
            ));
            out.push(Check::eq(
                "bdev.sysfs.unit_max",
                want.unit_max,
                got.unit_max,
                RULE,
            ));
            out.push(Check::eq("bdev.sysfs.max", want.max, got.max, RULE));
            out.push(Check::eq(
                "bdev.sysfs.boundary",
                want.boundary,
                got.boundary,
                RULE,
            ));
        }
        None => out.push(Check::holds(
            "bdev.sysfs",
            "queue/atomic_write_* present",
            "missing".into(),
            false,
            "Linux >= 6.11 exports atomic write limits in sysfs",
        )),
    }
    let s = expected_bdev_statx(want);
    const SRULE: &str = "statx on a block device reports the queue's atomic limits";
    let g = &report.statx;
    out.push(Check::eq(
        "bdev.statx.mask",
        s.mask_write_atomic,
        g.mask_write_atomic,
        SRULE,
    ));
    out.push(Check::eq(
        "bdev.statx.attr",
        s.attr_write_atomic,
        g.attr_write_atomic,
        SRULE,
    ));
    out.push(Check::eq(
        "bdev.statx.unit_min",
        s.unit_min,
        g.unit_min,
        SRULE,
    ));
    out.push(Check::eq(
        "bdev.statx.unit_max",
        s.unit_max,
        g.unit_max,
        SRULE,
    ));
    out.push(Check::eq(
        "bdev.statx.segments_max",
        s.segments_max,
        g.segments_max,
        SRULE,
    ));
    out
}

/// Buffered atomic writes, where the kernel reports them at all
/// (STATX_WRITE_ATOMIC_BUF set). Through the lab series' own fields, its
/// rule: exactly one filesystem block, min and max, wherever a direct
/// atomic write of one block is possible, else none. Through any other
/// interface (the seed RFC's), whose rule about sizes the lab does not
/// know, the form every statx atomic limit has: powers of two, min <= max,
/// both 0 or neither. A kernel that does not report the bit gets no check
/// (its buffered testcases say "skipped").
pub fn check_xfs_buffered(report: &LimitsReport, want: &XfsAtomicExpectation) -> Vec<Check> {
    let b = &report.statx_buf;
    if !b.reported {
        return Vec::new();
    }
    if b.abi != BufferedAbi::SeparateFields && b.abi != BufferedAbi::NoLimits {
        const FORM: &str = "statx atomic write limits are powers of two with unit_min <=                             unit_max, both 0 when none is possible";
        let pow2 = |x: u32| x == 0 || x.is_power_of_two();
        let well_formed = pow2(b.unit_min)
            && pow2(b.unit_max)
            && b.unit_min <= b.unit_max
            && (b.unit_min == 0) == (b.unit_max == 0);
        return vec![Check::holds(
            "xfs.statx_buf.form",
            "powers of two, min <= max",
            format!(
                "unit_min {} unit_max {} ({})",
                b.unit_min,
                b.unit_max,
                b.abi.as_str()
            ),
            well_formed,
            FORM,
        )];
    }
    const RULE: &str = "buffered atomic writes (STATX_WRITE_ATOMIC_BUF) are written through \
                        as one direct atomic write of exactly one fs block: min = max = block \
                        where a direct atomic write of a block is possible, else 0";
    let block = match want {
        XfsAtomicExpectation::Exact(s) if s.unit_min > 0 => s.unit_min,
        XfsAtomicExpectation::Exact(_) => 0,
        XfsAtomicExpectation::SoftwareCapable { block, .. } => *block,
    };
    vec![
        Check::eq("xfs.statx_buf.unit_min", block, b.unit_min, RULE),
        Check::eq("xfs.statx_buf.unit_max", block, b.unit_max, RULE),
    ]
}

/// A kernel that reports buffered limits must also answer a caller asking
/// for both kinds in one call: the seed RFC treats the pair as mutually
/// exclusive and clears both bits, so such a caller gets neither. One named
/// check says so, instead of every direct-I/O limit looking lost. No check
/// on a kernel without buffered limits (nothing to combine).
pub fn check_combined_request(report: &LimitsReport) -> Option<Check> {
    let c = report.combined?;
    if !report.statx_buf.reported {
        return None;
    }
    let alone = CombinedRequest {
        direct: report.statx.mask_write_atomic,
        buffered: true,
    };
    let words = |c: CombinedRequest| match (c.direct, c.buffered) {
        (true, true) => "both",
        (true, false) => "STATX_WRITE_ATOMIC only",
        (false, true) => "STATX_WRITE_ATOMIC_BUF only",
        (false, false) => "neither",
    };
    Some(Check::holds(
        "xfs.statx.combined_request",
        words(alone),
        words(c).to_string(),
        c == alone,
        "statx(STATX_WRITE_ATOMIC | STATX_WRITE_ATOMIC_BUF) reports each bit it reports when          asked alone: a caller that wants both kinds of limits gets both (a kernel that treats          the pair as mutually exclusive and clears both gives such a caller neither)",
    ))
}

/// Compare a file-on-XFS report against the expectation.
pub fn check_xfs(report: &LimitsReport, want: &XfsAtomicExpectation) -> Vec<Check> {
    let g = &report.statx;
    match want {
        XfsAtomicExpectation::Exact(s) => {
            const RULE: &str =
                "XFS without reflink: hardware atomic write of exactly one fs block \
                                when device unit_min <= block <= unit_max, else none";
            vec![
                Check::eq(
                    "xfs.statx.mask",
                    s.mask_write_atomic,
                    g.mask_write_atomic,
                    RULE,
                ),
                Check::eq(
                    "xfs.statx.attr",
                    s.attr_write_atomic,
                    g.attr_write_atomic,
                    RULE,
                ),
                Check::eq("xfs.statx.unit_min", s.unit_min, g.unit_min, RULE),
                Check::eq("xfs.statx.unit_max", s.unit_max, g.unit_max, RULE),
                Check::eq(
                    "xfs.statx.segments_max",
                    s.segments_max,
                    g.segments_max,
                    RULE,
                ),
            ]
        }
        XfsAtomicExpectation::SoftwareCapable { block, hw_unit_max } => {
            const RULE: &str =
                "XFS with reflink: software (CoW) atomic writes from one fs block up \
                                to a power-of-two maximum; max_opt = min(max, device unit_max)";
            let opt_want = if g.unit_max > *block {
                g.unit_max.min(*hw_unit_max)
            } else {
                0
            };
            vec![
                Check::eq("xfs.statx.mask", true, g.mask_write_atomic, RULE),
                Check::eq("xfs.statx.attr", true, g.attr_write_atomic, RULE),
                Check::eq("xfs.statx.unit_min", *block, g.unit_min, RULE),
                Check::holds(
                    "xfs.statx.unit_max",
                    &format!("power of two >= {block}"),
                    g.unit_max.to_string(),
                    g.unit_max >= *block && g.unit_max.is_power_of_two(),
                    RULE,
                ),
                Check::eq("xfs.statx.unit_max_opt", opt_want, g.unit_max_opt, RULE),
                Check::eq("xfs.statx.segments_max", 1, g.segments_max, RULE),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(lba: u32) -> DeviceParams {
        DeviceParams {
            lba_size: lba,
            ..Default::default()
        }
    }

    #[test]
    fn qemu10_namespace_gives_one_lba() {
        let l = expected_block_limits(&dev(4096), IdentifyNamespace::default());
        assert_eq!(
            l,
            SysfsAtomicLimits {
                unit_min: 4096,
                unit_max: 4096,
                max: 4096,
                boundary: 0
            }
        );
    }

    #[test]
    fn controller_awupf_is_ignored() {
        let mut d = dev(512);
        d.awun = 15;
        d.awupf = 15;
        let l = expected_block_limits(&d, IdentifyNamespace::default());
        assert_eq!(l.unit_max, 512);
    }

    #[test]
    fn nawupf_non_power_of_two_rounds_down() {
        let mut d = dev(4096);
        d.nawupf = 5; // 6 LBAs
        d.nabspf = 31;
        let l = expected_block_limits(&d, d.identify_namespace());
        assert_eq!(l.max, 6 * 4096);
        assert_eq!(l.unit_max, 4 * 4096);
        assert_eq!(l.boundary, 32 * 4096);
    }

    #[test]
    fn xfs_block_larger_than_unit_has_no_hw_atomics() {
        let q = expected_block_limits(&dev(512), IdentifyNamespace::default());
        match expected_xfs_statx(&q, 1024, false) {
            XfsAtomicExpectation::Exact(s) => {
                assert!(!s.attr_write_atomic);
                assert_eq!(s.unit_max, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_check_names_field_and_values() {
        let want = expected_block_limits(&dev(4096), IdentifyNamespace::default());
        let report = LimitsReport {
            path: "/dev/nvme0n1".into(),
            statx: expected_bdev_statx(&want),
            sysfs: Some(SysfsAtomicLimits {
                unit_max: 8192,
                ..want
            }),
            blksize: 4096,
            statx_buf: StatxBuffered::default(),
            combined: None,
        };
        let failed: Vec<_> = check_bdev(&report, &want)
            .into_iter()
            .filter(|c| !c.passed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "bdev.sysfs.unit_max");
        assert_eq!(
            (failed[0].expected.as_str(), failed[0].actual.as_str()),
            ("4096", "8192")
        );
    }

    fn ns_dev(lba: u32, f: impl FnOnce(&mut DeviceParams)) -> SysfsAtomicLimits {
        let mut d = dev(lba);
        f(&mut d);
        d.validate().unwrap();
        expected_block_limits(&d, d.identify_namespace())
    }

    #[test]
    fn nawupf_gives_a_multi_lba_unit_and_the_boundary_as_configured() {
        // The measurement: nawupf=15, nabspf=31 on 4 KiB LBAs.
        let l = ns_dev(4096, |d| {
            d.nawupf = 15;
            d.nabspf = 31;
        });
        assert_eq!(
            l,
            SysfsAtomicLimits {
                unit_min: 4096,
                unit_max: 65536,
                max: 65536,
                boundary: 131072
            }
        );
        let l = ns_dev(512, |d| d.nawupf = 15);
        assert_eq!(
            (l.unit_min, l.unit_max, l.max, l.boundary),
            (512, 8192, 8192, 0)
        );
    }

    #[test]
    fn unit_above_the_transfer_limit_is_capped_at_512k() {
        let l = ns_dev(4096, |d| {
            d.nawupf = 255; // 1 MiB
            d.nabspf = 255;
        });
        assert_eq!((l.unit_max, l.max, l.boundary), (524288, 524288, 1 << 20));
    }

    #[test]
    fn small_lbas_cap_the_unit_at_256k() {
        // 2 LBAs + 127 pages is just under 512 KiB for 512- and 1024-byte
        // LBAs, so the largest always-whole bio rounds down to 256 KiB.
        let l = ns_dev(512, |d| d.nawupf = 1023); // 512 KiB
        assert_eq!((l.unit_max, l.max), (262144, 524288));
        let l = ns_dev(2048, |d| d.nawupf = 255); // 512 KiB
        assert_eq!((l.unit_max, l.max), (524288, 524288));
    }

    #[test]
    fn nabo_disables_atomic_writes() {
        let l = ns_dev(4096, |d| {
            d.nawupf = 3;
            d.nabsn = 7;
            d.nabspf = 7;
            d.nabo = 1;
        });
        assert_eq!(l, UNSUPPORTED);
        let s = expected_bdev_statx(&l);
        assert!(!s.mask_write_atomic && !s.attr_write_atomic);
    }

    #[test]
    fn boundary_not_a_power_of_two_disables_atomic_writes() {
        let l = ns_dev(4096, |d| {
            d.nawupf = 3;
            d.nabspf = 11; // 48 KiB
        });
        assert_eq!(l, UNSUPPORTED);
    }

    #[test]
    fn boundary_without_nawupf_is_not_read() {
        let l = ns_dev(4096, |d| {
            d.nawun = 3;
            d.nabspf = 11;
        });
        assert_eq!((l.unit_max, l.boundary), (4096, 0));
    }

    #[test]
    fn xfs_gets_one_block_of_hardware_atomics_when_the_unit_covers_it() {
        // 512-byte LBAs with an 8 KiB unit: a 1 KiB XFS block now fits.
        let q = ns_dev(512, |d| d.nawupf = 15);
        assert_eq!(
            expected_xfs_statx(&q, 1024, false),
            XfsAtomicExpectation::Exact(StatxAtomic {
                mask_write_atomic: true,
                attr_write_atomic: true,
                unit_min: 1024,
                unit_max: 1024,
                unit_max_opt: 0,
                segments_max: 1,
            })
        );
        // Reflink: the hardware part (max_opt) is the device's unit_max.
        let q = ns_dev(4096, |d| d.nawupf = 3);
        assert_eq!(
            expected_xfs_statx(&q, 4096, true),
            XfsAtomicExpectation::SoftwareCapable {
                block: 4096,
                hw_unit_max: 16384
            }
        );
        // A 16 KiB block on 4 KiB LBAs (block > page size) is one hardware unit.
        match expected_xfs_statx(&q, 16384, false) {
            XfsAtomicExpectation::Exact(s) => assert_eq!((s.unit_min, s.unit_max), (16384, 16384)),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn block_limits_are_ordered(
            lba_idx in 0usize..4,
            nawupf in 0u16..2048,
            extra in proptest::option::of(0u16..4096),
        ) {
            let mut d = dev(crate::device::LBA_SIZES[lba_idx]);
            d.nawupf = nawupf;
            d.nabspf = extra.map_or(0, |e| nawupf.saturating_add(e));
            prop_assert!(d.validate().is_ok());
            let l = expected_block_limits(&d, d.identify_namespace());
            if l == UNSUPPORTED {
                // Only a boundary that is not a power of two does that here.
                prop_assert!(!(u64::from(d.nabspf + 1) * u64::from(d.lba_size) / 512).is_power_of_two());
                return Ok(());
            }
            // blktests nvme/059's invariants: max >= unit_max >= unit_min, powers of two.
            prop_assert!(l.max >= l.unit_max);
            prop_assert!(l.unit_max >= l.unit_min);
            prop_assert!(l.unit_min.is_power_of_two() && l.unit_max.is_power_of_two());
            prop_assert!(l.unit_max <= QEMU_NVME_QUEUE.max_hw_bytes);
            // unit_max = (NAWUPF+1) x LBA rounded down to a power of two,
            // capped by the largest always-whole bio (2 LBAs + 127 pages,
            // 512 KiB at most): 256 KiB for 512- and 1024-byte LBAs.
            let unit = (u32::from(nawupf) + 1) * d.lba_size;
            let cap = rounddown_pow2((2 * d.lba_size + 127 * 4096).min(512 * 1024));
            prop_assert_eq!(l.unit_max, rounddown_pow2(unit).min(cap));
            prop_assert_eq!(l.max, unit.min(512 * 1024));
            // A boundary, when there is one, holds a whole unit.
            prop_assert!(l.boundary == 0 || l.boundary >= l.max);
            prop_assert_eq!(l.boundary, if nawupf > 0 { u32::from(d.nabspf) * d.lba_size + if d.nabspf > 0 { d.lba_size } else { 0 } } else { 0 });
        }

        #[test]
        fn rounddown_pow2_is_largest_pow2_below(x in 1u32..u32::MAX) {
            let r = rounddown_pow2(x);
            prop_assert!(r.is_power_of_two() && r <= x && (r as u64) * 2 > x as u64);
        }
    }

    #[test]
    fn the_buffered_interface_is_read_from_the_fields_it_filled() {
        let probe = |mask_buf, unit, unit_buf| BufferedProbe {
            mask_buf,
            unit_min: unit,
            unit_max: unit,
            unit_min_buf: unit_buf,
            unit_max_buf: unit_buf,
        };
        assert_eq!(probe(false, 4096, 0).limits(), StatxBuffered::default());
        let ours = probe(true, 0, 4096).limits();
        assert_eq!(
            (ours.abi, ours.unit_min, ours.unit_max),
            (BufferedAbi::SeparateFields, 4096, 4096)
        );
        // Both filled: the fields of its own are the interface.
        assert_eq!(
            probe(true, 16384, 4096).limits().abi,
            BufferedAbi::SeparateFields
        );
        let rfc = probe(true, 4096, 0).limits();
        assert_eq!(
            (rfc.abi, rfc.unit_min, rfc.unit_max),
            (BufferedAbi::SharedFields, 4096, 4096)
        );
        let none = probe(true, 0, 0).limits();
        assert!(none.reported);
        assert_eq!(none.abi, BufferedAbi::NoLimits);
    }

    #[test]
    fn a_combined_request_that_loses_a_bit_is_one_named_failure() {
        let report = |buf: bool, combined: Option<CombinedRequest>| LimitsReport {
            path: "/mnt/f".into(),
            statx: StatxAtomic {
                mask_write_atomic: true,
                ..Default::default()
            },
            statx_buf: StatxBuffered {
                reported: buf,
                ..Default::default()
            },
            sysfs: None,
            blksize: 4096,
            combined,
        };
        let both = CombinedRequest {
            direct: true,
            buffered: true,
        };
        let neither = CombinedRequest::default();
        // No buffered limits, or an older agent: nothing to check.
        assert_eq!(check_combined_request(&report(false, Some(neither))), None);
        assert_eq!(check_combined_request(&report(true, None)), None);
        assert!(
            check_combined_request(&report(true, Some(both)))
                .unwrap()
                .passed
        );
        let c = check_combined_request(&report(true, Some(neither))).unwrap();
        assert!(!c.passed);
        assert_eq!(
            (c.expected.as_str(), c.actual.as_str()),
            ("both", "neither")
        );
        assert!(c.rule.contains("mutually exclusive"));
    }

    #[test]
    fn buffered_limits_of_another_interface_are_checked_for_form_only() {
        let report = |abi, unit_min, unit_max| LimitsReport {
            path: "/mnt/f".into(),
            statx: StatxAtomic::default(),
            statx_buf: StatxBuffered {
                reported: true,
                unit_min,
                unit_max,
                abi,
            },
            sysfs: None,
            blksize: 4096,
            combined: None,
        };
        let want = XfsAtomicExpectation::Exact(StatxAtomic {
            unit_min: 4096,
            unit_max: 4096,
            ..Default::default()
        });
        // The lab's interface: its one-block rule.
        let ours = check_xfs_buffered(&report(BufferedAbi::SeparateFields, 4096, 65536), &want);
        assert_eq!(ours.len(), 2);
        assert!(!ours[1].passed, "unit_max must be one block");
        // The RFC's: any well-formed limits.
        let rfc = check_xfs_buffered(&report(BufferedAbi::SharedFields, 4096, 65536), &want);
        assert_eq!(rfc.len(), 1);
        assert!(rfc[0].passed, "{:?}", rfc[0]);
        let bad = check_xfs_buffered(&report(BufferedAbi::SharedFields, 8192, 4096), &want);
        assert!(!bad[0].passed);
        assert!(!check_xfs_buffered(&report(BufferedAbi::SharedFields, 0, 4096), &want)[0].passed);
    }
}
