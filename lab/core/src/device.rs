//! The emulated NVMe device a testcase asks for, and the rules that make a
//! set of parameters valid.

use serde::{Deserialize, Serialize};

/// LBA sizes QEMU's nvme-ns accepts and Linux can use.
pub const LBA_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// Parameters of the emulated NVMe controller and its namespace.
///
/// Atomic fields are in NVMe's own units: 0's-based counts of logical blocks
/// (AWUN = 7 means 8 LBAs). QEMU 10.0 only has the controller-wide
/// `atomic.awun`/`atomic.awupf`/`atomic.dn`; Linux 7.x ignores AWUPF and reads
/// only the namespace's NAWUPF, so with QEMU 10.0 the guest sees one LBA.
/// QEMU 10.2 and later add the namespace fields (`nvme-ns atomic.nawun`,
/// `atomic.nawupf`, `atomic.nabsn`, `atomic.nabspf`, `atomic.nabo`).
///
/// For the namespace fields 0 means "not set", as in QEMU, whose properties
/// default to 0: NAWUN and NAWUPF both 0 leave NSFEAT bit 1 clear (the
/// namespace reports no atomic parameters), NABSN/NABSPF 0 is "no boundary",
/// NABO 0 is "boundaries start at LBA 0". A non-zero value is a 0's-based
/// count like the controller's (NAWUPF = 15 is 16 LBAs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// Logical block size in bytes.
    #[serde(default = "default_lba_size")]
    pub lba_size: u32,
    /// Controller Atomic Write Unit Normal (0's based LBA count).
    #[serde(default)]
    pub awun: u16,
    /// Controller Atomic Write Unit Power Fail (0's based LBA count).
    #[serde(default)]
    pub awupf: u16,
    /// Controller "Disable Normal" atomic flag (atomic.dn).
    #[serde(default)]
    pub dn: bool,
    /// Namespace size in MiB (every namespace).
    #[serde(default = "default_size_mib")]
    pub size_mib: u64,
    /// Namespaces on the controller (nvme0n1, nvme0n2, ...), 1 to 4; all
    /// alike. Workloads use the first.
    #[serde(default = "default_namespaces")]
    pub namespaces: u8,
    /// Namespace Atomic Write Unit Normal (0's based; 0 = not set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail (0's based; 0 = not set). The
    /// only atomic unit Linux 7.x reads.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nawupf: u16,
    /// Namespace Atomic Boundary Size Normal (0's based; 0 = no boundary).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nabsn: u16,
    /// Namespace Atomic Boundary Size Power Fail (0's based; 0 = no
    /// boundary). The boundary Linux 7.x reads.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nabspf: u16,
    /// Namespace Atomic Boundary Offset (LBA of the first boundary). Linux
    /// 7.x does not support an offset: any non-zero NABO makes it ignore
    /// every namespace atomic limit and offer no atomic writes at all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nabo: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

fn default_namespaces() -> u8 {
    1
}

fn default_lba_size() -> u32 {
    4096
}
fn default_size_mib() -> u64 {
    512
}

impl Default for DeviceParams {
    fn default() -> Self {
        DeviceParams {
            lba_size: default_lba_size(),
            awun: 0,
            awupf: 0,
            dn: false,
            size_mib: default_size_mib(),
            namespaces: default_namespaces(),
            nawun: 0,
            nawupf: 0,
            nabsn: 0,
            nabspf: 0,
            nabo: 0,
        }
    }
}

/// One of the five namespace atomic fields of Identify Namespace, as every
/// layer of the lab spells it.
///
/// The five fields travel together through the testcase YAML, `lab boot`'s
/// flags, QEMU's `nvme-ns` properties and the run's JUnit properties;
/// [`NAMESPACE_ATOMIC_FIELDS`] lists them once so that code looping over
/// them cannot forget or misspell one.
#[derive(Debug, Clone, Copy)]
pub struct AtomicField {
    /// The field as the testcase YAML (`device: { nawupf: 15 }`), the
    /// `lab boot --nawupf` flag and the `device.nawupf` run property spell
    /// it: the [`DeviceParams`] field name.
    pub name: &'static str,
    /// The QEMU `nvme-ns` property that sets it (QEMU >= 10.2).
    pub qemu_prop: &'static str,
    /// Its value in a [`DeviceParams`].
    pub get: fn(&DeviceParams) -> u16,
    /// Sets it in a [`DeviceParams`].
    pub set: fn(&mut DeviceParams, u16),
    /// One line saying what it is (for `--help` and messages).
    pub doc: &'static str,
}

