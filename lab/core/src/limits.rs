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

/// What the guest agent reports for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsReport {
    pub path: String,
    pub statx: StatxAtomic,
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

/// The namespace-level atomic parameters the guest kernel can read.
///
/// QEMU before 10.2 has no `nvme-ns` atomic properties, so NSFEAT's atomic
/// bit is clear and Linux falls back to one logical block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceAtomic {
    /// NAWUPF, 0's based LBA count, when the namespace reports it.
    pub nawupf: Option<u16>,
    /// NABSPF, 0's based LBA count (atomic boundary), when reported.
    pub nabspf: Option<u16>,
}

/// Block-layer limits Linux 7.x derives from an NVMe namespace.
///
/// drivers/nvme/host/core.c: the atomic unit is (NAWUPF + 1) LBAs when the
/// namespace reports NAWUPF, else one LBA; the controller's AWUPF is ignored
/// ("AWUPF ignored, only NAWUPF accepted"). unit_min is one LBA, unit_max
/// that unit rounded down to a power of two, max the unit itself, boundary
/// (NABSPF + 1) LBAs or 0 when there is none.
pub fn expected_block_limits(dev: &DeviceParams, ns: NamespaceAtomic) -> SysfsAtomicLimits {
    let lba = dev.lba_size;
    let unit = ns.nawupf.map_or(lba, |n| (u32::from(n) + 1) * lba);
    let boundary = ns.nabspf.map_or(0, |n| (u32::from(n) + 1) * lba);
    SysfsAtomicLimits {
        unit_min: lba,
        unit_max: rounddown_pow2(unit),
        max: unit,
        boundary,
    }
}

/// statx on the raw block device mirrors the queue limits.
pub fn expected_bdev_statx(q: &SysfsAtomicLimits) -> StatxAtomic {
    let capable = q.unit_min > 0 && q.unit_max >= q.unit_min;
    StatxAtomic {
        mask_write_atomic: true,
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
    const RULE: &str = "Linux 7.x NVMe: unit = (NAWUPF+1) LBAs if the namespace reports it, else 1 LBA; AWUPF ignored";
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
        let l = expected_block_limits(&dev(4096), NamespaceAtomic::default());
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
        let l = expected_block_limits(&d, NamespaceAtomic::default());
        assert_eq!(l.unit_max, 512);
    }

    #[test]
    fn nawupf_non_power_of_two_rounds_down() {
        let ns = NamespaceAtomic {
            nawupf: Some(5), // 6 LBAs
            nabspf: Some(31),
        };
        let l = expected_block_limits(&dev(4096), ns);
        assert_eq!(l.max, 6 * 4096);
        assert_eq!(l.unit_max, 4 * 4096);
        assert_eq!(l.boundary, 32 * 4096);
    }

    #[test]
    fn xfs_block_larger_than_unit_has_no_hw_atomics() {
        let q = expected_block_limits(&dev(512), NamespaceAtomic::default());
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
        let want = expected_block_limits(&dev(4096), NamespaceAtomic::default());
        let report = LimitsReport {
            path: "/dev/nvme0n1".into(),
            statx: expected_bdev_statx(&want),
            sysfs: Some(SysfsAtomicLimits {
                unit_max: 8192,
                ..want
            }),
            blksize: 4096,
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

    proptest! {
        #[test]
        fn block_limits_are_ordered(lba_idx in 0usize..4, nawupf in proptest::option::of(0u16..64)) {
            let lba = crate::device::LBA_SIZES[lba_idx];
            let l = expected_block_limits(&dev(lba), NamespaceAtomic { nawupf, nabspf: None });
            // blktests nvme/059's invariants: max >= unit_max >= unit_min, powers of two.
            prop_assert!(l.max >= l.unit_max);
            prop_assert!(l.unit_max >= l.unit_min);
            prop_assert!(l.unit_min.is_power_of_two() && l.unit_max.is_power_of_two());
        }

        #[test]
        fn rounddown_pow2_is_largest_pow2_below(x in 1u32..u32::MAX) {
            let r = rounddown_pow2(x);
            prop_assert!(r.is_power_of_two() && r <= x && (r as u64) * 2 > x as u64);
        }
    }
}