/// NAWUN, NAWUPF, NABSN, NABSPF and NABO, in the NVMe spec's order. All are
/// 0's-based LBA counts (NABO an LBA) where 0 means "not set".
pub const NAMESPACE_ATOMIC_FIELDS: [AtomicField; 5] = [
    AtomicField {
        name: "nawun",
        qemu_prop: "atomic.nawun",
        get: |d| d.nawun,
        set: |d, v| d.nawun = v,
        doc: "Namespace Atomic Write Unit Normal (0's based LBA count; 0: not set)",
    },
    AtomicField {
        name: "nawupf",
        qemu_prop: "atomic.nawupf",
        get: |d| d.nawupf,
        set: |d, v| d.nawupf = v,
        doc: "Namespace Atomic Write Unit Power Fail, the atomic unit Linux reads \
              (0's based LBA count; 0: not set)",
    },
    AtomicField {
        name: "nabsn",
        qemu_prop: "atomic.nabsn",
        get: |d| d.nabsn,
        set: |d, v| d.nabsn = v,
        doc: "Namespace Atomic Boundary Size Normal (0's based LBA count; 0: no boundary)",
    },
    AtomicField {
        name: "nabspf",
        qemu_prop: "atomic.nabspf",
        get: |d| d.nabspf,
        set: |d, v| d.nabspf = v,
        doc: "Namespace Atomic Boundary Size Power Fail, the boundary Linux reads \
              (0's based LBA count; 0: no boundary)",
    },
    AtomicField {
        name: "nabo",
        qemu_prop: "atomic.nabo",
        get: |d| d.nabo,
        set: |d, v| d.nabo = v,
        doc: "Namespace Atomic Boundary Offset, the LBA of the first boundary \
              (Linux offers no atomic writes when it is not 0)",
    },
];

/// A device parameter that breaks a rule, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    pub field: &'static str,
    pub message: String,
}

impl DeviceParams {
    /// Checks the rules QEMU and the NVMe spec impose, so a bad testcase is
    /// rejected before a VM starts rather than by QEMU's own error.
    pub fn validate(&self) -> Result<(), ParamError> {
        if !LBA_SIZES.contains(&self.lba_size) {
            return Err(ParamError {
                field: "lba_size",
                message: format!(
                    "{} is not a supported LBA size (one of {:?})",
                    self.lba_size, LBA_SIZES
                ),
            });
        }
        // NVMe: AWUPF <= AWUN ("power fail" can never promise more than
        // "normal"). QEMU does not refuse the pair: it silently reports AWUPF
        // 0 instead, which would test something else than the testcase says.
        if self.awupf > self.awun {
            return Err(ParamError {
                field: "awupf",
                message: format!(
                    "AWUPF ({}) must not exceed AWUN ({}): the power-fail atomic unit \
                     cannot be larger than the normal one",
                    self.awupf, self.awun
                ),
            });
        }
        if !(1..=4).contains(&self.namespaces) {
            return Err(ParamError {
                field: "namespaces",
                message: format!("{} namespaces: the lab supports 1 to 4", self.namespaces),
            });
        }
        let min_mib = 64;
        if self.size_mib < min_mib {
            return Err(ParamError {
                field: "size_mib",
                message: format!(
                    "{} MiB is too small: XFS needs at least {min_mib} MiB",
                    self.size_mib
                ),
            });
        }
        self.validate_namespace_atomics()
    }

    /// The checks QEMU 10.2+ makes when it realizes an `nvme-ns` with atomic
    /// parameters (hw/nvme/ns.c `nvme_ns_set_nsabp`, `nvme_ns_set_nab`), in
    /// its order, each error naming the rule. QEMU would refuse to start
    /// with any of these.
    fn validate_namespace_atomics(&self) -> Result<(), ParamError> {
        let err = |field: &'static str, message: String| Err(ParamError { field, message });
        // nvme_ns_set_nsabp: NAWUPF > NAWUN is an error, unless NAWUN is
        // unset, in which case QEMU takes NAWUN = NAWUPF.
        if self.nawupf > self.nawun && self.nawun != 0 {
            return err(
                "nawupf",
                format!(
                    "NAWUPF ({}) must not exceed NAWUN ({}): the power-fail atomic unit cannot be \
                     larger than the normal one (QEMU: \"nawupf must be less than or equal to nawun\")",
                    self.nawupf, self.nawun
                ),
            );
        }
        let ns = self.identify_namespace();
        if ns.nsabp {
            if ns.nawun < self.awun {
                return err(
                    if self.nawun == 0 { "nawupf" } else { "nawun" },
                    format!(
                        "NAWUN ({}{}) must be at least the controller's AWUN ({}): a namespace \
                         cannot promise less than its controller (QEMU: \"nawun must be greater \
                         than or equal to awun\")",
                        ns.nawun,
                        if self.nawun == 0 {
                            ", taken from NAWUPF"
                        } else {
                            ""
                        },
                        self.awun
                    ),
                );
            }
            if ns.nawupf < self.awupf {
                return err(
                    "nawupf",
                    format!(
                        "NAWUPF ({}) must be at least the controller's AWUPF ({}) (QEMU: \"nawupf \
                         must be greater than or equal to awupf\")",
                        ns.nawupf, self.awupf
                    ),
                );
            }
        }
        // nvme_ns_set_nab: a boundary (when set) is at least the atomic unit
        // it bounds, controller-wide and (with NSFEAT bit 1) per namespace.
        if self.nabsn != 0 && self.nabsn < self.awun {
            return err(
                "nabsn",
                format!(
                    "NABSN ({}) must be at least the controller's AWUN ({}) (QEMU: \"nabsn must be \
                     greater than or equal to awun\")",
                    self.nabsn, self.awun
                ),
            );
        }
        if self.nabspf != 0 && self.nabspf < self.awupf {
            return err(
                "nabspf",
                format!(
                    "NABSPF ({}) must be at least the controller's AWUPF ({}) (QEMU: \"nabspf must \
                     be greater than or equal to awupf\")",
                    self.nabspf, self.awupf
                ),
            );
        }
        if ns.nsabp {
            if self.nabsn != 0 && self.nabsn < ns.nawun {
                return err(
                    "nabsn",
                    format!(
                        "NABSN ({}) must be at least NAWUN ({}): an atomic unit cannot be larger \
                         than the boundary it must not cross (QEMU: \"nabsn must be greater than or \
                         equal to nawun\")",
                        self.nabsn, ns.nawun
                    ),
                );
            }
            if self.nabspf != 0 && self.nabspf < ns.nawupf {
                return err(
                    "nabspf",
                    format!(
                        "NABSPF ({}) must be at least NAWUPF ({}): an atomic unit cannot be larger \
                         than the boundary it must not cross (QEMU: \"nabspf must be great than or \
                         equal to nawupf\")",
                        self.nabspf, ns.nawupf
                    ),
                );
            }
        }
        if self.nabo != 0 && (self.nabo > self.nabsn || self.nabo > self.nabspf) {
            return err(
                "nabo",
                format!(
                    "NABO ({}) must not exceed NABSN ({}) or NABSPF ({}): the first boundary lies \
                     within the first boundary size (QEMU: \"nabo must be less than or equal to \
                     nabsn and nabspf\")",
                    self.nabo, self.nabsn, self.nabspf
                ),
            );
        }
        Ok(())
    }

    /// Bytes in the namespace.
    pub fn size_bytes(&self) -> u64 {
        self.size_mib * 1024 * 1024
    }

    /// Whether any namespace atomic field is set: such a device needs a QEMU
    /// with `nvme-ns` atomic properties (10.2 or later).
    pub fn uses_namespace_atomics(&self) -> bool {
        !self.namespace_atomic_fields().is_empty()
    }

    /// The namespace atomic fields this device sets (for messages).
    pub fn namespace_atomic_fields(&self) -> Vec<&'static str> {
        self.namespace_atomic_values()
            .map(|(f, _)| f.name)
            .collect()
    }

    /// The namespace atomic fields this device sets, with their values, in
    /// the table's order: what goes on the `nvme-ns` command line and into
    /// a run's `device.*` properties (an unset field is left out of both, so
    /// a device without them still starts on a QEMU without them).
    pub fn namespace_atomic_values(
        &self,
    ) -> impl Iterator<Item = (&'static AtomicField, u16)> + '_ {
        NAMESPACE_ATOMIC_FIELDS
            .iter()
            .map(move |f| (f, (f.get)(self)))
            .filter(|(_, v)| *v != 0)
    }

    /// The atomic fields of Identify Namespace as QEMU 10.2+ fills them from
    /// these parameters: NSFEAT bit 1 (NSABP) is set when NAWUN or NAWUPF
    /// is, and an unset NAWUN takes NAWUPF's value. A QEMU without namespace
    /// atomics reports all zeroes (use `IdentifyNamespace::default()`).
    pub fn identify_namespace(&self) -> IdentifyNamespace {
        let nawun = if self.nawun == 0 {
            self.nawupf
        } else {
            self.nawun
        };
        IdentifyNamespace {
            nsabp: nawun != 0,
            nawun,
            nawupf: if nawun != 0 { self.nawupf } else { 0 },
            nabsn: self.nabsn,
            nabspf: self.nabspf,
            nabo: self.nabo,
        }
    }

    /// The power-fail atomic unit in LBAs as Linux 7.x reads it
    /// (drivers/nvme/host/core.c `nvme_configure_atomic_write`): (NAWUPF + 1)
    /// when the namespace reports atomic parameters (NSFEAT bit 1) with a
    /// non-zero NAWUPF and NABO is 0; otherwise one LBA, whatever the
    /// controller's AWUPF says. The crash disk and the model both use this
    /// number: a write of at most this many LBAs that crosses no atomic
    /// boundary is all or nothing.
    pub fn atomic_unit_lbas(&self) -> u32 {
        self.identify_namespace().linux_unit_lbas()
    }

    /// The atomic boundary in LBAs (NABSPF + 1) as Linux 7.x reads it, or
    /// None when there is none: only together with a NAWUPF unit and with
    /// NABO 0. A write crossing it is not atomic, whatever its size (Linux's
    /// reading of the spec; QEMU itself would still treat a crossing write no
    /// larger than the controller's AWUPF as atomic).
    pub fn atomic_boundary_lbas(&self) -> Option<u32> {
        self.identify_namespace().linux_boundary_lbas()
    }

    /// Whether the device promises that a write of `nlb` LBAs at LBA
    /// `slba` is all or nothing across a power cut: at most one atomic unit,
    /// and not crossing an atomic boundary.
    pub fn write_is_atomic(&self, slba: u64, nlb: u64) -> bool {
        write_is_atomic(
            slba,
            nlb,
            self.atomic_unit_lbas(),
            self.atomic_boundary_lbas(),
        )
    }
}

/// The rule itself, for callers that hold the unit and boundary already
/// (the crash disk): at most `unit_lbas`, not crossing a multiple of
/// `boundary_lbas`.
pub fn write_is_atomic(slba: u64, nlb: u64, unit_lbas: u32, boundary_lbas: Option<u32>) -> bool {
    if nlb == 0 || nlb > u64::from(unit_lbas) {
        return false;
    }
    match boundary_lbas {
        Some(b) => {
            let b = u64::from(b);
            slba / b == (slba + nlb - 1) / b
        }
        None => true,
    }
}

/// The atomic fields of an NVMe Identify Namespace data structure (all 0's
/// based LBA counts), as the guest's driver reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdentifyNamespace {
    /// NSFEAT bit 1: NAWUN, NAWUPF and NACWU are defined for this namespace.
    pub nsabp: bool,
    pub nawun: u16,
    pub nawupf: u16,
    pub nabsn: u16,
    pub nabspf: u16,
    pub nabo: u16,
}

impl IdentifyNamespace {
    /// Linux 7.x: the per-namespace unit when NSFEAT bit 1 is set and NAWUPF
    /// is non-zero; one LBA otherwise ("AWUPF ignored, only NAWUPF
    /// accepted"), and one LBA when NABO is non-zero (no offset support).
    pub fn linux_unit_lbas(&self) -> u32 {
        if self.nabo != 0 || !self.nsabp || self.nawupf == 0 {
            1
        } else {
            u32::from(self.nawupf) + 1
        }
    }

    /// Linux 7.x: (NABSPF + 1) LBAs, read only with a NAWUPF unit.
    pub fn linux_boundary_lbas(&self) -> Option<u32> {
        if self.linux_unit_lbas() > 1 && self.nabspf != 0 {
            Some(u32::from(self.nabspf) + 1)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row's name is the YAML key and the QEMU property is
    /// `atomic.<name>`; its getter and setter reach that field and no other.
    #[test]
    fn the_atomic_field_table_matches_the_struct() {
        for (i, f) in NAMESPACE_ATOMIC_FIELDS.iter().enumerate() {
            assert_eq!(f.qemu_prop, format!("atomic.{}", f.name));
            let value = 7 + i as u16;
            let d: DeviceParams = serde_yaml::from_str(&format!("{}: {value}", f.name)).unwrap();
            assert_eq!((f.get)(&d), value, "{}", f.name);
            let mut set = DeviceParams::default();
            (f.set)(&mut set, value);
            assert_eq!(set, d, "{} sets only its own field", f.name);
            for other in NAMESPACE_ATOMIC_FIELDS.iter().filter(|o| o.name != f.name) {
                assert_eq!((other.get)(&d), 0, "{} read by {}", f.name, other.name);
            }
            let yaml = serde_yaml::to_string(&d).unwrap();
            assert!(yaml.contains(&format!("{}: {value}", f.name)), "{yaml}");
        }
        let all = DeviceParams {
            nawun: 1,
            nawupf: 2,
            nabsn: 3,
            nabspf: 4,
            nabo: 5,
            ..Default::default()
        };
        let values: Vec<(&str, u16)> = all
            .namespace_atomic_values()
            .map(|(f, v)| (f.name, v))
            .collect();
        assert_eq!(
            values,
            [
                ("nawun", 1),
                ("nawupf", 2),
                ("nabsn", 3),
                ("nabspf", 4),
                ("nabo", 5)
            ],
            "the five fields, in the spec's order"
        );
        assert!(DeviceParams::default()
            .namespace_atomic_values()
            .next()
            .is_none());
    }

    #[test]
    fn default_params_are_valid() {
        DeviceParams::default().validate().unwrap();
    }

    #[test]
    fn rejects_odd_lba_size() {
        let p = DeviceParams {
            lba_size: 3000,
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "lba_size");
        assert!(e.message.contains("3000"));
    }

    #[test]
    fn rejects_awupf_above_awun() {
        let p = DeviceParams {
            awun: 1,
            awupf: 3,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "awupf");
    }

    fn ns(f: impl FnOnce(&mut DeviceParams)) -> DeviceParams {
        let mut d = DeviceParams::default();
        f(&mut d);
        d
    }

    fn field(d: &DeviceParams) -> &'static str {
        d.validate().unwrap_err().field
    }

    #[test]
    fn namespace_unit_and_boundary_as_linux_reads_them() {
        let d = ns(|d| {
            d.nawupf = 15;
            d.nabspf = 31;
        });
        d.validate().unwrap();
        assert_eq!(d.atomic_unit_lbas(), 16);
        assert_eq!(d.atomic_boundary_lbas(), Some(32));
        // An unset NAWUN takes NAWUPF's value, as QEMU does.
        let id = d.identify_namespace();
        assert!(id.nsabp);
        assert_eq!((id.nawun, id.nawupf), (15, 15));
    }

    #[test]
    fn without_namespace_fields_the_unit_is_one_lba() {
        let d = ns(|d| {
            d.awun = 15;
            d.awupf = 15;
        });
        assert_eq!(d.atomic_unit_lbas(), 1);
        assert_eq!(d.atomic_boundary_lbas(), None);
        assert!(!d.uses_namespace_atomics());
        assert!(!d.identify_namespace().nsabp);
    }

    #[test]
    fn nawun_without_nawupf_reports_atomics_but_a_one_lba_unit() {
        let d = ns(|d| {
            d.nawun = 7;
            d.nabspf = 7;
        });
        d.validate().unwrap();
        assert!(d.identify_namespace().nsabp);
        assert_eq!(d.atomic_unit_lbas(), 1);
        // A boundary alone means nothing to Linux.
        assert_eq!(d.atomic_boundary_lbas(), None);
    }

    #[test]
    fn nabo_makes_linux_ignore_every_namespace_limit() {
        let d = ns(|d| {
            d.nawupf = 7;
            d.nabsn = 15;
            d.nabspf = 15;
            d.nabo = 4;
        });
        d.validate().unwrap();
        assert_eq!(d.atomic_unit_lbas(), 1);
        assert_eq!(d.atomic_boundary_lbas(), None);
    }

    #[test]
    fn qemu_namespace_rules_name_their_field() {
        assert_eq!(
            field(&ns(|d| {
                d.nawun = 3;
                d.nawupf = 7;
            })),
            "nawupf"
        );
        assert_eq!(
            field(&ns(|d| {
                d.awun = 7;
                d.awupf = 7;
                d.nawun = 3;
                d.nawupf = 3;
            })),
            "nawun"
        );
        assert_eq!(
            field(&ns(|d| {
                d.awun = 7;
                d.awupf = 7;
                d.nawun = 7;
                d.nawupf = 3;
            })),
            "nawupf"
        );
        assert_eq!(
            field(&ns(|d| {
                d.nawupf = 15;
                d.nabspf = 7;
            })),
            "nabspf"
        );
        assert_eq!(
            field(&ns(|d| {
                d.nawun = 15;
                d.nabsn = 7;
            })),
            "nabsn"
        );
        assert_eq!(
            field(&ns(|d| {
                d.awun = 3;
                d.nabsn = 1;
            })),
            "nabsn"
        );
        assert_eq!(
            field(&ns(|d| {
                d.awun = 3;
                d.awupf = 3;
                d.nabspf = 1;
            })),
            "nabspf"
        );
        let e = ns(|d| {
            d.nawupf = 3;
            d.nabspf = 7;
            d.nabo = 2;
        })
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "nabo");
        assert!(e.message.contains("NABSN (0)"), "{}", e.message);
    }

    #[test]
    fn every_message_quotes_qemu() {
        let d = ns(|d| {
            d.nawupf = 15;
            d.nabspf = 7;
        });
        let e = d.validate().unwrap_err();
        assert!(
            e.message.contains("QEMU: \"nabspf must be"),
            "{}",
            e.message
        );
    }

    #[test]
    fn fields_set_are_listed() {
        let d = ns(|d| {
            d.nawupf = 3;
            d.nabspf = 7;
        });
        assert!(d.uses_namespace_atomics());
        assert_eq!(d.namespace_atomic_fields(), ["nawupf", "nabspf"]);
    }

    #[test]
    fn crossing_a_boundary_is_never_atomic() {
        let d = ns(|d| {
            d.nawupf = 3; // 4 LBAs
            d.nabspf = 7; // boundary every 8 LBAs
        });
        assert!(d.write_is_atomic(0, 4));
        assert!(d.write_is_atomic(4, 4));
        assert!(!d.write_is_atomic(6, 4), "crosses LBA 8");
        assert!(
            !d.write_is_atomic(7, 2),
            "crosses LBA 8, smaller than the unit"
        );
        assert!(d.write_is_atomic(5, 3));
        assert!(!d.write_is_atomic(0, 5), "larger than the unit");
        assert!(!d.write_is_atomic(0, 0));
    }

    proptest::proptest! {
        #[test]
        fn device_atomicity_rules(
            nawupf in 0u16..64,
            extra in 0u16..64,
            slba in 0u64..4096,
            nlb in 1u64..128,
        ) {
            let d = ns(|d| {
                d.nawupf = nawupf;
                d.nabspf = if extra == 0 { 0 } else { nawupf + extra };
            });
            proptest::prop_assert!(d.validate().is_ok());
            let unit = u64::from(d.atomic_unit_lbas());
            proptest::prop_assert_eq!(unit, u64::from(nawupf) + 1);
            // One LBA is always atomic, more than a unit never.
            proptest::prop_assert!(d.write_is_atomic(slba, 1));
            if nlb > unit {
                proptest::prop_assert!(!d.write_is_atomic(slba, nlb));
            }
            if let Some(b) = d.atomic_boundary_lbas() {
                let b = u64::from(b);
                proptest::prop_assert!(b >= unit);
                let crosses = slba / b != (slba + nlb - 1) / b;
                if crosses {
                    proptest::prop_assert!(!d.write_is_atomic(slba, nlb));
                }
                if !crosses && nlb <= unit {
                    proptest::prop_assert!(d.write_is_atomic(slba, nlb));
                }
            } else if nlb <= unit {
                proptest::prop_assert!(d.write_is_atomic(slba, nlb));
            }
        }

        #[test]
        fn valid_namespace_sets_keep_unit_within_boundary(
            awupf in 0u16..8,
            nawun in 0u16..64,
            nawupf in 0u16..64,
            nabsn in 0u16..64,
            nabspf in 0u16..64,
            nabo in 0u16..8,
        ) {
            let d = ns(|d| {
                d.awun = awupf;
                d.awupf = awupf;
                d.nawun = nawun;
                d.nawupf = nawupf;
                d.nabsn = nabsn;
                d.nabspf = nabspf;
                d.nabo = nabo;
            });
            if d.validate().is_ok() {
                let unit = d.atomic_unit_lbas();
                if let Some(b) = d.atomic_boundary_lbas() {
                    proptest::prop_assert!(b >= unit);
                }
                if nabo != 0 {
                    proptest::prop_assert_eq!(unit, 1);
                }
            }
        }
    }
}
